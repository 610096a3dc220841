//! `imgpipe process` as a user runs it: where outputs go and what they are called, what
//! happens to files already there, outputs never read back as inputs, a job whose outputs
//! could not be written recorded FAILED, and jobs stopped by Ctrl-C or a crash recorded as
//! interrupted instead of PROCESSING forever.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_imgpipe");

/// A PNG of `w` x `h` with content that does not compress away (so encodes take real time).
fn png(path: &Path, w: u32, h: u32, seed: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    for i in 0..w * h {
        // xorshift noise over a gradient
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let g = ((i % w) * 255 / w.max(1)) as u8;
        data.extend_from_slice(&[g, (x & 0xff) as u8, ((x >> 8) & 0x7f) as u8 + g / 2]);
    }
    let file = fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&data).unwrap();
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn imgpipe(data: &Path, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

fn history(data: &Path) -> Vec<Value> {
    let run = imgpipe(data, &["history", "--json", "--limit", "1000"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str::<Value>(&run.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn folders_are_kept_and_names_follow_the_template() {
    let tmp = tempfile::tempdir().unwrap();
    let (shoot, data) = (tmp.path().join("shoot"), tmp.path().join("data"));
    png(&shoot.join("a.png"), 64, 48, 1);
    png(&shoot.join("2024/june/a.png"), 64, 48, 2);
    png(&shoot.join("2024/b.png"), 48, 64, 3);

    // The default: the tree under --out, STEM-RENDITION.EXT, and --width as a resize.
    let out = tmp.path().join("out");
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&out),
            "--width",
            "32",
            "--format",
            "jpg",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        files(&out),
        ["2024/b-out.jpg", "2024/june/a-out.jpg", "a-out.jpg"]
    );
    assert!(run.stdout.contains("3 images: 3 ok"), "{}", run.stdout);

    // A template with the size, and a name for the one rendition.
    let out = tmp.path().join("named");
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&out),
            "--height",
            "16",
            "--rendition-name",
            "tiny",
            "--name",
            "{rendition}/{stem}_{width}x{height}.{ext}",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // Flattened by the template: the second a.png becomes a-2.
    let mut got = files(&out);
    got.sort();
    assert_eq!(
        got,
        ["tiny/a-2_21x16.png", "tiny/a_21x16.png", "tiny/b_12x16.png"]
    );

    // A template that would give several renditions one name is refused before anything runs.
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&tmp.path().join("x")),
            "--preset",
            "web",
            "--name",
            "{stem}.{ext}",
        ],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no {rendition}"), "{}", run.stderr);
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&out),
            "--name",
            "{stem}-{size}.{ext}",
        ],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no placeholder {size}"),
        "{}",
        run.stderr
    );
}

