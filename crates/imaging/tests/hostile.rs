//! Hostile input: every refusal is a named error, and a header that claims a huge image is
//! refused before anything proportional to its claim is allocated (measured by a counting
//! allocator, per thread, so parallel tests do not disturb it).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A global allocator is the only way to measure what the code under test allocates.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use imaging::{Error, Limits};

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_free(layout.size());
        note_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note_alloc(n: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let now = CURRENT.with(|c| {
                c.set(c.get() + n);
                c.get()
            });
            PEAK.with(|p| p.set(p.get().max(now)));
        }
    });
}

fn note_free(n: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            CURRENT.with(|c| c.set(c.get().saturating_sub(n)));
        }
    });
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak bytes it had allocated at once.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    CURRENT.with(|c| c.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, PEAK.with(Cell::get))
}

const ONE_MIB: usize = 1 << 20;

fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32fast::hash(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc.to_be_bytes());
    // A tiny IDAT and IEND, so the file is otherwise well-formed.
    png.extend_from_slice(&[0, 0, 0, 0, b'I', b'D', b'A', b'T', 0x35, 0xAF, 0x06, 0x1E]);
    png.extend_from_slice(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]);
    png
}

/// A baseline JPEG whose frame header claims `width` x `height`, with no real scan behind it.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let real = imaging::encode(
        &imaging::Image::ImageRgb8(imaging::image::RgbImage::new(16, 16)),
        &imaging::EncodeOptions {
            format: imaging::Format::Jpeg,
            quality: 50,
            ..Default::default()
        },
    )
    .unwrap();
    // Patch the SOF0 segment's height and width in place.
    let sof = real.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut bytes = real.clone();
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

fn gif_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&width.to_le_bytes());
    g.extend_from_slice(&height.to_le_bytes());
    g.extend_from_slice(&[0, 0, 0]);
    // One image descriptor covering the screen, an empty LZW stream, the trailer.
    g.push(0x2C);
    g.extend_from_slice(&[0, 0, 0, 0]);
    g.extend_from_slice(&width.to_le_bytes());
    g.extend_from_slice(&height.to_le_bytes());
    g.extend_from_slice(&[0, 2, 0, 0x3B]);
    g
}

#[test]
fn a_header_claiming_100000_by_100000_is_refused_without_allocating_it() {
    let limits = Limits::default();
    let png = png_claiming(100_000, 100_000);
    let (result, peak) = peak_of(|| imaging::decode(&png, &limits, None));
    assert!(
        matches!(
            result,
            Err(Error::TooManyPixels {
                width: 100_000,
                height: 100_000,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(
        peak < ONE_MIB,
        "refusing a 10-gigapixel PNG header allocated {peak} bytes"
    );

    let jpeg = jpeg_claiming(65_000, 65_000);
    let (result, peak) = peak_of(|| imaging::decode(&jpeg, &limits, None));
    assert!(
        matches!(result, Err(Error::TooManyPixels { .. })),
        "{result:?}"
    );
    assert!(
        peak < ONE_MIB,
        "refusing a 4-gigapixel JPEG header allocated {peak} bytes"
    );

    let gif = gif_claiming(65_535, 65_535);
    let (result, peak) = peak_of(|| imaging::decode(&gif, &limits, None));
    assert!(
        matches!(result, Err(Error::TooManyPixels { .. })),
        "{result:?}"
    );
    assert!(
        peak < ONE_MIB,
        "refusing a 4-gigapixel GIF header allocated {peak} bytes"
    );

    // Within the pixel budget but over a tighter side limit: its own error.
    let tall = png_claiming(10, 40_000);
    assert!(matches!(
        imaging::probe(&tall, &limits),
        Err(Error::SideTooLong { side: 40_000, .. })
    ));

    // The allocator really counts: decoding a real 1000x1000 image shows up.
    let real = png_of_size(1000, 1000);
    let (result, peak) = peak_of(|| imaging::decode(&real, &limits, None));
    assert!(result.is_ok());
    assert!(
        peak >= 3_000_000,
        "a 1000x1000 RGB decode should allocate 3 MB, saw {peak}"
    );
}

fn png_of_size(w: u32, h: u32) -> Vec<u8> {
    let img = imaging::image::RgbImage::from_pixel(w, h, imaging::image::Rgb([1, 2, 3]));
    let mut out = Vec::new();
    imaging::image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut out),
            imaging::image::ImageFormat::Png,
        )
        .unwrap();
    out
}

#[test]
fn broken_and_foreign_files_get_named_errors() {
    let limits = Limits::default();
    let kind = |bytes: &[u8]| imaging::decode(bytes, &limits, None).unwrap_err().kind();

    assert_eq!(kind(b""), "Empty");
    assert_eq!(
        kind(b"this is a text file somebody named holiday.jpg\n"),
        "UnknownFormat"
    );
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>"#;
    assert!(
        matches!(imaging::decode(svg, &limits, None), Err(Error::Unsupported(k)) if k == "SVG")
    );

    let photo = imaging::image::RgbImage::from_fn(300, 200, |x, y| {
        imaging::image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let jpeg = imaging::encode(
        &imaging::Image::ImageRgb8(photo),
        &imaging::EncodeOptions {
            format: imaging::Format::Jpeg,
            quality: 90,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(kind(&jpeg[..jpeg.len() * 2 / 3]), "Truncated");
    assert_eq!(kind(&jpeg[..40]), "Truncated", "cut inside the header");
    let png = png_of_size(64, 64);
    assert_eq!(kind(&png[..png.len() - 30]), "Truncated");
    assert_eq!(kind(&png[..20]), "Truncated");
    let mut corrupt = png.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 8].copy_from_slice(b"garbage!");
    assert!(matches!(kind(&corrupt), "Decode" | "Truncated"));

    // Too many bytes is refused before anything else is looked at.
    let small = Limits {
        max_bytes: 100,
        ..limits
    };
    assert!(matches!(
        imaging::probe(&png, &small),
        Err(Error::TooManyBytes { limit: 100, .. })
    ));
}
