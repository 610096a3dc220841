//! The steps' metrics (`pipeline::telemetry`) as CloudWatch Embedded Metric Format: a
//! `metrics` recorder that keeps what one invocation records and then writes it as one JSON
//! line on stdout, from which CloudWatch Logs extracts the metrics.
//!
//! Written here rather than taken from `metrics_cloudwatch_embedded`, which emits one
//! document per label set with that set as its only dimension set: the dashboard
//! (template.yaml) needs each image metric both as a total (dimension set `[]`) and by
//! `Format`, in one document, and fractional megapixels, which its integer counters lose.
//!
//! The contract with the dashboard, namespace `IMGPIPE_METRICS_NAMESPACE` (default `imgpipe`):
//!
//! | metric | unit | dimension sets |
//! |---|---|---|
//! | `StepDuration` | Milliseconds | `[Step]` |
//! | `ImagesProcessed`, `ImagesRejected`, `ImagesFailed` | Count | `[]`, `[Format]` |
//! | `MegapixelsIn` | None | `[]`, `[Format]` |
//! | `BytesOut` | Bytes | `[]`, `[Format]` |

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use pipeline::telemetry;
use serde_json::{Map, Value, json};

pub const NAMESPACE_ENV: &str = "IMGPIPE_METRICS_NAMESPACE";
pub const DEFAULT_NAMESPACE: &str = "imgpipe";

/// How one facade metric appears in CloudWatch.
struct Spec {
    name: &'static str,
    unit: &'static str,
    /// Also published without dimensions, as the total the dashboard graphs.
    total: bool,
}

fn spec(name: &str) -> Option<Spec> {
    let (name, unit, total) = match name {
        telemetry::STEP_DURATION => ("StepDuration", "Milliseconds", false),
        telemetry::IMAGES_PROCESSED => ("ImagesProcessed", "Count", true),
        telemetry::IMAGES_REJECTED => ("ImagesRejected", "Count", true),
        telemetry::IMAGES_FAILED => ("ImagesFailed", "Count", true),
        telemetry::MEGAPIXELS_IN => ("MegapixelsIn", "None", true),
        telemetry::BYTES_OUT => ("BytesOut", "Bytes", true),
        telemetry::TRANSFORMS_RENDERED => ("TransformsRendered", "Count", true),
        _ => return None,
    };
    Some(Spec { name, unit, total })
}

/// The dimension a facade label becomes; other labels are not published (each dimension
/// value is a metric of its own on the bill).
fn dimension(label: &str) -> Option<&'static str> {
    match label {
        telemetry::LABEL_STEP => Some("Step"),
        telemetry::LABEL_FORMAT => Some("Format"),
        _ => None,
    }
}

/// A metric of the contract with its dimension values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: &'static str,
    dimensions: BTreeMap<&'static str, String>,
}

#[derive(Debug)]
enum Sample {
    Count(u64),
    Sum(f64),
    Values(Vec<f64>),
}

type Samples = BTreeMap<Series, Sample>;

fn lock(samples: &Mutex<Samples>) -> MutexGuard<'_, Samples> {
    samples.lock().unwrap_or_else(|p| p.into_inner())
}

/// Collects one invocation's metrics; [`Emf::flush`] writes and forgets them. Clones share
/// what they collect, so one can be the global recorder and another flush it.
#[derive(Clone)]
pub struct Emf {
    namespace: Arc<str>,
    samples: Arc<Mutex<Samples>>,
}

impl Emf {
    pub fn new(namespace: &str) -> Emf {
        Emf {
            namespace: namespace.into(),
            samples: Arc::default(),
        }
    }

    /// Namespace from `IMGPIPE_METRICS_NAMESPACE`, else `imgpipe`.
    pub fn from_env() -> Emf {
        let namespace = std::env::var(NAMESPACE_ENV)
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        Emf::new(&namespace)
    }

    /// Makes this the process's recorder; a second one is refused.
    pub fn install(&self) -> Result<(), metrics::SetRecorderError<Emf>> {
        metrics::set_global_recorder(self.clone())
    }

