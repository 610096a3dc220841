//! What the steps tell operators: the span every step invocation runs in (so each log line
//! inside names its step, image and execution) and the application metrics, recorded through
//! the `metrics` facade. Which exporter receives them is the process's choice: the Lambdas
//! write CloudWatch Embedded Metric Format (`aws::emf`), `imgpipe serve` renders Prometheus
//! text, anything else records nothing.
//!
//! The names are Prometheus-style, since that exporter uses them as they are; `aws::emf` maps
//! each to its CloudWatch name, unit and dimension sets.

use imaging::Format;
use serde_json::Value;
use tracing::Span;

use crate::StepName;
use crate::keys;
use crate::model::Status;

/// How long one step invocation took, in milliseconds (histogram), by [`LABEL_STEP`].
pub const STEP_DURATION: &str = "imgpipe_step_duration_ms";
/// Images that ended COMPLETE / REJECTED / FAILED (counters), by [`LABEL_FORMAT`] of the source.
pub const IMAGES_PROCESSED: &str = "imgpipe_images_processed_total";
pub const IMAGES_REJECTED: &str = "imgpipe_images_rejected_total";
pub const IMAGES_FAILED: &str = "imgpipe_images_failed_total";
/// Megapixels of the sources Validate accepted, by source [`LABEL_FORMAT`]. A gauge that
/// only ever increases: the facade's counters hold whole numbers, and a 2.1 MP image must
/// not count as 2.
pub const MEGAPIXELS_IN: &str = "imgpipe_megapixels_in_total";
/// Bytes of renditions written (counter), by output [`LABEL_FORMAT`].
pub const BYTES_OUT: &str = "imgpipe_bytes_out_total";
/// Renditions rendered on demand by the transform route (counter), by output [`LABEL_FORMAT`]:
/// one per distinct transform, whatever the number of requests for it.
pub const TRANSFORMS_RENDERED: &str = "imgpipe_transforms_rendered_total";

pub const LABEL_STEP: &str = "step";
pub const LABEL_FORMAT: &str = "format";

/// A format as metrics name it: lowercase, `unknown` when the failure came before anyone
/// looked at the bytes.
pub fn format_label(format: Option<Format>) -> &'static str {
    match format {
        Some(Format::Jpeg) => "jpeg",
        Some(Format::Png) => "png",
        Some(Format::Webp) => "webp",
        Some(Format::Gif) => "gif",
        Some(Format::Tiff) => "tiff",
        Some(Format::Bmp) => "bmp",
        Some(Format::Avif) => "avif",
        Some(Format::Heic) => "heic",
        Some(Format::Qoi) => "qoi",
        None => "unknown",
    }
}

pub(crate) fn record_step_duration(step: StepName, ms: f64) {
    metrics::histogram!(STEP_DURATION, LABEL_STEP => step.as_str()).record(ms);
}

pub(crate) fn record_megapixels_in(format: Format, width: u32, height: u32) {
    let megapixels = f64::from(width) * f64::from(height) / 1_000_000.0;
    metrics::gauge!(MEGAPIXELS_IN, LABEL_FORMAT => format_label(Some(format)))
        .increment(megapixels);
}

pub(crate) fn record_bytes_out(format: Format, bytes: u64) {
    metrics::counter!(BYTES_OUT, LABEL_FORMAT => format_label(Some(format))).increment(bytes);
}

/// One transform rendered and stored, of `bytes` in `format`.
pub fn record_transform_rendered(format: Format, bytes: u64) {
    metrics::counter!(TRANSFORMS_RENDERED, LABEL_FORMAT => format_label(Some(format))).increment(1);
    record_bytes_out(format, bytes);
}

pub(crate) fn record_outcome(status: Status, source_format: Option<Format>) {
    let name = match status {
        Status::Complete => IMAGES_PROCESSED,
        Status::Rejected => IMAGES_REJECTED,
        Status::Failed => IMAGES_FAILED,
        Status::AwaitingUpload | Status::Processing => return,
    };
    metrics::counter!(name, LABEL_FORMAT => format_label(source_format)).increment(1);
}

