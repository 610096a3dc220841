//! The object store on S3: one bucket per store, every write encrypted at rest (SSE-S3).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use pipeline::PortError;
use pipeline::ports::{ObjectInfo, ObjectStore, PutOptions};

use crate::config::{S3_PATH_STYLE, s3_path_style};
use crate::errors::port_error;

/// ListObjectsV2's own maximum page.
const DEFAULT_PAGE_SIZE: i32 = 1000;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    page_size: i32,
}

impl S3Store {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3Store {
            client,
            bucket: bucket.into(),
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// Lists in pages of `n` keys (clamped to 1..=1000), so tests can exercise pagination
    /// without writing a thousand objects.
    pub fn with_page_size(mut self, n: i32) -> Self {
        self.page_size = n.clamp(1, DEFAULT_PAGE_SIZE);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// An S3 client for `sdk`, path-style when an endpoint override is configured (emulators
    /// such as moto cannot serve virtual-hosted bucket names) or [`S3_PATH_STYLE`] says so.
    pub fn client_for(sdk: &SdkConfig) -> Client {
        let endpoint_override = sdk.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
        let setting = std::env::var(S3_PATH_STYLE).ok();
        let conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(s3_path_style(endpoint_override, setting.as_deref()))
            .build();
        Client::from_conf(conf)
    }

    fn what(&self, op: &str, key: &str) -> String {
        format!("s3 {op} s3://{}/{key}", self.bucket)
    }
}

/// Percent-encodes a CopySource (`bucket/key`): S3 decodes it, so a key with spaces, `+`, `%`
/// or non-ASCII characters would otherwise name a different object.
fn encode_copy_source(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for b in source.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn head(&self, key: &str) -> Result<ObjectInfo, PortError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| port_error(&self.what("head", key), e))?;
        Ok(ObjectInfo {
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            etag: out.e_tag().map(str::to_string),
            content_type: out.content_type().map(str::to_string),
            metadata: out
                .metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, PortError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| port_error(&self.what("get", key), e))?;
        read_body(out.body, &self.what("get", key)).await
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Vec<u8>, PortError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = start.saturating_add(len - 1);
        let what = self.what("get range", key);
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={start}-{end}"))
            .send()
            .await;
        match result {
            Ok(out) => {
                let ranged = out.content_range().is_some();
                let mut body = read_body(out.body, &what).await?;
                // A server that ignores Range sends the whole object; keep the contract anyway.
                if !ranged && body.len() as u64 > len {
                    let from = usize::try_from(start).unwrap_or(usize::MAX).min(body.len());
                    let to = from
                        .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
                        .min(body.len());
                    body = body[from..to].to_vec();
                }
                Ok(body)
            }
            // A range starting at or past the end (including any range of an empty object).
            Err(e)
                if e.as_service_error().and_then(|s| s.code()) == Some("InvalidRange")
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 416) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(port_error(&what, e)),
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>, opts: PutOptions) -> Result<String, PortError> {
        let metadata: HashMap<String, String> = opts.metadata.into_iter().collect();
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .server_side_encryption(ServerSideEncryption::Aes256)
            .set_content_type(opts.content_type)
            .set_cache_control(opts.cache_control)
            .set_metadata((!metadata.is_empty()).then_some(metadata))
            .send()
            .await
            .map_err(|e| port_error(&self.what("put", key), e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), PortError> {
        // The default metadata directive (COPY) keeps Content-Type, Cache-Control and user
        // metadata; encryption is not copied, so it is asked for again.
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(encode_copy_source(&format!("{}/{from}", self.bucket)))
            .server_side_encryption(ServerSideEncryption::Aes256)
            .send()
            .await
            .map_err(|e| port_error(&format!("{} to {to}", self.what("copy", from)), e))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| port_error(&self.what("delete", key), e))
        {
            Ok(_) | Err(PortError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_keys(self.page_size)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| port_error(&self.what("list", prefix), e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) && !t.is_empty() => {
                    token = Some(t.to_string())
                }
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }
}

async fn read_body(body: ByteStream, what: &str) -> Result<Vec<u8>, PortError> {
    body.collect()
        .await
        .map(|data| data.into_bytes().to_vec())
        // The response started, so the object exists; a broken body is a broken connection.
        .map_err(|e| PortError::Transient(format!("{what}: reading the body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_percent_encoded_but_keep_slashes() {
        assert_eq!(
            encode_copy_source("b/uploads/u1/01H/my photo+1%.jpg"),
            "b/uploads/u1/01H/my%20photo%2B1%25.jpg"
        );
        assert_eq!(encode_copy_source("b/é"), "b/%C3%A9");
    }

    #[test]
    fn path_style_follows_the_override_unless_forced() {
        assert!(s3_path_style(true, None));
        assert!(!s3_path_style(false, None));
        assert!(s3_path_style(false, Some("true")));
        assert!(!s3_path_style(true, Some("0")));
        assert!(s3_path_style(true, Some("whatever")));
    }
}
