//! `imgpipe serve` under load, at a scale CI can afford: 100 clients upload at once, twice
//! each, into a queue of 16, so the queue fills and answers 503 + Retry-After, which the
//! clients honour. Every image must end COMPLETE, and no other 5xx may appear. The full run
//! (100 x 10, bench/load.sh) uses the same client, tests/support/load.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/load.rs"]
mod load;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgpipe");

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_lose_no_image_and_see_no_error_but_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--no-inbox",
            "--queue",
            "16",
            // The hundred clients share one token: as one user they would be over the
            // per-user form limits, which attacks.rs tests.
            "--forms-per-minute",
            "0",
            "--max-open-forms",
            "0",
            "--data",
        ])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let serve = Serve(child);
    let base_url = first
        .strip_prefix("imgpipe serve: listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no startup line: {first:?}"))
        .to_string();
    let token = Command::new(BIN)
        .args(["token", "--user", "loader", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();

    let report = load::run(load::Load {
        base_url: base_url.clone(),
        token: token.clone(),
        clients: 100,
        rounds: 2,
        image: Arc::new(load::jpeg(320, 240)),
    })
    .await;
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());

    assert!(report.unexpected.is_empty(), "{:#?}", report.unexpected);
    assert_eq!(report.server_errors, 0, "5xx other than the queue's 503");
    assert_eq!(
        (report.uploaded, report.complete, report.lost),
        (200, 200, 0)
    );
    assert!(
        report.busy_retries > 0,
        "100 uploads at once into a queue of 16 were never refused as busy"
    );
    // The server's own count agrees: 200 records, all COMPLETE.
    let http = load::client();
    let (mut cursor, mut complete) = (None::<String>, 0);
    loop {
        let mut url = format!("{base_url}/v1/images?status=COMPLETE&limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http
            .get(&url)
            .bearer_auth(&token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        complete += page["items"].as_array().unwrap().len();
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(complete, 200);
    drop(serve);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}
