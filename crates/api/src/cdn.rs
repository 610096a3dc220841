//! Download URLs for a CloudFront distribution in front of the renditions bucket: signed URLs
//! under a canned policy, checked by CloudFront against the distribution's trusted key group.
//!
//! The bucket answers only CloudFront (origin access control), and CloudFront only a URL
//! signed with the key group's private key. A public link's redirect can then be cached at
//! the edge and point at the edge, and the URL it points to opens that one object: a canned
//! policy's resource is the exact URL, host and path, with no query string and no wildcard, so
//! it cannot be stretched to another key (a wildcard resource would match
//! `/renditions/<another>?x=/renditions/<this>` too).
//!
//! The host is the one the viewer used (the distribution's own domain or an alias), which the
//! distribution's viewer-request function hands the API in a header: the function the
//! distribution fronts cannot name the distribution's domain itself (the distribution is made
//! from the API, which is made from the function).
//!
//! Signatures are RSA PKCS#1 v1.5 over SHA-256 (`Hash-Algorithm=SHA256`), with ring: the
//! private-key operation is constant-time and blinded, and ring signs no SHA-1.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;

/// CloudFront takes RSA keys of exactly this size for signed URLs.
const RSA_BITS: usize = 2048;
/// Signed URLs expire at the next whole multiple of this after the life asked for, so every
/// request within a window gets the same URL: a browser that met it once shows the image
/// from its cache instead of downloading it again under a new signature.
pub const EXPIRY_WINDOW_SECS: i64 = 3600;

/// Why a CloudFront signing key was refused; never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdnKeyError {
    KeyPairId,
    NotPem,
    NotRsa,
    Rejected(String),
    Size(usize),
    UnsupportedSize,
}

impl fmt::Display for CdnKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CdnKeyError::KeyPairId => write!(
                f,
                "the key pair ID is not a CloudFront public key ID (upper-case letters and \
                 digits, e.g. K2JCJMDEHXQW5F)"
            ),
            CdnKeyError::NotPem => write!(
                f,
                "the private key is not PEM (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA \
                 PRIVATE KEY-----)"
            ),
            CdnKeyError::NotRsa => write!(f, "the private key is not an RSA key"),
            CdnKeyError::Rejected(why) => write!(f, "the private key is unusable: {why}"),
            CdnKeyError::UnsupportedSize => write!(
                f,
                "the private key's size is not {RSA_BITS} bits, what CloudFront signed URLs take"
            ),
            CdnKeyError::Size(bits) => write!(
                f,
                "the private key has {bits} bits; CloudFront signed URLs take {RSA_BITS}-bit \
                 RSA keys"
            ),
        }
    }
}

impl std::error::Error for CdnKeyError {}

/// Signs download URLs for one CloudFront public key.
pub struct CdnSigner {
    key_pair_id: String,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl fmt::Debug for CdnSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdnSigner")
            .field("key_pair_id", &self.key_pair_id)
            .finish_non_exhaustive()
    }
}

impl CdnSigner {
    /// `key_pair_id` is the CloudFront public key's ID; `private_key_pem` its private half,
    /// PKCS#8 or PKCS#1 PEM (what `openssl genpkey` or `openssl genrsa` write).
    pub fn new(key_pair_id: &str, private_key_pem: &str) -> Result<Self, CdnKeyError> {
        let id = key_pair_id.trim();
        // It goes into URLs unescaped.
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(CdnKeyError::KeyPairId);
        }
        let der = PrivateKeyDer::from_pem_slice(private_key_pem.trim().as_bytes())
            .map_err(|_| CdnKeyError::NotPem)?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(CdnKeyError::NotRsa),
        }
        .map_err(|e| match e.to_string().as_str() {
            "InvalidEncoding" | "WrongAlgorithm" => CdnKeyError::NotRsa,
            "TooSmall" | "TooLarge" => CdnKeyError::UnsupportedSize,
            other => CdnKeyError::Rejected(other.to_string()),
        })?;
        let bits = key.public().modulus_len() * 8;
        if bits != RSA_BITS {
            return Err(CdnKeyError::Size(bits));
        }
        Ok(CdnSigner {
            key_pair_id: id.to_string(),
            key,
            rng: SystemRandom::new(),
        })
    }

    pub fn key_pair_id(&self) -> &str {
        &self.key_pair_id
    }

    /// The URL (`https://{host}/renditions/...?Expires=&Signature=&Key-Pair-Id=&Hash-Algorithm=`)
    /// that downloads the object at `key` through the distribution at `host` until `expires`
    /// (Unix seconds). `None` when `host` is no host name.
    pub fn sign(&self, host: &str, key: &str, expires: i64) -> Option<String> {
        if !is_host_name(host) {
            return None;
        }
        let url = format!("https://{}{}", host.to_ascii_lowercase(), object_path(key));
        let policy = policy(&url, expires);
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                policy.as_bytes(),
                &mut signature,
            )
            .ok()?;
        Some(format!(
            "{url}?Expires={expires}&Signature={}&Key-Pair-Id={}&Hash-Algorithm=SHA256",
            url_base64(&signature),
            self.key_pair_id
        ))
    }
}