/// The span one step invocation runs in: `step`, and the `image_id` and `execution_id` its
/// input names (each left out when the input does not say, e.g. a payload too broken to
/// read). Lambda's glue and the local runner both run [`crate::Steps::invoke`] inside it, so
/// every event of the step, the adapters' included, carries the three.
pub fn step_span(step: StepName, input: &Value) -> Span {
    let span = tracing::info_span!(
        "step",
        step = step.as_str(),
        image_id = tracing::field::Empty,
        execution_id = tracing::field::Empty,
    );
    let (image_id, execution_id) = ids_of(step, input);
    if let Some(id) = image_id {
        span.record("image_id", id.as_str());
    }
    if let Some(id) = execution_id {
        span.record("execution_id", id);
    }
    span
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// The image id of an upload key, as Validate will derive it.
fn id_of_upload(upload: &Value) -> Option<String> {
    let key = text(upload, &["key"])?;
    let key = match upload.get("keyEncoded").and_then(Value::as_bool) {
        Some(true) => keys::decode_event_key(key),
        _ => key.to_string(),
    };
    keys::identify(&key, text(upload, &["etag"]))
        .ok()
        .map(|ident| ident.id)
}

/// Read from the raw JSON rather than the typed input, so that even input the step refuses
/// is logged with whatever ids it has.
fn ids_of(step: StepName, input: &Value) -> (Option<String>, Option<&str>) {
    match step {
        StepName::Validate => (
            input.get("upload").and_then(id_of_upload),
            text(input, &["executionId"]),
        ),
        StepName::Resize | StepName::Filter | StepName::Store => (
            text(input, &["imageId"]).map(str::to_string),
            text(input, &["executionId"]),
        ),
        StepName::Notify => {
            let job = input
                .get("job")
                .or_else(|| input.get("state").and_then(|s| s.get("job")));
            let image_id = job
                .and_then(|j| text(j, &["imageId"]))
                .map(str::to_string)
                .or_else(|| input.get("state").and_then(id_of_upload));
            let execution_id = text(input, &["executionId"])
                .or_else(|| job.and_then(|j| text(j, &["executionId"])));
            (image_id, execution_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_step_input_names_its_image_and_execution() {
        let exec = "arn:aws:states:eu-west-1:1:execution:p:e1";
        let cases = [
            (
                StepName::Validate,
                json!({"upload": {"key": "uploads/alice/01ABC/a.jpg"}, "executionId": exec}),
            ),
            (
                StepName::Resize,
                json!({"imageId": "01ABC", "executionId": exec}),
            ),
            (
                StepName::Store,
                json!({"imageId": "01ABC", "executionId": exec}),
            ),
            (
                StepName::Notify,
                json!({"outcome": "success", "job": {"imageId": "01ABC", "executionId": exec}}),
            ),
            (
                StepName::Notify,
                json!({"outcome": "failure", "executionId": exec,
                       "state": {"key": "uploads/alice/01ABC/a.jpg", "error": {"Error": "X"}}}),
            ),
        ];
        for (step, input) in cases {
            let (image_id, execution_id) = ids_of(step, &input);
            assert_eq!(image_id.as_deref(), Some("01ABC"), "{step:?} {input}");
            assert_eq!(execution_id, Some(exec), "{step:?} {input}");
        }
        assert_eq!(ids_of(StepName::Filter, &json!([1])), (None, None));
        // A drop's id hashes its key: the key named in the bucket, not as S3 events encode it.
        let drop = |key: &str, encoded: bool| {
            let input = json!({"upload": {"key": key, "etag": "e", "keyEncoded": encoded}});
            ids_of(StepName::Validate, &input).0
        };
        assert_eq!(
            drop("uploads/x/my+photo.jpg", true),
            drop("uploads/x/my photo.jpg", false)
        );
    }

    #[test]
    fn formats_are_named_in_lowercase() {
        assert_eq!(format_label(Some(Format::Jpeg)), "jpeg");
        assert_eq!(format_label(Some(Format::Webp)), "webp");
        assert_eq!(format_label(None), "unknown");
    }
}
