//! The local pipeline: the steps over the local ports, driven by the ASL interpreter through
//! the very definition the cloud runs (statemachine/image_pipeline.asl.json).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use pipeline::io::Upload;
use pipeline::memory::MemoryWorkStore;
use pipeline::model::{ErrorInfo, ImageRecord, OriginalFile};
use pipeline::ports::{MetadataStore, Notifier, ObjectStore};
use pipeline::{Config, StepName, Steps, keys};
use serde_json::Value;
use tracing::Instrument;

use crate::asl::{self, Execution, RunOptions, Runner, StateMachine, TaskExecutor, TaskFailure};
use crate::run_lock::RunLock;
use crate::{FsStore, JsonlNotifier, LocalError, SqliteMetadata};

/// The definition's timeouts fit the 5 minutes an Express execution may last on AWS, where
/// every step has a Lambda's CPU to itself. Here all steps of all executions share the
/// machine's cores, so they get four times as long (20 minutes an image, 10 for Resize).
const EMBEDDED_TIMEOUT_SCALE: f64 = 4.0;

/// The state machine definition, compiled in so the binary needs no files beside it.
pub const DEFINITION: &str = include_str!("../../../statemachine/image_pipeline.asl.json");

/// Calls a step for each Task resource, the way Lambda would: JSON in, JSON out, and a
/// failure as (errorType, Cause JSON) exactly as Step Functions reports a Lambda error.
pub struct StepExecutor {
    pub steps: Steps,
}

#[async_trait]
impl TaskExecutor for StepExecutor {
    async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
        let Some(step) = StepName::from_resource(resource) else {
            return Err(TaskFailure {
                error: "States.Runtime".to_string(),
                cause: format!("no step is mapped to resource {resource}"),
            });
        };
        let span = pipeline::telemetry::step_span(step, &input);
        self.steps
            .invoke(step, input)
            .instrument(span)
            .await
            .map_err(|e| TaskFailure {
                error: e.name().to_string(),
                cause: serde_json::json!({"errorType": e.name(), "errorMessage": e.message})
                    .to_string(),
            })
    }
}

/// Everything `imgpipe` needs on one machine.
pub struct LocalPipeline {
    pub data: PathBuf,
    pub steps: Steps,
    pub store: Arc<FsStore>,
    pub runner: Runner<StepExecutor>,
    /// The records themselves, for what the embedded mode records outside the steps
    /// ([`LocalPipeline::fail_job`]); `None` over injected ports.
    records: Option<Arc<SqliteMetadata>>,
    /// Jobs a stopped process had left PROCESSING, marked FAILED (Interrupted) on opening.
    pub interrupted: Vec<ImageRecord>,
    _run_lock: Option<RunLock>,
}

/// The error kind of a job that stopped before it finished, with its process.
pub const INTERRUPTED: &str = "Interrupted";

/// What one execution ended with.
pub struct Outcome {
    pub execution: Execution,
    pub record: Option<ImageRecord>,
}

/// How a re-render ended, as `imgpipe reprocess` and `imgpipe serve` count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RerenderEnd {
    /// The record took the new renditions.
    Reprocessed,
    /// Nothing changed: not due any more when Validate looked, or held by another re-render.
    Unchanged,
    /// The execution failed with this error; the image keeps what it had.
    Failed(String),
}

impl Outcome {
    /// How the re-render of `before` ([`LocalPipeline::rerender`]) ended.
    pub fn rerender_end(&self, before: &ImageRecord) -> RerenderEnd {
        match &self.execution.status {
            ExecutionStatus::Failed { error, .. } => RerenderEnd::Failed(error.clone()),
            ExecutionStatus::Succeeded
                if self
                    .record
                    .as_ref()
                    .is_some_and(|now| now.reprocessed_at != before.reprocessed_at) =>
            {
                RerenderEnd::Reprocessed
            }
            ExecutionStatus::Succeeded => RerenderEnd::Unchanged,
        }
    }
}

