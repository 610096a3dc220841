use image::RgbImage;

use super::{EncodeOptions, JpegEncoder};
use crate::{Color, Error, Format, Image};

/// From this `effort` on, the small encoder searches the progressive scan layout of every
/// image.
pub const SCAN_SEARCH_EFFORT: u8 = 5;
/// At this `effort` (the default) it searches only where the search pays: images of at most
/// [`ADAPTIVE_SEARCH_MAX_PIXELS`] that the fixed layout would encode in fewer than
/// [`SEARCH_BELOW_BITS_PER_PIXEL`], as a libjpeg-turbo encode predicts
/// ([`PREDICTED_SEARCH_BELOW_BITS_PER_PIXEL`]).
pub const ADAPTIVE_SCAN_SEARCH_EFFORT: u8 = 4;

/// Below this many bits a pixel (dark, smooth, monochrome photos, or low qualities), the scan
/// search saved 2-11 % of the fixed layout's bytes on the bench photos; above it, under 1 %
/// and sometimes nothing. These images are also the cheap ones to encode (trellis time grows
/// with the coefficients left), so encoding them twice costs little, while detailed photos at
/// web qualities (1.5-2 bits a pixel) are encoded once as before (docs/performance.md).
// What the prediction below aims at; the code reads only the prediction's own threshold,
// the tests check both.
#[cfg_attr(not(test), allow(dead_code))]
pub const SEARCH_BELOW_BITS_PER_PIXEL: f64 = 0.75;

/// Which side of [`SEARCH_BELOW_BITS_PER_PIXEL`] an image falls is predicted rather than
/// measured: encoding with the fixed layout first only to learn its size cost a fifth of the
/// searched encode. A plain libjpeg-turbo encode at the same quality (standard tables, no
/// Huffman optimisation, no trellis) takes a tenth of the fixed layout's time (1.4 ms for a
/// 1024 px photo) and writes 1.1 to 3 times its bytes, the factor steady at the sizes that
/// matter here: on 18 photos at ten qualities from 30 to 95 (bench/bytes_case.py's sweep,
/// 1024 px), this threshold on its bits a pixel made the same choice as the fixed layout's
/// own size 175 times out of 180; the five others were within 0.1 bits a pixel of it, where
/// the search saves 1-2 %. Where the search runs the fixed layout is no longer encoded: on
/// those photos, below 0.9 bits a pixel, the search never wrote a larger file.
pub const PREDICTED_SEARCH_BELOW_BITS_PER_PIXEL: f64 = 0.95;

/// The search costs two to three encodes, and its time grows with the pixels while its
/// saving stays a share of the file; up to this size (1600x1000, 1280x1250: the sizes pages
/// show) the default effort pays that, larger renditions (the 2048 px "large" of a preset,
/// mostly downloaded rather than shown) take it from effort 5. Searching those too cost the
/// bench's 24-photo batch 77 % more CPU (docs/performance.md).
pub const ADAPTIVE_SEARCH_MAX_PIXELS: u64 = 1_600_000;

/// How far the AC trellis looks back, and how many values it tries, by how many of a block's
/// 63 AC coefficients survive rounding. mozjpeg's own limits narrow the search only above 48
/// of them; narrowing it from 13 (16 positions back, 4 values) and from 41 (8 back, 3 values)
/// made the encode 8 % faster (3 ms of 44 for a 1024 px photo at q80) for the same bytes at
/// equal SSIMULACRA2 within 0.03 % on each of 8 photos over qualities 30-95. Narrower still
/// (every block 10 back, 3 values) saved 13 % but cost up to 4 % of bytes on smooth skies.
const TRELLIS_SPEED: mozjpeg_rs::TrellisSpeedMode = mozjpeg_rs::TrellisSpeedMode::Custom {
    tier1_threshold: 40,
    tier1_lookback: 8,
    tier1_candidates: 3,
    tier2_threshold: 12,
    tier2_lookback: 16,
    tier2_candidates: 4,
};

/// When the small encoder searches the progressive scan layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanSearch {
    Never,
    /// Search where a quick encode predicts fewer than [`SEARCH_BELOW_BITS_PER_PIXEL`] with
    /// the fixed layout, else encode with the fixed layout.
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
            let (w, h) = rgb.dimensions();
            let pixels = u64::from(w) * u64::from(h);
            let search = pixels <= ADAPTIVE_SEARCH_MAX_PIXELS
                && predicted_bits_per_pixel(rgb, quality)? < PREDICTED_SEARCH_BELOW_BITS_PER_PIXEL;
            small(rgb, quality, true, search)
        }
    }
}

