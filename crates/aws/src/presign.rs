//! Transfers that bypass the API on S3: browser POST forms into the uploads bucket, signed
//! with the function's own credentials, and presigned GETs of renditions.
//!
//! aws-sdk-s3 presigns single requests but has no POST policies, so the form is built here:
//! a policy document that pins the bucket, the exact key, Content-Type, metadata and
//! encryption and bounds the size, base64-encoded and signed with SigV4 (the string to sign
//! is the base64 policy itself, under the `s3` service's signing key).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use api::{Presigner, UploadForm, UploadRequest};
use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::presigning::PresigningConfig;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use pipeline::PortError;
use serde_json::{Value, json};

use crate::S3Store;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Signs upload forms for the uploads bucket and download URLs for the renditions bucket.
#[derive(Debug, Clone)]
pub struct S3Presigner {
    client: Client,
    /// Kept from the SDK configuration: the S3 client's own accessor is deprecated and
    /// always answers `None`.
    credentials: Option<SharedCredentialsProvider>,
    uploads_bucket: String,
    renditions_bucket: String,
}

impl S3Presigner {
    /// Region, credentials, endpoint and addressing style come from `sdk` exactly as for the
    /// stores ([`S3Store::client_for`]), so forms and URLs point where the stores write.
    pub fn new(
        sdk: &SdkConfig,
        uploads_bucket: impl Into<String>,
        renditions_bucket: impl Into<String>,
    ) -> Self {
        S3Presigner {
            client: S3Store::client_for(sdk),
            credentials: sdk.credentials_provider(),
            uploads_bucket: uploads_bucket.into(),
            renditions_bucket: renditions_bucket.into(),
        }
    }

    /// Resolved on every form rather than once: a Lambda's role credentials rotate, and the
    /// environment provider Lambda uses answers without I/O.
    async fn credentials(&self) -> Result<Credentials, PortError> {
        let provider = self.credentials.as_ref().ok_or_else(|| {
            PortError::Permanent("no AWS credentials provider is configured".into())
        })?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| PortError::Transient(format!("loading AWS credentials: {e}")))
    }

    /// The URL a form for `bucket` posts to, as the SDK's own endpoint rules resolve it:
    /// virtual-hosted `https://{bucket}.s3.{region}.amazonaws.com/` on AWS (other partitions,
    /// FIPS and dual-stack included), path-style `{endpoint}/{bucket}/` under an endpoint
    /// override such as moto's. The SDK exposes no bucket URL, but it presigns bucket-level
    /// ListObjectVersions, whose URL is exactly that plus a query; presigning is local, so
    /// nothing is sent and no permission is needed.
    async fn bucket_url(&self, bucket: &str) -> Result<String, PortError> {
        let config = PresigningConfig::expires_in(Duration::from_secs(60))
            .map_err(|e| PortError::Permanent(format!("presigning config: {e}")))?;
        let request = self
            .client
            .list_object_versions()
            .bucket(bucket)
            .presigned(config)
            .await
            .map_err(|e| {
                PortError::Permanent(format!("resolving the URL of s3://{bucket}: {e}"))
            })?;
        let uri = request.uri();
        Ok(uri
            .split_once('?')
            .map_or(uri, |(base, _)| base)
            .to_string())
    }

    fn region(&self) -> Result<String, PortError> {
        self.client
            .config()
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| PortError::Permanent("no AWS region is configured".into()))
    }
}

#[async_trait]
impl Presigner for S3Presigner {
    async fn upload(&self, request: &UploadRequest) -> Result<UploadForm, PortError> {
        let credentials = self.credentials().await?;
        let url = self.bucket_url(&self.uploads_bucket).await?;
        post_form(
            url,
            &self.uploads_bucket,
            &self.region()?,
            request,
            &credentials,
            Utc::now(),
        )
    }

    async fn download(&self, key: &str, expires_in: Duration) -> Result<String, PortError> {
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| PortError::Permanent(format!("presigning a download for {key}: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.renditions_bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| {
                PortError::Transient(format!(
                    "presigning s3://{}/{key}: {e}",
                    self.renditions_bucket
                ))
            })?;
        Ok(request.uri().to_string())
    }
}

