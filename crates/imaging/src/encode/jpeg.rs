use image::RgbImage;

use super::{EncodeOptions, JpegEncoder};
use crate::{Color, Error, Format, Image};

/// From this `effort` on, the small encoder searches the progressive scan layout per image.
pub const SCAN_SEARCH_EFFORT: u8 = 5;

pub(super) fn encode(
    img: &Image,
    quality: u8,
    opts: &EncodeOptions,
    effort: u8,
) -> Result<Vec<u8>, Error> {
    // JPEG has no alpha: transparent areas are flattened onto the background (white unless
    // the recipe says otherwise), which is what a product photo on a web page expects.
    let flattened;
    let rgb: &RgbImage = match img {
        Image::ImageRgb8(buf) => buf,
        Image::ImageRgba8(buf) => {
            flattened = flatten(buf, opts.background);
            &flattened
        }
        _ => {
            return Err(Error::Encode {
                format: Format::Jpeg,
                message: "unexpected layout".into(),
            });
        }
    };
    match opts.jpeg_encoder {
        JpegEncoder::Small => small(
            rgb,
            quality,
            opts.progressive,
            opts.progressive && effort >= SCAN_SEARCH_EFFORT,
        ),
        JpegEncoder::Fast => fast(rgb, quality, opts.progressive),
    }
}

/// mozjpeg's encoder: trellis quantisation of the AC coefficients, overshoot deringing, its
/// ImageMagick (Robidoux) tables, optimised Huffman codes, and for progressive output
/// mozjpeg's fixed nine-scan layout. 4:2:0 like the fast path.
///
/// DC trellis is left out: a tenth of the encode time for under 0.1 % of bytes on 1024 px
/// photos. The per-image scan search (`search_scans`, effort 5 and up) saves up to a tenth
/// of the bytes on smooth or dark photos (nothing on detailed ones) for 1.5 to 2.5 times the
/// encode time, so it is not the default (docs/performance.md).
fn small(
    rgb: &RgbImage,
    quality: u8,
    progressive: bool,
    search_scans: bool,
) -> Result<Vec<u8>, Error> {
    let encoder = if search_scans {
        mozjpeg_rs::Encoder::max_compression()
    } else if progressive {
        mozjpeg_rs::Encoder::progressive_balanced()
    } else {
        mozjpeg_rs::Encoder::baseline_optimized()
    };
    let (w, h) = rgb.dimensions();
    encoder
        .trellis(mozjpeg_rs::TrellisConfig::default().dc_trellis(false))
        .quality(quality)
        .subsampling(mozjpeg_rs::Subsampling::S420)
        // 8-bit quantisation tables even at the lowest qualities, so every decoder that reads
        // baseline (or progressive) JPEG reads these; 16-bit tables are an extended-mode
        // feature some decoders refuse.
        .force_baseline(true)
        .encode_rgb(rgb.as_raw(), w, h)
        .map_err(|e| Error::Encode {
            format: Format::Jpeg,
            message: e.to_string(),
        })
}

fn fast(rgb: &RgbImage, quality: u8, progressive: bool) -> Result<Vec<u8>, Error> {
    let err = |e: turbojpeg::Error| Error::Encode {
        format: Format::Jpeg,
        message: e.to_string(),
    };
    let mut c = turbojpeg::Compressor::new().map_err(err)?;
    c.set_quality(i32::from(quality)).map_err(err)?;
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2).map_err(err)?;
    // Optimised Huffman tables: a few per cent smaller for a little CPU (sharp's default too).
    c.set_optimize(true).map_err(err)?;
    c.set_progressive(progressive).map_err(err)?;
    let (w, h) = rgb.dimensions();
    let image = turbojpeg::Image {
        pixels: rgb.as_raw().as_slice(),
        width: w as usize,
        pitch: w as usize * 3,
        height: h as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    c.compress_to_vec(image).map_err(err)
}

/// Composites straight-alpha pixels over an opaque background colour.
pub(crate) fn flatten(rgba: &image::RgbaImage, background: Color) -> RgbImage {
    let (w, h) = rgba.dimensions();
    let bg = background.0.map(u32::from);
    let mut out = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
    for px in rgba.as_raw().chunks_exact(4) {
        let a = u32::from(px[3]);
        for (&c, &b) in px[..3].iter().zip(&bg) {
            out.push(((u32::from(c) * a + b * (255 - a) + 127) / 255) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}