    /// What was recorded since the last call, as EMF documents (usually one; more only when
    /// two values of the same dimension or metric cannot share one), and forgets it.
    pub fn take(&self, timestamp_ms: u64) -> Vec<Value> {
        let samples = std::mem::take(&mut *lock(&self.samples));
        let mut docs: Vec<Vec<(Series, Sample)>> = Vec::new();
        for (series, sample) in samples {
            let fits = |doc: &Vec<(Series, Sample)>| {
                doc.iter().all(|(other, _)| {
                    other.name != series.name
                        && series
                            .dimensions
                            .iter()
                            .all(|(k, v)| other.dimensions.get(k).is_none_or(|o| o == v))
                })
            };
            match docs.iter_mut().find(|doc| fits(doc)) {
                Some(doc) => doc.push((series, sample)),
                None => docs.push(vec![(series, sample)]),
            }
        }
        docs.into_iter()
            .map(|doc| self.document(doc, timestamp_ms))
            .collect()
    }

    fn document(&self, doc: Vec<(Series, Sample)>, timestamp_ms: u64) -> Value {
        // Metrics with the same dimension sets share one directive.
        let mut directives: Vec<(Vec<Vec<&str>>, Vec<Value>)> = Vec::new();
        let mut root = Map::new();
        for (series, sample) in doc {
            let Some(spec) = spec(series.name) else {
                continue;
            };
            let keys: Vec<&str> = series.dimensions.keys().copied().collect();
            let sets = if spec.total && !keys.is_empty() {
                vec![Vec::new(), keys]
            } else {
                vec![keys]
            };
            let metric = json!({"Name": spec.name, "Unit": spec.unit});
            match directives.iter_mut().find(|(s, _)| *s == sets) {
                Some((_, metrics)) => metrics.push(metric),
                None => directives.push((sets, vec![metric])),
            }
            for (k, v) in series.dimensions {
                root.insert(k.to_string(), Value::String(v));
            }
            let value = match sample {
                Sample::Count(n) => json!(n),
                Sample::Sum(x) => json!(x),
                Sample::Values(mut v) if v.len() == 1 => json!(v.remove(0)),
                Sample::Values(v) => json!(v),
            };
            root.insert(spec.name.to_string(), value);
        }
        let directives: Vec<Value> = directives
            .into_iter()
            .map(|(sets, metrics)| {
                json!({"Namespace": &*self.namespace, "Dimensions": sets, "Metrics": metrics})
            })
            .collect();
        root.insert(
            "_aws".to_string(),
            json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}),
        );
        Value::Object(root)
    }

    /// Writes what was recorded, one JSON line per document, stamped now.
    pub fn flush(&self, out: &mut impl Write) -> std::io::Result<()> {
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        for doc in self.take(now) {
            // One write per line, so concurrent log lines cannot split it.
            let mut line = doc.to_string();
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        out.flush()
    }

    fn cell(&self, key: &Key) -> Option<Arc<Cell>> {
        let name = spec_name(key.name())?;
        let dimensions = key
            .labels()
            .filter_map(|l| dimension(l.key()).map(|d| (d, l.value().to_string())))
            .collect();
        Some(Arc::new(Cell {
            series: Series { name, dimensions },
            samples: self.samples.clone(),
        }))
    }
}

/// The facade name as a `'static` key, for the metrics of the contract only.
fn spec_name(name: &str) -> Option<&'static str> {
    [
        telemetry::STEP_DURATION,
        telemetry::IMAGES_PROCESSED,
        telemetry::IMAGES_REJECTED,
        telemetry::IMAGES_FAILED,
        telemetry::MEGAPIXELS_IN,
        telemetry::BYTES_OUT,
        telemetry::TRANSFORMS_RENDERED,
    ]
    .into_iter()
    .find(|n| *n == name)
}

/// One series' handle: every update goes to the shared samples.
struct Cell {
    series: Series,
    samples: Arc<Mutex<Samples>>,
}

impl Cell {
    fn update(&self, f: impl FnOnce(Option<&mut Sample>) -> Option<Sample>) {
        let mut samples = lock(&self.samples);
        match samples.get_mut(&self.series) {
            Some(existing) => {
                if let Some(new) = f(Some(existing)) {
                    *existing = new;
                }
            }
            None => {
                if let Some(new) = f(None) {
                    samples.insert(self.series.clone(), new);
                }
            }
        }
    }

