//! A moto server for tests: the one `IMGPIPE_MOTO_ENDPOINT` names, else one this test process
//! starts and stops. Shared by crates/aws's adapter tests (through support/mod.rs, which adds
//! the SDK configuration) and crates/api's Cognito test (through `#[path]`; that crate does not
//! depend on the AWS SDK).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where scripts/setup installs moto: `$IMGPIPE_CACHE/venv`, by default under
/// `~/.cache/imgpipe`.
fn venv_moto() -> Option<PathBuf> {
    let cache = std::env::var_os("IMGPIPE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/imgpipe")))?;
    Some(cache.join("venv/bin/moto_server")).filter(|p| p.is_file())
}

/// A moto_server this process started. It runs under a small shell in its own process group
/// that waits on a pipe from us: when the pipe closes (this guard dropped, or the test process
/// exiting however it exits, since a static is never dropped) the shell kills the group, so no
/// server outlives its tests.
pub struct Moto {
    pub endpoint: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut pipe) = self.stdin.take() {
            let _ = pipe.write_all(b"stop\n");
        }
        let _ = self.child.wait();
    }
}

fn find_moto() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(venv_moto).unwrap_or_else(|| {
        panic!(
            "these tests need moto: set IMGPIPE_MOTO_ENDPOINT to a running moto_server, or \
                 put moto_server on PATH (scripts/setup installs it in \
                 ~/.cache/imgpipe/venv/bin, or $IMGPIPE_CACHE/venv/bin)"
        )
    })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

impl Moto {
    pub fn start() -> Moto {
        let binary = find_moto();
        let port = free_port();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" -H 127.0.0.1 -p "$1" </dev/null >/dev/null 2>&1 & read -r _; kill 0"#)
            .arg(&binary)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdin = child.stdin.take();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited before answering: {status}", binary.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer on port {port} within 60 s",
                binary.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            stdin,
        }
    }
}

/// The moto endpoint for this test process, started on first use.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    static SERVER: OnceLock<Moto> = OnceLock::new();
    ENDPOINT.get_or_init(|| match std::env::var("IMGPIPE_MOTO_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => e.trim().trim_end_matches('/').to_string(),
        _ => SERVER.get_or_init(Moto::start).endpoint.clone(),
    })
}

/// A name no other test uses, valid for buckets, tables and topics.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}
