//! JPEG: libjpeg-turbo, for its SIMD decoder and DCT-domain scaling (shrink-on-load).

use image::{DynamicImage, RgbImage};
use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};

use super::{Header, buffer_mismatch, dim};
use crate::exif::orientation_of_exif;
use crate::profile::{self, SourceProfile};
use crate::{Error, Format, Image};

/// Progressive JPEGs can carry thousands of tiny scans that each cost a full pass over the
/// coefficients: a known decompression bomb. Real encoders write at most a few dozen.
const MAX_JPEG_SCANS: u32 = 500;

/// What the markers before the first scan say, beyond the frame header.
#[derive(Default)]
pub(crate) struct JpegMarkers<'a> {
    /// The TIFF structure of the APP1 `Exif\0\0` segment.
    pub(crate) exif: Option<&'a [u8]>,
    /// An APP14 `Adobe` segment: CMYK data is then stored inverted (Photoshop's convention).
    adobe: bool,
    /// APP2 `ICC_PROFILE` chunks as (sequence number, bytes): a profile over 64 KB is split
    /// across several segments.
    icc: Vec<(u8, &'a [u8])>,
}

/// Walks the marker segments up to the first SOS. Bounded by the input; allocates only the
/// list of ICC chunks, at most one entry per segment present.
pub(crate) fn jpeg_markers(bytes: &[u8]) -> JpegMarkers<'_> {
    let mut out = JpegMarkers::default();
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            break;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            // Fill bytes before a marker are allowed.
            i += 1;
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if len < 2 {
            break;
        }
        let body = bytes.get(i + 4..i + 2 + len);
        match (marker, body) {
            (0xE1, Some(b)) if b.starts_with(b"Exif\0\0") && out.exif.is_none() => {
                out.exif = Some(&b[6..]);
            }
            (0xEE, Some(b)) if b.starts_with(b"Adobe") => out.adobe = true,
            // "ICC_PROFILE\0", sequence number (1-based), chunk count, then the bytes.
            (0xE2, Some(b)) if b.len() > 14 && b.starts_with(b"ICC_PROFILE\0") => {
                out.icc.push((b[12], &b[14..]));
            }
            _ => {}
        }
        i += 2 + len;
    }
    out
}

fn tj_error(e: turbojpeg::Error) -> Error {
    let message = e.to_string();
    if message.contains("Premature end") {
        Error::Truncated {
            format: Format::Jpeg,
        }
    } else {
        Error::Decode {
            format: Format::Jpeg,
            message: message.trim_start_matches("TurboJPEG error: ").to_string(),
        }
    }
}

/// Whether the data ends before the frame header (SOFn) is complete: libjpeg-turbo then
/// reports something unhelpful, but the file is simply cut short.
fn jpeg_cut_before_frame(bytes: &[u8]) -> bool {
    let mut i = 2;
    loop {
        let Some(&[ff, marker]) = bytes.get(i..i + 2) else {
            return true;
        };
        if ff != 0xFF {
            return false;
        }
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let Some(len) = bytes.get(i + 2..i + 4) else {
            return true;
        };
        let end = i + 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        if end > bytes.len() {
            return true;
        }
        let frame = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if frame || marker == 0xDA || marker == 0xD9 {
            return false;
        }
        i = end;
    }
}

pub(super) fn header(bytes: &[u8]) -> Result<Header, Error> {
    let h = turbojpeg::read_header(bytes).map_err(|e| match jpeg_cut_before_frame(bytes) {
        true => Error::Truncated {
            format: Format::Jpeg,
        },
        false => tj_error(e),
    })?;
    let markers = jpeg_markers(bytes);
    let color = match h.colorspace {
        Colorspace::RGB => "rgb",
        Colorspace::YCbCr => "ycbcr",
        Colorspace::Gray => "gray",
        Colorspace::CMYK => "cmyk",
        Colorspace::YCCK => "ycck",
    };
    Ok(Header {
        format: Format::Jpeg,
        width: dim(h.width, Format::Jpeg)?,
        height: dim(h.height, Format::Jpeg)?,
        frames: 1,
        orientation: markers.exif.map(orientation_of_exif).unwrap_or(1),
        has_alpha: false,
        color: color.to_string(),
        color_profile: None,
    })
}

/// The embedded ICC profile, its APP2 chunks put back in sequence order. Chunks missing from
/// the sequence make the profile unreadable (reported as such by [`profile::from_icc`]).
pub(super) fn profile(bytes: &[u8]) -> Option<SourceProfile> {
    let mut chunks = jpeg_markers(bytes).icc;
    if chunks.is_empty() {
        return None;
    }
    chunks.sort_by_key(|(seq, _)| *seq);
    let total: usize = chunks.iter().map(|(_, c)| c.len()).sum();
    if total > profile::MAX_ICC_BYTES {
        return Some(profile::from_icc(&vec![0; profile::MAX_ICC_BYTES + 1]));
    }
    let mut icc = Vec::with_capacity(total);
    for (_, chunk) in chunks {
        icc.extend_from_slice(chunk);
    }
    Some(profile::from_icc(&icc))
}

/// The smallest of libjpeg-turbo's fast power-of-two DCT scalings whose output still covers
/// `need` (stored orientation). Lossless JPEGs cannot be scaled.
pub(crate) fn jpeg_scale(width: u32, height: u32, need: Option<(u32, u32)>) -> ScalingFactor {
    let Some((nw, nh)) = need else {
        return ScalingFactor::ONE;
    };
    for factor in [
        ScalingFactor::ONE_EIGHTH,
        ScalingFactor::ONE_QUARTER,
        ScalingFactor::ONE_HALF,
    ] {
        let (w, h) = (factor.scale(width as usize), factor.scale(height as usize));
        if w >= nw as usize && h >= nh as usize {
            return factor;
        }
    }
    ScalingFactor::ONE
}

