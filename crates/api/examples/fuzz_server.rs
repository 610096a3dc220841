//! TEMPORARY: the router on in-memory ports for a local schemathesis run.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::auth::{JwtAuth, issue_local_token};
use api::{ApiState, Presigner, UploadForm, UploadRequest, router};
use async_trait::async_trait;
use chrono::Utc;
use pipeline::PortError;
use pipeline::memory::{MemoryMetadata, MemoryObjectStore};
use pipeline::model::{ImageRecord, RenditionRecord, SourceInfo, Status};
use pipeline::ports::MetadataStore;

struct P;
#[async_trait]
impl Presigner for P {
    async fn upload(&self, r: &UploadRequest) -> Result<UploadForm, PortError> {
        Ok(UploadForm {
            url: "http://127.0.0.1/u".into(),
            fields: BTreeMap::from([("key".into(), r.key.clone())]),
            expires_at: r.expires_at,
        })
    }
    async fn download(&self, key: &str, _: Duration) -> Result<String, PortError> {
        Ok(format!("http://127.0.0.1/d/{key}"))
    }
}

#[tokio::main]
async fn main() {
    let secret = b"fuzz";
    let metadata = Arc::new(MemoryMetadata::new());
    for i in 0..5 {
        let id = format!("img{i}");
        let now = Utc::now();
        metadata
            .begin(&ImageRecord {
                derived: Vec::new(),
                id: id.clone(),
                owner: "alice".into(),
                status: Status::Complete,
                source: SourceInfo {
                    focal_point: None,
                    alpha: None,
                    key: format!("uploads/alice/{id}/a.jpg"),
                    etag: None,
                    bytes: 1,
                    format: Some(imaging::Format::Jpeg),
                    width: Some(1),
                    height: Some(1),
                    sha256: None,
                    color_profile: None,
                    original: None,
                },
                recipe: Some(pipeline::Presets::builtin().get("web").unwrap().clone()),
                renditions: vec![RenditionRecord {
                    name: "thumb".into(),
                    key: format!("renditions/alice/{id}/thumb.webp"),
                    format: imaging::Format::Webp,
                    width: 1,
                    height: 1,
                    bytes: 1,
                    ms: 1,
                    quality: None,
                    score: None,
                    placeholder: None,
                    dominant_color: None,
                }],
                error: None,
                created_at: now,
                updated_at: now,
                execution_id: Some("e".into()),
                tags: vec!["beach".into()],
                preset: None,
                reprocessed_at: None,
            })
            .await
            .unwrap();
    }
    let state = ApiState {
        metadata,
        uploads: Arc::new(MemoryObjectStore::new()),
        renditions: Arc::new(MemoryObjectStore::new()),
        presigner: Arc::new(P),
        auth: Arc::new(JwtAuth::new().with_local(secret.to_vec())),
        config: Arc::new(pipeline::Config::default()),
        // The API checker sends many valid forms as one user; the limits have tests of
        // their own.
        forms: Arc::new(api::FormThrottle::new(api::FormLimits::off())),
        reprocessor: Arc::new(api::reprocess::NotConfigured),
        transforms: Default::default(),
    };
    let port: u16 = std::env::args().nth(1).unwrap().parse().unwrap();
    eprintln!(
        "TOKEN {}",
        issue_local_token(secret, "alice", false, Duration::from_secs(36000))
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, router(state)).await.unwrap();
}
