//! The local presigner: upload forms and download URLs of `imgpipe serve`, signed with HMAC
//! so that, as with S3, the bytes go to a URL that needs no bearer token and carries its own
//! limits (key, Content-Type, size, expiry, metadata).

use std::collections::BTreeMap;
use std::time::Duration;

use api::{Presigner, UploadForm, UploadRequest};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use pipeline::PortError;
use sha2::Sha256;

/// The form fields, in S3's spirit: `key` and `Content-Type` as S3 names them, our limits
/// under `x-imgpipe-`, object metadata as `x-imgpipe-meta-<name>` (S3: `x-amz-meta-<name>`).
pub const FIELD_KEY: &str = "key";
pub const FIELD_CONTENT_TYPE: &str = "Content-Type";
pub const FIELD_MAX_BYTES: &str = "x-imgpipe-max-bytes";
pub const FIELD_EXPIRES: &str = "x-imgpipe-expires";
pub const FIELD_SIGNATURE: &str = "signature";
pub const META_PREFIX: &str = "x-imgpipe-meta-";

/// Where the forms post to and the downloads are served from, below the base URL.
pub const UPLOAD_PATH: &str = "/upload";
pub const DOWNLOAD_PREFIX: &str = "/download/";

/// Only renditions are ever handed out for download.
pub const DOWNLOADABLE_PREFIX: &str = "renditions/";

/// Signs and checks forms and URLs. The key is derived from the server secret (DIR/auth.key)
/// rather than being the secret itself, so a transfer signature can never double as a JWT
/// signature or the other way round.
#[derive(Clone)]
pub struct LocalPresigner {
    key: Vec<u8>,
    base_url: String,
    /// Caps the life of upload forms (the hidden `--upload-ttl`, for tests of expiry).
    max_upload_ttl: Option<Duration>,
}

impl std::fmt::Debug for LocalPresigner {
    // By hand, so the key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPresigner")
            .field("base_url", &self.base_url)
            .field("max_upload_ttl", &self.max_upload_ttl)
            .finish()
    }
}

/// Why a form or URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A required field is missing or malformed (400).
    Malformed(String),
    /// The signature does not match what was sent (403).
    BadSignature,
    /// Signed, but past its expiry (403).
    Expired,
}

/// What a verified form allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedForm {
    pub key: String,
    pub content_type: String,
    pub max_bytes: u64,
    /// Object metadata, names without the prefix.
    pub metadata: BTreeMap<String, String>,
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC hashes long keys and pads short ones: every length is valid.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// Field names a form may carry: what the canonical string can hold unambiguously.
pub fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The string an upload form's signature covers: a version line, then every field but
/// `signature`, in byte order of the names, each as `name:byte length of value:value` and a
/// newline. The length makes it unambiguous whatever the values hold (a recipe's JSON may
/// contain newlines and colons).
pub fn upload_canonical(fields: &BTreeMap<String, String>) -> String {
    let mut s = String::from("imgpipe-upload-v1\n");
    for (name, value) in fields {
        if name == FIELD_SIGNATURE {
            continue;
        }
        s.push_str(name);
        s.push(':');
        s.push_str(&value.len().to_string());
        s.push(':');
        s.push_str(value);
        s.push('\n');
    }
    s
}

/// The string a download URL's signature covers.
pub fn download_canonical(key: &str, expires: i64) -> String {
    format!("imgpipe-download-v1\n{key}\n{expires}\n")
}

