//! Decoding every accepted format and colour model to correct upright RGB(A), encoding with
//! and without metadata, shrink-on-load, and the lossless intermediate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;

use imaging::image::{self, DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};
use imaging::{EncodeOptions, Format, Image, Limits};

const RED: [u8; 3] = [230, 20, 20];
const GREEN: [u8; 3] = [20, 200, 40];
const BLUE: [u8; 3] = [30, 40, 220];
const WHITE: [u8; 3] = [250, 250, 250];

/// An upright 64x32 picture with four coloured quadrants: any mirroring or rotation shows.
fn quadrants() -> RgbImage {
    RgbImage::from_fn(64, 32, |x, y| {
        Rgb(match (x < 32, y < 16) {
            (true, true) => RED,
            (false, true) => GREEN,
            (true, false) => BLUE,
            (false, false) => WHITE,
        })
    })
}

fn close(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (i32::from(*x) - i32::from(y)).abs() <= tol)
}

/// Centre of each quadrant of an upright 64x32 image matches `quadrants()`.
fn assert_quadrants(img: &Image, tol: i32, what: &str) {
    assert_eq!(
        (img.width(), img.height()),
        (64, 32),
        "{what}: upright size"
    );
    let rgb = img.to_rgb8();
    for (x, y, want) in [
        (16, 8, RED),
        (48, 8, GREEN),
        (16, 24, BLUE),
        (48, 24, WHITE),
    ] {
        let got = rgb.get_pixel(x, y).0;
        assert!(
            close(got, want, tol),
            "{what}: at ({x},{y}) got {got:?}, want {want:?}"
        );
    }
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    imaging::encode(
        &DynamicImage::ImageRgb8(img.clone()),
        &EncodeOptions {
            format: Format::Jpeg,
            quality,
            ..Default::default()
        },
    )
    .unwrap()
}

fn png_of(img: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A little-endian TIFF/EXIF block: IFD0 with Orientation and, optionally, a GPS IFD.
fn exif_block(orientation: u16, gps: bool) -> Vec<u8> {
    let mut t = vec![b'I', b'I', 42, 0, 8, 0, 0, 0];
    let entries: u16 = if gps { 2 } else { 1 };
    t.extend_from_slice(&entries.to_le_bytes());
    t.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0]);
    t.extend_from_slice(&orientation.to_le_bytes());
    t.extend_from_slice(&[0, 0]);
    if gps {
        // GPSInfo (LONG) -> the GPS IFD right after this one.
        let gps_at: u32 = 8 + 2 + 2 * 12 + 4;
        t.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0]);
        t.extend_from_slice(&gps_at.to_le_bytes());
    }
    t.extend_from_slice(&[0, 0, 0, 0]);
    if gps {
        // GPS IFD: GPSLatitudeRef = "N".
        t.extend_from_slice(&1u16.to_le_bytes());
        t.extend_from_slice(&[0x01, 0x00, 2, 0, 2, 0, 0, 0, b'N', 0, 0, 0]);
        t.extend_from_slice(&[0, 0, 0, 0]);
    }
    t
}

fn has_gps(exif: &[u8]) -> bool {
    let e = exif::Reader::new().read_raw(exif.to_vec()).unwrap();
    e.get_field(exif::Tag::GPSLatitudeRef, exif::In::PRIMARY)
        .is_some()
}

/// What a camera stores for orientation `n` when the scene is `upright`: the inverse of the
/// transform a viewer applies.
fn stored_for(upright: &RgbImage, n: u8) -> RgbImage {
    let inverse = match n {
        6 => 8,
        8 => 6,
        other => other,
    };
    let mut img = DynamicImage::ImageRgb8(upright.clone());
    img.apply_orientation(image::metadata::Orientation::from_exif(inverse).unwrap());
    img.to_rgb8()
}

