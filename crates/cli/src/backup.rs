//! `imgpipe backup` and `imgpipe restore`: the data directory as one checked archive
//! (`local::backup` does the work; this is the command line and its summaries).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use local::backup::{self, Manifest};

#[derive(Args)]
pub struct BackupArgs {
    /// Data directory to back up; `imgpipe serve` may keep running on it.
    #[arg(long, env = "IMGPIPE_DATA", default_value = "imgpipe-data")]
    pub data: PathBuf,
    /// The archive to write (a tar file, replaced atomically, readable by its owner only: it
    /// holds the server key).
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The archive `imgpipe backup` wrote.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Data directory to restore into: missing or empty unless --force.
    #[arg(long, env = "IMGPIPE_DATA", default_value = "imgpipe-data")]
    pub data: PathBuf,
    /// Replace a data directory that already holds files (stop `imgpipe serve` on it first).
    #[arg(long)]
    pub force: bool,
    /// Only check the archive (every checksum, the database and its record count); write
    /// nothing to the data directory.
    #[arg(long, conflicts_with = "force")]
    pub verify_only: bool,
    /// Also restore the archive's auth.key, the key `imgpipe serve` signs tokens, upload
    /// forms and download links with, so those issued before the backup keep working. Only
    /// for an archive you made: whoever holds that key can sign admin tokens. Without this,
    /// serve makes a new key and tokens are issued again (`imgpipe token`).
    #[arg(long, conflicts_with = "verify_only")]
    pub keep_auth_key: bool,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn contents(m: &Manifest) -> String {
    format!(
        "{}, {}, {}",
        count(m.objects() as u64, "object"),
        mib(m.bytes()),
        count(m.records, "record")
    )
}

pub fn backup(args: BackupArgs) -> Result<()> {
    let started = Instant::now();
    let summary = backup::backup(&args.data, &args.to)
        .with_context(|| format!("backing up {}", args.data.display()))?;
    outln!(
        "imgpipe backup: {} -> {} ({}) in {:.2} s",
        contents(&summary.manifest),
        args.to.display(),
        mib(summary.archive_bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn restore(args: RestoreArgs) -> Result<()> {
    let started = Instant::now();
    if args.verify_only {
        let manifest = backup::verify(&args.from)
            .with_context(|| format!("verifying {}", args.from.display()))?;
        outln!(
            "imgpipe restore: {} is intact: {}, made {} by imgpipe {}; checked in {:.2} s",
            args.from.display(),
            contents(&manifest),
            manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            manifest.imgpipe_version,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let key = if args.keep_auth_key {
        backup::AuthKey::FromArchive
    } else {
        backup::AuthKey::New
    };
    let manifest = backup::restore(&args.from, &args.data, args.force, key).with_context(|| {
        format!(
            "restoring {} into {}",
            args.from.display(),
            args.data.display()
        )
    })?;
    outln!(
        "imgpipe restore: {} from the backup of {} -> {} in {:.2} s",
        contents(&manifest),
        manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        args.data.display(),
        started.elapsed().as_secs_f64()
    );
    let archived_key = manifest.entries.iter().any(|e| e.path == backup::AUTH_KEY);
    if archived_key && !args.keep_auth_key {
        eprintln!(
            "imgpipe restore: the archive's {} was not restored (it signs tokens, forms and \
             links, and whoever made the archive holds it): serve makes a new one, so issue \
             tokens again with `imgpipe token`; restore with --keep-auth-key to keep the old \
             ones working",
            backup::AUTH_KEY
        );
    }
    Ok(())
}
