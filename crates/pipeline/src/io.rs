//! The JSON that flows between the states of statemachine/image_pipeline.asl.json: keys and
//! ids only, never image bytes (a state is capped at 256 KiB).

use imaging::Format;
use serde::{Deserialize, Serialize};

use crate::model::{RenditionRecord, SourceInfo, Status};
use crate::{Recipe, Rendition};

/// The execution input: an object that arrived. The API and the local runner send it as is;
/// an EventBridge S3 event is reshaped into it by the state machine's first states.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Kept as raw JSON so a bad recipe is reported by Validate with the field named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Set by the state machine when `key` came from an S3 event, which carries it
    /// URL-encoded as a form field: `my photo (1).jpg` arrives as `my+photo+%281%29.jpg`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key_encoded: bool,
    /// Not an upload: re-render the COMPLETE image at `key` with its preset's current
    /// definition, if it matches this filter and is due (`imgpipe reprocess`, the Reprocess
    /// state machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess: Option<crate::reprocess::Filter>,
}

impl Upload {
    /// What is known of the upload's source before Validate reads it: key, etag and size.
    pub fn unread_source(&self) -> crate::model::SourceInfo {
        crate::model::SourceInfo {
            focal_point: None,
            alpha: None,
            key: self.key.clone(),
            etag: self.etag.clone(),
            bytes: self.size.unwrap_or(0),
            format: None,
            width: None,
            height: None,
            sha256: None,
            color_profile: None,
            original: None,
        }
    }
}

impl Upload {
    /// The upload with its key as the object is named in the bucket: decoded once, if it
    /// came encoded. Every step that touches the object goes through this first.
    pub fn decoded(mut self) -> Upload {
        if self.key_encoded {
            self.key = crate::keys::decode_event_key(&self.key);
            self.key_encoded = false;
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidateInput {
    pub upload: Upload,
    pub execution_id: String,
}

/// Validate's output: the claimed job. `duplicate` ends the execution early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown fields are ignored, unlike the other step types: during a canary deployment a new
// Validate's Job reaches old Resize and Notify versions, and a field added since must not fail
// them.
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub duplicate: bool,
    pub image_id: String,
    pub owner: String,
    pub execution_id: String,
    /// The original file name (sanitised), for quarantine and downloads.
    pub name: String,
    pub source: SourceInfo,
    pub recipe: Recipe,
    /// Over the configured pixel count: the state machine resizes it in `ResizeLarge`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub large: bool,
    /// A re-render of a COMPLETE image: its renditions get versioned keys, the record takes
    /// them all at once in NotifySuccess, and a failure leaves the image as it was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reprocess: bool,
    /// The preset the recipe came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
}

/// One rendition on its way through Filter and Store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkItem {
    pub image_id: String,
    pub owner: String,
    /// The execution working on it, for the logs of Filter and Store (absent in items made
    /// before it was carried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    pub rendition: Rendition,
    pub source_format: Format,
    /// Where the image waits (see `WorkStore`).
    pub work_key: String,
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exif_key: Option<String>,
    /// The source's ICC profile, for a rendition that keeps its colour space (its pixels are
    /// then in that space, not sRGB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icc_key: Option<String>,
    /// Milliseconds spent on this rendition so far.
    pub ms: u64,
    /// For a re-render: the rendition's version (see `reprocess::version`), part of its key;
    /// Store then leaves the record to NotifySuccess.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResizeOutput {
    pub image_id: String,
    pub sha256: String,
    /// Decoded size (smaller than the source when the JPEG was shrunk on load).
    pub decoded_width: u32,
    pub decoded_height: u32,
    pub items: Vec<WorkItem>,
}

/// The error Step Functions puts at a Catch's ResultPath.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaughtError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// The execution state as it was when something failed: the upload fields, the job if
/// Validate got that far, and the caught error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedState {
    #[serde(flatten)]
    pub upload: Upload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    pub error: CaughtError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum NotifyInput {
    #[serde(rename_all = "camelCase")]
    Success {
        job: Box<Job>,
        #[serde(default)]
        sha256: Option<String>,
        renditions: Vec<RenditionRecord>,
    },
    #[serde(rename_all = "camelCase")]
    Failure {
        state: Box<FailedState>,
        execution_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyOutput {
    pub image_id: String,
    pub owner: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renditions: Vec<RenditionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::model::ErrorInfo>,
}