#[test]
fn files_already_there_are_refused_kept_or_replaced_as_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let (shoot, data, out) = (
        tmp.path().join("shoot"),
        tmp.path().join("data"),
        tmp.path().join("out"),
    );
    png(&shoot.join("a.png"), 64, 48, 1);
    png(&shoot.join("b.png"), 64, 48, 2);
    let args = |extra: &[&'static str]| {
        let mut v = vec![
            "process".to_string(),
            s(&shoot).to_string(),
            "--out".to_string(),
            s(&out).to_string(),
            "--preset".to_string(),
            "thumbnail".to_string(),
        ];
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };
    let run_with = |extra: &[&'static str]| {
        let a = args(extra);
        imgpipe(&data, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = run_with(&[]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert_eq!(files(&out), ["a-thumb.webp", "b-thumb.webp"]);
    let jobs = history(&data).len();

    // The same command again: refused before any job, naming the files, nothing written.
    fs::write(out.join("a-thumb.webp"), b"edited by hand").unwrap();
    let again = run_with(&[]);
    assert_eq!(again.code, 2, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stderr.contains("2 output files are there already")
            && again.stderr.contains("a-thumb.webp")
            && again.stderr.contains("--overwrite")
            && again.stderr.contains("--skip-existing"),
        "{}",
        again.stderr
    );
    assert_eq!(history(&data).len(), jobs, "no job was started");
    assert_eq!(
        fs::read(out.join("a-thumb.webp")).unwrap(),
        b"edited by hand"
    );

    // --skip-existing: inputs whose outputs are all there are skipped; a missing one is made.
    fs::remove_file(out.join("b-thumb.webp")).unwrap();
    let skip = run_with(&["--skip-existing"]);
    assert_eq!(skip.code, 0, "{}{}", skip.stdout, skip.stderr);
    assert!(
        skip.stdout
            .contains("2 images: 1 ok, 0 rejected, 0 failed, 1 skipped"),
        "{}",
        skip.stdout
    );
    assert_eq!(history(&data).len(), jobs + 1, "one job, for b.png");
    assert_eq!(
        fs::read(out.join("a-thumb.webp")).unwrap(),
        b"edited by hand"
    );
    assert!(out.join("b-thumb.webp").exists());

    // --overwrite: replaced.
    let over = run_with(&["--overwrite"]);
    assert_eq!(over.code, 0, "{}{}", over.stdout, over.stderr);
    assert_ne!(
        fs::read(out.join("a-thumb.webp")).unwrap(),
        b"edited by hand"
    );
    let both = imgpipe(
        &data,
        &[
            "process",
            "x.png",
            "--out",
            "o",
            "--overwrite",
            "--skip-existing",
        ],
    );
    assert_eq!(both.code, 2);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
}

#[test]
fn outputs_written_into_the_input_folder_are_not_taken_as_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (shoot, data) = (
        tmp.path().join("shoot"),
        tmp.path().join("shoot/imgpipe-data"),
    );
    png(&shoot.join("a.png"), 64, 48, 1);
    png(&shoot.join("b.png"), 64, 48, 2);
    // The data directory inside the folder too: its copies are not inputs either.
    for _ in 0..2 {
        let run = imgpipe(
            &data,
            &[
                "process",
                s(&shoot),
                "--out",
                s(&shoot),
                "--preset",
                "thumbnail",
                "--overwrite",
            ],
        );
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("2 images: 2 ok"), "{}", run.stdout);
    }
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&shoot),
            "--preset",
            "thumbnail",
            "--overwrite",
        ],
    );
    assert!(
        run.stdout.contains("2 earlier outputs under"),
        "{}",
        run.stdout
    );
    let top: Vec<String> = files(&shoot)
        .into_iter()
        .filter(|f| !f.starts_with("imgpipe-data"))
        .collect();
    assert_eq!(top, ["a-thumb.webp", "a.png", "b-thumb.webp", "b.png"]);
}

#[test]
fn a_job_whose_outputs_cannot_be_written_is_recorded_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let (shoot, data, out) = (
        tmp.path().join("shoot"),
        tmp.path().join("data"),
        tmp.path().join("out"),
    );
    png(&shoot.join("ok.png"), 64, 48, 1);
    png(&shoot.join("sub/blocked.png"), 64, 48, 2);
    // `out/sub` is a file, so the folder the second output goes in cannot be made.
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("sub"), b"not a folder").unwrap();
    let run = imgpipe(
        &data,
        &["process", s(&shoot), "--out", s(&out), "--width", "16"],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("blocked.png: failed (Export): writing"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("1 ok, 0 rejected, 1 failed"),
        "{}",
        run.stdout
    );
    let records = history(&data);
    let blocked = records
        .iter()
        .find(|r| {
            r["source"]["key"]
                .as_str()
                .unwrap()
                .ends_with("blocked.png")
        })
        .unwrap();
    assert_eq!(blocked["status"], "FAILED", "{blocked}");
    assert_eq!(blocked["error"]["type"], "Export");
    assert!(blocked["renditions"].as_array().unwrap().is_empty());
    // The original is still where it was and the record says where; the renditions it had
    // made are gone.
    let id = blocked["id"].as_str().unwrap();
    assert!(!data.join(format!("objects/renditions/local/{id}")).exists());
    let original = &blocked["source"]["original"];
    assert_eq!(
        Path::new(original["path"].as_str().unwrap()),
        fs::canonicalize(shoot.join("sub/blocked.png")).unwrap()
    );
}

/// Starts `imgpipe process` on `n` large images, one at a time with a slow encoder, and
/// waits until its first job has begun.
fn slow_run(tmp: &Path, n: u32) -> (std::process::Child, PathBuf) {
    let (shoot, data, out) = (tmp.join("shoot"), tmp.join("data"), tmp.join("out"));
    for i in 0..n {
        png(&shoot.join(format!("p{i:02}.png")), 1200, 900, i);
    }
    let child = Command::new(BIN)
        .args(["process", s(&shoot), "--out", s(&out), "--format", "avif"])
        .args(["--effort", "9", "--jobs", "1", "--data", s(&data)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let db = data.join("imgpipe.db");
    while !(db.exists() && data.join("objects/.refs/uploads").exists()) {
        assert!(started.elapsed() < Duration::from_secs(60), "no job began");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    (child, data)
}

#[test]
fn ctrl_c_prints_the_summary_and_records_the_stopped_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, data) = slow_run(tmp.path(), 6);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "slow to stop");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("interrupted: 6 images:") && stdout.contains("stopped"),
        "{stdout}"
    );
    assert!(
        stderr.contains(": failed (Interrupted): interrupted (Ctrl-C)"),
        "{stderr}"
    );
    let records = history(&data);
    assert!(!records.is_empty());
    for r in &records {
        assert_ne!(r["status"], "PROCESSING", "{r}");
        if r["status"] == "FAILED" {
            assert_eq!(r["error"]["type"], "Interrupted", "{r}");
        }
    }
    assert!(
        records.iter().any(|r| r["error"]["type"] == "Interrupted"),
        "{records:?}"
    );
}

