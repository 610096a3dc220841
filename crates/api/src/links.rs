//! Signed public links to transforms, `/t/{id}/{params}?exp=&sig=`: an `<img src>` that works
//! without a token. The signature is HMAC-SHA256 over the image id, the transform's canonical
//! parameters and the expiry, so changing any of them is refused. Keys rotate: links are
//! signed with the first key and accepted under every listed one, each signature naming its
//! key (`sig=KEYID.MAC`), so a new key can be put first while links signed with the old one
//! keep working until it is removed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A link secret's least length: as long as the hash, so it is not the weak part.
pub const MIN_SECRET_BYTES: usize = 32;
/// Largest key id: short, as every link carries it.
const MAX_KEY_ID: usize = 16;
/// What the MAC covers first, so a link signature can never stand for another signature made
/// with the same secret.
const DOMAIN: &str = "imgpipe-link-v1";

/// One signing key.
#[derive(Clone)]
struct LinkKey {
    id: String,
    secret: Vec<u8>,
}

/// The keys links are signed (the first) and checked (all) with.
#[derive(Clone)]
pub struct LinkKeys(Vec<LinkKey>);

impl std::fmt::Debug for LinkKeys {
    // By hand, so no secret reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(|k| k.id.as_str()).collect();
        f.debug_tuple("LinkKeys").field(&ids).finish()
    }
}

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// Signed by no key this server has, or not for this id, parameters and expiry.
    BadSignature,
    /// Signed, but its time is over.
    Expired,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC hashes long keys and pads short ones: every length is valid.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn message(id: &str, params: &str, expires: i64) -> String {
    format!("{DOMAIN}\n{id}\n{params}\n{expires}")
}

impl LinkKeys {
    /// Keys as `ID=SECRET` pairs, the signing key first; ids are 1-16 of `A-Z a-z 0-9 - _`,
    /// secrets at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Result<LinkKeys, String> {
        let mut out: Vec<LinkKey> = Vec::new();
        for (id, secret) in keys {
            let id_ok = !id.is_empty()
                && id.len() <= MAX_KEY_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                // The id is not quoted back: a secret written without its `ID=` would be it.
                return Err(format!(
                    "a link key id is not 1-{MAX_KEY_ID} of A-Z a-z 0-9 - _ (is each key written ID=SECRET?)"
                ));
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "link key `{id}`: its secret has {} bytes, fewer than the {MIN_SECRET_BYTES} \
                     a key needs",
                    secret.len()
                ));
            }
            if out.iter().any(|k| k.id == id) {
                return Err(format!("link key `{id}` is given twice"));
            }
            out.push(LinkKey { id, secret });
        }
        if out.is_empty() {
            return Err("no link key given".into());
        }
        Ok(LinkKeys(out))
    }

    /// `ID=SECRET[,ID=SECRET...]`, the signing key first: the form of `--link-key` and of the
    /// cloud's `LINK_KEYS` setting.
    pub fn parse(spec: &str) -> Result<LinkKeys, String> {
        let pairs = spec
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((id, secret)) => Ok((id.trim().to_string(), secret.as_bytes().to_vec())),
                None => Err("a link key is written ID=SECRET".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        LinkKeys::new(pairs)
    }

    /// The id of the key new links are signed with.
    pub fn signing_key(&self) -> &str {
        self.0.first().map_or("", |k| k.id.as_str())
    }

    /// `KEYID.MAC` for a link to `params` of image `id` until `expires` (Unix seconds).
    pub fn sign(&self, id: &str, params: &str, expires: i64) -> String {
        let Some(key) = self.0.first() else {
            return String::new();
        };
        let mut m = mac(&key.secret);
        m.update(message(id, params, expires).as_bytes());
        format!(
            "{}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        )
    }

    /// Checks a link's signature, then its expiry against `now` (Unix seconds); the MAC is
    /// compared in constant time.
    pub fn verify(
        &self,
        id: &str,
        params: &str,
        expires: i64,
        sig: &str,
        now: i64,
    ) -> Result<(), LinkRefusal> {
        let (key_id, tag) = sig.split_once('.').ok_or(LinkRefusal::BadSignature)?;
        let key = self
            .0
            .iter()
            .find(|k| k.id == key_id)
            .ok_or(LinkRefusal::BadSignature)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkRefusal::BadSignature)?;
        let mut m = mac(&key.secret);
        m.update(message(id, params, expires).as_bytes());
        m.verify_slice(&tag)
            .map_err(|_| LinkRefusal::BadSignature)?;
        if expires <= now {
            return Err(LinkRefusal::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a-secret-of-at-least-thirty-two-bytes!";
    const B: &str = "another-secret-that-is-long-enough-too";

    #[test]
    fn links_verify_until_they_expire_and_not_when_changed() {
        let keys = LinkKeys::parse(&format!("k1={A}")).unwrap();
        let sig = keys.sign("img1", "w=800&fmt=auto", 2_000);
        assert!(sig.starts_with("k1."));
        assert_eq!(
            keys.verify("img1", "w=800&fmt=auto", 2_000, &sig, 1_000),
            Ok(())
        );
        let bad = Err(LinkRefusal::BadSignature);
        assert_eq!(
            keys.verify("img2", "w=800&fmt=auto", 2_000, &sig, 1_000),
            bad
        );
        assert_eq!(
            keys.verify("img1", "w=801&fmt=auto", 2_000, &sig, 1_000),
            bad
        );
        assert_eq!(
            keys.verify("img1", "w=800&fmt=auto", 2_001, &sig, 1_000),
            bad
        );
        assert_eq!(
            keys.verify("img1", "w=800&fmt=auto", 2_000, "k1.AAAA", 1_000),
            bad
        );
        assert_eq!(
            keys.verify("img1", "w=800&fmt=auto", 2_000, "nodot", 1_000),
            bad
        );
        assert_eq!(
            keys.verify("img1", "w=800&fmt=auto", 2_000, &sig, 2_000),
            Err(LinkRefusal::Expired)
        );
    }

    #[test]
    fn a_rotated_key_still_verifies_its_links() {
        let old = LinkKeys::parse(&format!("k1={A}")).unwrap();
        let sig = old.sign("img", "w=1", 10);
        let rotated = LinkKeys::parse(&format!("k2={B},k1={A}")).unwrap();
        assert_eq!(rotated.signing_key(), "k2");
        assert_eq!(rotated.verify("img", "w=1", 10, &sig, 0), Ok(()));
        assert!(rotated.sign("img", "w=1", 10).starts_with("k2."));
        // Once k1 is removed, its links stop working.
        let retired = LinkKeys::parse(&format!("k2={B}")).unwrap();
        assert_eq!(
            retired.verify("img", "w=1", 10, &sig, 0),
            Err(LinkRefusal::BadSignature)
        );
    }

    #[test]
    fn weak_or_malformed_keys_are_refused() {
        assert!(
            LinkKeys::parse("k1=short")
                .unwrap_err()
                .contains("fewer than the 32")
        );
        assert!(LinkKeys::parse(&format!("bad id={A}")).is_err());
        assert!(
            LinkKeys::parse(&format!("k={A},k={B}"))
                .unwrap_err()
                .contains("twice")
        );
        assert!(LinkKeys::parse("").is_err());
        assert!(LinkKeys::parse(A).is_err());
        assert!(!format!("{:?}", LinkKeys::parse(&format!("k1={A}")).unwrap()).contains(A));
    }
}
