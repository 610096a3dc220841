//! The encoders that make renditions small: mozjpeg's trellis JPEG (still a plain JPEG every
//! decoder reads) and `quality: "auto"`, which must land on its perceptual target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use image::{DynamicImage, Rgb, RgbImage};
use imaging::{Color, EncodeOptions, Format, Image, JpegEncoder, Limits};
use support::photos;

/// A second photo-like picture, unlike the colour truth: a sky gradient over a textured
/// ground with hard-edged shapes, so both smooth areas (where blocking shows) and detail
/// (where bytes go) weigh in the score.
fn landscape(w: u32, h: u32) -> RgbImage {
    let mut seed: u32 = 0x2545_f491;
    RgbImage::from_fn(w, h, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        // Sensor-like grain: a few levels, as in a well-exposed photo.
        let noise = (seed % 7) as i32 - 3;
        let horizon = h * 3 / 5 + (x * 7 % 40);
        let px = if y < horizon {
            // Sky: a slow blue gradient with a soft sun.
            let dx = x as i32 - (w as i32 * 2 / 3);
            let dy = y as i32 - (h as i32 / 4);
            let sun = (2500 - (dx * dx + dy * dy) / 4).max(0) / 20;
            [
                (90 + y * 60 / h) as i32 + sun,
                (140 + y * 50 / h) as i32 + sun,
                (220 - y * 30 / h) as i32 + sun / 2,
            ]
        } else {
            // Ground: fields in stripes, with a rolling texture that fades with distance.
            let stripe = if (x / 37 + y / 23) % 3 == 0 { 30 } else { 0 };
            let (fx, fy) = (x as f32, y as f32);
            let depth = (fy - (h * 3 / 5) as f32) / (h as f32 * 0.4);
            let wave = ((fx * 0.21 + fy * 0.05).sin() * (fy * 0.17).cos() * 14.0 * depth) as i32;
            [
                60 + stripe + wave + noise,
                110 + stripe / 2 + wave * 2 + noise,
                40 + wave / 2 + noise,
            ]
        };
        Rgb(px.map(|c| c.clamp(0, 255) as u8))
    })
}

fn truth() -> RgbImage {
    imaging::decode(&photos::read("truth.png"), &Limits::default(), None)
        .unwrap()
        .to_rgb8()
}

fn opts(format: Format, jpeg_encoder: JpegEncoder, progressive: bool) -> EncodeOptions {
    EncodeOptions {
        format,
        quality: 80,
        progressive,
        jpeg_encoder,
        ..Default::default()
    }
}

/// The start-of-frame markers of a JPEG: 0xC0 baseline, 0xC2 progressive.
fn frame_markers(jpeg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        if marker == 0xDA {
            break;
        }
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            out.push(marker);
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        i += 2 + len;
    }
    out
}

/// Every quantisation table's precision nibble (0 = 8-bit, as baseline requires).
fn table_precisions(jpeg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF && jpeg[i + 1] != 0xDA {
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if jpeg[i + 1] == 0xDB {
            let mut t = i + 4;
            while t < i + 2 + len {
                let precision = jpeg[t] >> 4;
                out.push(precision);
                t += 1 + if precision == 0 { 64 } else { 128 };
            }
        }
        i += 2 + len;
    }
    out
}

/// What Pillow (libjpeg) makes of a file: "WxH progressive?" or its error.
fn pillow_reads(bytes: &[u8]) -> String {
    let dir = tempfile_dir();
    let path = dir.join(format!(
        "{:x}.jpg",
        bytes.len() * 31 + bytes[bytes.len() / 2] as usize
    ));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(photos::python())
        .arg("-c")
        .arg(
            "import sys; from PIL import Image\n\
             im = Image.open(sys.argv[1]); im.load()\n\
             print(f\"{im.size[0]}x{im.size[1]} {im.mode} {int(bool(im.info.get('progressive')))}\")",
        )
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "Pillow could not read the JPEG: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quality-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_small_jpeg_encoder_writes_plain_jpegs_that_common_decoders_read() {
    let img = Image::ImageRgb8(truth());
    for progressive in [false, true] {
        let jpeg =
            imaging::encode(&img, &opts(Format::Jpeg, JpegEncoder::Small, progressive)).unwrap();
        let expect = if progressive { 0xC2 } else { 0xC0 };
        assert_eq!(frame_markers(&jpeg), [expect], "progressive {progressive}");
        // 8-bit tables even at quality 1: extended-precision tables are what a baseline
        // decoder refuses.
        let lowest = imaging::encode(
            &img,
            &EncodeOptions {
                quality: 1,
                ..opts(Format::Jpeg, JpegEncoder::Small, progressive)
            },
        )
        .unwrap();
        assert!(table_precisions(&lowest).iter().all(|&p| p == 0));
        assert!(!table_precisions(&lowest).is_empty());

        // The image crate's own decoder (not libjpeg-turbo, which imaging decodes with).
        let decoded = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
            .expect("the image crate reads it");
        assert_eq!(
            (decoded.width(), decoded.height()),
            (img.width(), img.height())
        );
        let again = imaging::decode(&jpeg, &Limits::default(), None).unwrap();
        let score = imaging::score(&img, &again, Color::WHITE).unwrap();
        assert!(score > 60.0, "q80 scores {score:.1}");

        assert_eq!(
            pillow_reads(&jpeg),
            format!(
                "{}x{} RGB {}",
                img.width(),
                img.height(),
                u8::from(progressive)
            )
        );
    }
}