/// A DNS name as a Host header carries it (no port, no user, nothing to escape).
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// When a URL asked to last at least `min_life` seconds from `now` expires: the end of the
/// window it falls in ([`EXPIRY_WINDOW_SECS`]).
pub fn expiry(now: i64, min_life: i64) -> i64 {
    (now.saturating_add(min_life)).div_euclid(EXPIRY_WINDOW_SECS) * EXPIRY_WINDOW_SECS
        + EXPIRY_WINDOW_SECS
}

/// The object's path, each segment percent-encoded: CloudFront compares the policy's resource
/// with the URL as sent.
fn object_path(key: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    key.split('/')
        .map(|s| format!("/{}", percent_encoding::utf8_percent_encode(s, SEGMENT)))
        .collect()
}

/// The canned policy CloudFront rebuilds from a signed URL's address and `Expires` and checks
/// the signature against: compact JSON, its members in the documented order.
pub fn policy(resource: &str, expires: i64) -> String {
    #[derive(Serialize)]
    struct Policy<'a> {
        #[serde(rename = "Statement")]
        statement: [Statement<'a>; 1],
    }
    #[derive(Serialize)]
    struct Statement<'a> {
        #[serde(rename = "Resource")]
        resource: &'a str,
        #[serde(rename = "Condition")]
        condition: Condition,
    }
    #[derive(Serialize)]
    struct Condition {
        #[serde(rename = "DateLessThan")]
        date_less_than: Epoch,
    }
    #[derive(Serialize)]
    struct Epoch {
        #[serde(rename = "AWS:EpochTime")]
        epoch_time: i64,
    }
    let policy = Policy {
        statement: [Statement {
            resource,
            condition: Condition {
                date_less_than: Epoch {
                    epoch_time: expires,
                },
            },
        }],
    };
    // Serialising plain structs of strings and integers cannot fail.
    serde_json::to_string(&policy).unwrap_or_default()
}

/// CloudFront's URL-safe base64: `+` `=` `/` become `-` `_` `~`.
fn url_base64(bytes: &[u8]) -> String {
    BASE64
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_stable_within_a_window_and_never_short() {
        let now = 1_800_000_123;
        let e = expiry(now, 900);
        assert_eq!(e % EXPIRY_WINDOW_SECS, 0);
        assert!(e >= now + 900 && e <= now + 900 + EXPIRY_WINDOW_SECS);
        // Every request of the same window gets the same expiry, hence the same URL.
        assert_eq!(expiry(now + 60, 900), e);
    }

    #[test]
    fn paths_are_escaped() {
        assert_eq!(
            object_path("renditions/u 1/01J/t/ab*?.webp"),
            "/renditions/u%201/01J/t/ab%2A%3F.webp"
        );
    }

    #[test]
    fn only_host_names_are_signed_for() {
        for good in [
            "d111111abcdef8.cloudfront.net",
            "img.example.com",
            "localhost",
        ] {
            assert!(is_host_name(good), "{good}");
        }
        for bad in [
            "",
            "img.example.com:8443",
            "evil.com/renditions",
            "a..b",
            "-a.com",
            "user@host",
            "*.cloudfront.net",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn policy_is_compact_and_ordered() {
        assert_eq!(
            policy("https://d1.cloudfront.net/renditions/a.jpg", 1_700_000_000),
            r#"{"Statement":[{"Resource":"https://d1.cloudfront.net/renditions/a.jpg","Condition":{"DateLessThan":{"AWS:EpochTime":1700000000}}}]}"#
        );
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(
            CdnSigner::new("K2JC JMD", "x").unwrap_err(),
            CdnKeyError::KeyPairId
        );
        assert_eq!(
            CdnSigner::new("K2JCJMDEHXQW5F", "not a key").unwrap_err(),
            CdnKeyError::NotPem
        );
        let message = CdnKeyError::NotPem.to_string();
        assert!(message.contains("PEM"), "{message}");
    }
}
