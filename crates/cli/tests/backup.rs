//! `imgpipe backup` and `imgpipe restore` from the outside: the real binary over a data
//! directory that `imgpipe process` filled from images made here, and archives damaged or
//! crafted by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imaging::{EncodeOptions, Format, Image, image};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_imgpipe");

fn imgpipe(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("IMGPIPE_DATA")
        .output()
        .unwrap()
}

/// Runs imgpipe and insists on success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = imgpipe(args);
    assert!(
        out.status.success(),
        "imgpipe {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs imgpipe and insists on the usage/setup error code; returns stderr.
fn refused(args: &[&str]) -> String {
    let out = imgpipe(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "imgpipe {args:?} should have been refused: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn encoded(w: u32, h: u32, format: Format, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x ^ y ^ seed) & 0xff) as u8,
        ])
    });
    imaging::encode(
        &Image::ImageRgb8(img),
        &EncodeOptions {
            format,
            quality: 85,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A data directory after `imgpipe process` of three JPEGs, two PNGs and one file that is
/// rejected (so quarantine/ has something), plus the server key `imgpipe token` makes.
fn filled_data_dir(root: &Path) -> PathBuf {
    let inputs = root.join("inputs");
    fs::create_dir_all(&inputs).unwrap();
    for (i, (w, h)) in [(640, 480), (300, 500), (1200, 800)]
        .into_iter()
        .enumerate()
    {
        let bytes = encoded(w, h, Format::Jpeg, i as u32);
        fs::write(inputs.join(format!("photo{i}.jpg")), bytes).unwrap();
    }
    for (i, (w, h)) in [(64, 64), (400, 300)].into_iter().enumerate() {
        let bytes = encoded(w, h, Format::Png, 7 + i as u32);
        fs::write(inputs.join(format!("drawing{i}.png")), bytes).unwrap();
    }
    fs::write(
        inputs.join("broken.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
    let data = root.join("data");
    let out = imgpipe(&[
        "process",
        s(&inputs),
        "--data",
        s(&data),
        "--out",
        s(&root.join("out")),
        // Originals in the store, as `serve` keeps uploads: what a backup carries.
        "--keep-originals",
    ]);
    // 1: the broken file was rejected, as intended.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&["token", "--data", s(&data), "--user", "alice"]);
    data
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file below `dir` but the database (which a snapshot rewrites page by page) and
/// SQLite's WAL files, by relative path, with its sha256.
fn checksums(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            // run.lock is which processes have the directory open, not data: never backed up.
            if !rel.starts_with("imgpipe.db") && rel != "run.lock" {
                out.insert(rel, sha256_hex(&fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every row of both tables, every column, in a fixed order.
fn rows(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT * FROM images ORDER BY id",
        "SELECT * FROM renditions ORDER BY image_id, name",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        let mut q = stmt.query([]).unwrap();
        while let Some(row) = q.next().unwrap() {
            let cols: Vec<rusqlite::types::Value> = (0..n).map(|i| row.get(i).unwrap()).collect();
            out.push(format!("{cols:?}"));
        }
    }
    out
}

fn history(data: &Path) -> String {
    ok(&["history", "--data", s(data), "--json", "--limit", "1000"])
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// What a directory holds, by name: to see that a refused restore left nothing behind.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The archive's entries in order: (path, size, offset of the data in the file).
fn tar_entries(archive: &Path) -> Vec<(String, u64, u64)> {
    let mut tar = tar::Archive::new(fs::File::open(archive).unwrap());
    tar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_str().unwrap().to_string(),
                e.size(),
                e.raw_file_position(),
            )
        })
        .collect()
}

#[test]
fn backup_then_restore_gives_back_every_object_and_record() {
    let tmp = tempfile::tempdir().unwrap();
    let data = filled_data_dir(tmp.path());
    let files = checksums(&data);
    let objects = files.keys().filter(|k| k.starts_with("objects/")).count();
    // 5 originals, 15 renditions, the rejected file's copy and its reason.
    assert!(objects >= 22, "{files:#?}");
    assert!(files.keys().any(|k| k.starts_with("objects/quarantine/")));
    assert!(files.contains_key("auth.key") && files.contains_key("events.jsonl"));
    let records = rows(&data.join("imgpipe.db"));
    let listed = history(&data);

    let archive = tmp.path().join("backups/imgpipe.tar");
    let line = ok(&["backup", "--data", s(&data), "--to", s(&archive)]);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains(" records") && line.contains(" s\n"), "{line}");
    #[cfg(unix)]
    assert_eq!(mode(&archive), 0o600, "the archive holds the server key");
    assert_eq!(
        names(&archive.with_file_name("")),
        ["imgpipe.tar"],
        "no temporary files are left beside the archive"
    );

    // The manifest comes last and lists every other entry.
    let entries = tar_entries(&archive);
    assert_eq!(entries.last().unwrap().0, "manifest.json");
    let mut tar = tar::Archive::new(fs::File::open(&archive).unwrap());
    let manifest: serde_json::Value = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
        .map(|e| serde_json::from_reader(e).unwrap())
        .unwrap();
    assert_eq!(manifest["format"], "imgpipe-backup");
    assert_eq!(manifest["records"], 6);
    let listed_entries = manifest["entries"].as_array().unwrap();
    assert_eq!(listed_entries.len(), entries.len() - 1);
    for e in listed_entries {
        let path = e["path"].as_str().unwrap();
        if let Some(sum) = files.get(path) {
            assert_eq!(e["sha256"].as_str(), Some(sum.as_str()), "{path}");
        } else {
            assert_eq!(path, "imgpipe.db");
        }
    }

    let checked = ok(&["restore", "--from", s(&archive), "--verify-only"]);
    assert!(checked.contains("is intact"), "{checked}");

    // By default the archive's signing key stays out, and the restore says so: whoever
    // made the archive holds it and could sign admin tokens with it.
    fs::remove_dir_all(&data).unwrap();
    let out = imgpipe(&["restore", "--from", s(&archive), "--data", s(&data)]);
    assert!(out.status.success());
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("auth.key was not restored") && warning.contains("--keep-auth-key"),
        "{warning}"
    );
    let mut without_key = files.clone();
    without_key.remove("auth.key");
    assert_eq!(checksums(&data), without_key);

    fs::remove_dir_all(&data).unwrap();
    let line = ok(&[
        "restore",
        "--from",
        s(&archive),
        "--data",
        s(&data),
        "--keep-auth-key",
    ]);
    assert!(
        line.contains("6 records") && line.contains(" s\n"),
        "{line}"
    );

    assert_eq!(checksums(&data), files);
    assert_eq!(rows(&data.join("imgpipe.db")), records);
    assert_eq!(history(&data), listed);
    #[cfg(unix)]
    {
        assert_eq!(mode(&data.join("auth.key")), 0o600);
        let upload = files
            .keys()
            .find(|k| k.starts_with("objects/uploads/"))
            .unwrap();
        assert_eq!(mode(&data.join(upload)), 0o600);
        assert_eq!(
            mode(&data),
            0o700,
            "a restored data directory is private too"
        );
    }
    assert_eq!(
        names(tmp.path()),
        ["backups", "data", "inputs", "out"],
        "no staging directory is left beside the data directory"
    );
}

#[test]
fn a_tampered_or_truncated_archive_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = filled_data_dir(tmp.path());
    let archive = tmp.path().join("good.tar");
    ok(&["backup", "--data", s(&data), "--to", s(&archive)]);
    let bytes = fs::read(&archive).unwrap();

    let (victim, size, offset) = tar_entries(&archive)
        .into_iter()
        .find(|(p, _, _)| p.starts_with("objects/renditions/"))
        .unwrap();
    let mut tampered = bytes.clone();
    let at = usize::try_from(offset + size / 2).unwrap();
    tampered[at] ^= 0x20;
    let bad = tmp.path().join("tampered.tar");
    fs::write(&bad, &tampered).unwrap();

    let before = names(tmp.path());
    let target = tmp.path().join("restored");
    let err = refused(&["restore", "--from", s(&bad), "--data", s(&target)]);
    assert!(
        err.contains(&format!("corrupt archive entry `{victim}`")),
        "{err}"
    );
    assert!(!target.exists(), "nothing half-restored");
    assert_eq!(names(tmp.path()), before, "no staging directory left");
    let err = refused(&["restore", "--from", s(&bad), "--verify-only"]);
    assert!(err.contains(&victim), "{err}");

    // Cut inside an object: the manifest, written last, is gone.
    let cut = tmp.path().join("cut.tar");
    fs::write(&cut, &bytes[..at]).unwrap();
    let before = names(tmp.path());
    let err = refused(&["restore", "--from", s(&cut), "--data", s(&target)]);
    assert!(err.contains("truncated archive"), "{err}");
    assert!(!target.exists());
    assert_eq!(names(tmp.path()), before);
}

/// A tar whose one entry is named by raw header bytes, which tar writers refuse to produce:
/// a regular file, or with `link` a symbolic link.
fn crafted(path: &Path, name: &[u8], link: Option<&str>) {
    let mut header = tar::Header::new_old();
    let body = b"evil\n";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(if link.is_some() {
        tar::EntryType::Symlink
    } else {
        tar::EntryType::Regular
    });
    header.set_mode(0o644);
    header.set_size(if link.is_some() { 0 } else { body.len() as u64 });
    if let Some(target) = link {
        header.set_link_name(target).unwrap();
    }
    header.set_cksum();
    let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
    let data: &[u8] = if link.is_some() { b"" } else { body };
    builder.append(&header, data).unwrap();
    builder.finish().unwrap();
}

#[test]
fn entries_that_could_escape_the_data_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let absolute = outside.join("absolute-evil");
    /// One crafted archive: its single entry's raw name, a link target for a symlink, and
    /// what the refusal must say.
    struct Case<'a> {
        label: &'a str,
        name: Vec<u8>,
        link: Option<&'a str>,
        reason: &'a str,
    }
    let cases = [
        Case {
            label: "dotdot",
            name: b"../evil".to_vec(),
            link: None,
            reason: "`..`",
        },
        Case {
            label: "nested",
            name: b"objects/../../evil".to_vec(),
            link: None,
            reason: "`..`",
        },
        Case {
            label: "absolute",
            name: s(&absolute).as_bytes().to_vec(),
            link: None,
            reason: "absolute path",
        },
        Case {
            label: "symlink",
            name: b"objects/link".to_vec(),
            link: Some(s(&outside)),
            reason: "symbolic link",
        },
    ];
    for Case {
        label,
        name,
        link,
        reason,
    } in cases
    {
        let archive = tmp.path().join(format!("{label}.tar"));
        crafted(&archive, &name, link);
        let target = tmp.path().join("restore").join("data");
        let err = refused(&["restore", "--from", s(&archive), "--data", s(&target)]);
        assert!(
            err.contains("unsafe archive entry") && err.contains(reason),
            "{label}: {err}"
        );
        assert!(!target.exists(), "{label}");
        let err = refused(&["restore", "--from", s(&archive), "--verify-only"]);
        assert!(err.contains("unsafe archive entry"), "{label}: {err}");
    }
    assert!(!tmp.path().join("evil").exists());
    assert!(!tmp.path().join("restore/evil").exists());
    assert!(!absolute.exists());
    assert!(names(&outside).is_empty());
}

#[test]
fn restore_into_a_non_empty_directory_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let data = filled_data_dir(tmp.path());
    let archive = tmp.path().join("b.tar");
    ok(&["backup", "--data", s(&data), "--to", s(&archive)]);

    let target = tmp.path().join("busy");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("keep.txt"), b"mine").unwrap();
    let err = refused(&["restore", "--from", s(&archive), "--data", s(&target)]);
    assert!(
        err.contains("target not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(target.join("keep.txt")).unwrap(), b"mine");

    // An empty directory is fine without --force.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    ok(&["restore", "--from", s(&archive), "--data", s(&empty)]);

    ok(&[
        "restore",
        "--from",
        s(&archive),
        "--data",
        s(&target),
        "--force",
        "--keep-auth-key",
    ]);
    assert!(!target.join("keep.txt").exists(), "replaced whole");
    assert_eq!(checksums(&target), checksums(&data));
    assert_eq!(
        rows(&target.join("imgpipe.db")),
        rows(&data.join("imgpipe.db"))
    );
    assert!(
        names(tmp.path()).iter().all(|n| !n.starts_with('.')),
        "the replaced directory is gone: {:?}",
        names(tmp.path())
    );
}

#[test]
fn backup_while_a_writer_holds_the_database_is_a_consistent_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = filled_data_dir(tmp.path());
    let db = data.join("imgpipe.db");
    let writer = rusqlite::Connection::open(&db).unwrap();
    let mode: String = writer
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Committed, but only in the WAL file: the snapshot must include it all the same.
    writer
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             INSERT INTO images (id, owner, status, source, recipe, error_type, error_message,
                 created_at, updated_at, execution_id, tags, expires_at) SELECT 'committed-in-wal', owner, status, source, recipe,
                 error_type, error_message, created_at, updated_at, execution_id, tags, expires_at
             FROM images LIMIT 1;",
        )
        .unwrap();
    let committed = rows(&db);
    // Open and uncommitted while the backup runs: the snapshot must not see it.
    writer
        .execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO images (id, owner, status, source, recipe, error_type, error_message,
                 created_at, updated_at, execution_id, tags, expires_at) SELECT 'uncommitted', owner, status, source, recipe,
                 error_type, error_message, created_at, updated_at, execution_id, tags, expires_at
             FROM images LIMIT 1;
             DELETE FROM renditions;",
        )
        .unwrap();
    assert!(fs::metadata(data.join("imgpipe.db-wal")).unwrap().len() > 0);

    let archive = tmp.path().join("live.tar");
    let line = ok(&["backup", "--data", s(&data), "--to", s(&archive)]);
    assert!(line.contains("7 records"), "{line}");
    writer.execute_batch("ROLLBACK").unwrap();
    drop(writer);

    let restored = tmp.path().join("restored");
    ok(&["restore", "--from", s(&archive), "--data", s(&restored)]);
    assert_eq!(rows(&restored.join("imgpipe.db")), committed);
    // The restored database is whole by itself: no WAL came with it.
    assert!(!restored.join("imgpipe.db-wal").exists());
}
