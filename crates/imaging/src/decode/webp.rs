//! WebP headers through `image-webp` (the `image` crate decodes the pixels).

use std::io::Cursor;

use super::{Header, Limits, check_dims};
use crate::exif::orientation_of_exif;
use crate::profile::{self, SourceProfile};
use crate::{Error, Format};

/// Whether a RIFF file is shorter than its own header says: any decoding error is then
/// the truncation's doing.
pub(super) fn riff_cut(bytes: &[u8]) -> bool {
    bytes
        .get(4..8)
        .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) + 8)
        .is_some_and(|declared| declared > bytes.len() as u64)
}

pub(super) fn header(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    let webp_err = |e: image_webp::DecodingError| match e {
        _ if riff_cut(bytes) => Error::Truncated {
            format: Format::Webp,
        },
        image_webp::DecodingError::IoError(io)
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Error::Truncated {
                format: Format::Webp,
            }
        }
        other => Error::Decode {
            format: Format::Webp,
            message: other.to_string(),
        },
    };
    // An extended file's canvas size, which the decoder refuses past its own limit without
    // saying so by name: checked here first.
    if let (Some(b"VP8X"), Some(c)) = (bytes.get(12..16), bytes.get(24..30)) {
        let w = u32::from_le_bytes([c[0], c[1], c[2], 0]) + 1;
        let h = u32::from_le_bytes([c[3], c[4], c[5], 0]) + 1;
        check_dims(Format::Webp, w, h, limits)?;
    }
    let mut d = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(webp_err)?;
    let (width, height) = d.dimensions();
    let orientation = d
        .exif_metadata()
        .ok()
        .flatten()
        .map(|e| orientation_of_exif(&e))
        .unwrap_or(1);
    Ok(Header {
        format: Format::Webp,
        width,
        height,
        frames: if d.is_animated() { d.num_frames() } else { 1 },
        orientation,
        has_alpha: d.has_alpha(),
        color: if d.has_alpha() { "rgba8" } else { "rgb8" }.into(),
        color_profile: None,
    })
}

/// The ICCP chunk of an extended WebP.
pub(super) fn profile(bytes: &[u8]) -> Option<SourceProfile> {
    let mut d = image_webp::WebPDecoder::new(Cursor::new(bytes)).ok()?;
    let icc = d.icc_profile().ok().flatten()?;
    Some(profile::from_icc(&icc))
}
