//! Any bytes through what an upload meets: sniff, the header probe with its limits (which
//! reads the embedded colour profile), then the full decode (and the shrink-on-load decode
//! Resize uses, and the decode that keeps the source's colour space); and the same bytes as an
//! ICC profile. Nothing may panic, and what
//! decodes must match what the header promised: Resize plans every rendition from the
//! header's size, so a decoder that disagrees would make wrong or failing outputs.
#![no_main]

use imaging::{Image, Limits};
use libfuzzer_sys::fuzz_target;

/// The service's checks with smaller numbers, so each input stays quick to decode.
const LIMITS: Limits = Limits {
    max_bytes: 4 << 20,
    max_pixels: 4_000_000,
    max_side: 8192,
    max_frames: 100,
};

fuzz_target!(|data: &[u8]| {
    // Every input is also tried as an ICC profile, the way an embedded one is read, and a
    // profile that reads is applied to a few pixels.
    let profile = imaging::profile_of_icc(data);
    let px = Image::ImageRgb8(imaging::image::RgbImage::from_pixel(3, 2, [200, 100, 50].into()));
    if let Ok(out) = imaging::to_srgb(px, &profile) {
        assert_eq!((out.width(), out.height()), (3, 2));
    }
    let sniffed = imaging::sniff(data);
    let Ok(header) = imaging::probe(data, &LIMITS) else {
        return;
    };
    assert_eq!(sniffed.ok(), Some(header.format), "probe and sniff disagree");
    let pixels = u64::from(header.width) * u64::from(header.height);
    assert!(pixels > 0 && pixels <= LIMITS.max_pixels, "{header:?} passed the limits");
    assert!(header.frames >= 1 && header.frames <= LIMITS.max_frames, "{header:?}");
    let _ = imaging::exif_of(data, header.format);
    if !header.format.is_decodable() {
        return;
    }
    let (w, h) = header.oriented_dims();
    if let Ok(img) = imaging::decode(data, &LIMITS, None) {
        assert!(
            matches!(img, Image::ImageRgb8(_) | Image::ImageRgba8(_)),
            "decoded to {:?}",
            img.color()
        );
        assert_eq!(
            (img.width(), img.height()),
            (w, h),
            "decoded size differs from the header's {header:?}"
        );
        let _ = imaging::resize_exact(&img, 7, 5);
    }
    // Kept in its own colour space (which differs only with a profile that is not sRGB), the
    // same size comes out.
    let wide = header.color_profile.as_ref().is_some_and(|p| !p.srgb);
    if wide
        && let Ok(kept) = imaging::decode_with(data, &LIMITS, None, imaging::ColorHandling::Keep)
    {
        assert_eq!((kept.image.width(), kept.image.height()), (w, h));
    }
    // Resize asks for at least the largest rendition: here an eighth, the deepest shrink.
    let need = (w.div_ceil(8), h.div_ceil(8));
    if let Ok(img) = imaging::decode(data, &LIMITS, Some(need)) {
        assert!(
            img.width() >= need.0 && img.height() >= need.1,
            "shrunk on load to {}x{}, below the {need:?} asked for",
            img.width(),
            img.height()
        );
    }
});