    fn add(&self, delta: f64) {
        self.update(|s| match s {
            Some(Sample::Sum(x)) => {
                *x += delta;
                None
            }
            _ => Some(Sample::Sum(delta)),
        });
    }
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.update(|s| match s {
            Some(Sample::Count(n)) => {
                *n = n.saturating_add(value);
                None
            }
            _ => Some(Sample::Count(value)),
        });
    }

    fn absolute(&self, value: u64) {
        self.update(|_| Some(Sample::Count(value)));
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.add(value);
    }

    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    fn set(&self, value: f64) {
        self.update(|_| Some(Sample::Sum(value)));
    }
}

impl HistogramFn for Cell {
    fn record(&self, value: f64) {
        self.update(|s| match s {
            Some(Sample::Values(v)) => {
                // EMF takes at most 100 values per metric; a step records one.
                if v.len() < 100 {
                    v.push(value);
                }
                None
            }
            _ => Some(Sample::Values(vec![value])),
        });
    }
}

impl Recorder for Emf {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.cell(key)
            .map(Counter::from_arc)
            .unwrap_or_else(Counter::noop)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.cell(key)
            .map(Gauge::from_arc)
            .unwrap_or_else(Gauge::noop)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.cell(key)
            .map(Histogram::from_arc)
            .unwrap_or_else(Histogram::noop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_717_171_717_000;

    fn record(emf: &Emf, f: impl FnOnce()) {
        metrics::with_local_recorder(emf, f);
    }

    #[test]
    fn a_store_invocation_is_one_document_with_totals_and_per_format_sets() {
        let emf = Emf::new("imgpipe/test");
        record(&emf, || {
            metrics::counter!(telemetry::BYTES_OUT, "format" => "webp").increment(14872);
            metrics::histogram!(telemetry::STEP_DURATION, "step" => "store").record(58.5);
        });
        assert_eq!(
            emf.take(T),
            [json!({
                "_aws": {
                    "Timestamp": T,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": "imgpipe/test",
                            "Dimensions": [[], ["Format"]],
                            "Metrics": [{"Name": "BytesOut", "Unit": "Bytes"}]
                        },
                        {
                            "Namespace": "imgpipe/test",
                            "Dimensions": [["Step"]],
                            "Metrics": [{"Name": "StepDuration", "Unit": "Milliseconds"}]
                        }
                    ]
                },
                "Format": "webp",
                "Step": "store",
                "BytesOut": 14872,
                "StepDuration": 58.5
            })]
        );
        assert!(emf.take(T).is_empty(), "a flush forgets what it wrote");
    }

    #[test]
    fn clashing_dimension_values_go_to_separate_documents_and_unknown_metrics_nowhere() {
        let emf = Emf::new("imgpipe");
        record(&emf, || {
            metrics::counter!(telemetry::BYTES_OUT, "format" => "webp").increment(10);
            metrics::counter!(telemetry::BYTES_OUT, "format" => "jpeg").increment(20);
            metrics::counter!(telemetry::BYTES_OUT, "format" => "jpeg").increment(5);
            metrics::gauge!(telemetry::MEGAPIXELS_IN, "format" => "jpeg").increment(1.5);
            metrics::gauge!(telemetry::MEGAPIXELS_IN, "format" => "jpeg").increment(0.25);
            metrics::counter!("imgpipe_http_requests_total", "route" => "/x").increment(1);
        });
        let docs = emf.take(T);
        assert_eq!(docs.len(), 2, "{docs:#?}");
        assert_eq!(
            (
                &docs[0]["Format"],
                &docs[0]["BytesOut"],
                &docs[0]["MegapixelsIn"]
            ),
            (&json!("jpeg"), &json!(25), &json!(1.75))
        );
        assert_eq!(
            docs[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([
                {"Name": "BytesOut", "Unit": "Bytes"},
                {"Name": "MegapixelsIn", "Unit": "None"}
            ])
        );
        assert_eq!(
            (&docs[1]["Format"], &docs[1]["BytesOut"]),
            (&json!("webp"), &json!(10))
        );
        assert!(docs.iter().all(|d| d.get("route").is_none()));
    }

    #[test]
    fn flush_writes_one_line_per_document() {
        let emf = Emf::new("imgpipe");
        record(&emf, || {
            metrics::histogram!(telemetry::STEP_DURATION, "step" => "notify").record(3.0);
        });
        let mut out = Vec::new();
        emf.flush(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let doc: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert!(doc["_aws"]["Timestamp"].as_u64().is_some_and(|t| t > T));
        let mut out = Vec::new();
        emf.flush(&mut out).unwrap();
        assert!(out.is_empty(), "nothing recorded, nothing written");
    }
}