#[test]
fn the_small_encoder_spends_fewer_bytes_than_the_fast_one_for_the_same_score() {
    for (name, img) in [("truth", truth()), ("landscape", landscape(640, 426))] {
        let img = Image::ImageRgb8(img);
        let fast = imaging::encode(&img, &opts(Format::Jpeg, JpegEncoder::Fast, false)).unwrap();
        let fast_score = score_of(&img, &fast);
        // The lowest quality at which the small encoder scores as high as fast at q80.
        let small = (50..=100)
            .map(|q| {
                let bytes = imaging::encode(
                    &img,
                    &EncodeOptions {
                        quality: q,
                        ..opts(Format::Jpeg, JpegEncoder::Small, true)
                    },
                )
                .unwrap();
                let score = score_of(&img, &bytes);
                (q, bytes.len(), score)
            })
            .find(|(_, _, score)| *score >= fast_score)
            .expect("some quality reaches the fast encoder's score");
        // Fewer bytes for the same score on both pictures; the margin on real photos (15-20 %)
        // is measured by bench/compare.sh, since synthetic pictures flatter neither encoder.
        assert!(
            small.1 < fast.len(),
            "{name}: small q{} {} bytes (score {:.1}) against fast q80 {} bytes (score {fast_score:.1})",
            small.0,
            small.1,
            small.2,
            fast.len()
        );
    }
}

fn score_of(reference: &Image, bytes: &[u8]) -> f64 {
    let decoded = imaging::decode(bytes, &Limits::default(), None).unwrap();
    imaging::score(reference, &decoded, Color::WHITE).unwrap()
}

#[test]
fn automatic_quality_lands_within_three_points_of_its_target() {
    let photos = [("truth", truth()), ("landscape", landscape(800, 533))];
    for (name, img) in photos {
        let img = Image::ImageRgb8(img);
        for format in [Format::Jpeg, Format::Webp, Format::Avif] {
            for target in [70.0, 75.0] {
                let o = EncodeOptions {
                    format,
                    ..Default::default()
                };
                let auto = imaging::encode_auto(&img, &o, target).unwrap();
                let quality = auto.quality.expect("a lossy format has a quality");
                // The score reported is the file's: measured again here from its bytes.
                let measured = score_of(&img, &auto.bytes);
                assert!(
                    (measured - auto.score).abs() < 0.01,
                    "{name} {format:?}: reported {:.2}, measured {measured:.2}",
                    auto.score
                );
                // Within 3 points, unless the encoder's scale has no step in between: AVIF's
                // 64 quantizer levels can move a small picture's score 3.5 points at once.
                // Then the quality under the one chosen must miss the target.
                if measured - target > 3.0 {
                    let under = EncodeOptions {
                        quality: quality - 1,
                        ..o.clone()
                    };
                    let under = score_of(&img, &imaging::encode(&img, &under).unwrap());
                    assert!(
                        under < target,
                        "{name} {format:?} target {target}: q{quality} scored {measured:.2}, \
                         yet q{} scored {under:.2}",
                        quality - 1
                    );
                }
                // It reaches the target (these photos can), rather than settling under it.
                assert!(
                    measured >= target,
                    "{name} {format:?} target {target}: q{quality} scored {measured:.2}"
                );
            }
        }
    }
}

#[test]
fn automatic_quality_on_a_large_image_is_chosen_on_its_centre_and_keeps_the_metadata() {
    let img = Image::ImageRgb8(landscape(2400, 1600));
    let o = EncodeOptions {
        format: Format::Jpeg,
        icc: Some(std::fs::read(photos::dir().join("display-p3.icc")).unwrap()),
        ..Default::default()
    };
    let auto = imaging::encode_auto(&img, &o, 70.0).unwrap();
    let decoded = imaging::decode(&auto.bytes, &Limits::default(), None).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (2400, 1600));
    // The profile asked for is in the file.
    let header = imaging::probe(&auto.bytes, &Limits::default()).unwrap();
    assert!(
        header.color_profile.is_some(),
        "the ICC profile was dropped"
    );
    // The whole image at the chosen quality is what was written.
    let plain = imaging::encode(
        &img,
        &EncodeOptions {
            quality: auto.quality.unwrap(),
            ..o
        },
    )
    .unwrap();
    assert_eq!(plain, auto.bytes);
}

#[test]
fn automatic_quality_for_a_lossless_output_encodes_as_asked_and_scores_it() {
    let img = Image::ImageRgb8(landscape(300, 200));
    for format in [Format::Png, Format::Webp] {
        let o = EncodeOptions {
            format,
            lossless: true,
            ..Default::default()
        };
        let auto = imaging::encode_auto(&img, &o, 70.0).unwrap();
        assert_eq!(auto.quality, None, "{format:?}");
        assert!(
            auto.score > 99.0,
            "{format:?} lossless scored {}",
            auto.score
        );
    }
}

#[test]
fn scores_fall_as_quality_falls_and_refuse_mismatched_sizes() {
    let img = Image::ImageRgb8(landscape(400, 300));
    let scores: Vec<f64> = [95, 75, 40, 10]
        .iter()
        .map(|&q| {
            let bytes = imaging::encode(
                &img,
                &EncodeOptions {
                    quality: q,
                    ..Default::default()
                },
            )
            .unwrap();
            score_of(&img, &bytes)
        })
        .collect();
    assert!(scores.windows(2).all(|w| w[0] > w[1]), "{scores:?}");
    assert!((imaging::score(&img, &img, Color::WHITE).unwrap() - 100.0).abs() < 1e-6);
    let other = DynamicImage::ImageRgb8(landscape(300, 400));
    let err = imaging::score(&img, &other, Color::WHITE).unwrap_err();
    assert!(err.to_string().contains("differ in size"), "{err}");
}
