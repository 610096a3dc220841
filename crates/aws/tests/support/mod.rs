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

/// A new Secrets Manager secret holding `value` in moto; returns its ARN.
#[allow(dead_code)] // Only the tests of signing keys store secrets.
pub async fn put_secret(sdk: &SdkConfig, value: impl Into<String>) -> String {
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(unique("secret"))
        .secret_string(value)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string()
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

/// The Python scripts/setup makes (`$IMGPIPE_CACHE/venv`, by default under
/// `~/.cache/imgpipe`), which has botocore, cryptography and cfn-lint.
#[allow(dead_code)] // Only the CloudFront tests run Python.
pub fn venv_python() -> std::path::PathBuf {
    let cache = std::env::var_os("IMGPIPE_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/imgpipe"))
        })
        .expect("IMGPIPE_CACHE or HOME is set");
    let python = cache.join("venv/bin/python");
    assert!(
        python.is_file(),
        "these tests need the venv scripts/setup makes: {} is missing",
        python.display()
    );
    python
}

/// Runs `script` under [`venv_python`] with `args`, returning its standard output as JSON.
#[allow(dead_code)]
pub fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// A fresh RSA key pair of `bits` as {"pkcs8", "pkcs1", "public"} PEM strings, made with
/// Python's cryptography (what openssl genpkey / genrsa write).
#[allow(dead_code)]
pub fn rsa_key_pems(bits: u32) -> serde_json::Value {
    python_json(
        r#"
import json, sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import rsa
k = rsa.generate_private_key(public_exponent=65537, key_size=int(sys.argv[1]))
print(json.dumps({
    "pkcs8": k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()).decode(),
    "pkcs1": k.private_bytes(s.Encoding.PEM, s.PrivateFormat.TraditionalOpenSSL, s.NoEncryption()).decode(),
    "public": k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode(),
}))
"#,
        &[&bits.to_string()],
    )
}
