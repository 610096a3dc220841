//! The imgpipe HTTP API, written once over the ports and served two ways: by `imgpipe serve`
//! (axum on a local store) and by the api Lambda behind API Gateway (lambda_http running the
//! same Router). Bytes never pass through it: uploads go to presigned forms, downloads are
//! redirects to presigned URLs.

pub mod auth;
pub mod cdn;
pub mod error;
pub mod links;
pub mod ops;
pub mod presign;
pub mod reprocess;
pub mod routes;
pub mod throttle;
pub mod transform;

pub use auth::{AuthError, Caller, CallerSource};
pub use cdn::CdnSigner;
pub use error::ApiError;
pub use links::LinkKeys;
pub use ops::{HealthCheck, MetricsRenderer, Ops};
pub use presign::{Presigner, UploadForm, UploadRequest};
pub use reprocess::{ReprocessRequest, ReprocessRun, Reprocessor, RunStatus};
pub use routes::{ApiState, router, router_with};
pub use throttle::{FormLimits, FormThrottle};
pub use transform::Transforms;
