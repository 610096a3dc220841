//! Shared by every function's `tests/config.rs`: the real bootstrap binary, started with an
//! empty environment, must stop at once and name every variable it is missing, rather than
//! start polling for events it could never handle.

use std::process::Command;
use std::time::{Duration, Instant};

const REQUIRED: [&str; 5] = [
    "IMGPIPE_UPLOADS_BUCKET",
    "IMGPIPE_RENDITIONS_BUCKET",
    "IMGPIPE_TABLE",
    "IMGPIPE_ALERTS_TOPIC_ARN",
    "IMGPIPE_EVENTS_TOPIC_ARN",
];

pub fn check(bootstrap: &str) {
    let started = Instant::now();
    let out = Command::new(bootstrap)
        .env_clear()
        // A runtime API nobody listens on: if configuration were not checked first, the
        // binary would hang or fail on the connection instead.
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("the bootstrap binary runs");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the bootstrap should fail fast"
    );
    assert!(
        !out.status.success(),
        "a bootstrap without configuration must exit non-zero"
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in REQUIRED {
        assert!(text.contains(name), "the error should name {name}:\n{text}");
    }
}
