//! The `imgpipe` command: the pipeline on one machine (process, inspect, history, presets),
//! its HTTP API (serve, token) and backups of its data directory (backup, restore).

/// `println!` for what the commands print: when stdout is closed early (`imgpipe inspect F |
/// head -1`), the command ends quietly with success instead of panicking on the write.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

mod backup;
mod process;
mod progress;
mod reprocess;
mod serve;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use pipeline::model::{ListQuery, Status};
use pipeline::{Config, Presets};

/// `imgpipe --help`: the commands grouped by what they work on (clap lists them in one
/// block). A test checks every command is here.
const HELP: &str = "\
{about-with-newline}
{usage-heading} {usage}

Your images:
  process    Process image files or folders into renditions
  presets    List the presets (named recipes)
  inspect    Show what an image file is and whether it would be accepted

The data directory:
  history    List past jobs
  reprocess  Re-render the images whose preset changed since they were made
  backup     Back up the data directory to one archive file
  restore    Restore a data directory from a backup archive, or only check one

The server:
  serve      Serve the HTTP API, the web page and the inbox folder
  token      Print a bearer token for `imgpipe serve`
  help       Print this message or the help of a command

Options:
{options}{after-help}";

#[derive(Parser)]
#[command(
    name = "imgpipe",
    version,
    about = "Image pipeline: validate, resize, filter and store renditions of your images",
    long_about = "Image pipeline: validate, resize, filter and store renditions of your images.\n\n\
        On one machine imgpipe keeps renditions, a SQLite record of every job (with where its \
        original is) and an events log in a data directory (default ./imgpipe-data). The same \
        steps and state machine run on AWS Lambda + Step Functions when deployed.",
    help_template = HELP,
    after_help = "Examples:\n  imgpipe process photos/ --preset web --out out/\n  \
        imgpipe process a.jpg --resize 800x600 --fit cover --op grayscale --op blur=2 --format webp --out out/\n  \
        imgpipe inspect photo.jpg\n  imgpipe history\n  \
        imgpipe serve --addr 127.0.0.1:8080\n  imgpipe token --user alice\n  \
        imgpipe backup --to imgpipe-backup.tar\n  imgpipe restore --from imgpipe-backup.tar --data restored/"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log more (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// How log lines on stderr look: `json` gives one object per line, with the `step`,
    /// `image_id` and `execution_id` of the step it comes from, like the Lambdas' logs.
    #[arg(
        long,
        value_enum,
        env = "IMGPIPE_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Process image files or folders into renditions.
    Process(process::ProcessArgs),
    /// List the presets (named recipes).
    Presets(PresetsArgs),
    /// Show what an image file is and whether it would be accepted.
    Inspect(InspectArgs),
    /// List past jobs from the data directory.
    History(HistoryArgs),
    /// Re-render the images whose preset changed since they were made, from their originals.
    Reprocess(reprocess::ReprocessArgs),
    /// Serve the HTTP API, the web page and the inbox folder.
    Serve(serve::ServeArgs),
    /// Print a bearer token for `imgpipe serve`.
    Token(token::TokenArgs),
    /// Back up the data directory (records, objects, server key) to one archive file.
    Backup(backup::BackupArgs),
    /// Restore a data directory from a backup archive, checking every entry, or only check it.
    Restore(backup::RestoreArgs),
}

/// Options shared by the commands that run the pipeline.
#[derive(Args, Clone)]
pub struct CommonArgs {
    #[command(flatten)]
    pub data: DataArg,
    #[command(flatten)]
    pub presets: PresetsFileArg,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The data directory, for every command that reads or writes it.
#[derive(Args, Clone)]
pub struct DataArg {
    /// Data directory: originals, renditions, the SQLite database and events.jsonl.
    #[arg(
        long = "data",
        env = "IMGPIPE_DATA",
        default_value = "imgpipe-data",
        help_heading = "Data directory"
    )]
    pub dir: PathBuf,
}

#[derive(Args, Clone)]
pub struct PresetsFileArg {
    /// A presets JSON file to use instead of the built-in presets.
    #[arg(long = "presets", env = "IMGPIPE_PRESETS", help_heading = "Recipe")]
    pub file: Option<PathBuf>,
}

