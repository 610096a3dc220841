//! Hostile input through `imgpipe process`, one child process per file of the generated corpus
//! (crates/imaging/tests/support/corpus.rs), each under a 256 MB cap on its writable memory
//! (RLIMIT_DATA: going over makes an allocation fail, which aborts the child) and measured by
//! its peak RSS. Every bad file must end REJECTED with the step error and imaging error the
//! corpus names, recorded with the reason, quarantined and kept byte for byte; every valid
//! one (CMYK, 16-bit, absurd EXIF, polyglots) must come out as renditions. Nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../imaging/tests/support/corpus.rs"]
mod corpus;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corpus::Expect;
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgpipe");
const BUDGET_MB: i64 = 256;
/// Far more than any file needs (the largest takes a few seconds): past it, a hang.
const PER_FILE: Duration = Duration::from_secs(120);

/// The largest peak RSS (KiB) of any child waited for so far. Children run one at a time, so
/// when it grows, the child just finished is the one that set it.
fn children_peak_kib() -> i64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_hostile_file_is_refused_by_name_in_256_mb_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = corpus::corpus();
    let rejected = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Rejected { .. }))
        .count();
    assert!(rejected >= 30, "only {rejected} hostile files");
    let mut peak = children_peak_kib();
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for case in &cases {
        let dir = tmp.path().join(case.name);
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join(case.file_name());
        std::fs::write(&input, &case.bytes).unwrap();
        let data = dir.join("data");
        let (stdout_path, stderr_path) = (dir.join("stdout"), dir.join("stderr"));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -d "$0" && exec "$@""#)
            .arg((BUDGET_MB * 1024).to_string())
            .arg(BIN)
            .arg("process")
            .arg(&input)
            .arg("--out")
            .arg(dir.join("out"))
            .arg("--data")
            .arg(&data)
            // Copies in the data directory, checked byte for byte below.
            .args(["--json", "--jobs", "1", "--keep-originals"])
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > PER_FILE {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let run_ms = started.elapsed().as_millis();
        let now = children_peak_kib();
        let this_peak = if now > peak { Some(now) } else { None };
        peak = peak.max(now);
        let stdout = String::from_utf8_lossy(&read(&stdout_path)).into_owned();
        let stderr = String::from_utf8_lossy(&read(&stderr_path)).into_owned();
        // 0: processed, 1: refused. Anything else is a crash, an abort (out of memory under
        // the cap), a hang or a setup error.
        let code = status.and_then(|s| s.code());
        if !matches!(code, Some(0 | 1)) || stderr.contains("panicked") {
            wrong.push(format!(
                "{}: exit {status:?} after {run_ms} ms\n{stdout}\n{stderr}",
                case.name
            ));
            continue;
        }
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        let result = &doc["results"][0];
        let status = result["status"].as_str().unwrap_or("");
        let error_type = result["error"]["type"].as_str().unwrap_or("");
        let message = result["error"]["message"].as_str().unwrap_or("");
        report.push(format!(
            "{:<32} {:>9} B {run_ms:>6} ms  peak {:>7}  {status} {error_type} {message}",
            case.name,
            case.bytes.len(),
            this_peak
                .map(|k| format!("{} MB", k / 1024))
                .unwrap_or("-".into()),
        ));
        let id = result["imageId"].as_str().unwrap_or("");
        let objects = data.join("objects");
        let name = case.file_name();
        match case.expect {
            Expect::Accepted => {
                if status != "COMPLETE" || code != Some(0) {
                    wrong.push(format!("{}: expected COMPLETE, got {result}", case.name));
                    continue;
                }
                let outputs = result["outputs"].as_array().unwrap();
                assert_eq!(outputs.len(), 3, "{}: {result}", case.name);
                for o in outputs {
                    let bytes = read(Path::new(o["path"].as_str().unwrap()));
                    let header = imaging::probe(&bytes, &imaging::Limits::default()).unwrap();
                    assert_eq!(
                        (u64::from(header.width), u64::from(header.height)),
                        (o["width"].as_u64().unwrap(), o["height"].as_u64().unwrap()),
                        "{}",
                        case.name
                    );
                    // Whatever rode along in a polyglot stays behind: outputs are re-encoded.
                    for payload in [&b"<script"[..], b"<html", b"PK\x03\x04"] {
                        assert!(
                            !bytes.windows(payload.len()).any(|w| w == payload),
                            "{}: an output carries {:?}",
                            case.name,
                            String::from_utf8_lossy(payload)
                        );
                    }
                }
            }
            Expect::Rejected { imaging, step } => {
                let named = status == "REJECTED"
                    && error_type == step
                    && message.starts_with(&format!("{imaging}: "));
                if !named || code != Some(1) {
                    wrong.push(format!(
                        "{}: expected REJECTED {step} ({imaging}), got {result}",
                        case.name
                    ));
                    continue;
                }
                // Named on stderr with its reason, though stdout is a file (and JSON).
                let line = format!("{}: rejected ({step}): {message}", input.display());
                assert!(
                    stderr.lines().any(|l| l == line),
                    "{}: stderr does not say `{line}`:\n{stderr}",
                    case.name
                );
                // The original is kept where it was, a copy is quarantined with the reason.
                let original = objects.join(format!("uploads/local/{id}/{name}"));
                assert_eq!(
                    read(&original),
                    case.bytes,
                    "{}: original changed",
                    case.name
                );
                let quarantined = objects.join(format!("quarantine/local/{id}/{name}"));
                assert_eq!(
                    read(&quarantined),
                    case.bytes,
                    "{}: quarantine copy",
                    case.name
                );
                let reason: Value = serde_json::from_slice(&read(
                    &objects.join(format!("quarantine/local/{id}/{name}.reason.json")),
                ))
                .unwrap();
                assert_eq!(reason["error"]["type"], step, "{}: {reason}", case.name);
                assert_eq!(reason["error"]["message"], message, "{}", case.name);
                assert!(
                    !dir.join("out").exists()
                        || std::fs::read_dir(dir.join("out")).unwrap().next().is_none(),
                    "{}: a refused file made outputs",
                    case.name
                );
            }
        }
        // The record says the same, durably: `imgpipe history` reads it back from SQLite.
        let history = Command::new(BIN)
            .args(["history", "--json", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        let records: Value = serde_json::from_slice(&history.stdout).unwrap();
        assert_eq!(records[0]["id"], id, "{}", case.name);
        assert_eq!(records[0]["status"], status, "{}", case.name);
        if let Expect::Rejected { step, .. } = case.expect {
            assert_eq!(records[0]["error"]["type"], step, "{}", case.name);
        }
    }
    eprintln!("{}", report.join("\n"));
    eprintln!("largest peak RSS: {} MB", peak / 1024);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        peak < BUDGET_MB * 1024,
        "a child peaked at {} MB, over {BUDGET_MB} MB",
        peak / 1024
    );
}
