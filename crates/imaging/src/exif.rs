//! EXIF: the orientation tag, read and reset, and the raw block of each format.

use std::io::Cursor;

use crate::Format;

/// The Orientation tag of IFD0 in a raw EXIF (TIFF) block; 1 when absent or out of range.
pub(crate) fn orientation_of_exif(tiff: &[u8]) -> u8 {
    let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
        return 1;
    };
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .and_then(|v| u8::try_from(v).ok())
        .filter(|v| (1..=8).contains(v))
        .unwrap_or(1)
}

pub(crate) fn orientation_number(o: image::metadata::Orientation) -> u8 {
    use image::metadata::Orientation as O;
    match o {
        O::NoTransforms => 1,
        O::FlipHorizontal => 2,
        O::Rotate180 => 3,
        O::FlipVertical => 4,
        O::Rotate90FlipH => 5,
        O::Rotate90 => 6,
        O::Rotate270FlipH => 7,
        O::Rotate270 => 8,
    }
}

/// Rewrites the Orientation tag of IFD0 to 1 in place, for EXIF copied onto pixels that are
/// already upright. Leaves a block it cannot parse unchanged.
pub(crate) fn reset_orientation(tiff: &mut [u8]) {
    let Some(t) = crate::tiff_bytes::TiffBytes::new(tiff) else {
        return;
    };
    let Some((ifd, count)) = t.first_ifd() else {
        return;
    };
    let little = t.little;
    let entry = (0..count)
        .filter_map(|n| ifd.checked_add(2 + n * 12))
        .find(|&e| t.u16_at(e) == Some(0x0112) && t.u16_at(e + 2) == Some(3));
    if let Some(entry) = entry {
        let one = if little { [1, 0] } else { [0, 1] };
        if let Some(v) = tiff.get_mut(entry + 8..entry + 10) {
            v.copy_from_slice(&one);
        }
    }
}

/// The raw EXIF (TIFF structure) of a JPEG, PNG or WebP, if it has one.
pub(crate) fn raw_exif(bytes: &[u8], format: Format) -> Option<Vec<u8>> {
    match format {
        Format::Jpeg => crate::decode::jpeg_exif(bytes).map(<[u8]>::to_vec),
        Format::Png => {
            let reader = png::Decoder::new(Cursor::new(bytes)).read_info().ok()?;
            reader.info().exif_metadata.as_deref().map(<[u8]>::to_vec)
        }
        Format::Webp => image_webp::WebPDecoder::new(Cursor::new(bytes))
            .ok()?
            .exif_metadata()
            .ok()
            .flatten(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_tag_is_read_and_reset() {
        // A minimal little-endian TIFF with IFD0 = { Orientation (SHORT) = 6 }.
        let mut tiff = vec![b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0];
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        tiff.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(orientation_of_exif(&tiff), 6);
        reset_orientation(&mut tiff);
        assert_eq!(orientation_of_exif(&tiff), 1);
        assert_eq!(orientation_of_exif(b"garbage"), 1);
    }
}
