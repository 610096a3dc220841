//! Header probing with limits, then decoding into upright 8-bit RGB/RGBA, one file a format.

mod avif;
mod generic;
mod gif;
mod heif;
mod isobmff;
mod jpeg;
mod png;
mod webp;
mod ycbcr;

use serde::{Deserialize, Serialize};

use crate::profile::{self, ProfileInfo, SourceProfile};
use crate::{Error, Format, Image, sniff};

/// What an upload may be. Checked from the header, before any pixel buffer is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_bytes: u64,
    pub max_pixels: u64,
    pub max_side: u32,
    pub max_frames: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 100 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_side: 32_768,
            max_frames: 1_000,
        }
    }
}

/// What the header says, read without decoding pixels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub format: Format,
    /// Stored dimensions, before the EXIF orientation is applied.
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    /// EXIF orientation 1..=8 (1 when absent or invalid).
    pub orientation: u8,
    pub has_alpha: bool,
    /// Colour model as stored, e.g. "rgb8", "rgba16", "l8", "la8", "indexed8", "cmyk", "ycbcr".
    pub color: String,
    /// The embedded colour description (ICC profile, nclx, cICP, gAMA/cHRM), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color_profile: Option<ProfileInfo>,
}

impl Header {
    /// Dimensions after the orientation is applied (5..=8 swap width and height).
    pub fn oriented_dims(&self) -> (u32, u32) {
        if (5..=8).contains(&self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Sniffs the format and reads the header, then checks every limit. Allocates nothing
/// proportional to the claimed image size.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    probe_with_profile(bytes, limits).map(|(header, _)| header)
}

/// [`probe`], also handing back the colour description it read, so decoding does not parse
/// the profile a second time.
fn probe_with_profile(
    bytes: &[u8],
    limits: &Limits,
) -> Result<(Header, Option<SourceProfile>), Error> {
    let size = bytes.len() as u64;
    if size > limits.max_bytes {
        return Err(Error::TooManyBytes {
            size,
            limit: limits.max_bytes,
        });
    }
    let format = sniff(bytes)?;
    let mut header = match format {
        Format::Jpeg => jpeg::header(bytes)?,
        Format::Png => png::header(bytes, limits)?,
        Format::Gif => gif::header(bytes, limits)?,
        Format::Webp => webp::header(bytes, limits)?,
        Format::Tiff | Format::Bmp => generic::header(bytes, format, limits)?,
        Format::Heic => heif::header(bytes, limits)?,
        Format::Avif => avif::header(bytes, limits)?,
        Format::Qoi => return Err(Error::Unsupported("QOI input".into())),
    };
    check_limits(&header, limits)?;
    let profile = source_profile(bytes, format);
    header.color_profile = profile.as_ref().map(|p| p.info.clone());
    Ok((header, profile))
}

/// The colour description a source carries, read from its container (no pixels decoded).
pub fn source_profile(bytes: &[u8], format: Format) -> Option<SourceProfile> {
    match format {
        Format::Jpeg => jpeg::profile(bytes),
        Format::Png => png::profile(bytes),
        Format::Webp => webp::profile(bytes),
        Format::Tiff => generic::profile(bytes, format),
        Format::Heic => heif::profile(bytes),
        Format::Avif => avif::profile(bytes),
        _ => None,
    }
}

fn check_limits(h: &Header, limits: &Limits) -> Result<(), Error> {
    check_dims(h.format, h.width, h.height, limits)?;
    if h.frames > limits.max_frames {
        return Err(Error::TooManyFrames {
            frames: u64::from(h.frames),
            limit: limits.max_frames,
        });
    }
    Ok(())
}

/// A width and height (of the image, or of one frame in it) against the pixel and side limits.
fn check_dims(format: Format, width: u32, height: u32, limits: &Limits) -> Result<(), Error> {
    if width == 0 || height == 0 {
        return Err(Error::Decode {
            format,
            message: format!("the header claims {width}x{height} pixels"),
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Error::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    let side = width.max(height);
    if side > limits.max_side {
        return Err(Error::SideTooLong {
            side,
            limit: limits.max_side,
        });
    }
    Ok(())
}

/// How a decode treats the source's colour description; in recipes, a rendition's
/// `colorProfile`: `"srgb"` (default) or `"keep"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorHandling {
    /// Convert to sRGB (the default: right everywhere, and no profile to carry).
    #[default]
    Srgb,
    /// Leave the pixels in the source's colour space and hand back its profile.
    Keep,
}

/// A decoded image with the colour description its pixels are in: `None` means sRGB.
#[derive(Debug)]
pub struct Decoded {
    pub image: Image,
    pub profile: Option<SourceProfile>,
}

/// Decodes the first frame into upright 8-bit sRGB (or sRGB with alpha). `at_least` is the
/// smallest upright size the caller needs: a JPEG may then be decoded with DCT scaling
/// (shrink-on-load), so the result can be smaller than the source but never smaller than
/// `at_least` on either side. Calls [`probe`] first, so limits hold before any buffer is
/// allocated.
pub fn decode(bytes: &[u8], limits: &Limits, at_least: Option<(u32, u32)>) -> Result<Image, Error> {
    Ok(decode_with(bytes, limits, at_least, ColorHandling::Srgb)?.image)
}

/// [`decode`], with the choice to keep the source's colour space ([`ColorHandling::Keep`]):
/// the pixels are then as stored and [`Decoded::profile`] says what they mean. CMYK and gray
/// sources are converted to sRGB either way, since outputs are RGB.
pub fn decode_with(
    bytes: &[u8],
    limits: &Limits,
    at_least: Option<(u32, u32)>,
    color: ColorHandling,
) -> Result<Decoded, Error> {
    let (header, profile) = probe_with_profile(bytes, limits)?;
    let profile = profile.filter(SourceProfile::needs_conversion);
    let mut img = match header.format {
        Format::Jpeg => {
            // The caller's size is upright; the decoder works on the stored orientation.
            let need = at_least.map(|(w, h)| {
                if (5..=8).contains(&header.orientation) {
                    (h, w)
                } else {
                    (w, h)
                }
            });
            jpeg::decode(bytes, &header, need, profile.as_ref())?
        }
        Format::Png => png::decode(bytes)?,
        Format::Heic => heif::decode(bytes)?,
        Format::Avif => avif::decode(bytes, limits)?,
        _ => generic::decode(bytes, &header, limits)?,
    };
    if let Some(o) = image::metadata::Orientation::from_exif(header.orientation) {
        img.apply_orientation(o);
    }
    let profile = profile.filter(|p| p.info.color_space != "cmyk");
    match (color, profile) {
        (_, None) => Ok(Decoded {
            image: img,
            profile: None,
        }),
        (ColorHandling::Keep, Some(p)) if p.icc_to_embed().is_some() => Ok(Decoded {
            image: img,
            profile: Some(p),
        }),
        (_, Some(p)) => Ok(Decoded {
            image: profile::to_srgb(img, &p)?,
            profile: None,
        }),
    }
}

/// The raw EXIF block of a JPEG (APP1), for [`crate::exif`].
pub(crate) fn jpeg_exif(bytes: &[u8]) -> Option<&[u8]> {
    jpeg::jpeg_markers(bytes).exif
}

pub(crate) fn dim(v: usize, format: Format) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::Decode {
        format,
        message: format!("dimension {v} is out of range"),
    })
}

pub(crate) fn buffer_mismatch(format: Format) -> Error {
    Error::Decode {
        format,
        message: "decoded buffer does not match its dimensions".into(),
    }
}

/// Every later stage handles exactly two layouts: 8-bit RGB and 8-bit RGBA.
pub(crate) fn to_rgb_or_rgba(img: image::DynamicImage) -> Image {
    use image::DynamicImage;
    match img {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => img,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// Later stages work on straight alpha.
pub(crate) fn unpremultiply(img: &mut image::RgbaImage) {
    for px in img.pixels_mut() {
        let a = u32::from(px.0[3]);
        if a > 0 && a < 255 {
            for c in &mut px.0[..3] {
                *c = ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
}
