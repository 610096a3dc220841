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

/// A new SQS queue subscribed to the SNS topic `topic`; returns its URL. What arrives on the
/// topic can then be read back from the queue.
#[allow(dead_code)] // Not every test binary that includes this module reads topics.
pub async fn subscribed_queue(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    topic: &str,
) -> String {
    let url = sqs
        .create_queue()
        .queue_name(unique("q"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .unwrap();
    sns.subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(arn)
        .send()
        .await
        .unwrap();
    url
}