/// Decodes (scaled by DCT when `need` allows). CMYK is converted to sRGB here, through the
/// embedded CMYK profile when there is one, else naively.
pub(super) fn decode(
    bytes: &[u8],
    header: &Header,
    need: Option<(u32, u32)>,
    profile: Option<&SourceProfile>,
) -> Result<Image, Error> {
    let mut d = Decompressor::new().map_err(tj_error)?;
    d.set_scan_limit(MAX_JPEG_SCANS).map_err(tj_error)?;
    let info = d.read_header(bytes).map_err(tj_error)?;
    let factor = if info.is_lossless {
        ScalingFactor::ONE
    } else {
        jpeg_scale(header.width, header.height, need)
    };
    d.set_scaling_factor(factor).map_err(tj_error)?;
    let scaled = info.scaled(factor);
    let (w, h) = (scaled.width, scaled.height);
    let cmyk = matches!(info.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let format = if cmyk {
        PixelFormat::CMYK
    } else {
        PixelFormat::RGB
    };
    let channels = format.size();
    // Dimensions were checked against the pixel limit by probe, so this is bounded.
    let mut pixels = vec![0u8; w * h * channels];
    d.decompress(
        bytes,
        turbojpeg::Image {
            pixels: pixels.as_mut_slice(),
            width: w,
            pitch: w * channels,
            height: h,
            format,
        },
    )
    .map_err(tj_error)?;
    let (w32, h32) = (dim(w, Format::Jpeg)?, dim(h, Format::Jpeg)?);
    if cmyk {
        let inverted = jpeg_markers(bytes).adobe;
        let managed = profile.and_then(|p| {
            // Profiles take ink amounts (0 = no ink); Adobe files store 255 minus those.
            if inverted {
                pixels.iter_mut().for_each(|v| *v = 255 - *v);
            }
            profile::cmyk_to_srgb(&pixels, p)
        });
        let rgb = match managed {
            Some(rgb) => rgb,
            // The naive conversion takes the stored values as they came.
            None if profile.is_some() && inverted => {
                pixels.iter_mut().for_each(|v| *v = 255 - *v);
                cmyk_to_rgb(&pixels, inverted)
            }
            None => cmyk_to_rgb(&pixels, inverted),
        };
        return RgbImage::from_raw(w32, h32, rgb)
            .map(DynamicImage::ImageRgb8)
            .ok_or_else(|| buffer_mismatch(Format::Jpeg));
    }
    RgbImage::from_raw(w32, h32, pixels)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| buffer_mismatch(Format::Jpeg))
}

/// Naive CMYK -> RGB (no ICC profile), what browsers and most tools do for untagged CMYK.
/// Adobe-marked files store the inks inverted, so there `c` already means `255 - cyan`.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let [c, m, y, k] = [px[0], px[1], px[2], px[3]].map(u32::from);
        let [c, m, y, k] = if inverted {
            [c, m, y, k]
        } else {
            [255 - c, 255 - m, 255 - y, 255 - k]
        };
        // (a * b + 127) / 255, rounded; both are "amount of light" here.
        let mul = |a: u32, b: u32| ((a * b + 127) / 255) as u8;
        out.extend_from_slice(&[mul(c, k), mul(m, k), mul(y, k)]);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scaling_keeps_at_least_the_needed_size() {
        assert_eq!(
            jpeg_scale(5640, 3172, Some((1024, 576))),
            ScalingFactor::ONE_QUARTER
        );
        assert_eq!(
            jpeg_scale(5640, 3172, Some((2048, 1152))),
            ScalingFactor::ONE_HALF
        );
        assert_eq!(
            jpeg_scale(5640, 3172, Some((455, 256))),
            ScalingFactor::ONE_EIGHTH
        );
        assert_eq!(
            jpeg_scale(5640, 3172, Some((3000, 1000))),
            ScalingFactor::ONE
        );
        assert_eq!(jpeg_scale(5640, 3172, None), ScalingFactor::ONE);
    }

    #[test]
    fn cmyk_conversion_honours_adobe_inversion() {
        // Pure red ink-wise is C=0 M=Y=255 K=0; Adobe files store 255 minus that.
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 255], true), [255, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[0, 255, 255, 0], false), [255, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255], false), [0, 0, 0]);
    }

    #[test]
    fn icc_chunks_are_joined_in_sequence_order() {
        let icc = moxcms::ColorProfile::new_display_p3().encode().unwrap();
        let (a, b) = icc.split_at(icc.len() / 2);
        let mut jpeg = vec![0xFF, 0xD8];
        // Written out of order: the sequence numbers decide.
        for (seq, part) in [(2u8, b), (1u8, a)] {
            let len = (part.len() + 16) as u16;
            jpeg.extend_from_slice(&[0xFF, 0xE2]);
            jpeg.extend_from_slice(&len.to_be_bytes());
            jpeg.extend_from_slice(b"ICC_PROFILE\0");
            jpeg.extend_from_slice(&[seq, 2]);
            jpeg.extend_from_slice(part);
        }
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        let p = profile(&jpeg).unwrap();
        assert!(p.info.warning.is_none(), "{:?}", p.info);
        assert_eq!(p.icc_to_embed(), Some(&icc[..]));
    }
}
