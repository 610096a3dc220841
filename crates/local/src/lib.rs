//! imgpipe on one machine: filesystem object store, SQLite metadata, JSON-lines notifier, the
//! runner that executes the state machine definition with the pipeline's steps, and backups
//! of the data directory.

pub mod asl;
pub mod backup;
mod fs_store;
mod notifier;
mod run_lock;
mod runner;
mod sqlite;

use std::path::PathBuf;

pub use fs_store::{FsStore, create_private_dir};
pub use notifier::JsonlNotifier;
pub use runner::{
    DEFINITION, ExecutionStatus, INTERRUPTED, LocalPipeline, Outcome, RerenderEnd, StepExecutor,
};
pub use sqlite::SqliteMetadata;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Port(#[from] pipeline::PortError),
    #[error("state machine: {0}")]
    Asl(#[from] asl::AslError),
    #[error("{0}")]
    Other(String),
}