#[test]
fn exif_orientations_1_to_8_all_land_upright_in_jpeg_and_png() {
    let upright = quadrants();
    for n in 1..=8u8 {
        let stored = stored_for(&upright, n);
        let exif = Some(exif_block(u16::from(n), false));
        // Encoding resets the orientation it embeds, so splice the tag in by hand.
        let plain = jpeg(&stored, 95);
        let mut with = vec![0xFF, 0xD8, 0xFF, 0xE1];
        let block = exif.clone().unwrap();
        with.extend_from_slice(&((block.len() + 8) as u16).to_be_bytes());
        with.extend_from_slice(b"Exif\0\0");
        with.extend_from_slice(&block);
        with.extend_from_slice(&plain[2..]);
        let header = imaging::probe(&with, &Limits::default()).unwrap();
        assert_eq!(header.orientation, n);
        let img = imaging::decode(&with, &Limits::default(), None).unwrap();
        assert_quadrants(&img, 24, &format!("jpeg orientation {n}"));

        let mut png = png_of(&DynamicImage::ImageRgb8(stored.clone()));
        // eXIf right after IHDR.
        let mut chunk = (block.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(b"eXIf");
        chunk.extend_from_slice(&block);
        let crc = crc32(&chunk[4..]);
        chunk.extend_from_slice(&crc.to_be_bytes());
        png.splice(33..33, chunk);
        let img = imaging::decode(&png, &Limits::default(), None).unwrap();
        assert_quadrants(&img, 0, &format!("png orientation {n}"));
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn png_colour_models_decode_to_correct_rgb() {
    let limits = Limits::default();
    // 16-bit RGB: 0xFFFF -> 255, 0x8080 -> 128.
    let img16 = image::ImageBuffer::<Rgb<u16>, _>::from_pixel(4, 4, Rgb([0xFFFF, 0x8080, 0]));
    let out = imaging::decode(&png_of(&DynamicImage::ImageRgb16(img16)), &limits, None).unwrap();
    assert_eq!(out.as_rgb8().unwrap().get_pixel(1, 1).0, [255, 128, 0]);
    let h = imaging::probe(
        &png_of(&DynamicImage::ImageRgb16(image::ImageBuffer::new(2, 2))),
        &limits,
    )
    .unwrap();
    assert_eq!(h.color, "rgb16");

    // Grey and grey + alpha.
    let grey = image::GrayImage::from_pixel(3, 3, image::Luma([77]));
    let out = imaging::decode(&png_of(&DynamicImage::ImageLuma8(grey)), &limits, None).unwrap();
    assert_eq!(out.as_rgb8().unwrap().get_pixel(0, 0).0, [77, 77, 77]);
    let ga = image::GrayAlphaImage::from_pixel(3, 3, image::LumaA([200, 50]));
    let out = imaging::decode(&png_of(&DynamicImage::ImageLumaA8(ga)), &limits, None).unwrap();
    assert_eq!(
        out.as_rgba8().unwrap().get_pixel(2, 2).0,
        [200, 200, 200, 50]
    );

    // RGBA keeps its alpha.
    let rgba = RgbaImage::from_pixel(3, 3, Rgba([1, 2, 3, 4]));
    let bytes = png_of(&DynamicImage::ImageRgba8(rgba));
    assert!(imaging::probe(&bytes, &limits).unwrap().has_alpha);
    let out = imaging::decode(&bytes, &limits, None).unwrap();
    assert_eq!(out.as_rgba8().unwrap().get_pixel(0, 0).0, [1, 2, 3, 4]);

    // Palette with a transparent entry, written with the png crate directly.
    let mut pal = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut pal, 2, 1);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
        enc.set_trns(vec![255, 0]);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0, 1]).unwrap();
    }
    let h = imaging::probe(&pal, &limits).unwrap();
    assert_eq!((h.color.as_str(), h.has_alpha), ("indexed8", true));
    let out = imaging::decode(&pal, &limits, None).unwrap();
    let out = out.as_rgba8().unwrap();
    assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0, 255]);
    assert_eq!(out.get_pixel(1, 0).0[3], 0);
}

#[test]
fn cmyk_and_grey_jpegs_come_out_in_the_right_colours() {
    // Adobe-style (inverted) CMYK, as Photoshop writes it: pure red ink = C0 M100 Y100 K0.
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(95).unwrap();
    c.set_subsamp(turbojpeg::Subsamp::None).unwrap();
    let px: Vec<u8> = (0..16 * 16).flat_map(|_| [255u8, 0, 0, 255]).collect();
    let cmyk = c
        .compress_to_vec(turbojpeg::Image {
            pixels: px.as_slice(),
            width: 16,
            pitch: 64,
            height: 16,
            format: turbojpeg::PixelFormat::CMYK,
        })
        .unwrap();
    let h = imaging::probe(&cmyk, &Limits::default()).unwrap();
    assert!(h.color == "cmyk" || h.color == "ycck", "{}", h.color);
    let out = imaging::decode(&cmyk, &Limits::default(), None).unwrap();
    let got = out.as_rgb8().unwrap().get_pixel(8, 8).0;
    assert!(close(got, [255, 0, 0], 6), "CMYK red came out {got:?}");

    let grey: Vec<u8> = vec![90; 16 * 16];
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_subsamp(turbojpeg::Subsamp::Gray).unwrap();
    let g = c
        .compress_to_vec(turbojpeg::Image {
            pixels: grey.as_slice(),
            width: 16,
            pitch: 16,
            height: 16,
            format: turbojpeg::PixelFormat::GRAY,
        })
        .unwrap();
    assert_eq!(
        imaging::probe(&g, &Limits::default()).unwrap().color,
        "gray"
    );
    let out = imaging::decode(&g, &Limits::default(), None).unwrap();
    let [r, gg, b] = out.as_rgb8().unwrap().get_pixel(3, 3).0;
    assert!(r == gg && gg == b && (88..=92).contains(&r), "{r} {gg} {b}");
}