impl LocalPipeline {
    /// Opens (creating if needed) a data directory: `objects/`, `imgpipe.db`, `events.jsonl`.
    pub fn open(data: &Path, config: Config) -> Result<LocalPipeline, LocalError> {
        crate::fs_store::create_private_dir(data)
            .map_err(|e| LocalError::Io(data.to_path_buf(), e))?;
        let store = Arc::new(FsStore::open(data.join("objects"))?);
        let db = data.join("imgpipe.db");
        let events = data.join("events.jsonl");
        let new_files: Vec<&Path> = [db.as_path(), events.as_path()]
            .into_iter()
            .filter(|p| !p.exists())
            .collect();
        let metadata = Arc::new(SqliteMetadata::open(&db)?);
        let notifier = Arc::new(JsonlNotifier::open(&events)?);
        // Records and events name every image and its owner: owner-only when made here.
        #[cfg(unix)]
        for path in new_files {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| LocalError::Io(path.to_path_buf(), e))?;
        }
        let mut interrupted = Vec::new();
        let run_lock = RunLock::take(data, || {
            let error = ErrorInfo {
                kind: INTERRUPTED.to_string(),
                message: "the process running this job stopped before it finished (Ctrl-C, \
                          a crash or a power cut); the original is kept: process it again"
                    .to_string(),
            };
            interrupted = metadata.fail_unfinished(&error)?;
            for r in &interrupted {
                store.remove_folder(&keys::renditions_prefix(&r.owner, &r.id))?;
                // The record says where an original kept by reference is, as a finished
                // job's does.
                if let Some(original) = store.reference_of(&r.source.key) {
                    metadata.set_original_now(&r.id, &original)?;
                }
            }
            Ok(())
        })?;
        let mut pipeline = Self::with_ports(
            data,
            config,
            store.clone(),
            store,
            metadata.clone(),
            notifier,
        )?;
        pipeline.records = Some(metadata);
        pipeline.interrupted = interrupted;
        pipeline._run_lock = Some(run_lock);
        Ok(pipeline)
    }

    /// Records that the job of `id` failed with `error` whatever status it reached (COMPLETE
    /// too: the command could not deliver its renditions), and removes the renditions it had
    /// made; the original stays. Without a record, `fallback` is recorded FAILED, if given.
    pub async fn fail_job(
        &self,
        id: &str,
        error: &ErrorInfo,
        fallback: Option<ImageRecord>,
    ) -> Result<(), LocalError> {
        let records = self
            .records
            .as_ref()
            .ok_or_else(|| LocalError::Other("no record store to write to".to_string()))?;
        let fallback_key = fallback.as_ref().map(|f| f.source.key.clone());
        let before = records.force_fail(id, error, fallback).await?;
        if let Some(before) = &before {
            self.store
                .remove_folder(&keys::renditions_prefix(&before.owner, &before.id))?;
        }
        // The record as written is the one before, or the fallback: no need to read it back.
        let key = before.map(|b| b.source.key).or(fallback_key);
        if let Some(original) = key.and_then(|k| self.store.reference_of(&k)) {
            records.set_original(id, &original).await?;
        }
        Ok(())
    }

    /// Builds the pipeline over given ports: the seam where tests inject faults.
    pub fn with_ports(
        data: &Path,
        config: Config,
        store: Arc<FsStore>,
        objects: Arc<dyn ObjectStore>,
        metadata: Arc<dyn MetadataStore>,
        notifier: Arc<dyn Notifier>,
    ) -> Result<LocalPipeline, LocalError> {
        let steps = Steps {
            config: Arc::new(config),
            uploads: objects.clone(),
            renditions: objects,
            work: Arc::new(MemoryWorkStore::new()),
            metadata,
            notifier,
        };
        let machine = Arc::new(StateMachine::from_json(DEFINITION)?);
        let runner = Runner::new(
            machine,
            Arc::new(StepExecutor {
                steps: steps.clone(),
            }),
            RunOptions {
                timeout_scale: EMBEDDED_TIMEOUT_SCALE,
                ..RunOptions::default()
            },
        );
        Ok(LocalPipeline {
            data: data.to_path_buf(),
            steps,
            store,
            runner,
            records: None,
            interrupted: Vec::new(),
            _run_lock: None,
        })
    }

    /// Shortens retry back-off (tests); 1.0 is real time.
    pub fn set_retry_delay_scale(&mut self, scale: f64) {
        self.runner.options_mut().retry_delay_scale = scale;
    }

    /// Copies a file into the store as a new upload of `owner`; returns the execution input.
    /// [`LocalPipeline::ingest`] from a file already open, named `name`: its bytes, read from
    /// the descriptor, become the upload. `None`, and nothing stored, when it holds more than
    /// the byte limit.
    pub fn ingest_open(
        &self,
        file: impl std::io::Read,
        name: &str,
        owner: &str,
    ) -> Result<Option<Upload>, LocalError> {
        let key = keys::upload_key(owner, &keys::new_image_id(), name);
        let max_bytes = self.steps.config.limits.max_bytes;
        let Some(size) = self.store.put_reader(&key, file, max_bytes)? else {
            return Ok(None);
        };
        Ok(Some(Upload {
            key,
            size: Some(size),
            ..Upload::default()
        }))
    }

    pub fn ingest(&self, path: &Path, owner: &str) -> Result<Upload, LocalError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("upload");
        let key = keys::upload_key(owner, &keys::new_image_id(), name);
        let size = self.store.put_file(&key, path)?;
        Ok(Upload {
            key,
            size: Some(size),
            ..Upload::default()
        })
    }

    /// [`LocalPipeline::ingest`] without the copy: the upload is the file where it lies,
    /// read while its size and modification time are what they are now.
    pub fn ingest_reference(
        &self,
        path: &Path,
        owner: &str,
    ) -> Result<(Upload, OriginalFile), LocalError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("upload");
        let key = keys::upload_key(owner, &keys::new_image_id(), name);
        let original = self.store.put_reference(&key, path)?;
        Ok((
            Upload {
                key,
                size: Some(original.size),
                ..Upload::default()
            },
            original,
        ))
    }

    /// Notes on the record of `id` that its original is kept by reference, as `original`
    /// ([`FsStore::reference_of`] its upload key).
    pub async fn note_original(&self, id: &str, original: &OriginalFile) -> Result<(), LocalError> {
        let records = self
            .records
            .as_ref()
            .ok_or_else(|| LocalError::Other("no record store to write to".to_string()))?;
        records.set_original(id, original).await?;
        Ok(())
    }

    /// Runs the state machine on one upload and returns how it ended with the record.
    pub async fn run(&self, upload: &Upload) -> Result<Outcome, LocalError> {
        let execution_id = format!("local:{}", ulid::Ulid::new());
        let input = serde_json::to_value(upload).map_err(|e| LocalError::Other(e.to_string()))?;
        let execution = self.runner.run(&execution_id, input).await?;
        let id = keys::identify(&upload.key, upload.etag.as_deref())
            .map_err(|e| LocalError::Other(e.to_string()))?
            .id;
        let record = self.steps.metadata.get(&id).await?;
        Ok(Outcome { execution, record })
    }

    /// Runs the state machine to re-render `record` with its preset's current definition
    /// (a no-op execution if it is not due any more), and returns how it ended with the
    /// record as it is now.
    pub async fn rerender(
        &self,
        record: &ImageRecord,
        filter: &pipeline::reprocess::Filter,
    ) -> Result<Outcome, LocalError> {
        let execution_id = format!("local:{}", ulid::Ulid::new());
        let upload = pipeline::reprocess::input_for(record, filter);
        let input = serde_json::to_value(&upload).map_err(|e| LocalError::Other(e.to_string()))?;
        let execution = self.runner.run(&execution_id, input).await?;
        let record = self.steps.metadata.get(&record.id).await?;
        Ok(Outcome { execution, record })
    }
}

pub use asl::ExecutionStatus;