/// Percent-encodes a key for a URL path, keeping `/` as the separator. Keys are built from
/// sanitised parts and need none of it today; this keeps the URL valid if that changes.
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl LocalPresigner {
    /// `secret` is the server secret; `base_url` what clients reach the server at, without a
    /// trailing slash, e.g. `http://127.0.0.1:8080`.
    pub fn new(secret: &[u8], base_url: impl Into<String>) -> LocalPresigner {
        let mut m = mac(secret);
        m.update(b"imgpipe transfer signing key v1");
        LocalPresigner {
            key: m.finalize().into_bytes().to_vec(),
            base_url: base_url.into().trim_end_matches('/').to_string(),
            max_upload_ttl: None,
        }
    }

    pub fn with_max_upload_ttl(mut self, ttl: Option<Duration>) -> LocalPresigner {
        self.max_upload_ttl = ttl;
        self
    }

    fn sign(&self, canonical: &str) -> String {
        let mut m = mac(&self.key);
        m.update(canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    }

    /// Constant-time comparison of a presented signature with the expected one.
    fn check(&self, canonical: &str, signature: &str) -> bool {
        let Ok(presented) = URL_SAFE_NO_PAD.decode(signature.trim()) else {
            return false;
        };
        let mut m = mac(&self.key);
        m.update(canonical.as_bytes());
        m.verify_slice(&presented).is_ok()
    }

    /// The fields of a form, signed.
    pub fn form_fields(
        &self,
        request: &UploadRequest,
        expires_at: DateTime<Utc>,
    ) -> Result<BTreeMap<String, String>, PortError> {
        let mut fields = BTreeMap::new();
        fields.insert(FIELD_KEY.to_string(), request.key.clone());
        fields.insert(FIELD_CONTENT_TYPE.to_string(), request.content_type.clone());
        fields.insert(FIELD_MAX_BYTES.to_string(), request.max_bytes.to_string());
        fields.insert(
            FIELD_EXPIRES.to_string(),
            expires_at.timestamp().to_string(),
        );
        for (name, value) in &request.metadata {
            let field = format!("{META_PREFIX}{}", name.to_ascii_lowercase());
            if !valid_field_name(&field) {
                return Err(PortError::Permanent(format!(
                    "metadata name `{name}` cannot travel in an upload form"
                )));
            }
            fields.insert(field, value.clone());
        }
        let signature = self.sign(&upload_canonical(&fields));
        fields.insert(FIELD_SIGNATURE.to_string(), signature);
        Ok(fields)
    }

    /// Checks the fields a form arrived with (everything but the file): the signature must
    /// cover exactly these fields, so nothing can be added, dropped or changed.
    pub fn verify_form(
        &self,
        fields: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedForm, Refusal> {
        let field = |name: &str| {
            fields
                .get(name)
                .ok_or_else(|| Refusal::Malformed(format!("the form has no `{name}` field")))
        };
        let signature = field(FIELD_SIGNATURE)?;
        let key = field(FIELD_KEY)?;
        let content_type = field(FIELD_CONTENT_TYPE)?;
        let max_bytes = field(FIELD_MAX_BYTES)?;
        let expires = field(FIELD_EXPIRES)?;
        if !self.check(&upload_canonical(fields), signature) {
            return Err(Refusal::BadSignature);
        }
        // Signed by us, so well-formed; checked anyway rather than trusted to be.
        let max_bytes: u64 = max_bytes
            .parse()
            .map_err(|_| Refusal::Malformed(format!("`{FIELD_MAX_BYTES}` is not a number")))?;
        let expires: i64 = expires
            .parse()
            .map_err(|_| Refusal::Malformed(format!("`{FIELD_EXPIRES}` is not a number")))?;
        if now.timestamp() > expires {
            return Err(Refusal::Expired);
        }
        let metadata = fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(META_PREFIX)?.to_string(), v.clone())))
            .collect();
        Ok(VerifiedForm {
            key: key.clone(),
            content_type: content_type.clone(),
            max_bytes,
            metadata,
        })
    }

    /// A download URL for `key`, valid until `expires` (Unix seconds).
    pub fn download_url(&self, key: &str, expires: i64) -> String {
        let signature = self.sign(&download_canonical(key, expires));
        format!(
            "{}{DOWNLOAD_PREFIX}{}?expires={expires}&signature={signature}",
            self.base_url,
            encode_path(key)
        )
    }

    /// Checks a download URL's key (decoded from the path), expiry and signature.
    pub fn verify_download(
        &self,
        key: &str,
        expires: i64,
        signature: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        if !self.check(&download_canonical(key, expires), signature) {
            return Err(Refusal::BadSignature);
        }
        if now.timestamp() > expires {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

#[async_trait]
impl Presigner for LocalPresigner {
    async fn upload(&self, request: &UploadRequest) -> Result<UploadForm, PortError> {
        let mut expires_at = request.expires_at;
        if let Some(ttl) = self.max_upload_ttl {
            let cap = Utc::now() + chrono::Duration::seconds(ttl.as_secs() as i64);
            expires_at = expires_at.min(cap);
        }
        Ok(UploadForm {
            url: format!("{}{UPLOAD_PATH}", self.base_url),
            fields: self.form_fields(request, expires_at)?,
            expires_at,
        })
    }

    async fn download(&self, key: &str, expires_in: Duration) -> Result<String, PortError> {
        if !key.starts_with(DOWNLOADABLE_PREFIX) {
            return Err(PortError::Permanent(format!(
                "only renditions can be downloaded, not `{key}`"
            )));
        }
        let secs = i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX / 2);
        Ok(self.download_url(key, Utc::now().timestamp().saturating_add(secs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> UploadRequest {
        let mut metadata = BTreeMap::new();
        metadata.insert("preset".to_string(), "web".to_string());
        metadata.insert("recipe".to_string(), "{\"a\":\n1}:x".to_string());
        UploadRequest {
            key: "uploads/alice/01J/a.jpg".to_string(),
            content_type: "image/jpeg".to_string(),
            max_bytes: 1000,
            expires_at: Utc::now() + chrono::Duration::minutes(5),
            metadata,
        }
    }

    #[tokio::test]
    async fn forms_verify_and_refuse_any_change() {
        let p = LocalPresigner::new(b"secret", "http://127.0.0.1:1/");
        let form = p.upload(&request()).await.unwrap();
        assert_eq!(form.url, "http://127.0.0.1:1/upload");
        assert_eq!(form.fields["x-imgpipe-meta-preset"], "web");
        let ok = p.verify_form(&form.fields, Utc::now()).unwrap();
        assert_eq!(ok.key, "uploads/alice/01J/a.jpg");
        assert_eq!(ok.max_bytes, 1000);
        assert_eq!(ok.metadata["preset"], "web");

        for (name, value) in [
            ("key", "uploads/mallory/01J/a.jpg"),
            ("Content-Type", "image/png"),
            ("x-imgpipe-max-bytes", "100000000"),
            ("x-imgpipe-expires", "99999999999"),
            ("x-imgpipe-meta-preset", "print"),
            ("x-imgpipe-meta-extra", "1"),
        ] {
            let mut fields = form.fields.clone();
            fields.insert(name.to_string(), value.to_string());
            assert_eq!(
                p.verify_form(&fields, Utc::now()),
                Err(Refusal::BadSignature),
                "{name}"
            );
        }
        let mut fields = form.fields.clone();
        fields.remove("x-imgpipe-meta-recipe");
        assert_eq!(
            p.verify_form(&fields, Utc::now()),
            Err(Refusal::BadSignature)
        );
        let mut fields = form.fields.clone();
        fields.remove("signature");
        assert!(matches!(
            p.verify_form(&fields, Utc::now()),
            Err(Refusal::Malformed(_))
        ));
        let other = LocalPresigner::new(b"other", "http://127.0.0.1:1");
        assert_eq!(
            other.verify_form(&form.fields, Utc::now()),
            Err(Refusal::BadSignature)
        );
        let later = Utc::now() + chrono::Duration::minutes(6);
        assert_eq!(p.verify_form(&form.fields, later), Err(Refusal::Expired));
    }

    #[test]
    fn canonical_strings_are_unambiguous() {
        let mut a = BTreeMap::new();
        a.insert("a".to_string(), "1\nb:1:2".to_string());
        let mut b = BTreeMap::new();
        b.insert("a".to_string(), "1".to_string());
        b.insert("b".to_string(), "2".to_string());
        assert_ne!(upload_canonical(&a), upload_canonical(&b));
        assert_eq!(upload_canonical(&b), "imgpipe-upload-v1\na:1:1\nb:1:2\n");
    }

    #[tokio::test]
    async fn ttl_caps_forms_and_downloads_only_renditions() {
        let p = LocalPresigner::new(b"secret", "http://h")
            .with_max_upload_ttl(Some(Duration::from_secs(1)));
        let form = p.upload(&request()).await.unwrap();
        assert!(form.expires_at <= Utc::now() + chrono::Duration::seconds(1));

        let url = p
            .download("renditions/alice/01J/thumb.webp", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(url.starts_with("http://h/download/renditions/alice/01J/thumb.webp?expires="));
        let query = url.split_once('?').unwrap().1;
        let mut expires = 0;
        let mut signature = "";
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("expires", v) => expires = v.parse().unwrap(),
                ("signature", v) => signature = v,
                _ => {}
            }
        }
        let key = "renditions/alice/01J/thumb.webp";
        assert_eq!(
            p.verify_download(key, expires, signature, Utc::now()),
            Ok(())
        );
        assert_eq!(
            p.verify_download(
                "renditions/alice/01J/large.jpg",
                expires,
                signature,
                Utc::now()
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            p.verify_download(key, expires + 1, signature, Utc::now()),
            Err(Refusal::BadSignature)
        );
        let later = Utc::now() + chrono::Duration::minutes(2);
        assert_eq!(
            p.verify_download(key, expires, signature, later),
            Err(Refusal::Expired)
        );
        assert!(
            p.download("uploads/alice/01J/a.jpg", Duration::from_secs(60))
                .await
                .is_err()
        );
    }
}
