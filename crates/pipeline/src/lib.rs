//! imgpipe domain: recipes and presets, step inputs/outputs, the steps over ports, step errors.

mod error;
pub mod io;
pub mod keys;
pub mod memory;
pub mod model;
pub mod operations;
pub mod output;
pub mod ports;
mod recipe;
pub mod render;
pub mod reprocess;
mod steps;
pub mod suggest;
pub mod telemetry;
pub mod transform;

pub use error::{ErrorKind, PortError, StepError};
pub use recipe::{
    AUTO_TARGET_RANGE, BUILTIN_PRESETS, DEFAULT_QUALITY, MAX_DIMENSION, Presets, Quality, Recipe,
    Rendition, valid_name,
};
pub use steps::{
    AWAITING_UPLOAD_TTL_HOURS, ComputeSlots, Config, FORM_METADATA, HEADER_BYTES, LargeJobs,
    RENDITION_CACHE_CONTROL, Steps,
};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The steps by name: folder functions/<step>, ASL resource `${<Step>FunctionArn}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepName {
    Validate,
    Resize,
    Filter,
    Store,
    Notify,
}

/// The `ResizeLarge` state's Task `Resource`: sources over the large-image pixel count.
pub const RESIZE_LARGE_RESOURCE: &str = "${ResizeLargeFunctionArn}";

impl StepName {
    pub const ALL: [StepName; 5] = [
        StepName::Validate,
        StepName::Resize,
        StepName::Filter,
        StepName::Store,
        StepName::Notify,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Validate => "validate",
            StepName::Resize => "resize",
            StepName::Filter => "filter",
            StepName::Store => "store",
            StepName::Notify => "notify",
        }
    }

    /// The Task `Resource` the state machine names this step by.
    pub fn resource(self) -> &'static str {
        match self {
            StepName::Validate => "${ValidateFunctionArn}",
            StepName::Resize => "${ResizeFunctionArn}",
            StepName::Filter => "${FilterFunctionArn}",
            StepName::Store => "${StoreFunctionArn}",
            StepName::Notify => "${NotifyFunctionArn}",
        }
    }

    /// The step a Task `Resource` runs: each step's own, and [`RESIZE_LARGE_RESOURCE`],
    /// which is Resize's code in a bigger function.
    pub fn from_resource(resource: &str) -> Option<StepName> {
        if resource == RESIZE_LARGE_RESOURCE {
            return Some(StepName::Resize);
        }
        StepName::ALL.into_iter().find(|s| s.resource() == resource)
    }
}

fn call<I: DeserializeOwned>(input: Value) -> Result<I, StepError> {
    serde_json::from_value(input).map_err(|e| {
        StepError::new(
            ErrorKind::InvalidInput,
            format!("{} input: {e}", std::any::type_name::<I>()),
        )
    })
}

fn output<O: Serialize>(out: O) -> Result<Value, StepError> {
    serde_json::to_value(out).map_err(|e| StepError::internal(format!("output: {e}")))
}

impl Steps {
    /// Runs one step on its JSON input, as a Lambda handler or the local runner does (inside
    /// [`telemetry::step_span`]), and records how long it took, failures included.
    pub async fn invoke(&self, step: StepName, input: Value) -> Result<Value, StepError> {
        // Tokio's clock, which tests can pause to make the recorded duration exact.
        let started = tokio::time::Instant::now();
        let result = async {
            match step {
                StepName::Validate => output(self.validate(call(input)?).await?),
                StepName::Resize => output(self.resize(call(input)?).await?),
                StepName::Filter => output(self.filter(call(input)?).await?),
                StepName::Store => output(self.store(call(input)?).await?),
                StepName::Notify => output(self.notify(call(input)?).await?),
            }
        }
        .await;
        telemetry::record_step_duration(step, started.elapsed().as_secs_f64() * 1000.0);
        result
    }
}