/// S3 stores user metadata names lower-cased, and they become form field names and policy
/// conditions: only plain names are let through.
fn valid_metadata_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The SigV4 signature of a POST policy: HMAC-SHA256 of the base64 policy under the signing
/// key for `now`'s date, `region` and `s3`, in hex.
pub fn sign_policy(secret: &str, now: SystemTime, region: &str, policy_base64: &str) -> String {
    let key = aws_sigv4::sign::v4::generate_signing_key(secret, now, region, "s3");
    aws_sigv4::sign::v4::calculate_signature(key, policy_base64.as_bytes())
}

/// A form that uploads exactly `request.key` into `bucket` at `url`, signed at `now`.
///
/// Every field the form carries is pinned by an exact condition, so a client can change
/// none of them (not even Content-Type or the metadata that picks the recipe), and the body
/// must be 1..=`max_bytes`. The form expires at the request's time, or earlier when the
/// signing credentials expire first: after that S3 would refuse the session token anyway.
pub fn post_form(
    url: String,
    bucket: &str,
    region: &str,
    request: &UploadRequest,
    credentials: &Credentials,
    now: DateTime<Utc>,
) -> Result<UploadForm, PortError> {
    let mut expires_at = request.expires_at;
    if let Some(expiry) = credentials.expiry() {
        expires_at = expires_at.min(DateTime::<Utc>::from(expiry));
    }
    if expires_at <= now {
        return Err(PortError::Transient(format!(
            "an upload form for {} would expire at once ({expires_at})",
            request.key
        )));
    }
    if request.max_bytes == 0 {
        return Err(PortError::Permanent(
            "an upload form must allow at least one byte".into(),
        ));
    }

    let date = now.format("%Y%m%d").to_string();
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let credential = format!(
        "{}/{date}/{region}/s3/aws4_request",
        credentials.access_key_id()
    );

    // In the order the policy lists them; a form may send fields in any order before `file`.
    let mut fields: Vec<(String, String)> = vec![
        ("key".into(), request.key.clone()),
        ("Content-Type".into(), request.content_type.clone()),
    ];
    for (name, value) in &request.metadata {
        if !valid_metadata_name(name) {
            return Err(PortError::Permanent(format!(
                "metadata name `{name}` cannot go on an upload form"
            )));
        }
        fields.push((format!("x-amz-meta-{name}"), value.clone()));
    }
    fields.push(("x-amz-server-side-encryption".into(), "AES256".into()));
    fields.push(("x-amz-algorithm".into(), ALGORITHM.into()));
    fields.push(("x-amz-credential".into(), credential));
    fields.push(("x-amz-date".into(), amz_date));
    if let Some(token) = credentials.session_token() {
        fields.push(("x-amz-security-token".into(), token.to_string()));
    }

    let mut conditions: Vec<Value> = vec![json!({ "bucket": bucket })];
    for (i, (name, value)) in fields.iter().enumerate() {
        conditions.push(json!({ name.as_str(): value }));
        if i == 1 {
            // After key and Content-Type, so the document reads like the form.
            conditions.push(json!(["content-length-range", 1, request.max_bytes]));
        }
    }
    let policy = json!({
        "expiration": expires_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "conditions": conditions,
    });
    let policy = BASE64.encode(policy.to_string());
    let signature = sign_policy(
        credentials.secret_access_key(),
        SystemTime::from(now),
        region,
        &policy,
    );

    let mut map: BTreeMap<String, String> = fields.into_iter().collect();
    map.insert("policy".into(), policy);
    map.insert("x-amz-signature".into(), signature);
    Ok(UploadForm {
        url,
        fields: map,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::{BehaviorVersion, Region};
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    /// The known answer of AWS's "Example: Browser-Based Upload using HTTP POST (Using AWS
    /// Signature Version 4)" (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-post-example.html):
    /// its example secret key, its base64 policy (CRLF line endings included) and the
    /// signature it gives for 2015-12-29 in us-east-1.
    const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const DOC_POLICY: &str = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
    const DOC_SIGNATURE: &str = "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e";

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn request() -> UploadRequest {
        UploadRequest {
            key: "uploads/0f1e2d3c-sub/01JD8X3Q7V4M2N6P9R5T0WZ8KB/photo.jpg".into(),
            content_type: "image/jpeg".into(),
            max_bytes: 104_857_600,
            expires_at: at("2024-05-06T07:23:09Z"),
            metadata: BTreeMap::from([
                ("preset".to_string(), "web".to_string()),
                ("tags".to_string(), "[\"holiday\"]".to_string()),
            ]),
        }
    }

    fn session() -> Credentials {
        Credentials::new(
            "ASIAEXAMPLE",
            DOC_SECRET,
            Some("FwoGZXIvYXdzEXAMPLETOKEN".into()),
            None,
            "test",
        )
    }

    fn policy_of(form: &UploadForm) -> Value {
        let bytes = BASE64.decode(&form.fields["policy"]).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The signature as AWS describes it, without aws-sigv4.
    fn independent_signature(secret: &str, date: &str, region: &str, policy: &str) -> String {
        let hmac = |key: &[u8], data: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(data.as_bytes());
            mac.finalize().into_bytes().to_vec()
        };
        let k = hmac(format!("AWS4{secret}").as_bytes(), date);
        let k = hmac(&k, region);
        let k = hmac(&k, "s3");
        let k = hmac(&k, "aws4_request");
        hex::encode(hmac(&k, policy))
    }

    #[test]
    fn signs_the_documented_example_policy() {
        let day = SystemTime::from(at("2015-12-29T00:00:00Z"));
        assert_eq!(
            sign_policy(DOC_SECRET, day, "us-east-1", DOC_POLICY),
            DOC_SIGNATURE
        );
        assert_eq!(
            independent_signature(DOC_SECRET, "20151229", "us-east-1", DOC_POLICY),
            DOC_SIGNATURE
        );
    }

    #[test]
    fn the_policy_pins_every_field_and_bounds_the_size() {
        let now = at("2024-05-06T07:08:09Z");
        let form = post_form(
            "https://up.s3.eu-west-1.amazonaws.com/".into(),
            "up",
            "eu-west-1",
            &request(),
            &session(),
            now,
        )
        .unwrap();
        assert_eq!(form.url, "https://up.s3.eu-west-1.amazonaws.com/");
        assert_eq!(form.expires_at, at("2024-05-06T07:23:09Z"));

        let policy = policy_of(&form);
        assert_eq!(policy["expiration"], "2024-05-06T07:23:09.000Z");
        let expected = json!([
            {"bucket": "up"},
            {"key": "uploads/0f1e2d3c-sub/01JD8X3Q7V4M2N6P9R5T0WZ8KB/photo.jpg"},
            {"Content-Type": "image/jpeg"},
            ["content-length-range", 1, 104_857_600],
            {"x-amz-meta-preset": "web"},
            {"x-amz-meta-tags": "[\"holiday\"]"},
            {"x-amz-server-side-encryption": "AES256"},
            {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
            {"x-amz-credential": "ASIAEXAMPLE/20240506/eu-west-1/s3/aws4_request"},
            {"x-amz-date": "20240506T070809Z"},
            {"x-amz-security-token": "FwoGZXIvYXdzEXAMPLETOKEN"},
        ]);
        assert_eq!(policy["conditions"], expected);

        // Every field but the signature and the policy itself has its exact condition.
        let fields = &form.fields;
        for (name, value) in fields {
            if name == "policy" || name == "x-amz-signature" {
                continue;
            }
            assert!(
                expected
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c.get(name) == Some(&json!(value))),
                "field {name} has no exact condition"
            );
        }
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "Content-Type",
                "key",
                "policy",
                "x-amz-algorithm",
                "x-amz-credential",
                "x-amz-date",
                "x-amz-meta-preset",
                "x-amz-meta-tags",
                "x-amz-security-token",
                "x-amz-server-side-encryption",
                "x-amz-signature",
            ]
        );
        assert_eq!(
            fields["x-amz-signature"],
            independent_signature(DOC_SECRET, "20240506", "eu-west-1", &fields["policy"])
        );
    }

    #[test]
    fn long_lived_keys_carry_no_token_and_expiring_ones_shorten_the_form() {
        let now = at("2024-05-06T07:08:09Z");
        let keys = Credentials::new("AKIAEXAMPLE", DOC_SECRET, None, None, "test");
        let form = post_form("u".into(), "b", "us-east-1", &request(), &keys, now).unwrap();
        assert!(!form.fields.contains_key("x-amz-security-token"));
        let policy = policy_of(&form);
        assert!(
            !policy.to_string().contains("x-amz-security-token"),
            "{policy}"
        );

        let soon = at("2024-05-06T07:10:00Z");
        let expiring = Credentials::new(
            "ASIAEXAMPLE",
            DOC_SECRET,
            Some("t".into()),
            Some(SystemTime::from(soon)),
            "test",
        );
        let form = post_form("u".into(), "b", "us-east-1", &request(), &expiring, now).unwrap();
        assert_eq!(form.expires_at, soon);
        assert_eq!(policy_of(&form)["expiration"], "2024-05-06T07:10:00.000Z");

        let gone = Credentials::new(
            "ASIAEXAMPLE",
            DOC_SECRET,
            Some("t".into()),
            Some(SystemTime::from(now)),
            "test",
        );
        assert!(matches!(
            post_form("u".into(), "b", "us-east-1", &request(), &gone, now),
            Err(PortError::Transient(_))
        ));
    }

    #[test]
    fn refuses_metadata_names_that_are_not_plain() {
        let now = at("2024-05-06T07:08:09Z");
        for bad in ["", "Preset", "a b", "x\r\ny", "é"] {
            let mut r = request();
            r.metadata.insert(bad.to_string(), "v".into());
            assert!(
                matches!(
                    post_form("u".into(), "b", "us-east-1", &r, &session(), now),
                    Err(PortError::Permanent(_))
                ),
                "{bad:?}"
            );
        }
    }

    /// SDK configuration that needs no network: presigning and bucket URLs are local.
    fn offline(endpoint: Option<&str>) -> SdkConfig {
        let mut sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(session()));
        if let Some(e) = endpoint {
            sdk = sdk.endpoint_url(e);
        }
        sdk.build()
    }

    #[tokio::test]
    async fn forms_post_to_the_bucket_url_the_sdk_resolves() {
        let aws = S3Presigner::new(&offline(None), "imgpipe-up", "imgpipe-out");
        assert_eq!(
            aws.bucket_url("imgpipe-up").await.unwrap(),
            "https://imgpipe-up.s3.eu-west-1.amazonaws.com/"
        );
        let moto = S3Presigner::new(
            &offline(Some("http://127.0.0.1:5000")),
            "imgpipe-up",
            "imgpipe-out",
        );
        assert_eq!(
            moto.bucket_url("imgpipe-up").await.unwrap(),
            "http://127.0.0.1:5000/imgpipe-up/"
        );

        let mut r = request();
        r.expires_at = Utc::now() + chrono::Duration::minutes(15);
        let form = moto.upload(&r).await.unwrap();
        assert_eq!(form.url, "http://127.0.0.1:5000/imgpipe-up/");
        assert_eq!(
            form.fields["x-amz-security-token"],
            "FwoGZXIvYXdzEXAMPLETOKEN"
        );
        assert_eq!(form.fields["key"], r.key);
    }

    #[tokio::test]
    async fn downloads_are_presigned_gets_of_the_renditions_bucket() {
        let aws = S3Presigner::new(&offline(None), "imgpipe-up", "imgpipe-out");
        let url = aws
            .download(
                "renditions/sub/01JD8X3Q7V4M2N6P9R5T0WZ8KB/thumb.webp",
                Duration::from_secs(300),
            )
            .await
            .unwrap();
        assert!(
            url.starts_with("https://imgpipe-out.s3.eu-west-1.amazonaws.com/renditions/sub/01JD8X3Q7V4M2N6P9R5T0WZ8KB/thumb.webp?"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Expires=300"), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert!(url.contains("X-Amz-Security-Token="), "{url}");
        assert!(matches!(
            aws.download("k", Duration::from_secs(8 * 24 * 3600)).await,
            Err(PortError::Permanent(_))
        ));
    }
}
