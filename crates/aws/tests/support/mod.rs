//! Test support for the adapter tests: the moto server (support/moto.rs, shared with
//! crates/api's tests) and SDK configuration pointing at it.

mod moto;

pub use moto::{endpoint, unique};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;

/// SDK configuration for moto, set on the loader rather than in the process environment,
/// which parallel tests share.
pub async fn sdk() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(aws::http_client())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .endpoint_url(endpoint())
        .load()
        .await
}
