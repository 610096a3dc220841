//! Encoding renditions: one file a format, metadata embedded after the pixels are encoded.

mod avif;
mod avif_container;
mod intermediate;
mod jpeg;
mod png;
mod webp;

use serde::{Deserialize, Serialize};

pub use intermediate::{decode_intermediate, encode_intermediate};
pub(crate) use jpeg::flatten;

use crate::embed;
use crate::exif::{raw_exif, reset_orientation};
use crate::{Color, Error, Format, Image};

/// The output format a rendition asks for; `Same` keeps the source's format where it can be
/// encoded (JPEG, PNG, WebP), else JPEG for opaque and PNG for transparent images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
    Avif,
    #[default]
    Same,
}

impl OutputFormat {
    /// The concrete format for a source of `source` format and an image with/without alpha.
    pub fn resolve(self, source: Format, has_alpha: bool) -> Format {
        match self {
            OutputFormat::Jpeg => Format::Jpeg,
            OutputFormat::Png => Format::Png,
            OutputFormat::Webp => Format::Webp,
            OutputFormat::Avif => Format::Avif,
            OutputFormat::Same => match source {
                Format::Jpeg | Format::Png | Format::Webp => source,
                _ if has_alpha => Format::Png,
                _ => Format::Jpeg,
            },
        }
    }
}

/// Which JPEG encoder writes a JPEG rendition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JpegEncoder {
    /// mozjpeg's trellis quantisation, deringing and quantisation tables (the ones sharp's
    /// `mozjpeg: true` uses): the fewest bytes for the look, at a few times the encode time.
    #[default]
    Small,
    /// libjpeg-turbo with its standard tables and optimised Huffman codes: the fastest.
    Fast,
}

/// Default `effort`: where sharp's default also sits (its AVIF and WebP scales are 0..=9 and
/// 0..=6).
pub const DEFAULT_EFFORT: u8 = 4;
/// Largest `effort`.
pub const MAX_EFFORT: u8 = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Jpeg, Png, Webp or Avif.
    pub format: Format,
    /// 1..=100, for JPEG, lossy WebP and AVIF.
    pub quality: u8,
    /// Progressive JPEG (4:2:0 either way).
    pub progressive: bool,
    /// Lossless WebP.
    pub lossless: bool,
    /// Raw EXIF (TIFF structure) to embed; `None` strips all metadata. Orientation inside it is
    /// reset to 1 because pixels are already upright.
    pub exif: Option<Vec<u8>>,
    /// ICC profile to embed: the pixels are in that colour space rather than sRGB (a rendition
    /// that keeps the source's profile). `None` writes sRGB without a profile.
    pub icc: Option<Vec<u8>>,
    /// What transparent pixels are flattened onto when the format has no alpha (JPEG).
    pub background: Color,
    /// Which encoder writes JPEG.
    pub jpeg_encoder: JpegEncoder,
    /// 0..=9: time spent to save bytes: AVIF (libaom speed `9 - effort`; at 4, speed 4 without
    /// 1:4 partitions), WebP (method
    /// `min(effort, 6)`), the small JPEG encoder's progressive scans (searched per image: at 4
    /// up to 1.6 MP where the fixed layout gives under 0.75 bits a pixel, from 5 always). PNG ignores it.
    pub effort: u8,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            format: Format::Jpeg,
            quality: 80,
            progressive: false,
            lossless: false,
            exif: None,
            icc: None,
            background: Color::WHITE,
            jpeg_encoder: JpegEncoder::Small,
            effort: DEFAULT_EFFORT,
        }
    }
}

/// Encodes an image. No metadata is written unless `opts.exif` or `opts.icc` is given.
/// Whether this build writes `format` (AVIF output is a feature a lean build may leave out).
pub fn writes(format: Format) -> bool {
    matches!(format, Format::Jpeg | Format::Png | Format::Webp)
        || (format == Format::Avif && cfg!(feature = "avif"))
}

pub fn encode(img: &Image, opts: &EncodeOptions) -> Result<Vec<u8>, Error> {
    let pixels = encode_pixels(img, opts, opts.quality)?;
    with_metadata(pixels, img, opts)
}

/// The encoded pixels at `quality`, without the metadata `opts` asks for.
pub(crate) fn encode_pixels(
    img: &Image,
    opts: &EncodeOptions,
    quality: u8,
) -> Result<Vec<u8>, Error> {
    let format = opts.format;
    if !matches!(img, Image::ImageRgb8(_) | Image::ImageRgba8(_)) {
        return Err(Error::Encode {
            format,
            message: format!("expects 8-bit RGB or RGBA, got {:?}", img.color()),
        });
    }
    let quality = quality.clamp(1, 100);
    let effort = opts.effort.min(MAX_EFFORT);
    match format {
        Format::Jpeg => jpeg::encode(img, quality, opts, effort),
        Format::Png => png::encode(img, opts.icc.as_deref()),
        Format::Webp => webp::encode(img, quality, opts.lossless, effort),
        Format::Avif => avif::encode(img, quality, effort),
        other => Err(Error::Unsupported(format!("{other:?} output"))),
    }
}

/// Adds the EXIF and ICC profile `opts` asks for to encoded pixels.
pub(crate) fn with_metadata(
    out: Vec<u8>,
    img: &Image,
    opts: &EncodeOptions,
) -> Result<Vec<u8>, Error> {
    let format = opts.format;
    let exif = opts.exif.as_ref().map(|exif| {
        let mut exif = exif.clone();
        reset_orientation(&mut exif);
        exif
    });
    let icc = opts.icc.as_deref();
    Ok(match format {
        Format::Jpeg => {
            let out = match &exif {
                Some(exif) => embed::jpeg_with_exif(&out, exif),
                None => out,
            };
            match icc {
                Some(icc) => embed::jpeg_with_icc(&out, icc),
                None => out,
            }
        }
        // PNG's profile went in through the encoder (iCCP must precede the image data).
        Format::Png => match &exif {
            Some(exif) => embed::png_with_exif(&out, exif),
            None => out,
        },
        Format::Webp if icc.is_some() || exif.is_some() => embed::webp_with_metadata(
            &out,
            icc,
            exif.as_deref(),
            img.color().has_alpha(),
            (img.width(), img.height()),
        ),
        Format::Avif => match icc {
            Some(icc) => avif_container::with_icc(&out, icc).ok_or_else(|| Error::Encode {
                format,
                message: "the encoder's AVIF layout has no place for a profile".into(),
            })?,
            None => out,
        },
        _ => out,
    })
}

/// Largest EXIF block carried over: enough for any camera's, and one JPEG segment's worth.
const MAX_EXIF: usize = 65_000;

/// The source's raw EXIF block, for recipes that keep metadata.
pub fn exif_of(bytes: &[u8], format: Format) -> Option<Vec<u8>> {
    raw_exif(bytes, format).filter(|e| !e.is_empty() && e.len() <= MAX_EXIF)
}