#[test]
fn jobs_a_crash_left_processing_are_marked_interrupted_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, data) = slow_run(tmp.path(), 3);
    // SIGKILL: no handler runs, as in a crash or a power cut.
    child.kill().unwrap();
    child.wait().unwrap();
    let stuck: Vec<Value> = history(&data)
        .into_iter()
        .filter(|r| r["status"] == "PROCESSING")
        .collect();
    assert_eq!(stuck.len(), 1, "the job the crash stopped");
    let id = stuck[0]["id"].as_str().unwrap().to_string();

    png(&tmp.path().join("next.png"), 32, 32, 9);
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&tmp.path().join("next.png")),
            "--out",
            s(&tmp.path().join("next")),
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("1 job left unfinished by a stopped run is now FAILED (Interrupted)"),
        "{}",
        run.stderr
    );
    let records = history(&data);
    let r = records.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(r["status"], "FAILED");
    assert_eq!(r["error"]["type"], "Interrupted");
    let original = r["source"]["original"]["path"].as_str().unwrap();
    assert!(
        original.ends_with(".png") && Path::new(original).exists(),
        "the record says where the original is: {r}"
    );
}

#[test]
fn one_image_through_standard_input_and_output() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let src = tmp.path().join("in.png");
    png(&src, 64, 48, 4);
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args(["process", "-", "--out", "-", "--data", s(&data)])
            .args(extra)
            .stdin(fs::File::open(&src).unwrap())
            .output()
            .unwrap()
    };
    let out = run(&["--width", "32", "--format", "webp"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&out.stdout[..4], b"RIFF");
    assert_eq!(&out.stdout[8..12], b"WEBP", "the image alone on stdout");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -v reports on stderr, never into the image.
    let out = run(&["--width", "32", "--format", "png", "-v"]);
    assert_eq!(&out.stdout[1..4], b"PNG");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 image: 1 ok"));
    // A preset of three renditions has no one image to write.
    let out = run(&["--preset", "web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--out - writes one rendition of one input to standard output; this run has 1 input and 3 renditions"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn quiet_prints_only_failures_and_big_runs_do_not_list_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (shoot, data) = (tmp.path().join("shoot"), tmp.path().join("data"));
    for i in 0..12 {
        png(&shoot.join(format!("p{i:02}.png")), 24, 24, i);
    }
    fs::write(shoot.join("notes.jpg"), b"not a picture").unwrap();
    let out = tmp.path().join("out");
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&out),
            "--width",
            "8",
            "--quiet",
        ],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "", "nothing but failures");
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [format!(
            "{}: rejected (UnsupportedFormat): UnknownFormat: not an image format imgpipe recognises (checked the magic bytes)",
            shoot.join("notes.jpg").display()
        )],
        "one line for the one bad file, no log lines saying it again"
    );
    // Without --quiet: 12 files written, not listed; the summary says it all.
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&tmp.path().join("o2")),
            "--width",
            "8",
        ],
    );
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with("13 images: 12 ok, 1 rejected, 0 failed")
    );
    // -v lists them.
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&tmp.path().join("o3")),
            "--width",
            "8",
            "-v",
        ],
    );
    assert_eq!(run.stdout.lines().count(), 13, "{}", run.stdout);
}

#[test]
fn mistyped_names_get_a_suggestion() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    png(&tmp.path().join("a.png"), 8, 8, 1);
    let a = tmp.path().join("a.png");
    let run = imgpipe(
        &data,
        &["process", s(&a), "--out", "o", "--preset", "thumbnails"],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("unknown preset `thumbnails` (did you mean `thumbnail`?"),
        "{}",
        run.stderr
    );
    let run = imgpipe(&data, &["process", s(&a), "--out", "o", "--op", "sharpn=1"]);
    assert!(
        run.stderr.contains("did you mean `sharpen`?"),
        "{}",
        run.stderr
    );
    let recipe = tmp.path().join("r.json");
    fs::write(
        &recipe,
        r#"{"renditions": [{"name": "a", "resize": {"width": "800"}}]}"#,
    )
    .unwrap();
    let run = imgpipe(
        &data,
        &["process", s(&a), "--out", "o", "--recipe", s(&recipe)],
    );
    assert!(
        run.stderr.contains(
            "renditions[0].resize.width: invalid type: string \"800\", expected a whole number"
        ),
        "{}",
        run.stderr
    );
    // Commands list only the options they use.
    let help = Command::new(BIN)
        .args(["history", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--data") && !help.contains("--max-pixels") && !help.contains("--presets")
    );
}

