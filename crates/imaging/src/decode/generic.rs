//! Everything else (TIFF, BMP, and the pixels of GIF and WebP): the `image` crate's pure-Rust
//! decoders.

use std::io::Cursor;

use image::{ImageDecoder, ImageFormat};

use super::webp::riff_cut;
use super::{Header, Limits, check_dims, to_rgb_or_rgba};
use crate::exif::orientation_number;
use crate::profile::{self, SourceProfile};
use crate::{Error, Format, Image};

fn image_format(format: Format) -> Option<ImageFormat> {
    Some(match format {
        Format::Png => ImageFormat::Png,
        Format::Gif => ImageFormat::Gif,
        Format::Webp => ImageFormat::WebP,
        Format::Tiff => ImageFormat::Tiff,
        Format::Bmp => ImageFormat::Bmp,
        _ => return None,
    })
}

fn image_error(format: Format, e: image::ImageError) -> Error {
    use image::ImageError as E;
    match &e {
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Truncated { format }
        }
        E::Limits(_) => Error::Decode {
            format,
            message: format!("decoder limit: {e}"),
        },
        E::Unsupported(u) => Error::Unsupported(format!("{format:?} variant: {u}")),
        _ => {
            let message = e.to_string();
            if message.contains("end of file")
                || message.contains("EOF")
                || message.contains("truncat")
            {
                Error::Truncated { format }
            } else {
                Error::Decode { format, message }
            }
        }
    }
}

/// TIFF and BMP through the `image` crate's decoders, which read only the header on creation.
pub(super) fn header(bytes: &[u8], format: Format, limits: &Limits) -> Result<Header, Error> {
    // The decoders refuse sizes over their own limits with errors that do not say the image is
    // too large, so the claimed size is read and checked here first.
    if let Some((w, h)) = claimed_dims(bytes, format)
        && w > 0
        && h > 0
    {
        check_dims(format, w, h, limits)?;
    }
    let fmt = image_format(format).ok_or_else(|| Error::Unsupported(format!("{format:?}")))?;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    reader.limits(image_limits(limits));
    let mut decoder = reader.into_decoder().map_err(|e| image_error(format, e))?;
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    let orientation = decoder
        .orientation()
        .ok()
        .map(orientation_number)
        .unwrap_or(1);
    Ok(Header {
        format,
        width,
        height,
        frames: 1,
        orientation,
        has_alpha: color.has_alpha(),
        color: format!("{color:?}").to_lowercase(),
        color_profile: None,
    })
}

/// A TIFF's embedded ICC profile (tag 34675), through the decoder, which reads it from the
/// first IFD without decoding pixels.
pub(super) fn profile(bytes: &[u8], format: Format) -> Option<SourceProfile> {
    let fmt = image_format(format)?;
    let reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    let mut decoder = reader.into_decoder().ok()?;
    let icc = decoder.icc_profile().ok().flatten()?;
    Some(profile::from_icc(&icc))
}

/// The width and height a BMP or TIFF header claims, read without a decoder; `None` when the
/// header is too short or not laid out as expected (the decoder then says what is wrong).
fn claimed_dims(bytes: &[u8], format: Format) -> Option<(u32, u32)> {
    let u16_le = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_le = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match format {
        Format::Bmp => match u32_le(14)? {
            // OS/2 BITMAPCOREHEADER: 16-bit sizes.
            12 => Some((u32::from(u16_le(18)?), u32::from(u16_le(20)?))),
            // BITMAPINFOHEADER and its successors: signed 32-bit, negative height = top-down.
            n if n >= 16 => {
                let w = u32_le(18)? as i32;
                let h = u32_le(22)? as i32;
                Some((w.unsigned_abs(), h.unsigned_abs()))
            }
            _ => None,
        },
        Format::Tiff => {
            let t = crate::tiff_bytes::TiffBytes::new(bytes)?;
            let (u16_at, u32_at) = (|i| t.u16_at(i), |i| t.u32_at(i));
            let (ifd, count) = t.first_ifd()?;
            let (mut width, mut height) = (None, None);
            for n in 0..count {
                let entry = ifd.checked_add(2 + n * 12)?;
                let value = match u16_at(entry + 2)? {
                    3 => u32::from(u16_at(entry + 8)?),
                    4 => u32_at(entry + 8)?,
                    _ => continue,
                };
                match u16_at(entry)? {
                    256 => width = Some(value),
                    257 => height = Some(value),
                    _ => {}
                }
                if let (Some(w), Some(h)) = (width, height) {
                    return Some((w, h));
                }
            }
            None
        }
        _ => None,
    }
}

fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    // The largest decoded frame (16-bit RGBA) plus room for the decoder's own buffers.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}

pub(super) fn decode(bytes: &[u8], header: &Header, limits: &Limits) -> Result<Image, Error> {
    let format = header.format;
    let fmt = image_format(format).ok_or_else(|| Error::Unsupported(format!("{format:?}")))?;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    reader.limits(image_limits(limits));
    // The first frame of an animation: `decode` on GIF, APNG and animated WebP gives it.
    let img = reader.decode().map_err(|e| match format {
        Format::Webp if riff_cut(bytes) => Error::Truncated { format },
        _ => image_error(format, e),
    })?;
    Ok(to_rgb_or_rgba(img))
}
