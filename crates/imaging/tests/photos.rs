//! Photos as phones and cameras make them: Display P3 and Adobe RGB JPEGs, P3 PNG, WebP, HEIC
//! and AVIF, sRGB HEIC and AVIF, rotated and tiled HEICs and AVIFs, a 10-bit HEIC, a 4:2:2 AVIF,
//! a CMYK JPEG with its CMYK profile, each compared pixel by pixel with
//! the sRGB picture a colour-managed viewer shows (converted by LittleCMS in
//! `support/make_photos.py`), after the same resize.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use imaging::image::RgbImage;
use imaging::{Color, ColorHandling, EncodeOptions, Format, Image, Limits};
use support::photos;

/// Mean and 99th percentile of the absolute difference over every channel value.
fn diff(a: &RgbImage, b: &RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut d: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    let mean = d.iter().map(|&v| f64::from(v)).sum::<f64>() / d.len() as f64;
    d.sort_unstable();
    (mean, d[d.len() * 99 / 100])
}

/// Both sides resized the same way, as a rendition would be.
fn rendition(img: &Image) -> RgbImage {
    imaging::resize_exact(img, 240, 160).unwrap().to_rgb8()
}

/// An image with alpha as it shows over mid gray; an opaque one as it is.
fn over_gray(img: &Image) -> RgbImage {
    let rgba = img.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(p.0[3]);
        for c in 0..3 {
            o.0[c] = ((u32::from(p.0[c]) * a + 128 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

fn truth() -> RgbImage {
    let img = imaging::decode(&photos::read("truth.png"), &Limits::default(), None).unwrap();
    rendition(&img)
}

fn decoded(name: &str) -> Image {
    imaging::decode(&photos::read(name), &Limits::default(), None)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn wide_gamut_photos_come_out_as_the_srgb_truth() {
    let truth = truth();
    // srgb.jpg is the control: what lossy coding alone costs.
    for name in [
        "srgb.jpg",
        "p3.jpg",
        "adobe.jpg",
        "p3.png",
        "p3.webp",
        "p3.tif",
        "p3.heic",
        "srgb.heic",
        "p3-grid.heic",
        "p3-10bit.heic",
        "p3-rot6.heic",
        "p3.avif",
        "srgb.avif",
        "p3-grid.avif",
        "p3-rot6.avif",
        "srgb-422.avif",
    ] {
        let img = decoded(name);
        assert_eq!((img.width(), img.height()), (480, 320), "{name}");
        let (mean, p99) = diff(&rendition(&img), &truth);
        println!("{name:16} mean {mean:.2} p99 {p99}");
        assert!(
            mean <= 1.2 && p99 <= 14,
            "{name}: mean {mean:.2}, p99 {p99} against the sRGB truth"
        );
    }
}

#[test]
fn without_colour_management_the_same_pixels_are_visibly_off() {
    // The control: P3 numbers shown as if sRGB (what dropping the profile does) miss the
    // truth by more than the tolerance the managed files meet, so the test above can fail.
    let (mean, p99) = diff(&rendition(&decoded("p3-untagged.jpg")), &truth());
    println!("p3-untagged mean {mean:.2} p99 {p99}");
    assert!(mean > 1.2 || p99 > 14, "mean {mean:.2}, p99 {p99}");
}

#[test]
fn headers_name_the_profile() {
    let limits = Limits::default();
    for (name, description, srgb) in [
        ("p3.jpg", "Display P3", false),
        ("adobe.jpg", "Adobe RGB (1998)", false),
        ("p3.png", "Display P3", false),
        ("p3.webp", "Display P3", false),
        ("p3.tif", "Display P3", false),
        ("p3.heic", "Display P3", false),
        ("srgb.heic", "sRGB", true),
        ("p3.avif", "Display P3", false),
        ("p3-grid.avif", "Display P3", false),
        ("srgb.avif", "sRGB", true),
    ] {
        let h = imaging::probe(&photos::read(name), &limits).unwrap();
        let p = h
            .color_profile
            .unwrap_or_else(|| panic!("{name}: no profile"));
        assert_eq!(p.description, description, "{name}");
        assert_eq!(p.srgb, srgb, "{name}");
        assert_eq!(p.color_space, "rgb");
        assert!(p.warning.is_none());
    }
    let h = imaging::probe(&photos::read("p3-untagged.jpg"), &limits).unwrap();
    assert!(h.color_profile.is_none());
    let h = imaging::probe(&photos::read("p3-10bit.heic"), &limits).unwrap();
    assert_eq!(
        (h.format, h.color.as_str()),
        (Format::Heic, "ycbcr420-10bit")
    );
    for (name, color) in [
        ("p3.avif", "ycbcr444-8bit"),
        ("srgb.avif", "ycbcr420-8bit"),
        ("srgb-422.avif", "ycbcr422-8bit"),
        ("gray.avif", "gray-8bit"),
    ] {
        let h = imaging::probe(&photos::read(name), &limits).unwrap();
        assert_eq!(
            (h.format, h.color.as_str()),
            (Format::Avif, color),
            "{name}"
        );
    }
}

#[test]
fn keep_leaves_the_pixels_and_embeds_the_profile_in_every_format() {
    let limits = Limits::default();
    let icc = photos::read("display-p3.icc");
    let kept =
        imaging::decode_with(&photos::read("p3.jpg"), &limits, None, ColorHandling::Keep).unwrap();
    let profile = kept
        .profile
        .as_ref()
        .expect("the P3 profile is handed back");
    assert_eq!(profile.icc_to_embed(), Some(&icc[..]));
    // The pixels are the stored P3 numbers, exactly what the same JPEG without a profile
    // decodes to.
    let untagged = decoded("p3-untagged.jpg").to_rgb8();
    assert_eq!(kept.image.to_rgb8(), untagged);

    for format in [Format::Jpeg, Format::Png, Format::Webp, Format::Avif] {
        let opts = EncodeOptions {
            format,
            quality: 95,
            icc: Some(icc.clone()),
            ..Default::default()
        };
        let out = imaging::encode(&kept.image, &opts).unwrap();
        if format == Format::Avif {
            // The profile sits in a `colr` property, and the image data is still where
            // `iloc` says: the same AV1 payload as without the profile.
            let plain = imaging::encode(&kept.image, &EncodeOptions { icc: None, ..opts }).unwrap();
            let mut colr = b"colrprof".to_vec();
            colr.extend_from_slice(&icc);
            assert!(
                out.windows(colr.len()).any(|w| w == colr),
                "no colr prof box"
            );
            let with = avif_parse::read_avif(&mut &out[..]).unwrap();
            let without = avif_parse::read_avif(&mut &plain[..]).unwrap();
            assert_eq!(&with.primary_item[..], &without.primary_item[..]);
            continue;
        }
        let p = imaging::source_profile(&out, format)
            .unwrap_or_else(|| panic!("{format:?}: no profile in the output"));
        assert_eq!(p.icc_to_embed(), Some(&icc[..]), "{format:?}");
        // Read back with the profile applied, it shows what the source shows, but for a
        // second generation of lossy coding.
        let back = imaging::decode(&out, &limits, None).unwrap();
        let (mean, p99) = diff(&rendition(&back), &rendition(&decoded("p3.jpg")));
        println!("kept {format:?}: mean {mean:.2} p99 {p99}");
        assert!(mean <= 1.2 && p99 <= 14, "{format:?}: {mean:.2} {p99}");
    }

    // An AVIF's profile is handed back the same way, its pixels left as stored.
    let kept =
        imaging::decode_with(&photos::read("p3.avif"), &limits, None, ColorHandling::Keep).unwrap();
    assert_eq!(
        kept.profile.as_ref().and_then(|p| p.icc_to_embed()),
        Some(&icc[..])
    );
    let converted = decoded("p3.avif").to_rgb8();
    assert_ne!(kept.image.to_rgb8(), converted);

    // An sRGB source has nothing to keep.
    let srgb = imaging::decode_with(
        &photos::read("srgb.heic"),
        &limits,
        None,
        ColorHandling::Keep,
    )
    .unwrap();
    assert!(srgb.profile.is_none());
}

#[test]
fn a_tiled_heic_decodes_whole_and_a_rotated_one_upright() {
    let grid = photos::read("p3-grid.heic");
    // 480x320 in 128x128 tiles: a 4x3 grid, so 12 coded images make the one picture.
    let tiles = grid.windows(4).filter(|w| w == b"hvc1").count();
    assert!(tiles >= 12, "{tiles} hvc1 items");
    let img = decoded("p3-grid.heic");
    assert_eq!((img.width(), img.height()), (480, 320));

    let rot = photos::read("p3-rot6.heic");
    let h = imaging::probe(&rot, &Limits::default()).unwrap();
    // Stored 320x480; irot turns it, and EXIF orientation is not applied on top.
    assert_eq!((h.width, h.height, h.orientation), (480, 320, 1));
}

/// `file` with every `ispe` box claiming 70000x70000 is refused by its header, by name.
fn refuses_70000_squared(mut file: Vec<u8>) {
    let limits = Limits::default();
    let at: Vec<usize> = file
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"ispe")
        .map(|(i, _)| i)
        .collect();
    assert!(!at.is_empty());
    for i in at {
        file[i + 8..i + 12].copy_from_slice(&70_000u32.to_be_bytes());
        file[i + 12..i + 16].copy_from_slice(&70_000u32.to_be_bytes());
    }
    assert!(matches!(
        imaging::probe(&file, &limits),
        Err(imaging::Error::TooManyPixels {
            width: 70_000,
            height: 70_000,
            ..
        })
    ));
    assert!(imaging::decode(&file, &limits, None).is_err());
}

#[test]
fn oversized_and_corrupt_heics_are_refused_by_name() {
    let limits = Limits::default();
    refuses_70000_squared(photos::read("p3.heic"));

    let good = photos::read("p3.heic");
    for cut in [40, 300, good.len() / 2, good.len() - 10] {
        let e = imaging::decode(&good[..cut], &limits, None).unwrap_err();
        assert!(
            matches!(e.kind(), "Truncated" | "Decode"),
            "cut at {cut}: {e}"
        );
    }
    // The decoder configuration box's name mangled: the image cannot be set up.
    let mut broken = good.clone();
    let i = broken.windows(4).position(|w| w == b"hvcC").unwrap();
    broken[i..i + 4].copy_from_slice(b"hvcX");
    let e = imaging::decode(&broken, &limits, None).unwrap_err();
    assert!(matches!(e.kind(), "Decode" | "Unsupported"), "{e}");
}

#[test]
fn transparency_is_flattened_onto_the_chosen_background() {
    let img = decoded("transparent.png");
    assert!(img.color().has_alpha());
    for (background, want) in [
        (Color::WHITE, [255, 255, 255]),
        ("#00ff00".parse::<Color>().unwrap(), [0, 255, 0]),
    ] {
        let opts = EncodeOptions {
            format: Format::Jpeg,
            quality: 95,
            background,
            ..Default::default()
        };
        let jpeg = imaging::encode(&img, &opts).unwrap();
        let back = imaging::decode(&jpeg, &Limits::default(), None)
            .unwrap()
            .to_rgb8();
        let corner = back.get_pixel(1, 1).0;
        let centre = back.get_pixel(32, 24).0;
        for c in 0..3 {
            assert!(corner[c].abs_diff(want[c]) <= 3, "{corner:?} vs {want:?}");
        }
        assert!(centre[0] > 180 && centre[1] < 60, "{centre:?}");
    }
    // Formats with alpha keep it.
    let png = imaging::encode(
        &img,
        &EncodeOptions {
            format: Format::Png,
            quality: 80,
            background: "#00ff00".parse().unwrap(),
            ..Default::default()
        },
    )
    .unwrap();
    let back = imaging::decode(&png, &Limits::default(), None).unwrap();
    assert_eq!(back.to_rgba8().get_pixel(1, 1).0[3], 0);
}

#[test]
fn avif_grids_rotation_alpha_and_depths_decode_as_libavif_wrote_them() {
    let limits = Limits::default();
    let grid = photos::read("p3-grid.avif");
    // 480x320 in 128x128 tiles: 4x3, the last column and row overhanging the picture.
    let tiles = grid.windows(4).filter(|w| w == b"av01").count();
    assert!(tiles >= 12, "{tiles} av01 items");
    let h = imaging::probe(&grid, &limits).unwrap();
    assert_eq!((h.width, h.height), (480, 320));

    let rot = photos::read("p3-rot6.avif");
    assert!(rot.windows(4).any(|w| w == b"irot"));
    let h = imaging::probe(&rot, &limits).unwrap();
    // Stored 320x480; irot turns it, and EXIF orientation is not applied on top.
    assert_eq!((h.width, h.height, h.orientation), (480, 320, 1));

    // Monochrome (4:0:0) against the gray truth.
    let gray = decoded("gray.avif");
    let truth = decoded("gray.png");
    let (mean, p99) = diff(&rendition(&gray), &rendition(&truth));
    println!("gray.avif        mean {mean:.2} p99 {p99}");
    assert!(mean <= 1.2 && p99 <= 14, "gray: {mean:.2} {p99}");

    // Alpha is a second AV1 image; it comes back as straight coverage.
    let soft = decoded("soft.avif");
    let want = decoded("soft.png");
    assert!(soft.color().has_alpha());
    let alpha = |img: &Image| -> Vec<u8> { img.to_rgba8().pixels().map(|p| p.0[3]).collect() };
    let (a, b) = (alpha(&soft), alpha(&want));
    let worst = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    assert!(worst <= 8, "alpha off by up to {worst}");
    let (mean, p99) = diff(&over_gray(&soft), &over_gray(&want));
    println!("soft.avif        mean {mean:.2} p99 {p99}");
    assert!(mean <= 1.2 && p99 <= 14, "soft colour: {mean:.2} {p99}");

    // imgpipe's own AVIF output is 8-bit 4:4:4 (with alpha when the source has it): read
    // back, it is the picture it was made from.
    for (source, want_color) in [
        ("truth.png", "ycbcr444-8bit"),
        ("soft.png", "ycbcr444-8bit"),
    ] {
        let img = decoded(source);
        let opts = EncodeOptions {
            format: Format::Avif,
            quality: 92,
            ..Default::default()
        };
        let avif = imaging::encode(&img, &opts).unwrap();
        let h = imaging::probe(&avif, &limits).unwrap();
        assert_eq!(h.color, want_color, "{source}");
        assert_eq!(h.has_alpha, img.color().has_alpha(), "{source}");
        let back = imaging::decode(&avif, &limits, None).unwrap();
        // What shows: the encoder may change the colour under full transparency.
        let (mean, p99) = diff(&over_gray(&back), &over_gray(&img));
        println!("{source} as AVIF mean {mean:.2} p99 {p99}");
        assert!(mean <= 1.2 && p99 <= 14, "{source}: {mean:.2} {p99}");
    }
}

#[test]
fn oversized_and_corrupt_avifs_are_refused_by_name() {
    let limits = Limits::default();
    let good = photos::read("p3.avif");
    refuses_70000_squared(good.clone());

    for cut in [40, 300, good.len() / 2, good.len() - 10] {
        let e = imaging::decode(&good[..cut], &limits, None).unwrap_err();
        assert!(
            matches!(e.kind(), "Truncated" | "Decode"),
            "cut at {cut}: {e}"
        );
    }
    // The AV1 data overwritten, from its start (the sequence header) or from its middle (the
    // coded picture, which a decoder may or may not notice): a named error or a picture of
    // the promised size, never a panic.
    let mdat = good.windows(4).position(|w| w == b"mdat").unwrap() + 4;
    for from in [mdat, mdat + (good.len() - mdat) / 2] {
        let mut garbled = good.clone();
        for (k, b) in garbled[from..].iter_mut().enumerate() {
            *b = (k * 37 % 251) as u8;
        }
        match imaging::decode(&garbled, &limits, None) {
            Ok(img) => assert_eq!((img.width(), img.height()), (480, 320)),
            Err(e) => assert!(matches!(e.kind(), "Decode" | "Truncated"), "{e}"),
        }
    }
    // A grid of more tiles than any photo has is refused before a tile is decoded.
    let tiles_at = photos::read("p3-grid.avif");
    let h = imaging::probe(
        &tiles_at,
        &Limits {
            max_pixels: 100_000,
            ..limits
        },
    );
    assert!(
        matches!(h, Err(imaging::Error::TooManyPixels { .. })),
        "{h:?}"
    );
}

#[test]
fn a_cmyk_jpeg_goes_through_its_cmyk_profile() {
    let limits = Limits::default();
    let h = imaging::probe(&photos::read("cmyk.jpg"), &limits).unwrap();
    let p = h.color_profile.expect("the CMYK profile is read");
    assert_eq!(
        (
            h.color.as_str(),
            p.color_space.as_str(),
            p.description.as_str()
        ),
        ("cmyk", "cmyk", "Test CMYK")
    );
    // Against the sRGB LittleCMS makes of the same inks through the same profile.
    let got = rendition(&decoded("cmyk.jpg"));
    let (mean, p99) = diff(&got, &rendition(&decoded("cmyk-truth.png")));
    println!("cmyk.jpg         mean {mean:.2} p99 {p99}");
    assert!(mean <= 1.2 && p99 <= 14, "cmyk: mean {mean:.2}, p99 {p99}");
    // The control: the naive conversion (which the inks were made by) is far from it.
    let (mean, _) = diff(&got, &truth());
    assert!(mean > 5.0, "mean {mean:.2}: the profile made no difference");
}