impl PresetsFileArg {
    pub fn load(&self) -> Result<Presets> {
        match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading presets file {}", path.display()))?;
                Ok(Presets::from_json(&text).with_context(|| format!("in {}", path.display()))?)
            }
            None => Ok(Presets::builtin()),
        }
    }
}

/// What an image may be, for the commands that decide whether one is accepted.
#[derive(Args, Clone)]
pub struct LimitArgs {
    /// Largest accepted image, in pixels (width x height).
    #[arg(long, env = "IMGPIPE_MAX_PIXELS", default_value_t = imaging::Limits::default().max_pixels, help_heading = "Limits")]
    pub max_pixels: u64,
    /// Largest accepted file, in bytes.
    #[arg(long, env = "IMGPIPE_MAX_BYTES", default_value_t = imaging::Limits::default().max_bytes, help_heading = "Limits")]
    pub max_bytes: u64,
    /// Most pixels one job may hold at once: the source plus every resized rendition
    /// (default: 4 x --max-pixels). A recipe over it is refused as RecipeTooLarge.
    #[arg(long, env = "IMGPIPE_MAX_JOB_PIXELS", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub max_job_pixels: Option<u64>,
}

impl LimitArgs {
    pub fn limits(&self) -> imaging::Limits {
        imaging::Limits {
            max_pixels: self.max_pixels,
            max_bytes: self.max_bytes,
            ..imaging::Limits::default()
        }
    }
}

/// How many images are processed at once: `--jobs`, else the number of cores.
pub fn workers(requested: Option<usize>) -> usize {
    requested
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}

impl CommonArgs {
    pub fn config(&self) -> Result<Config> {
        Ok(Config {
            limits: self.limits.limits(),
            presets: self.presets.load()?,
            max_job_pixels: self.limits.max_job_pixels,
            ..Config::default()
        })
    }
}

#[derive(Args)]
struct PresetsArgs {
    #[command(flatten)]
    presets: PresetsFileArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// The image file.
    file: PathBuf,
    #[command(flatten)]
    limits: LimitArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct HistoryArgs {
    #[command(flatten)]
    data: DataArg,
    /// Only jobs with this status (COMPLETE, REJECTED, FAILED, PROCESSING, AWAITING_UPLOAD).
    #[arg(long)]
    status: Option<Status>,
    /// Only jobs with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// How many jobs, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn init_tracing(verbose: u8, format: LogFormat, command: &Command) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let default = match verbose {
        // `process` names each rejected or failed file with its reason itself: the steps'
        // and the alert log's warnings about the same file would say it twice more.
        0 if matches!(command, Command::Process(_)) => {
            "warn,pipeline::steps=error,local::notifier=error"
        }
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(progress::LogWriter)
            // No colour codes in logs that go to a file (`imgpipe serve 2>serve.log`).
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // Span fields at the top level of each line, so `image_id` is one key to filter on
        // whether the event or its step span carries it.
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(
                json_subscriber::layer()
                    .with_writer(progress::LogWriter)
                    .flatten_event(true)
                    .flatten_span_list_on_top_level(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_target(false),
            )
            .try_init()
            .map_err(Into::into),
    };
}

/// A write to stdout failed: a closed pipe ends the process as if the output had been read;
/// anything else is reported.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(2);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.log_format, &cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Process(args) => process::run(args, cli.verbose).await,
            Command::Presets(args) => presets(args).map(|()| true),
            Command::Inspect(args) => inspect(args),
            Command::History(args) => history(args).await.map(|()| true),
            Command::Reprocess(args) => reprocess::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Token(args) => token::run(args).map(|()| true),
            Command::Backup(args) => backup::backup(args).map(|()| true),
            Command::Restore(args) => backup::restore(args).map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn presets(args: PresetsArgs) -> Result<()> {
    let config = Config {
        presets: args.presets.load()?,
        ..Config::default()
    };
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = config
            .presets
            .iter()
            .map(|(name, recipe)| Ok((name.to_string(), serde_json::to_value(recipe)?)))
            .collect::<Result<_>>()?;
        outln!("{}", serde_json::to_string_pretty(&map)?);
        return Ok(());
    }
    for (name, recipe) in config.presets.iter() {
        let marker = if name == config.default_preset {
            " (default)"
        } else {
            ""
        };
        outln!(
            "{name}{marker}: {}",
            recipe.description.as_deref().unwrap_or("")
        );
        for r in &recipe.renditions {
            outln!("  {:<10} {}", r.name, process::describe_rendition(r));
        }
    }
    Ok(())
}

