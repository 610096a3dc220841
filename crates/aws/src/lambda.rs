//! Everything a step Lambda's `main` needs: logging, configuration, clients built once per
//! container, and step errors surfaced as the Diagnostic `errorType` the state machine's
//! Retry and Catch match on.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use pipeline::memory::ObjectWorkStore;
use pipeline::{StepError, StepName, Steps};
use serde_json::Value;
use tracing_subscriber::EnvFilter;

use crate::{Config, DynamoMetadata, S3Store, SnsNotifier};

pub use lambda_runtime::Error;

/// A step's failure as the handler returns it. `lambda_runtime` would otherwise name the
/// Rust type as `errorType`, which no state machine could match.
#[derive(Debug)]
pub struct StepFailure(pub StepError);

impl From<StepError> for StepFailure {
    fn from(e: StepError) -> Self {
        StepFailure(e)
    }
}

impl From<StepFailure> for Diagnostic {
    fn from(f: StepFailure) -> Diagnostic {
        diagnostic(&f.0)
    }
}

/// `errorType` is the stable step error name (`Transient`, `InvalidImage`, ...), and
/// `errorMessage` the message alone, without the name repeated.
pub fn diagnostic(e: &StepError) -> Diagnostic {
    Diagnostic {
        error_type: e.name().to_string(),
        error_message: e.message.clone(),
    }
}

/// JSON logs for CloudWatch: no ANSI colours and no timestamp of our own (CloudWatch stamps
/// every line already). The level comes from `RUST_LOG`, else Lambda's advanced logging
/// control (`AWS_LAMBDA_LOG_LEVEL`), else info.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
            .map(|l| match l.to_ascii_lowercase().as_str() {
                "fatal" => "error".to_string(),
                other => other.to_string(),
            })
            .unwrap_or_else(|_| "info".to_string());
        EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    // Already initialised (e.g. by a test) is fine: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .with_env_filter(filter)
        .try_init();
}

/// The steps over AWS: originals, quarantine and QOI intermediates (`work/`) in the uploads
/// bucket, renditions in theirs, the DynamoDB table and the SNS topics.
pub fn steps_for(config: &Config, sdk: &SdkConfig) -> Steps {
    let s3 = S3Store::client_for(sdk);
    let uploads = Arc::new(S3Store::new(s3.clone(), config.uploads_bucket.clone()));
    Steps {
        config: Arc::new(config.steps.clone()),
        uploads: uploads.clone(),
        renditions: Arc::new(S3Store::new(s3, config.renditions_bucket.clone())),
        work: Arc::new(ObjectWorkStore { store: uploads }),
        metadata: Arc::new(DynamoMetadata::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.table.clone(),
        )),
        notifier: Arc::new(SnsNotifier::new(
            aws_sdk_sns::Client::new(sdk),
            config.alerts_topic_arn.clone(),
            config.events_topic_arn.clone(),
        )),
    }
}

/// [`Config::from_env`] and the SDK configuration from the environment, once per container.
pub async fn steps_from_env() -> Result<Steps, Error> {
    let config = Config::from_env()?;
    let sdk = crate::sdk_config().await;
    Ok(steps_for(&config, &sdk))
}

/// Runs one step on one event, logging a failure before it goes back to Step Functions.
pub async fn handle(steps: &Steps, step: StepName, payload: Value) -> Result<Value, StepFailure> {
    steps.invoke(step, payload).await.map_err(|e| {
        tracing::error!(step = step.as_str(), error_type = e.name(), message = %e.message, "step failed");
        StepFailure(e)
    })
}

/// The whole of a step function's `main`.
pub async fn serve(step: StepName) -> Result<(), Error> {
    init_tracing();
    let steps = steps_from_env().await.inspect_err(|e| {
        tracing::error!(step = step.as_str(), error = %e, "cannot start");
    })?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let steps = steps.clone();
        async move { handle(&steps, step, event.payload).await }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::ErrorKind;
    use pipeline::memory::{MemoryMetadata, MemoryNotifier, MemoryObjectStore, MemoryWorkStore};

    #[test]
    fn step_errors_become_diagnostics_named_for_the_state_machine() {
        let d: Diagnostic = StepFailure(StepError::new(ErrorKind::Transient, "s3 slow")).into();
        assert_eq!(d.error_type, "Transient");
        assert_eq!(d.error_message, "s3 slow");
        let d: Diagnostic =
            StepFailure::from(StepError::new(ErrorKind::InvalidImage, "truncated")).into();
        assert_eq!(d.error_type, "InvalidImage");
    }

    #[tokio::test]
    async fn a_bad_payload_reaches_step_functions_as_invalid_input() {
        let steps = Steps {
            config: Arc::new(pipeline::Config::default()),
            uploads: Arc::new(MemoryObjectStore::new()),
            renditions: Arc::new(MemoryObjectStore::new()),
            work: Arc::new(MemoryWorkStore::new()),
            metadata: Arc::new(MemoryMetadata::new()),
            notifier: Arc::new(MemoryNotifier::new()),
        };
        let err = handle(&steps, StepName::Resize, serde_json::json!({"nope": 1}))
            .await
            .unwrap_err();
        let d = Diagnostic::from(err);
        assert_eq!(d.error_type, "InvalidInput");
        assert!(d.error_message.contains("input"), "{}", d.error_message);
    }
}
