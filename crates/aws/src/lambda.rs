//! Everything a step Lambda's `main` needs: logging, configuration, clients built once per
//! container, metrics in Embedded Metric Format after every invocation, and step errors
//! surfaced as the Diagnostic `errorType` the state machine's Retry and Catch match on.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use pipeline::memory::ObjectWorkStore;
use pipeline::{StepError, StepName, Steps};
use serde_json::Value;
use tracing::Instrument;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::emf::Emf;
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

/// The JSON log format of the functions: one object per event with its fields and those of
/// every enclosing span at the top level (a step's `step`, `image_id` and `execution_id`),
/// so Logs Insights filters on them directly. No timestamp of our own: CloudWatch stamps
/// every line already.
pub fn json_logs<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    json_subscriber::layer()
        .with_writer(writer)
        .flatten_event(true)
        .flatten_span_list_on_top_level(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .without_time()
}

/// JSON logs on stdout for CloudWatch ([`json_logs`]). The level comes from `RUST_LOG`, else
/// Lambda's advanced logging control (`AWS_LAMBDA_LOG_LEVEL`), else info.
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
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(json_logs(std::io::stdout))
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

/// Runs one step on one event inside its span (`step`, `image_id`, `execution_id` on every
/// log line), logging a failure before it goes back to Step Functions.
pub async fn handle(steps: &Steps, step: StepName, payload: Value) -> Result<Value, StepFailure> {
    let span = pipeline::telemetry::step_span(step, &payload);
    async {
        steps.invoke(step, payload).await.map_err(|e| {
            tracing::error!(error_type = e.name(), reason = %e.message, "step failed");
            StepFailure(e)
        })
    }
    .instrument(span)
    .await
}

