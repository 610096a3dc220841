//! Writes the generated test corpus into a folder: small valid images of every accepted kind
//! (`seed-*`) and the hostile files of tests/support/corpus.rs. scripts/fuzz seeds the fuzzer
//! with them; they are also handy for trying `imgpipe inspect` and `imgpipe process` by hand.
//!
//! cargo run -p imaging --example corpus -- DIR

#[path = "../tests/support/corpus.rs"]
mod corpus;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: corpus DIR");
        return ExitCode::from(2);
    };
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let result = std::fs::create_dir_all(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
        .and_then(|()| {
            let seeds = corpus::seeds();
            for (name, bytes) in &seeds {
                write(name, bytes)?;
            }
            let cases = corpus::corpus();
            for case in &cases {
                write(&case.file_name(), &case.bytes)?;
            }
            Ok(seeds.len() + cases.len())
        });
    match result {
        Ok(n) => {
            println!("{n} files in {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corpus: {e}");
            ExitCode::FAILURE
        }
    }
}
