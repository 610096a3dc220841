//! PNG: the `png` crate directly, so 16-bit images never need a 16-bit buffer.

use std::io::Cursor;

use image::{DynamicImage, RgbImage};

use super::{Header, Limits, buffer_mismatch, check_limits};
use crate::exif::orientation_of_exif;
use crate::profile::{self, SourceProfile};
use crate::{Error, Format, Image};

pub(super) fn header(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    // IHDR is the first chunk, at a fixed offset: check the size before any decoder runs. Only
    // once the chunk there is a 13-byte IHDR do those bytes mean a width and a height.
    let (width, height) = match (bytes.get(8..16), bytes.get(16..24)) {
        (Some(chunk), _) if chunk != b"\0\0\0\x0dIHDR" => {
            return Err(Error::Decode {
                format: Format::Png,
                message: "the first chunk is not an image header (IHDR)".into(),
            });
        }
        (Some(_), Some(b)) => (
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ),
        _ => {
            return Err(Error::Truncated {
                format: Format::Png,
            });
        }
    };
    let early = Header {
        format: Format::Png,
        width,
        height,
        frames: 1,
        orientation: 1,
        has_alpha: false,
        color: String::new(),
        color_profile: None,
    };
    check_limits(&early, limits)?;
    let decoder = png::Decoder::new(Cursor::new(bytes));
    let reader = decoder.read_info().map_err(|e| png_error(&e))?;
    let info = reader.info();
    let has_alpha = matches!(
        info.color_type,
        png::ColorType::Rgba | png::ColorType::GrayscaleAlpha
    ) || info.trns.is_some();
    let kind = match info.color_type {
        png::ColorType::Grayscale => "l",
        png::ColorType::GrayscaleAlpha => "la",
        png::ColorType::Rgb => "rgb",
        png::ColorType::Rgba => "rgba",
        png::ColorType::Indexed => "indexed",
    };
    let frames = info.animation_control.map(|a| a.num_frames).unwrap_or(1);
    let orientation = info
        .exif_metadata
        .as_deref()
        .map(orientation_of_exif)
        .unwrap_or(1);
    Ok(Header {
        format: Format::Png,
        width: info.width,
        height: info.height,
        frames: frames.max(1),
        orientation,
        has_alpha,
        color: format!("{kind}{}", info.bit_depth as u8),
        color_profile: None,
    })
}

/// The colour description, in the order of precedence the PNG specification gives: cICP,
/// then iCCP, then sRGB, then gAMA with cHRM.
pub(super) fn profile(bytes: &[u8]) -> Option<SourceProfile> {
    let reader = png::Decoder::new(Cursor::new(bytes)).read_info().ok()?;
    let info = reader.info();
    if let Some(c) = &info.coding_independent_code_points {
        return Some(profile::from_cicp(
            "cicp",
            u16::from(c.color_primaries),
            u16::from(c.transfer_function),
            u16::from(c.matrix_coefficients),
        ));
    }
    if let Some(icc) = &info.icc_profile {
        return Some(profile::from_icc(icc));
    }
    if info.srgb.is_some() {
        return None;
    }
    let gamma = info.source_gamma?.into_value();
    let chrm = info.source_chromaticities.map(|c| {
        let pair = |(x, y): (png::ScaledFloat, png::ScaledFloat)| (x.into_value(), y.into_value());
        [pair(c.white), pair(c.red), pair(c.green), pair(c.blue)]
    });
    Some(profile::from_gamma(gamma, chrm))
}

/// PNG straight to 8 bits per sample: palettes and low bit depths are expanded and 16-bit
/// samples cut to their high byte as rows are read, so no 16-bit buffer is ever made. (The
/// `image` crate decodes 16-bit RGBA into 8 bytes a pixel and converts after: 12 bytes a pixel
/// at the peak, 300 MB for a 25 MP image that compresses to a few hundred kilobytes.)
pub(super) fn decode(bytes: &[u8]) -> Result<Image, Error> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| png_error(&e))?;
    let size = reader.output_buffer_size().ok_or_else(|| Error::Decode {
        format: Format::Png,
        message: "the image is too large to address".into(),
    })?;
    let mut buf = vec![0u8; size];
    // The first frame: the default image of an APNG, as browsers show without animation.
    let frame = reader.next_frame(&mut buf).map_err(|e| png_error(&e))?;
    buf.truncate(frame.buffer_size());
    let (w, h) = (frame.width, frame.height);
    let img = match frame.color_type {
        png::ColorType::Rgb => RgbImage::from_raw(w, h, buf).map(DynamicImage::ImageRgb8),
        png::ColorType::Rgba => image::RgbaImage::from_raw(w, h, buf).map(DynamicImage::ImageRgba8),
        png::ColorType::Grayscale => {
            let rgb = buf.iter().flat_map(|&l| [l, l, l]).collect();
            RgbImage::from_raw(w, h, rgb).map(DynamicImage::ImageRgb8)
        }
        png::ColorType::GrayscaleAlpha => {
            let rgba = buf
                .chunks_exact(2)
                .flat_map(|la| [la[0], la[0], la[0], la[1]])
                .collect();
            image::RgbaImage::from_raw(w, h, rgba).map(DynamicImage::ImageRgba8)
        }
        png::ColorType::Indexed => None,
    };
    img.ok_or_else(|| buffer_mismatch(Format::Png))
}

fn png_error(e: &png::DecodingError) -> Error {
    match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Truncated {
                format: Format::Png,
            }
        }
        other => {
            let message = other.to_string();
            if message.contains("EOF") || message.contains("end of") || message.contains("truncat")
            {
                Error::Truncated {
                    format: Format::Png,
                }
            } else {
                Error::Decode {
                    format: Format::Png,
                    message,
                }
            }
        }
    }
}
