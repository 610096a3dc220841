//! Handing out transfers instead of carrying bytes: an upload form limited in size, type and
//! time, and short-lived download URLs. S3 presigned POSTs in the cloud, HMAC-signed URLs of
//! `imgpipe serve` locally.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pipeline::PortError;
use serde::Serialize;

/// What an upload form must enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRequest {
    /// `uploads/{owner}/{imageId}/{sanitised name}`.
    pub key: String,
    /// The only Content-Type the form accepts.
    pub content_type: String,
    /// Largest body accepted (content-length-range 1..=max_bytes).
    pub max_bytes: u64,
    pub expires_at: DateTime<Utc>,
    /// Object metadata the upload carries (`preset`, `recipe`, `tags`): what the S3 drop-in
    /// path reads to pick the recipe.
    pub metadata: BTreeMap<String, String>,
}

/// A browser-postable form: POST multipart/form-data to `url` with `fields` then the `file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadForm {
    pub url: String,
    pub fields: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait Presigner: Send + Sync {
    /// A form that accepts exactly one upload as described.
    async fn upload(&self, request: &UploadRequest) -> Result<UploadForm, PortError>;
    /// A URL that downloads the object at `key` (in the renditions store) for `expires_in`.
    async fn download(&self, key: &str, expires_in: Duration) -> Result<String, PortError>;
}