/// Bits a pixel of a plain libjpeg-turbo encode at `quality`, which predicts the small
/// encoder's (see [`PREDICTED_SEARCH_BELOW_BITS_PER_PIXEL`]).
fn predicted_bits_per_pixel(rgb: &RgbImage, quality: u8) -> Result<f64, Error> {
    let bytes = turbo(rgb, quality, false, false)?;
    let pixels = f64::from(rgb.width()) * f64::from(rgb.height());
    Ok(bytes.len() as f64 * 8.0 / pixels.max(1.0))
}

/// mozjpeg's encoder: trellis quantisation of the AC coefficients, overshoot deringing, its
/// ImageMagick (Robidoux) tables, optimised Huffman codes, and for progressive output
/// mozjpeg's fixed nine-scan layout. 4:2:0 like the fast path.
///
/// DC trellis is left out: a tenth of the encode time for under 0.1 % of bytes on 1024 px
/// photos. The AC trellis narrows its search on busy blocks ([`TRELLIS_SPEED`]). The
/// per-image scan search (`search_scans`) saves up to a tenth of the bytes on smooth or dark
/// photos (nothing on detailed ones) for about 3 times the encode time, so by default it runs
/// only on the images where it pays ([`ScanSearch::WhenSmall`]).
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
        .trellis(mozjpeg_rs::TrellisConfig {
            speed_mode: TRELLIS_SPEED,
            ..mozjpeg_rs::TrellisConfig::default().dc_trellis(false)
        })
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
    // Optimised Huffman tables: a few per cent smaller for a little CPU (sharp's default too).
    turbo(rgb, quality, progressive, true)
}

fn turbo(rgb: &RgbImage, quality: u8, progressive: bool, optimize: bool) -> Result<Vec<u8>, Error> {
    let err = |e: turbojpeg::Error| Error::Encode {
        format: Format::Jpeg,
        message: e.to_string(),
    };
    let mut c = turbojpeg::Compressor::new().map_err(err)?;
    c.set_quality(i32::from(quality)).map_err(err)?;
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2).map_err(err)?;
    c.set_optimize(optimize).map_err(err)?;
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
        // A smooth gradient: well under the threshold, so the default effort searches.
        let smooth = RgbImage::from_fn(320, 240, |x, y| {
            image::Rgb([(x * 255 / 319) as u8, (y * 255 / 239) as u8, 90])
        });
        let (fixed, default, searched) = (jpeg(&smooth, 3), jpeg(&smooth, 4), jpeg(&smooth, 5));
        assert!(bits_per_pixel(&fixed, &smooth) < SEARCH_BELOW_BITS_PER_PIXEL);
        assert!(
            predicted_bits_per_pixel(&smooth, 80).expect("encodes")
                < PREDICTED_SEARCH_BELOW_BITS_PER_PIXEL
        );
        assert!(fixed != searched, "the search chose another layout");
        assert!(default == searched, "the searched layout, byte for byte");
        assert!(searched.len() < fixed.len());

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
        assert!(
            predicted_bits_per_pixel(&noisy, 80).expect("encodes")
                > PREDICTED_SEARCH_BELOW_BITS_PER_PIXEL
        );
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
    fn the_prediction_tracks_the_fixed_layouts_size() {
        // Images from flat to noisy: where the fixed layout is clearly under the threshold
        // the prediction is too, and clearly over, over.
        let mut state = 7u32;
        for amplitude in [0u32, 8, 16, 32, 64, 128, 255] {
            let img = RgbImage::from_fn(256, 192, |x, y| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (state >> 24) * amplitude / 255;
                let v = |base: u32| (base + noise).min(255) as u8;
                image::Rgb([v(x / 2), v(y), v(100)])
            });
            let fixed = bits_per_pixel(&jpeg(&img, 3), &img);
            let predicted = predicted_bits_per_pixel(&img, 80).expect("encodes");
            if fixed < 0.6 * SEARCH_BELOW_BITS_PER_PIXEL {
                assert!(
                    predicted < PREDICTED_SEARCH_BELOW_BITS_PER_PIXEL,
                    "{amplitude}"
                );
            }
            if fixed > 1.4 * SEARCH_BELOW_BITS_PER_PIXEL {
                assert!(
                    predicted > PREDICTED_SEARCH_BELOW_BITS_PER_PIXEL,
                    "{amplitude}"
                );
            }
            assert!(predicted > fixed, "{amplitude}: {predicted} {fixed}");
        }
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
