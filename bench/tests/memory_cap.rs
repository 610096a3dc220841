//! A 50 MP JPEG goes through the `web` preset, the way `imgpipe process` runs it, inside a
//! 256 MB budget: the child caps its own writable memory (RLIMIT_DATA, so exceeding it makes
//! an allocation fail and the run with it) and reports its peak RSS, which must stay below.

use std::process::Command;

const BUDGET_MB: u64 = 256;

#[test]
#[allow(clippy::unwrap_used, clippy::expect_used)]
fn fifty_megapixel_jpeg_fits_in_256_mb() {
    let bench = env!("CARGO_BIN_EXE_bench");
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("fifty.jpg");
    // 9400 x 5300 = 49.8 MP, just inside the default 50 MP pixel budget. Made in its own
    // process so that building it does not count against anything.
    let made = Command::new(bench)
        .arg("synth")
        .arg(&photo)
        .args(["--width", "9400", "--height", "5300", "--quality", "90"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "synth failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    let run = Command::new(bench)
        .arg("process")
        .arg(&photo)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--preset", "web", "--cap-mb", &BUDGET_MB.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the web preset failed under a {BUDGET_MB} MB cap: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["status"], "COMPLETE", "{report}");
    let peak_kb = report["peakRssKb"].as_u64().expect("peakRssKb");
    assert!(
        peak_kb < BUDGET_MB * 1024,
        "peak RSS {peak_kb} KiB is over {BUDGET_MB} MB"
    );
    for name in ["thumb.webp", "medium.jpg", "large.jpg"] {
        assert!(dir.path().join("out").join(name).is_file(), "no {name}");
    }
}
