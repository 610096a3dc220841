//! What the tests of `imgpipe serve` share: the real binary started on a free loopback port,
//! tokens from `imgpipe token`, and a client that posts upload forms as a browser would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use imaging::{EncodeOptions, Format, Image, image};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_imgpipe");
pub const STARTUP: Duration = Duration::from_secs(60);
pub const PROCESSING: Duration = Duration::from_secs(120);

/// A JPEG with some structure, so the encoders have work to do.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    });
    imaging::encode(
        &Image::ImageRgb8(img),
        &EncodeOptions {
            format: Format::Jpeg,
            quality: 90,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The tool cache scripts/setup fills.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("IMGPIPE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/imgpipe"),
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `imgpipe serve`, stopped (SIGKILL) when dropped.
pub struct Serve {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Serve {
    pub fn start(data: &Path, extra: &[&str]) -> Serve {
        Serve::start_at(data, "127.0.0.1:0", extra)
    }

    /// [`Serve::start`] on another address; `url` is what the server printed.
    pub fn start_at(data: &Path, addr: &str, extra: &[&str]) -> Serve {
        std::fs::create_dir_all(data).unwrap();
        let log = data.with_extension("serve.log");
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", addr, "--data"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let started = Instant::now();
        loop {
            let left = STARTUP.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("imgpipe serve: listening on ") {
                        let url = rest.split_whitespace().next().unwrap().to_string();
                        return Serve {
                            child,
                            url,
                            data: data.to_path_buf(),
                            log,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "imgpipe serve printed no startup line in {STARTUP:?}; its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within `within`).
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "serve did not stop within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn token(data: &Path, user: &str, admin: bool) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "--user", user, "--data"]).arg(data);
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A multipart/form-data body: the fields in order, then the file part.
pub fn multipart(
    fields: &[(String, String)],
    file: &[u8],
    file_type: Option<&str>,
) -> (String, Vec<u8>) {
    let boundary = format!("----imgpipe{}", ulid_like());
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\n")
            .as_bytes(),
    );
    if let Some(t) = file_type {
        body.extend_from_slice(format!("Content-Type: {t}\r\n").as_bytes());
    }
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn ulid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub fn form_fields(created: &Value) -> Vec<(String, String)> {
    created["upload"]["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

pub struct Api {
    pub http: reqwest::Client,
    pub token: String,
}

impl Api {
    pub fn new(token: &str) -> Api {
        Api {
            http: client(),
            token: token.to_string(),
        }
    }

    pub async fn get(&self, url: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_upload(&self, serve: &Serve, bytes: usize, content_type: &str) -> Value {
        let res = self
            .http
            .post(serve.url("/v1/uploads"))
            .bearer_auth(&self.token)
            .json(&json!({
                "filename": "photo.jpg",
                "contentType": content_type,
                "bytes": bytes,
                "preset": "web",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    /// Posts the form to its URL: fields, then the file.
    pub async fn post_form(
        &self,
        created: &Value,
        fields: &[(String, String)],
        file: &[u8],
        file_type: Option<&str>,
    ) -> reqwest::Response {
        let (content_type, body) = multipart(fields, file, file_type);
        self.http
            .post(created["upload"]["url"].as_str().unwrap())
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// DELETE /v1/images/{id}; the status.
    pub async fn delete_image(&self, serve: &Serve, id: &str) -> StatusCode {
        self.http
            .delete(serve.url(&format!("/v1/images/{id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Polls the record until it is final.
    pub async fn wait_final(&self, serve: &Serve, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, record) = self.get(&serve.url(&format!("/v1/images/{id}"))).await;
            assert_eq!(status, StatusCode::OK, "{record}");
            if ["COMPLETE", "REJECTED", "FAILED"].contains(&record["status"].as_str().unwrap()) {
                return record;
            }
            assert!(
                started.elapsed() < PROCESSING,
                "image {id} still {} after {PROCESSING:?}; log:\n{}",
                record["status"],
                serve.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every file below `dir`, as paths relative to it.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub async fn assert_error(res: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}
