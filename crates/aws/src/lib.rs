//! imgpipe on AWS: S3 object store, DynamoDB metadata, SNS notifier, S3 presigned transfers, configuration from the environment, the Lambda step handler and the API Lambda's state.

pub mod apigw;
pub mod config;
pub mod dynamo;
pub mod emf;
mod errors;
pub mod lambda;
pub mod presign;
pub mod s3;
mod secrets;
pub mod sfn;
pub mod sns;

pub use apigw::{ApiGatewayClaims, api_state};
pub use config::{Config, ConfigError};
pub use dynamo::DynamoMetadata;
pub use presign::S3Presigner;
pub use s3::S3Store;
pub use sns::SnsNotifier;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// The HTTP client every SDK client here uses: rustls on ring, which builds quickly and
/// cross-compiles for arm64 without the C toolchain aws-lc needs. It speaks plain http://
/// too, which emulators such as moto use.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The SDK configuration from the environment (region, credentials, `AWS_ENDPOINT_URL` and
/// `AWS_ENDPOINT_URL_<SERVICE>` overrides), over [`http_client`].
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await
}
