//! Reprocess runs on AWS: `POST /v1/reprocess` starts an execution of the Reprocess state
//! machine (statemachine/reprocess.asl.json), named by the run's id; `GET /v1/reprocess/{id}`
//! reads that execution and its Distributed Map's item counts.

use api::reprocess::{ReprocessRequest, ReprocessRun, Reprocessor, RunStatus};
use api::{ApiError, Caller};
use async_trait::async_trait;
use aws_sdk_sfn::types::ExecutionStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::ReprocessConfig;

/// The Reprocess execution's input: what its Map reads (`prefix`, `filter` and the bounds,
/// by path) and the request as the admin made it, for `GET`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInput {
    /// Listed by the Map: `uploads/`, or one owner's `uploads/{owner}/`.
    pub prefix: String,
    pub filter: pipeline::reprocess::Filter,
    pub max_concurrency: u32,
    pub tolerated_failure_percentage: f64,
    pub request: ReprocessRequest,
    pub by: String,
}

impl RunInput {
    pub fn new(request: &ReprocessRequest, by: &Caller, config: &ReprocessConfig) -> RunInput {
        RunInput {
            prefix: match &request.owner {
                Some(owner) => format!("uploads/{owner}/"),
                None => "uploads/".to_string(),
            },
            filter: request.filter(),
            max_concurrency: config.max_concurrency,
            tolerated_failure_percentage: config.tolerated_failure_percentage,
            request: request.clone(),
            by: by.sub.clone(),
        }
    }
}

pub struct SfnReprocessor {
    client: aws_sdk_sfn::Client,
    config: ReprocessConfig,
}

impl SfnReprocessor {
    pub fn new(client: aws_sdk_sfn::Client, config: ReprocessConfig) -> SfnReprocessor {
        SfnReprocessor { client, config }
    }

    /// An execution's ARN from its state machine's and its name.
    fn execution_arn(&self, name: &str) -> String {
        format!(
            "{}:{name}",
            self.config
                .state_machine_arn
                .replacen(":stateMachine:", ":execution:", 1)
        )
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what}");
    ApiError::unavailable(format!("{what}: {e}"))
}

fn time(t: &aws_sdk_sfn::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[async_trait]
impl Reprocessor for SfnReprocessor {
    async fn start(
        &self,
        request: &ReprocessRequest,
        by: &Caller,
    ) -> Result<ReprocessRun, ApiError> {
        let id = pipeline::keys::new_image_id();
        let input = serde_json::to_string(&RunInput::new(request, by, &self.config))
            .map_err(ApiError::internal)?;
        let out = self
            .client
            .start_execution()
            .state_machine_arn(&self.config.state_machine_arn)
            .name(&id)
            .input(input)
            .send()
            .await
            .map_err(|e| {
                unavailable(
                    "starting the Reprocess state machine",
                    aws_sdk_sfn::error::DisplayErrorContext(e),
                )
            })?;
        Ok(ReprocessRun {
            id,
            status: RunStatus::Running,
            request: request.clone(),
            started_at: time(&out.start_date).unwrap_or_else(Utc::now),
            finished_at: None,
            total: None,
            reprocessed: 0,
            unchanged: 0,
            failed: 0,
            error: None,
        })
    }

    async fn run(&self, id: &str) -> Result<Option<ReprocessRun>, ApiError> {
        let arn = self.execution_arn(id);
        let out = match self
            .client
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_execution_does_not_exist()) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(unavailable(
                    "reading the reprocess run",
                    aws_sdk_sfn::error::DisplayErrorContext(e),
                ));
            }
        };
        let input: Option<RunInput> = out
            .input
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok());
        let (status, error) = match out.status {
            ExecutionStatus::Running | ExecutionStatus::PendingRedrive => {
                (RunStatus::Running, None)
            }
            ExecutionStatus::Succeeded => (RunStatus::Succeeded, None),
            other => (
                RunStatus::Failed,
                Some(
                    [
                        Some(other.as_str().to_string()),
                        out.error.clone(),
                        out.cause.clone(),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
                ),
            ),
        };
        let mut run = ReprocessRun {
            id: id.to_string(),
            status,
            request: input.map(|i| i.request).unwrap_or_default(),
            started_at: time(&out.start_date).unwrap_or_else(Utc::now),
            finished_at: out.stop_date.as_ref().and_then(time),
            total: None,
            reprocessed: 0,
            unchanged: 0,
            failed: 0,
            error,
        };
        // The Map's counts, once it has started. Each item is one image's execution, which
        // succeeds both when it re-rendered the image and when it found it up to date: in the
        // cloud `reprocessed` counts both (the per-image records tell them apart).
        match self.client.list_map_runs().execution_arn(&arn).send().await {
            Ok(list) => {
                if let Some(map_run) = list.map_runs.first() {
                    let described = self
                        .client
                        .describe_map_run()
                        .map_run_arn(&map_run.map_run_arn)
                        .send()
                        .await
                        .map_err(|e| {
                            unavailable(
                                "reading the reprocess run's map",
                                aws_sdk_sfn::error::DisplayErrorContext(e),
                            )
                        })?;
                    if let Some(c) = described.item_counts {
                        run.total = u64::try_from(c.total).ok();
                        run.reprocessed = u64::try_from(c.succeeded).unwrap_or(0);
                        run.failed = [c.failed, c.timed_out, c.aborted]
                            .into_iter()
                            .map(|n| u64::try_from(n).unwrap_or(0))
                            .sum();
                    }
                }
            }
            Err(e) => {
                // The run's status above is still right; only its counts are missing.
                tracing::warn!(error = %aws_sdk_sfn::error::DisplayErrorContext(e), "reprocess run's map runs not listed");
            }
        }
        Ok(Some(run))
    }
}
