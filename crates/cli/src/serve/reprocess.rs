//! `POST /v1/reprocess` in `imgpipe serve`: a run re-renders in this process, through the
//! same state machine as uploads and `imgpipe reprocess`, beside the upload workers (the
//! compute slots bound both together). One run at a time; runs are kept in memory, the last
//! [`KEPT_RUNS`] of them, so a restart forgets them (the records keep `reprocessedAt`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use api::reprocess::{ReprocessRequest, ReprocessRun, Reprocessor, RunStatus};
use api::{ApiError, Caller};
use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use http::StatusCode;
use local::{LocalPipeline, RerenderEnd};

/// Finished runs kept for `GET /v1/reprocess/{id}`.
const KEPT_RUNS: usize = 100;

pub struct LocalReprocessor {
    pipeline: Arc<LocalPipeline>,
    jobs: usize,
    runs: Arc<Mutex<BTreeMap<String, ReprocessRun>>>,
}

impl LocalReprocessor {
    pub fn new(pipeline: Arc<LocalPipeline>, jobs: usize) -> LocalReprocessor {
        LocalReprocessor {
            pipeline,
            jobs: jobs.max(1),
            runs: Arc::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Reprocessor for LocalReprocessor {
    async fn start(
        &self,
        request: &ReprocessRequest,
        by: &Caller,
    ) -> Result<ReprocessRun, ApiError> {
        let run = {
            let mut runs = lock(&self.runs);
            if let Some(busy) = runs.values().find(|r| r.status == RunStatus::Running) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "reprocess run {} is under way; follow it at /v1/reprocess/{}",
                        busy.id, busy.id
                    ),
                ));
            }
            // Ids are ULIDs: in time order, so the oldest go first.
            while runs.len() >= KEPT_RUNS {
                let Some(oldest) = runs.keys().next().cloned() else {
                    break;
                };
                runs.remove(&oldest);
            }
            let run = ReprocessRun {
                // A ULID, as image ids are.
                id: pipeline::keys::new_image_id(),
                status: RunStatus::Running,
                request: request.clone(),
                started_at: Utc::now(),
                finished_at: None,
                total: None,
                reprocessed: 0,
                unchanged: 0,
                failed: 0,
                error: None,
            };
            runs.insert(run.id.clone(), run.clone());
            run
        };
        tracing::info!(run = %run.id, by = %by.sub, "reprocess run started");
        tokio::spawn(execute(
            self.pipeline.clone(),
            self.runs.clone(),
            run.id.clone(),
            request.clone(),
            self.jobs,
        ));
        Ok(run)
    }

    async fn run(&self, id: &str) -> Result<Option<ReprocessRun>, ApiError> {
        Ok(lock(&self.runs).get(id).cloned())
    }
}

/// Re-renders what the request selects, counting into the run as each image ends.
async fn execute(
    pipeline: Arc<LocalPipeline>,
    runs: Arc<Mutex<BTreeMap<String, ReprocessRun>>>,
    id: String,
    request: ReprocessRequest,
    jobs: usize,
) {
    let update = |f: &dyn Fn(&mut ReprocessRun)| {
        if let Some(run) = lock(&runs).get_mut(&id) {
            f(run);
        }
    };
    let filter = request.filter();
    let selection = match pipeline::reprocess::select(
        pipeline.steps.metadata.as_ref(),
        request.owner.as_deref(),
        &filter,
        &pipeline.steps.config.presets,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(run = %id, error = %e, "reprocess run could not list the images");
            update(&|r| {
                r.status = RunStatus::Failed;
                r.finished_at = Some(Utc::now());
                r.error = Some(format!("listing the images: {e}"));
            });
            return;
        }
    };
    let not_due = (selection.up_to_date + selection.skipped_total()) as u64;
    update(&|r| {
        r.total = Some(selection.due.len() as u64 + not_due);
        r.unchanged = not_due;
    });
    futures::stream::iter(selection.due)
        .for_each_concurrent(jobs, |record| {
            let pipeline = pipeline.clone();
            let filter = filter.clone();
            let update = &update;
            async move {
                match pipeline.rerender(&record, &filter).await {
                    Ok(o) => match o.rerender_end(&record) {
                        RerenderEnd::Reprocessed => update(&|r| r.reprocessed += 1),
                        RerenderEnd::Unchanged => update(&|r| r.unchanged += 1),
                        RerenderEnd::Failed(_) => update(&|r| r.failed += 1),
                    },
                    Err(e) => {
                        tracing::error!(image_id = %record.id, error = %e, "re-render did not run");
                        update(&|r| r.failed += 1);
                    }
                }
            }
        })
        .await;
    update(&|r| {
        r.status = RunStatus::Succeeded;
        r.finished_at = Some(Utc::now());
    });
    tracing::info!(run = %id, "reprocess run finished");
}