/// The whole of a step function's `main`.
pub async fn serve(step: StepName) -> Result<(), Error> {
    init_tracing();
    let emf = Emf::from_env();
    // Only a second recorder could be refused, and `serve` installs the only one.
    if emf.install().is_err() {
        tracing::warn!("a metrics recorder was installed already; no metrics will be written");
    }
    let steps = steps_from_env().await.inspect_err(|e| {
        tracing::error!(step = step.as_str(), error = %e, "cannot start");
    })?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let steps = steps.clone();
        let emf = emf.clone();
        async move {
            let result = handle(&steps, step, event.payload).await;
            // A container runs one invocation at a time, so what the recorder holds now is
            // this invocation's, failures included.
            if let Err(e) = emf.flush(&mut std::io::stdout().lock()) {
                tracing::warn!(error = %e, "cannot write metrics");
            }
            result
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use imaging::{EncodeOptions, Format, Image, image};
    use pipeline::ErrorKind;
    use pipeline::memory::{MemoryMetadata, MemoryNotifier, MemoryObjectStore, MemoryWorkStore};
    use serde_json::json;
    use std::future::Future;
    use std::sync::Mutex;

    const KEY: &str = "uploads/alice/01TEST/photo.jpg";
    const EXEC: &str = "arn:aws:states:eu-west-1:123456789012:execution:pipeline:e1";
    const T: u64 = 1_717_171_717_000;

    /// The steps over memory ports with a 400x300 JPEG uploaded at [`KEY`].
    fn world() -> Steps {
        let uploads = Arc::new(MemoryObjectStore::new());
        let img = image::RgbImage::from_fn(400, 300, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let jpeg = imaging::encode(
            &Image::ImageRgb8(img),
            &EncodeOptions {
                format: Format::Jpeg,
                quality: 80,
                ..Default::default()
            },
        )
        .unwrap();
        uploads.insert(KEY, jpeg, Default::default());
        Steps {
            config: Arc::new(pipeline::Config::default()),
            uploads: uploads.clone(),
            renditions: uploads,
            work: Arc::new(MemoryWorkStore::new()),
            metadata: Arc::new(MemoryMetadata::new()),
            notifier: Arc::new(MemoryNotifier::new()),
        }
    }

    /// Runs `fut` with `emf` recording, on a clock that stands still: durations are 0 ms.
    fn paused<F: Future>(emf: &Emf, fut: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        metrics::with_local_recorder(emf, || rt.block_on(fut))
    }

    fn validate_input() -> Value {
        json!({"upload": {"key": KEY}, "executionId": EXEC})
    }

    #[test]
    fn validate_then_notify_write_the_exact_emf_documents() {
        let steps = world();
        let emf = Emf::new("imgpipe/test");
        let job = paused(&emf, handle(&steps, StepName::Validate, validate_input())).unwrap();
        assert_eq!(
            emf.take(T),
            [json!({
                "_aws": {
                    "Timestamp": T,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": "imgpipe/test",
                            "Dimensions": [[], ["Format"]],
                            "Metrics": [{"Name": "MegapixelsIn", "Unit": "None"}]
                        },
                        {
                            "Namespace": "imgpipe/test",
                            "Dimensions": [["Step"]],
                            "Metrics": [{"Name": "StepDuration", "Unit": "Milliseconds"}]
                        }
                    ]
                },
                "Format": "jpeg",
                "Step": "validate",
                "MegapixelsIn": 0.12,
                "StepDuration": 0.0
            })]
        );

        let notify = json!({"outcome": "success", "job": job, "renditions": []});
        paused(&emf, handle(&steps, StepName::Notify, notify)).unwrap();
        assert_eq!(
            emf.take(T),
            [json!({
                "_aws": {
                    "Timestamp": T,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": "imgpipe/test",
                            "Dimensions": [[], ["Format"]],
                            "Metrics": [{"Name": "ImagesProcessed", "Unit": "Count"}]
                        },
                        {
                            "Namespace": "imgpipe/test",
                            "Dimensions": [["Step"]],
                            "Metrics": [{"Name": "StepDuration", "Unit": "Milliseconds"}]
                        }
                    ]
                },
                "Format": "jpeg",
                "Step": "notify",
                "ImagesProcessed": 1,
                "StepDuration": 0.0
            })]
        );
    }

    #[test]
    fn a_rejection_before_validate_counts_under_format_unknown() {
        let steps = world();
        let emf = Emf::new("imgpipe");
        let failure = json!({
            "outcome": "failure",
            "executionId": EXEC,
            "state": {
                "key": "uploads/alice/01BAD/notes.jpg",
                "error": {"Error": "InvalidImage", "Cause": "{\"errorMessage\":\"not an image\"}"}
            }
        });
        let out = paused(&emf, handle(&steps, StepName::Notify, failure)).unwrap();
        assert_eq!(out["status"], "REJECTED");
        assert_eq!(
            emf.take(T),
            [json!({
                "_aws": {
                    "Timestamp": T,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": "imgpipe",
                            "Dimensions": [[], ["Format"]],
                            "Metrics": [{"Name": "ImagesRejected", "Unit": "Count"}]
                        },
                        {
                            "Namespace": "imgpipe",
                            "Dimensions": [["Step"]],
                            "Metrics": [{"Name": "StepDuration", "Unit": "Milliseconds"}]
                        }
                    ]
                },
                "Format": "unknown",
                "Step": "notify",
                "ImagesRejected": 1,
                "StepDuration": 0.0
            })]
        );
    }

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_log_line_of_a_step_names_the_step_image_and_execution() {
        let steps = world();
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::registry().with(json_logs(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let emf = Emf::new("imgpipe");
            paused(&emf, handle(&steps, StepName::Validate, validate_input())).unwrap();
            // A refused payload still logs its failure with the ids it carries.
            let bad = json!({"imageId": "01TEST", "executionId": EXEC, "nope": 1});
            paused(&emf, handle(&steps, StepName::Resize, bad)).unwrap_err();
        });
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 2, "{text}");
        for line in &lines {
            let event: Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["image_id"], "01TEST", "{line}");
            assert_eq!(event["execution_id"], EXEC, "{line}");
            assert!(
                matches!(event["step"].as_str(), Some("validate" | "resize")),
                "{line}"
            );
            // Flattened span fields must not collide with the event's own.
            assert_eq!(line.matches("\"image_id\"").count(), 1, "{line}");
        }
        let validated = lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["message"] == "validated")
            .unwrap_or_else(|| panic!("no `validated` line in\n{text}"));
        assert_eq!(
            (&validated["step"], &validated["level"]),
            (&json!("validate"), &json!("INFO"))
        );
        let failed = lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["message"] == "step failed")
            .unwrap_or_else(|| panic!("no `step failed` line in\n{text}"));
        assert_eq!(
            (&failed["step"], &failed["error_type"]),
            (&json!("resize"), &json!("InvalidInput"))
        );
    }

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
