//! Object keys. Every key is built here from checked parts; none is ever built from raw user text.

use sha2::{Digest, Sha256};

use crate::{ErrorKind, StepError};

/// Owner of uploads that arrive without one (a plain S3 drop outside `uploads/{owner}/{id}/`).
pub const DROP_OWNER: &str = "drop";
/// Owner of files dropped into `imgpipe serve`'s inbox folder.
pub const INBOX_OWNER: &str = "inbox";

/// Owners that belong to the system, never to a user: a user of that name would own every
/// image dropped into the bucket or the inbox.
pub fn reserved_owner(name: &str) -> bool {
    [DROP_OWNER, INBOX_OWNER]
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// Ids and owners: 1-128 of `A-Z a-z 0-9 - _ .`, not starting with a dot.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Turns an uploaded file name into a safe last key segment: path parts dropped, anything
/// outside `A-Z a-z 0-9 - _ .` replaced, leading dots removed, at most 100 bytes.
pub fn sanitise_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let mut out: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.starts_with('.') {
        out.remove(0);
    }
    if out.len() > 100 {
        // Keep the extension, which tells people what the file was.
        let ext = out
            .rfind('.')
            .map(|i| out[i..].to_string())
            .filter(|e| e.len() <= 10)
            .unwrap_or_default();
        out.truncate(100 - ext.len());
        out.push_str(&ext);
    }
    if out.is_empty() {
        out.push_str("upload");
    }
    out
}

/// A new image id: a ULID, so ids sort by creation time.
pub fn new_image_id() -> String {
    ulid::Ulid::new().to_string()
}

/// The length of every [`new_image_id`]: a ULID is 26 characters of Crockford base32.
pub const IMAGE_ID_LEN: usize = 26;

pub fn upload_key(owner: &str, id: &str, name: &str) -> String {
    format!("uploads/{owner}/{id}/{}", sanitise_name(name))
}

/// The folder every rendition object of one image is under.
pub fn renditions_prefix(owner: &str, id: &str) -> String {
    format!("renditions/{owner}/{id}/")
}

pub fn rendition_key(owner: &str, id: &str, rendition: &str, ext: &str) -> String {
    format!("renditions/{owner}/{id}/{rendition}.{ext}")
}

/// A re-rendered rendition's key: its version between name and extension, so new content
/// never reuses a key that caches hold as immutable.
pub fn versioned_rendition_key(
    owner: &str,
    id: &str,
    rendition: &str,
    version: &str,
    ext: &str,
) -> String {
    format!("renditions/{owner}/{id}/{rendition}.{version}.{ext}")
}

pub fn work_prefix(id: &str) -> String {
    format!("work/{id}/")
}

pub fn quarantine_key(owner: &str, id: &str, name: &str) -> String {
    format!("quarantine/{owner}/{id}/{}", sanitise_name(name))
}

/// Who owns an upload and what its id is, read from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadIdentity {
    pub owner: String,
    pub id: String,
    pub name: String,
}

/// `uploads/{owner}/{id}/{name}` gives its parts. Any other key (a batch drop such as
/// `uploads/2024/shoot/a.jpg`) belongs to [`DROP_OWNER`] with an id derived from the key and
/// etag, so a repeated event for the same object yields the same id and one record.
pub fn identify(key: &str, etag: Option<&str>) -> Result<UploadIdentity, StepError> {
    if key.is_empty() || key.len() > 1024 || key.contains("..") || key.starts_with('/') {
        return Err(StepError::new(
            ErrorKind::InvalidInput,
            format!("key: `{}` is not a valid upload key", truncate(key, 200)),
        ));
    }
    let parts: Vec<&str> = key.split('/').collect();
    if let ["uploads", owner, id, name] = parts.as_slice()
        && valid_segment(owner)
        && valid_segment(id)
        && !name.is_empty()
    {
        return Ok(UploadIdentity {
            owner: (*owner).to_string(),
            id: (*id).to_string(),
            name: (*name).to_string(),
        });
    }
    let mut hash = Sha256::new();
    hash.update(key.as_bytes());
    hash.update([0]);
    hash.update(etag.unwrap_or("").as_bytes());
    let digest = hex::encode(hash.finalize());
    Ok(UploadIdentity {
        owner: DROP_OWNER.to_string(),
        id: format!("d{}", &digest[..31]),
        name: parts.last().copied().unwrap_or("upload").to_string(),
    })
}

/// An object key as S3 event notifications carry it (HTML form encoding: `+` for a space,
/// `%XX` for other bytes) back to the key itself. `+` is replaced before the percent-decoding,
/// so an encoded plus (`%2B`) stays a plus. S3 keys are UTF-8; bytes that are not (only a
/// forged event has them) become U+FFFD, and the key is then reported as not found.
pub fn decode_event_key(encoded: &str) -> String {
    let spaced = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ids_have_their_stated_length() {
        assert_eq!(new_image_id().len(), IMAGE_ID_LEN);
    }

    #[test]
    fn event_keys_are_decoded_as_form_fields() {
        assert_eq!(
            decode_event_key("uploads/my+photo+%281%29.jpg"),
            "uploads/my photo (1).jpg"
        );
        // An encoded plus is a plus; an encoded percent is decoded once, not twice.
        assert_eq!(decode_event_key("a%2Bb%2520c.jpg"), "a+b%20c.jpg");
        assert_eq!(decode_event_key("caf%C3%A9.jpg"), "café.jpg");
        assert_eq!(decode_event_key("plain/key.jpg"), "plain/key.jpg");
        // Not UTF-8 (a forged event): replaced, never a panic.
        assert_eq!(decode_event_key("bad%FF.jpg"), "bad\u{fffd}.jpg");
        // A lone or short escape is left as it is.
        assert_eq!(decode_event_key("100%.jpg%4"), "100%.jpg%4");
    }

    #[test]
    fn sanitises_names() {
        assert_eq!(sanitise_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitise_name("C:\\x\\My Photo (1).JPG"), "My_Photo__1_.JPG");
        assert_eq!(sanitise_name("...hidden"), "hidden");
        assert_eq!(sanitise_name(""), "upload");
        assert_eq!(sanitise_name("é.png"), "_.png");
        let long = format!("{}.jpeg", "a".repeat(300));
        let s = sanitise_name(&long);
        assert_eq!(s.len(), 100);
        assert!(s.ends_with(".jpeg"));
    }

    #[test]
    fn identifies_api_uploads_and_drops() {
        let id = identify("uploads/u1/01ABC/photo.jpg", None).unwrap();
        assert_eq!(
            (id.owner.as_str(), id.id.as_str(), id.name.as_str()),
            ("u1", "01ABC", "photo.jpg")
        );

        let a = identify("uploads/2024/shoot/x/a.jpg", Some("e1")).unwrap();
        let b = identify("uploads/2024/shoot/x/a.jpg", Some("e1")).unwrap();
        let c = identify("uploads/2024/shoot/x/a.jpg", Some("e2")).unwrap();
        assert_eq!(a, b, "same object, same id");
        assert_ne!(a.id, c.id, "new version, new id");
        assert_eq!(a.owner, DROP_OWNER);
        assert!(valid_segment(&a.id));

        assert!(identify("uploads/../x/y/z", None).is_err());
        assert!(identify("", None).is_err());
        // An owner segment that is not safe is not trusted as an owner.
        assert_eq!(
            identify("uploads/a b/id/n.jpg", None).unwrap().owner,
            DROP_OWNER
        );
    }
}