#[test]
fn originals_are_kept_by_reference_unless_asked_to_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (shoot, data) = (tmp.path().join("shoot"), tmp.path().join("data"));
    png(&shoot.join("a.png"), 300, 200, 1);
    let size = fs::metadata(shoot.join("a.png")).unwrap().len();
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&tmp.path().join("o1")),
            "--width",
            "16",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let records = history(&data);
    let source = &records[0]["source"];
    assert_eq!(source["original"]["size"], size);
    assert!(source["original"]["modifiedNs"].as_u64().unwrap() > 0);
    assert_eq!(source["sha256"].as_str().unwrap().len(), 64);
    let copies: Vec<String> = files(&data.join("objects"))
        .into_iter()
        .filter(|f| f.starts_with("uploads/"))
        .collect();
    assert!(copies.is_empty(), "no copy of the original: {copies:?}");

    // --keep-originals: a copy in the data directory, and no reference.
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&tmp.path().join("o2")),
            "--width",
            "16",
            "--keep-originals",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let records = history(&data);
    let copied = records
        .iter()
        .find(|r| r["source"].get("original").is_none())
        .unwrap();
    let key = copied["source"]["key"].as_str().unwrap();
    assert_eq!(
        fs::read(data.join("objects").join(key)).unwrap(),
        fs::read(shoot.join("a.png")).unwrap()
    );
}

#[test]
fn inputs_are_never_written_over_nor_taken_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (shoot, data) = (tmp.path().join("shoot"), tmp.path().join("data"));
    png(&shoot.join("a.png"), 64, 48, 1);
    png(&shoot.join("b.png"), 64, 48, 2);
    let before = fs::read(shoot.join("a.png")).unwrap();
    // A name that maps each rendition onto its own input: refused, even with --overwrite.
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&shoot),
            "--out",
            s(&shoot),
            "--width",
            "16",
            "--format",
            "png",
            "--name",
            "{stem}.{ext}",
            "--overwrite",
        ],
    );
    // Named like this recipe's outputs, the inputs are taken for earlier outputs: nothing to
    // do, and nothing written. (Should a name still reach an input, the export refuses it.)
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("named like this recipe's outputs"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read(shoot.join("a.png")).unwrap(), before);

    // The same file given twice, and a folder with a file inside it, are one input each.
    let a = shoot.join("a.png");
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&a),
            s(&a),
            s(&shoot),
            "--out",
            s(&tmp.path().join("o")),
            "--width",
            "16",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("2 images: 2 ok"), "{}", run.stdout);

    // Earlier outputs named by a shell glob are left out too.
    let out = tmp.path().join("shoot");
    let glob_run = |data: &Path| {
        let mut files: Vec<String> = fs::read_dir(&shoot)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| p.to_str().unwrap().to_string())
            .collect();
        files.sort();
        let mut args = vec!["process".to_string()];
        args.extend(files);
        args.extend(["--out", s(&out), "--preset", "thumbnail", "--overwrite"].map(str::to_string));
        imgpipe(data, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = glob_run(&tmp.path().join("d2"));
    assert!(first.stdout.contains("2 images: 2 ok"), "{}", first.stdout);
    let second = glob_run(&tmp.path().join("d2"));
    assert!(
        second.stdout.contains("2 images: 2 ok") && second.stdout.contains("2 earlier outputs"),
        "{}",
        second.stdout
    );
}

#[test]
fn every_rendition_records_its_placeholder_and_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let src = tmp.path().join("red.png");
    fs::create_dir_all(tmp.path()).unwrap();
    let file = fs::File::create(&src).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 120, 60);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .unwrap()
        .write_image_data(&[200u8, 30, 40].repeat(120 * 60))
        .unwrap();
    let run = imgpipe(
        &data,
        &[
            "process",
            s(&src),
            "--out",
            s(&tmp.path().join("o")),
            "--width",
            "60",
            "--format",
            "png",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let records = history(&data);
    let r = &records[0]["renditions"][0];
    assert_eq!(r["dominantColor"], "#c81e28", "{r}");
    assert!(r["placeholder"].as_str().unwrap().len() > 20, "{r}");
}