#[test]
fn gif_webp_tiff_bmp_decode_and_animations_use_the_first_frame() {
    let limits = Limits::default();
    let upright = DynamicImage::ImageRgb8(quadrants());
    for fmt in [
        image::ImageFormat::Tiff,
        image::ImageFormat::Bmp,
        image::ImageFormat::Gif,
    ] {
        let mut bytes = Vec::new();
        upright.write_to(&mut Cursor::new(&mut bytes), fmt).unwrap();
        let img = imaging::decode(&bytes, &limits, None).unwrap();
        assert_quadrants(&img, 12, &format!("{fmt:?}"));
    }

    // Lossless WebP from our own encoder round-trips exactly.
    let webp = imaging::encode(
        &upright,
        &EncodeOptions {
            format: Format::Webp,
            quality: 80,
            lossless: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(imaging::sniff(&webp).unwrap(), Format::Webp);
    let img = imaging::decode(&webp, &limits, None).unwrap();
    assert_eq!(img.to_rgb8(), quadrants());

    // A two-frame GIF: red then blue. The first frame is what gets used.
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        let red = RgbaImage::from_pixel(8, 8, Rgba([255, 0, 0, 255]));
        let blue = RgbaImage::from_pixel(8, 8, Rgba([0, 0, 255, 255]));
        enc.encode_frames([image::Frame::new(red), image::Frame::new(blue)])
            .unwrap();
    }
    let h = imaging::probe(&gif, &limits).unwrap();
    assert_eq!((h.format, h.frames), (Format::Gif, 2));
    let img = imaging::decode(&gif, &limits, None).unwrap();
    let px = img.to_rgb8().get_pixel(4, 4).0;
    assert!(close(px, [255, 0, 0], 4), "first frame is red, got {px:?}");
    let few = Limits {
        max_frames: 1,
        ..limits
    };
    assert!(matches!(
        imaging::probe(&gif, &few),
        Err(imaging::Error::TooManyFrames { frames: 2, .. })
    ));
}

#[test]
fn jpeg_is_shrunk_on_load_but_never_below_what_is_asked() {
    let big = RgbImage::from_fn(1600, 1200, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let bytes = jpeg(&big, 85);
    let limits = Limits::default();
    let full = imaging::decode(&bytes, &limits, None).unwrap();
    assert_eq!((full.width(), full.height()), (1600, 1200));
    let quarter = imaging::decode(&bytes, &limits, Some((400, 300))).unwrap();
    assert_eq!((quarter.width(), quarter.height()), (400, 300));
    let half = imaging::decode(&bytes, &limits, Some((401, 300))).unwrap();
    assert_eq!((half.width(), half.height()), (800, 600));
}

#[test]
fn metadata_is_stripped_unless_kept_and_kept_exif_is_upright() {
    let img = DynamicImage::ImageRgb8(quadrants());
    let source_exif = exif_block(6, true);
    for format in [Format::Jpeg, Format::Png, Format::Webp] {
        let mut opts = EncodeOptions {
            format,
            quality: 80,
            progressive: format == Format::Jpeg,
            ..Default::default()
        };
        let stripped = imaging::encode(&img, &opts).unwrap();
        assert_eq!(imaging::sniff(&stripped).unwrap(), format);
        assert!(
            imaging::exif_of(&stripped, format).is_none(),
            "{format:?} carries no EXIF"
        );

        opts.exif = Some(source_exif.clone());
        let kept = imaging::encode(&img, &opts).unwrap();
        let exif = imaging::exif_of(&kept, format).expect("EXIF kept");
        assert!(has_gps(&exif), "{format:?} kept the GPS block");
        let h = imaging::probe(&kept, &Limits::default()).unwrap();
        assert_eq!(
            h.orientation, 1,
            "{format:?}: pixels are upright, so the tag says so"
        );
        let back = imaging::decode(&kept, &Limits::default(), None).unwrap();
        assert_eq!((back.width(), back.height()), (64, 32));
    }
}

#[test]
fn jpeg_output_of_transparent_images_is_flattened_on_white() {
    let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(16, 16, Rgba([0, 0, 0, 0])));
    let bytes = imaging::encode(
        &clear,
        &EncodeOptions {
            format: Format::Jpeg,
            quality: 90,
            ..Default::default()
        },
    )
    .unwrap();
    let back = imaging::decode(&bytes, &Limits::default(), None).unwrap();
    assert!(close(
        back.as_rgb8().unwrap().get_pixel(8, 8).0,
        [255, 255, 255],
        2
    ));
}

/// AVIF output has an `avif` brand, an image-spatial-extents box with the image's size and
/// 8-bit AV1, and reads back as the picture it was made of, for opaque and transparent images.
#[test]
fn avif_output_is_an_avif_of_the_right_size() {
    let ispe = |bytes: &[u8]| -> (u32, u32) {
        let at = bytes
            .windows(4)
            .position(|w| w == b"ispe")
            .expect("an ispe box");
        let u = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
        (u(at + 8), u(at + 12))
    };
    for img in [
        DynamicImage::ImageRgb8(quadrants()),
        DynamicImage::ImageRgba8(RgbaImage::from_pixel(64, 32, Rgba([200, 10, 10, 128]))),
    ] {
        let bytes = imaging::encode(
            &img,
            &EncodeOptions {
                format: Format::Avif,
                quality: 60,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(imaging::sniff(&bytes).unwrap(), Format::Avif);
        assert_eq!(ispe(&bytes), (64, 32));
        // 8-bit AV1 (av1C's high_bitdepth flag clear): decoders built without high bit depth,
        // sharp's prebuilt one among them, refuse 10-bit files.
        let av1c = bytes
            .windows(4)
            .position(|w| w == b"av1C")
            .expect("an av1C box");
        assert_eq!(bytes[av1c + 6] & 0x40, 0, "high_bitdepth set");
        // The container is trimmed: no encoder name, no item names, no nclx box (the AV1
        // sequence header carries the colour code points).
        for needle in [&b"libavif"[..], b"Color", b"Alpha", b"nclx"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} still in the file",
                String::from_utf8_lossy(needle)
            );
        }
        let back = imaging::decode(&bytes, &Limits::default(), None).unwrap();
        assert_eq!(back.color().has_alpha(), img.color().has_alpha());
        if img.color().has_alpha() {
            let px = back.to_rgba8().get_pixel(10, 10).0;
            assert!(close([px[0], px[1], px[3]], [200, 10, 128], 6), "{px:?}");
        } else {
            assert_quadrants(&back, 6, "AVIF");
        }
    }
}

#[test]
fn intermediate_round_trips_losslessly() {
    for img in [
        DynamicImage::ImageRgb8(quadrants()),
        DynamicImage::ImageRgba8(RgbaImage::from_fn(30, 20, |x, y| {
            Rgba([x as u8, y as u8, 7, (x * y) as u8])
        })),
    ] {
        let bytes = imaging::encode_intermediate(&img).unwrap();
        assert_eq!(imaging::decode_intermediate(&bytes).unwrap(), img);
    }
    assert!(imaging::decode_intermediate(b"qoif\0\0\0\x01").is_err());
}

#[test]
fn output_format_same_keeps_what_can_be_written() {
    use imaging::OutputFormat::*;
    assert_eq!(Same.resolve(Format::Png, true), Format::Png);
    assert_eq!(Same.resolve(Format::Gif, true), Format::Png);
    assert_eq!(Same.resolve(Format::Tiff, false), Format::Jpeg);
    assert_eq!(Webp.resolve(Format::Jpeg, false), Format::Webp);
}

/// The real photo the README's example uses: a 17.9 MP progressive JPEG from Debian's
/// mate-backgrounds, installed by scripts/setup.
#[test]
fn real_progressive_photo_decodes_shrunk_on_load() {
    let path = "/usr/share/backgrounds/mate/abstract/Elephants_5640x3172.jpg";
    let bytes = std::fs::read(path).expect("scripts/setup installs mate-backgrounds");
    let h = imaging::probe(&bytes, &Limits::default()).unwrap();
    assert_eq!((h.format, h.width, h.height), (Format::Jpeg, 5640, 3172));
    let img = imaging::decode(&bytes, &Limits::default(), Some((1024, 576))).unwrap();
    assert_eq!((img.width(), img.height()), (1410, 793));
}
