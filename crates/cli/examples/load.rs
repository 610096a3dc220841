//! Load against a running `imgpipe serve`: N clients, each uploading R images one after the
//! other (create the upload, post the form, poll until final), 503 + Retry-After honoured.
//! Prints one JSON report: images/s, latency percentiles, busy retries, errors, lost images.
//! bench/load.sh starts a server and runs this against it.
//!
//! cargo run --release -p imgpipe --example load -- --url URL --token TOKEN
//!     [--clients 100] [--rounds 10] [--size 1024x768]

#[path = "../tests/support/load.rs"]
mod load;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// A bearer token (`imgpipe token --user NAME`).
    #[arg(long)]
    token: String,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Size of the generated JPEG every client uploads.
    #[arg(long, default_value = "1024x768")]
    size: String,
}

fn size(text: &str) -> Result<(u32, u32)> {
    let (w, h) = text.split_once('x').context("--size: WIDTHxHEIGHT")?;
    let (w, h) = (w.parse()?, h.parse()?);
    if w == 0 || h == 0 {
        bail!("--size: both sides must be positive");
    }
    Ok((w, h))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (w, h) = match size(&args.size) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("load: {e:#}");
            return ExitCode::from(2);
        }
    };
    let report = load::run(load::Load {
        base_url: args.url.trim_end_matches('/').to_string(),
        token: args.token,
        clients: args.clients,
        rounds: args.rounds,
        image: Arc::new(load::jpeg(w, h)),
    })
    .await;
    match serde_json::to_string_pretty(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("load: {e}"),
    }
    if report.lost == 0 && report.server_errors == 0 && report.unexpected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