fn inspect(args: InspectArgs) -> Result<bool> {
    let config = Config {
        limits: args.limits.limits(),
        ..Config::default()
    };
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let (header, error) = match imaging::probe(&bytes, &config.limits) {
        Ok(h) if !h.format.is_decodable() => {
            let e = imaging::Error::Unsupported(format!("{:?}", h.format));
            (Some(h), Some(pipeline::StepError::from(e)))
        }
        Ok(h) => (Some(h), None),
        Err(e) => (None, Some(pipeline::StepError::from(e))),
    };
    if args.json {
        let value = serde_json::json!({
            "file": args.file,
            "bytes": bytes.len(),
            "header": header,
            "upright": header.as_ref().map(|h| {
                let (w, ht) = h.oriented_dims();
                serde_json::json!({ "width": w, "height": ht })
            }),
            "accepted": error.is_none(),
            "error": error.as_ref().map(|e| serde_json::json!({"type": e.name(), "message": e.message})),
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(error.is_none());
    }
    outln!("file:        {}", args.file.display());
    outln!("bytes:       {}", bytes.len());
    if let Some(h) = &header {
        let (w, ht) = h.oriented_dims();
        outln!("format:      {:?}", h.format);
        outln!("stored:      {}x{}", h.width, h.height);
        outln!("orientation: {} (upright {w}x{ht})", h.orientation);
        let alpha = if h.has_alpha { " with alpha" } else { "" };
        outln!("colour:      {}{alpha}", h.color);
        match &h.color_profile {
            Some(p) => {
                let srgb = if p.srgb { ", already sRGB" } else { "" };
                outln!(
                    "profile:     {} ({} {}{srgb})",
                    p.description,
                    p.color_space,
                    p.source
                );
                if let Some(w) = &p.warning {
                    outln!("             warning: {w}");
                }
            }
            None => outln!("profile:     none (taken as sRGB)"),
        }
        let first = if h.frames > 1 {
            " (the first is used)"
        } else {
            ""
        };
        outln!("frames:      {}{first}", h.frames);
    }
    match &error {
        None => outln!("validation:  accepted"),
        Some(e) => outln!("validation:  rejected: {} ({})", e.name(), e.message),
    }
    Ok(error.is_none())
}

async fn history(args: HistoryArgs) -> Result<()> {
    let db = args.data.dir.join("imgpipe.db");
    if !db.exists() {
        anyhow::bail!(
            "no jobs yet: {} does not exist (run `imgpipe process` first, or pass --data)",
            db.display()
        );
    }
    let metadata = local::SqliteMetadata::open(&db)?;
    use pipeline::ports::MetadataStore;
    let page = metadata
        .list(&ListQuery {
            owner: None,
            status: args.status,
            tag: args.tag.clone(),
            limit: args.limit,
            ..ListQuery::default()
        })
        .await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&page.items)?);
        return Ok(());
    }
    if page.items.is_empty() {
        outln!("no jobs match");
    }
    for r in &page.items {
        let name = r.source.key.rsplit('/').next().unwrap_or(&r.source.key);
        outln!(
            "{}  {:<9} {}  {}",
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.status.as_str(),
            r.id,
            name
        );
        for rend in &r.renditions {
            outln!(
                "    {:<10} {:>5}x{:<5} {:>9} bytes  {:?}  {}",
                rend.name,
                rend.width,
                rend.height,
                rend.bytes,
                rend.format,
                rend.key
            );
        }
        if let Some(original) = &r.source.original {
            outln!("    original: {} (kept where it is)", original.path);
        }
        if let Some(e) = &r.error {
            outln!("    error: {}: {}", e.kind, e.message);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_grouped_help_lists_every_command() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            assert!(
                HELP.contains(&format!("\n  {:<10} ", sub.get_name())),
                "`{}` is missing from imgpipe --help",
                sub.get_name()
            );
        }
        let listed = HELP.lines().filter(|l| l.starts_with("  ")).count();
        assert_eq!(
            listed,
            cli.get_subcommands().count() + 1,
            "and nothing else (+ help)"
        );
    }
}
