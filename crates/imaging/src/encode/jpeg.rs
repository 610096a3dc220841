use image::RgbImage;

use super::{EncodeOptions, JpegEncoder};
use crate::{Color, Error, Format, Image};

/// From this `effort` on, the small encoder searches the progressive scan layout of every
/// image.
pub const SCAN_SEARCH_EFFORT: u8 = 5;
/// At this `effort` (the default) it searches only where the search pays: images of at most
/// [`ADAPTIVE_SEARCH_MAX_PIXELS`] that the fixed layout encodes in fewer than
/// [`SEARCH_BELOW_BITS_PER_PIXEL`].
pub const ADAPTIVE_SCAN_SEARCH_EFFORT: u8 = 4;

/// Below this many bits a pixel (dark, smooth, monochrome photos, or low qualities), the scan
/// search saved 2-11 % of the fixed layout's bytes on the bench photos; above it, under 1 %
/// and sometimes nothing. These images are also the cheap ones to encode (trellis time grows
/// with the coefficients left), so encoding them twice costs little, while detailed photos at
/// web qualities (1.5-2 bits a pixel) are encoded once as before (docs/performance.md).
pub const SEARCH_BELOW_BITS_PER_PIXEL: f64 = 0.75;

/// The search costs two to three encodes, and its time grows with the pixels while its
/// saving stays a share of the file; up to this size (1600x1000, 1280x1250: the sizes pages
/// show) the default effort pays that, larger renditions (the 2048 px "large" of a preset,
/// mostly downloaded rather than shown) take it from effort 5. Searching those too cost the
/// bench's 24-photo batch 77 % more CPU (docs/performance.md).
pub const ADAPTIVE_SEARCH_MAX_PIXELS: u64 = 1_600_000;

/// When the small encoder searches the progressive scan layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanSearch {
    Never,
    /// Encode with the fixed layout; below [`SEARCH_BELOW_BITS_PER_PIXEL`] encode again with
    /// the search and keep the smaller file.
    WhenSmall,
    Always,
}

impl ScanSearch {
    fn for_effort(progressive: bool, effort: u8) -> Self {
        match effort {
            _ if !progressive => ScanSearch::Never,
            e if e >= SCAN_SEARCH_EFFORT => ScanSearch::Always,
            e if e >= ADAPTIVE_SCAN_SEARCH_EFFORT => ScanSearch::WhenSmall,
            _ => ScanSearch::Never,
        }
    }
}

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
        JpegEncoder::Small => {
            let search = ScanSearch::for_effort(opts.progressive, effort);
            small_searched(rgb, quality, opts.progressive, search)
        }
        JpegEncoder::Fast => fast(rgb, quality, opts.progressive),
    }
}

fn small_searched(
    rgb: &RgbImage,
    quality: u8,
    progressive: bool,
    search: ScanSearch,
) -> Result<Vec<u8>, Error> {
    match search {
        ScanSearch::Never => small(rgb, quality, progressive, false),
        ScanSearch::Always => small(rgb, quality, true, true),
        ScanSearch::WhenSmall => {
            let fixed = small(rgb, quality, true, false)?;
            let (w, h) = rgb.dimensions();
            if u64::from(w) * u64::from(h) > ADAPTIVE_SEARCH_MAX_PIXELS {
                return Ok(fixed);
            }
            let bits_per_pixel = fixed.len() as f64 * 8.0 / (f64::from(w) * f64::from(h)).max(1.0);
            if bits_per_pixel >= SEARCH_BELOW_BITS_PER_PIXEL {
                return Ok(fixed);
            }
            // The search is usually smaller but not always (its choice is made on trial sizes
            // before the Huffman tables are final), so the smaller of the two is kept.
            let searched = small(rgb, quality, true, true)?;
            Ok(if searched.len() < fixed.len() {
                searched
            } else {
                fixed
            })
        }
    }
}

/// mozjpeg's encoder: trellis quantisation of the AC coefficients, overshoot deringing, its
/// ImageMagick (Robidoux) tables, optimised Huffman codes, and for progressive output
/// mozjpeg's fixed nine-scan layout. 4:2:0 like the fast path.
///
/// DC trellis is left out: a tenth of the encode time for under 0.1 % of bytes on 1024 px
/// photos. The per-image scan search (`search_scans`) saves up to a tenth of the bytes on
/// smooth or dark photos (nothing on detailed ones) for 2 to 3 times the encode time, so by
/// default it runs only on the images where it pays ([`ScanSearch::WhenSmall`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(img: &RgbImage, effort: u8) -> Vec<u8> {
        let opts = EncodeOptions {
            effort,
            progressive: true,
            ..EncodeOptions::default()
        };
        encode(&Image::ImageRgb8(img.clone()), 80, &opts, effort).expect("encodes")
    }

    fn bits_per_pixel(bytes: &[u8], img: &RgbImage) -> f64 {
        bytes.len() as f64 * 8.0 / f64::from(img.width() * img.height())
    }

    #[test]
    fn default_effort_searches_scans_of_smooth_images_only() {
        // A smooth gradient: well under the threshold, so the default effort keeps the
        // smaller of the fixed and searched layouts.
        let smooth = RgbImage::from_fn(320, 240, |x, y| {
            image::Rgb([(x * 255 / 319) as u8, (y * 255 / 239) as u8, 90])
        });
        let (fixed, default, searched) = (jpeg(&smooth, 3), jpeg(&smooth, 4), jpeg(&smooth, 5));
        assert!(bits_per_pixel(&fixed, &smooth) < SEARCH_BELOW_BITS_PER_PIXEL);
        assert!(fixed != searched, "the search chose another layout");
        assert_eq!(default.len(), fixed.len().min(searched.len()));

        // Noise: far over the threshold, so the default is the fixed layout, byte for byte.
        let mut state = 12345u32;
        let noisy = RgbImage::from_fn(320, 240, |_, _| {
            let mut next = || {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            };
            image::Rgb([next(), next(), next()])
        });
        let fixed = jpeg(&noisy, 3);
        assert!(bits_per_pixel(&fixed, &noisy) > SEARCH_BELOW_BITS_PER_PIXEL);
        assert!(jpeg(&noisy, 4) == fixed, "the fixed layout, byte for byte");
        assert!(jpeg(&noisy, 5) != fixed, "effort 5 searches every image");

        // Smooth but over the size cap: the fixed layout at the default effort.
        let big = RgbImage::from_fn(1400, 1200, |x, y| {
            image::Rgb([(x * 255 / 1399) as u8, (y * 255 / 1199) as u8, 90])
        });
        let fixed = jpeg(&big, 3);
        assert!(bits_per_pixel(&fixed, &big) < SEARCH_BELOW_BITS_PER_PIXEL);
        assert!(u64::from(big.width() * big.height()) > ADAPTIVE_SEARCH_MAX_PIXELS);
        assert!(jpeg(&big, 4) == fixed, "over the cap, the fixed layout");
    }

    #[test]
    fn baseline_output_is_never_searched() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 0]));
        let opts = |effort| EncodeOptions {
            effort,
            progressive: false,
            ..EncodeOptions::default()
        };
        let enc = |effort| {
            encode(&Image::ImageRgb8(img.clone()), 80, &opts(effort), effort).expect("encodes")
        };
        let baseline = enc(0);
        // SOF0: a baseline frame, at every effort.
        assert!(baseline.windows(2).any(|w| w == [0xFF, 0xC0]));
        assert!(enc(9) == baseline, "no scans to search in a baseline file");
    }
}
