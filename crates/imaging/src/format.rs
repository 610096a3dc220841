use serde::{Deserialize, Serialize};

use crate::Error;

/// A container format, as told by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Gif,
    Tiff,
    Bmp,
    Avif,
    Heic,
    Qoi,
}

impl Format {
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Gif => "image/gif",
            Format::Tiff => "image/tiff",
            Format::Bmp => "image/bmp",
            Format::Avif => "image/avif",
            Format::Heic => "image/heic",
            Format::Qoi => "image/qoi",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Gif => "gif",
            Format::Tiff => "tiff",
            Format::Bmp => "bmp",
            Format::Avif => "avif",
            Format::Heic => "heic",
            Format::Qoi => "qoi",
        }
    }

    /// Formats accepted as uploads (decodable here).
    pub fn is_decodable(self) -> bool {
        matches!(
            self,
            Format::Jpeg
                | Format::Png
                | Format::Webp
                | Format::Gif
                | Format::Tiff
                | Format::Bmp
                | Format::Heic
                | Format::Avif
        )
    }
}

/// Tells the format from the leading bytes only; the file name and Content-Type are never trusted.
/// Recognised-but-unsupported content (SVG, HTML, PDF, camera RAW, ...) is `Unsupported` with
/// its name, anything else `UnknownFormat`, no bytes at all `Empty`.
pub fn sniff(bytes: &[u8]) -> Result<Format, Error> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Ok(Format::Gif);
    }
    if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        return Ok(Format::Webp);
    }
    // Camera RAWs before TIFF: most of them are TIFF-structured.
    if let Some(raw) = crate::raw::camera_raw(bytes) {
        return Err(Error::Unsupported(raw.into()));
    }
    if starts(b"II*\0") || starts(b"MM\0*") {
        return Ok(Format::Tiff);
    }
    if starts(b"II+\0") || starts(b"MM\0+") {
        return Err(Error::Unsupported("BigTIFF".into()));
    }
    if starts(b"BM") && bytes.len() >= 26 {
        return Ok(Format::Bmp);
    }
    if starts(b"qoif") {
        return Ok(Format::Qoi);
    }
    // ISO-BMFF: `....ftyp<major brand><version><compatible brands...>`. The brands tell AVIF
    // from HEIC; a file whose major brand is the generic `mif1` names its codec among the
    // compatible ones.
    if bytes.len() >= 12
        && &bytes[4..8] == b"ftyp"
        && let Some(format) = heif_brand(bytes)
    {
        return Ok(format);
    }
    if starts(b"%PDF-") {
        return Err(Error::Unsupported("PDF".into()));
    }
    if starts(&[0x00, 0x00, 0x01, 0x00]) {
        return Err(Error::Unsupported("ICO".into()));
    }
    if starts(b"8BPS") {
        return Err(Error::Unsupported("PSD".into()));
    }
    if starts(&[0xFF, 0x0A]) || starts(b"\0\0\0\x0cJXL ") {
        return Err(Error::Unsupported("JPEG XL".into()));
    }
    if let Some(kind) = markup_kind(bytes) {
        return Err(Error::Unsupported(kind.into()));
    }
    Err(Error::UnknownFormat)
}

/// AVIF or HEIC from an `ftyp` box's major and compatible brands (bounded by the box and
/// the input).
fn heif_brand(bytes: &[u8]) -> Option<Format> {
    let size = bytes
        .get(0..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
    let end = size.clamp(12, 4096).min(bytes.len());
    let major = bytes.get(8..12)?;
    let compatible = bytes.get(16..end).unwrap_or_default().chunks_exact(4);
    let brands: Vec<&[u8]> = std::iter::once(major).chain(compatible).collect();
    let any = |names: &[&[u8]]| brands.iter().any(|b| names.contains(b));
    if any(&[b"avif", b"avis"]) {
        return Some(Format::Avif);
    }
    if any(&[
        b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1",
    ]) {
        return Some(Format::Heic);
    }
    None
}

/// SVG and HTML are text: skip a BOM and leading whitespace, then look at the first tag.
/// SVG is refused rather than rendered because it can reference external resources and
/// script; it is the classic image-upload attack vector.
fn markup_kind(bytes: &[u8]) -> Option<&'static str> {
    let head = &bytes[..bytes.len().min(1024)];
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace())?;
    let text = String::from_utf8_lossy(&head[start..]).to_ascii_lowercase();
    if !text.starts_with('<') {
        return None;
    }
    if text.contains("<svg") {
        Some("SVG")
    } else if text.contains("<html") || text.starts_with("<!doctype html") {
        Some("HTML")
    } else if text.starts_with("<?xml") {
        Some("XML")
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_decide() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest").unwrap(), Format::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest").unwrap(), Format::Png);
        assert_eq!(sniff(b"GIF89a......").unwrap(), Format::Gif);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(), Format::Webp);
        assert_eq!(sniff(b"II*\0\x08\0\0\0").unwrap(), Format::Tiff);
        assert_eq!(sniff(b"\0\0\0\x1cftypavif\0\0").unwrap(), Format::Avif);
    }

    #[test]
    fn non_images_get_named_errors() {
        assert!(matches!(sniff(b""), Err(Error::Empty)));
        assert!(matches!(
            sniff(b"hello, I am a text file named photo.jpg"),
            Err(Error::UnknownFormat)
        ));
        let svg = b"  <?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
        assert!(matches!(sniff(svg), Err(Error::Unsupported(k)) if k == "SVG"));
        assert!(
            matches!(sniff(b"<!DOCTYPE html><html>"), Err(Error::Unsupported(k)) if k == "HTML")
        );
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0").unwrap(), Format::Heic);
        // Generic HEIF major brand with AVIF among the compatible brands.
        assert_eq!(
            sniff(b"\0\0\0\x18ftypmif1\0\0\0\0mif1avifmiaf").unwrap(),
            Format::Avif
        );
        assert!(
            matches!(sniff(b"II*\0\x08\0\0\0CR\x02\0"), Err(Error::Unsupported(k)) if k == "Canon CR2 RAW")
        );
        assert!(matches!(sniff(b"%PDF-1.7"), Err(Error::Unsupported(_))));
        // A JPEG magic needs three bytes: two are not enough to call it one.
        assert!(matches!(sniff(b"\xFF\xD8"), Err(Error::UnknownFormat)));
    }
}
