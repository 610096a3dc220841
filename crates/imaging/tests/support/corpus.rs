//! A corpus of hostile and awkward files, generated (nothing is committed): truncations at
//! several offsets, foreign formats, headers claiming huge sizes or frame counts, absurd EXIF,
//! polyglots, and the unusual-but-valid files (CMYK, 16-bit) that must still be accepted.
//!
//! Shared by the imaging tests (in process), the `imgpipe process` test (one child per file,
//! under a memory cap) and the fuzzing seeds (`cargo run -p imaging --example corpus`). Each
//! case says what must happen to it: accepted, or refused with a given imaging error kind and
//! the step error name it becomes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;

use imaging::image::{
    self, DynamicImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage,
};
use imaging::{EncodeOptions, Format};

/// What must become of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Valid: decoded and turned into renditions.
    Accepted,
    /// Refused before or while decoding, with this [`imaging::Error::kind`] and the
    /// `pipeline::StepError` name it maps to.
    Rejected {
        imaging: &'static str,
        step: &'static str,
    },
}

pub struct Case {
    /// Unique, also the file name stem.
    pub name: &'static str,
    /// The extension the file is given: sometimes a lie, which must not matter.
    pub ext: &'static str,
    pub bytes: Vec<u8>,
    pub expect: Expect,
    /// Why this case is in the corpus and why the outcome is right.
    pub why: &'static str,
}

impl Case {
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.ext)
    }
}

const fn rejected(imaging: &'static str) -> Expect {
    let step = match imaging.as_bytes() {
        b"Empty" | b"Truncated" | b"Decode" => "InvalidImage",
        b"UnknownFormat" | b"Unsupported" => "UnsupportedFormat",
        _ => "ImageTooLarge",
    };
    Expect::Rejected { imaging, step }
}

// ---------------------------------------------------------------------------------------------
// HEIF containers built box by box: a primary item with an `ispe` and `tiles` grid
// references, and no coded data.

fn heif_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn heif_declaring(width: u32, height: u32, tiles: u16) -> Vec<u8> {
    let mut ispe = vec![0, 0, 0, 0];
    ispe.extend_from_slice(&width.to_be_bytes());
    ispe.extend_from_slice(&height.to_be_bytes());
    let ipco = heif_box(b"ipco", &heif_box(b"ispe", &ispe));
    let ipma = heif_box(b"ipma", &[0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0x81]);
    let iprp = heif_box(b"iprp", &[ipco, ipma].concat());
    let pitm = heif_box(b"pitm", &[0, 0, 0, 0, 0, 1]);
    let mut dimg = vec![0, 1];
    dimg.extend_from_slice(&tiles.to_be_bytes());
    for t in 0..tiles {
        dimg.extend_from_slice(&(t.wrapping_add(2)).to_be_bytes());
    }
    let iref = heif_box(
        b"iref",
        &[&[0, 0, 0, 0][..], &heif_box(b"dimg", &dimg)].concat(),
    );
    let meta = heif_box(b"meta", &[&[0, 0, 0, 0][..], &pitm, &iprp, &iref].concat());
    [heif_box(b"ftyp", b"heic\0\0\0\0mif1heic"), meta].concat()
}

// ---------------------------------------------------------------------------------------------
// Well-formed sources.

fn photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 255 / w.max(1)) as u8,
            (y * 255 / h.max(1)) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    })
}

pub fn jpeg(w: u32, h: u32, progressive: bool) -> Vec<u8> {
    imaging::encode(
        &DynamicImage::ImageRgb8(photo(w, h)),
        &EncodeOptions {
            format: Format::Jpeg,
            quality: 85,
            progressive,
            ..Default::default()
        },
    )
    .unwrap()
}

fn written(img: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

pub fn png(w: u32, h: u32) -> Vec<u8> {
    written(
        &DynamicImage::ImageRgb8(photo(w, h)),
        image::ImageFormat::Png,
    )
}

pub fn webp(w: u32, h: u32) -> Vec<u8> {
    imaging::encode(
        &DynamicImage::ImageRgb8(photo(w, h)),
        &EncodeOptions {
            format: Format::Webp,
            quality: 80,
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn gif(w: u32, h: u32) -> Vec<u8> {
    written(
        &DynamicImage::ImageRgb8(photo(w, h)),
        image::ImageFormat::Gif,
    )
}

pub fn tiff(w: u32, h: u32) -> Vec<u8> {
    written(
        &DynamicImage::ImageRgb8(photo(w, h)),
        image::ImageFormat::Tiff,
    )
}

pub fn bmp(w: u32, h: u32) -> Vec<u8> {
    written(
        &DynamicImage::ImageRgb8(photo(w, h)),
        image::ImageFormat::Bmp,
    )
}

fn cmyk_jpeg(w: usize, h: usize) -> Vec<u8> {
    // libjpeg writes CMYK with an Adobe APP14 marker, as Photoshop does.
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(90).unwrap();
    c.set_subsamp(turbojpeg::Subsamp::None).unwrap();
    let px: Vec<u8> = (0..w * h)
        .flat_map(|i| [(i % 256) as u8, 40, 200, 10])
        .collect();
    c.compress_to_vec(turbojpeg::Image {
        pixels: px.as_slice(),
        width: w,
        pitch: w * 4,
        height: h,
        format: turbojpeg::PixelFormat::CMYK,
    })
    .unwrap()
}

fn png16(color: png::ColorType, w: u32, h: u32) -> Vec<u8> {
    let channels = match color {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        _ => 4,
    };
    let samples = (w * h * channels) as usize;
    let data: Vec<u8> = (0..samples)
        .flat_map(|i| ((i * 257) as u16 | 0x00ff).to_be_bytes())
        .collect();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Sixteen);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&data).unwrap();
    }
    out
}

fn apng(frames: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, 8, 8);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_animated(frames, 0).unwrap();
        let mut wr = enc.write_header().unwrap();
        for f in 0..frames {
            let data = vec![(f * 40) as u8; 8 * 8 * 3];
            wr.write_image_data(&data).unwrap();
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Chunk, segment and block builders.

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out
}

/// Chunks of a PNG after the signature: (type, data, whole chunk bytes).
fn png_chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 8;
    while i + 12 <= png.len() {
        let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = png[i + 4..i + 8].try_into().unwrap();
        out.push((kind, png[i + 8..i + 8 + len].to_vec()));
        i += 12 + len;
    }
    out
}

fn png_from(chunks: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in chunks {
        out.extend_from_slice(&png_chunk(kind, data));
    }
    out
}

fn ihdr(w: u32, h: u32, depth: u8, color: u8) -> Vec<u8> {
    let mut d = w.to_be_bytes().to_vec();
    d.extend_from_slice(&h.to_be_bytes());
    d.extend_from_slice(&[depth, color, 0, 0, 0]);
    d
}

/// A PNG whose IHDR claims `w` x `h` over a tiny (wrong) IDAT.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    png_from(&[
        (*b"IHDR", ihdr(w, h, 8, 2)),
        (*b"IDAT", zlib_zeros(64)),
        (*b"IEND", vec![]),
    ])
}

/// Inserts `segment` (marker and body) right after a JPEG's SOI.
fn jpeg_with_segment(jpeg: &[u8], marker: u8, body: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn jpeg_with_exif(tiff: &[u8]) -> Vec<u8> {
    let mut body = b"Exif\0\0".to_vec();
    body.extend_from_slice(tiff);
    jpeg_with_segment(&jpeg(96, 64, false), 0xE1, &body)
}

/// A little-endian TIFF structure: IFD0 at offset 8 with `entries` (tag, type, count, value
/// or offset), then `next` as the next-IFD offset, then `tail`.
fn tiff_structure(entries: &[(u16, u16, u32, u32)], next: u32, tail: &[u8]) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for &(tag, kind, count, value) in entries {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&kind.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&value.to_le_bytes());
    }
    t.extend_from_slice(&next.to_le_bytes());
    t.extend_from_slice(tail);
    t
}

const SHORT: u16 = 3;
const LONG: u16 = 4;

/// A greyscale 8-bit TIFF claiming `w` x `h`, one strip of `data` at its end.
fn tiff_claiming(w: u32, h: u32, data: &[u8]) -> Vec<u8> {
    let entries = 8u32;
    let data_at = 8 + 2 + entries * 12 + 4;
    tiff_structure(
        &[
            (256, LONG, 1, w),                 // ImageWidth
            (257, LONG, 1, h),                 // ImageLength
            (258, SHORT, 1, 8),                // BitsPerSample
            (259, SHORT, 1, 1),                // Compression: none
            (262, SHORT, 1, 1),                // Photometric: black is zero
            (273, LONG, 1, data_at),           // StripOffsets
            (278, LONG, 1, h),                 // RowsPerStrip
            (279, LONG, 1, data.len() as u32), // StripByteCounts
        ],
        0,
        data,
    )
}

fn bmp_claiming(w: i32, h: i32) -> Vec<u8> {
    let mut b = b"BM".to_vec();
    b.extend_from_slice(&(54u32 + 16).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    b.extend_from_slice(&[0x80; 16]);
    b
}

/// A GIF of `frames` 1x1 frames (each a valid 3-byte LZW stream) on a `sw` x `sh` screen; the
/// first frame's descriptor claims `fw` x `fh`.
fn gif_frames(sw: u16, sh: u16, fw: u16, fh: u16, frames: usize) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&sw.to_le_bytes());
    g.extend_from_slice(&sh.to_le_bytes());
    // Global colour table of 2 entries: black and white.
    g.extend_from_slice(&[0x80, 0, 0]);
    g.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    for i in 0..frames {
        let (w, h) = if i == 0 { (fw, fh) } else { (1, 1) };
        g.push(0x2C);
        g.extend_from_slice(&[0, 0, 0, 0]);
        g.extend_from_slice(&w.to_le_bytes());
        g.extend_from_slice(&h.to_le_bytes());
        g.push(0);
        // LZW minimum code size 2: clear (4), index 0, end (5), packed LSB first.
        g.extend_from_slice(&[2, 2, 0x44, 0x01, 0]);
    }
    g.push(0x3B);
    g
}

fn riff_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_vec();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

fn riff_webp(chunks: &[u8]) -> Vec<u8> {
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((chunks.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(chunks);
    out
}

/// A lossless WebP bitstream header claiming `w` x `h`, over a few garbage bytes.
fn webp_claiming(w: u32, h: u32) -> Vec<u8> {
    let bits: u32 = (w - 1) | ((h - 1) << 14);
    let mut data = vec![0x2f];
    data.extend_from_slice(&bits.to_le_bytes());
    data.extend_from_slice(&[0; 16]);
    riff_webp(&riff_chunk(b"VP8L", &data))
}

/// An extended (VP8X) WebP whose canvas claims `w` x `h`, over a real 1x1 bitstream.
fn webp_canvas_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut vp8x = vec![0, 0, 0, 0];
    vp8x.extend_from_slice(&u24(w - 1));
    vp8x.extend_from_slice(&u24(h - 1));
    let mut chunks = riff_chunk(b"VP8X", &vp8x);
    chunks.extend_from_slice(&vp8l_1x1());
    riff_webp(&chunks)
}

/// The VP8L chunk of a real 1x1 lossless WebP.
fn vp8l_1x1() -> Vec<u8> {
    let one = written(
        &DynamicImage::ImageRgba8(RgbaImage::from_pixel(1, 1, Rgba([9, 9, 9, 255]))),
        image::ImageFormat::WebP,
    );
    let at = one.windows(4).position(|w| w == b"VP8L").unwrap();
    let len = u32::from_le_bytes(one[at + 4..at + 8].try_into().unwrap()) as usize;
    one[at..at + 8 + len + (len % 2)].to_vec()
}

fn u24(v: u32) -> [u8; 3] {
    let b = v.to_le_bytes();
    [b[0], b[1], b[2]]
}

/// An animated WebP of `frames` 1x1 frames.
fn webp_animation(frames: usize) -> Vec<u8> {
    let mut vp8x = vec![0x02 | 0x10, 0, 0, 0];
    vp8x.extend_from_slice(&u24(0));
    vp8x.extend_from_slice(&u24(0));
    let mut chunks = riff_chunk(b"VP8X", &vp8x);
    chunks.extend_from_slice(&riff_chunk(b"ANIM", &[0, 0, 0, 0, 0, 0]));
    let frame = vp8l_1x1();
    for _ in 0..frames {
        let mut anmf = Vec::new();
        anmf.extend_from_slice(&u24(0));
        anmf.extend_from_slice(&u24(0));
        anmf.extend_from_slice(&u24(0));
        anmf.extend_from_slice(&u24(0));
        anmf.extend_from_slice(&u24(100));
        anmf.push(0);
        anmf.extend_from_slice(&frame);
        chunks.extend_from_slice(&riff_chunk(b"ANMF", &anmf));
    }
    riff_webp(&chunks)
}

/// Repeats a progressive JPEG's last scan until it has more than any decoder should take.
fn jpeg_with_scans(extra: usize) -> Vec<u8> {
    let j = jpeg(64, 64, true);
    let last_sos = j.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
    let eoi = j.len() - 2;
    let scan = j[last_sos..eoi].to_vec();
    let mut out = j[..eoi].to_vec();
    for _ in 0..extra {
        out.extend_from_slice(&scan);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// Patches the first SOF0/SOF2 frame header of a JPEG to claim `w` x `h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut j = jpeg(16, 16, false);
    let sof = j
        .windows(2)
        .position(|p| p == [0xFF, 0xC0] || p == [0xFF, 0xC2])
        .unwrap();
    j[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    j
}

fn cut(bytes: &[u8], len: usize) -> Vec<u8> {
    bytes[..len.min(bytes.len())].to_vec()
}

/// zlib(`len` zero bytes), taken from the png crate's own encoder: the IDAT stream of a
/// one-row greyscale PNG, `len - 1` pixels wide and unfiltered, is exactly zlib(filter byte 0
/// + `len - 1` zero pixels).
fn zlib_zeros(len: usize) -> Vec<u8> {
    let w = len.max(2) as u32 - 1;
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, 1);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_filter(png::Filter::NoFilter);
        enc.set_compression(png::Compression::High);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&vec![0; w as usize]).unwrap();
    }
    png_chunks(&out)
        .into_iter()
        .filter(|(k, _)| k == b"IDAT")
        .flat_map(|(_, d)| d)
        .collect()
}

/// A PNG of zeros, `w` x `h`: a few kilobytes that decode to all of its pixels.
fn zero_png(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.set_filter(png::Filter::NoFilter);
        enc.set_compression(png::Compression::High);
        let mut wr = enc.write_header().unwrap();
        let mut stream = wr.stream_writer().unwrap();
        let channels = match color {
            png::ColorType::Grayscale | png::ColorType::Indexed => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
        };
        let row = vec![0u8; w as usize * channels * (depth as usize).div_ceil(8)];
        for _ in 0..h {
            std::io::Write::write_all(&mut stream, &row).unwrap();
        }
        stream.finish().unwrap();
    }
    out
}

/// A PNG with an extra ancillary chunk of zlib data that inflates to `inflated` zero bytes.
fn png_with_compressed_chunk(kind: &[u8; 4], prefix: &[u8], inflated: usize) -> Vec<u8> {
    let base = png(32, 32);
    let mut chunks = png_chunks(&base);
    let mut data = prefix.to_vec();
    data.extend_from_slice(&zlib_zeros(inflated));
    chunks.insert(1, (*kind, data));
    png_from(&chunks)
}

// ---------------------------------------------------------------------------------------------
// The corpus.

pub fn corpus() -> Vec<Case> {
    let j = jpeg(320, 240, false);
    let p = png(160, 120);
    let w = webp(160, 120);
    let g = gif(64, 48);
    let t = tiff(64, 48);
    let b = bmp(64, 48);
    let mut cases = vec![
        // --- Not images at all.
        Case {
            name: "empty",
            ext: "jpg",
            bytes: Vec::new(),
            expect: rejected("Empty"),
            why: "zero bytes",
        },
        Case {
            name: "zeros",
            ext: "png",
            bytes: vec![0; 1024],
            expect: rejected("UnknownFormat"),
            why: "1 KiB of zero bytes: no magic",
        },
        Case {
            name: "text",
            ext: "jpg",
            bytes: b"holiday photos, see attached\n".repeat(20),
            expect: rejected("UnknownFormat"),
            why: "plain text with an image extension",
        },
        Case {
            name: "json",
            ext: "webp",
            bytes: br#"{"renditions": [{"name": "x"}]}"#.to_vec(),
            expect: rejected("UnknownFormat"),
            why: "JSON text",
        },
        Case {
            name: "elf",
            ext: "gif",
            bytes: b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0".repeat(8),
            expect: rejected("UnknownFormat"),
            why: "an executable's header",
        },
        Case {
            name: "wave",
            ext: "webp",
            bytes: {
                let mut r = b"RIFF\x24\0\0\0WAVEfmt ".to_vec();
                r.extend_from_slice(&[0; 40]);
                r
            },
            expect: rejected("UnknownFormat"),
            why: "RIFF, but WAVE audio rather than WEBP",
        },
        Case {
            name: "svg-script",
            ext: "png",
            bytes: br#"<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.cookie)"><rect width="10" height="10"/></svg>"#.to_vec(),
            expect: rejected("Unsupported"),
            why: "SVG can script and fetch: refused, never rendered",
        },
        Case {
            name: "svg-bom",
            ext: "svg",
            bytes: b"\xEF\xBB\xBF\n  <?xml version=\"1.0\"?>\n<!-- x -->\n<svg xmlns=\"http://www.w3.org/2000/svg\"><image href=\"http://169.254.169.254/latest/meta-data/\"/></svg>".to_vec(),
            expect: rejected("Unsupported"),
            why: "SVG behind a BOM, whitespace and a comment, reaching for instance metadata",
        },
        Case {
            name: "html",
            ext: "jpg",
            bytes: b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>".to_vec(),
            expect: rejected("Unsupported"),
            why: "HTML with script",
        },
        Case {
            name: "xml",
            ext: "png",
            bytes: b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\">]><x>&a;&a;</x>".to_vec(),
            expect: rejected("Unsupported"),
            why: "XML with entities",
        },
        Case {
            name: "pdf",
            ext: "jpg",
            bytes: {
                let mut pdf = b"%PDF-1.7\n1 0 obj << /Type /XObject /Subtype /Image /Filter /DCTDecode >>\nstream\n".to_vec();
                pdf.extend_from_slice(&j);
                pdf.extend_from_slice(b"\nendstream endobj\n%%EOF\n");
                pdf
            },
            expect: rejected("Unsupported"),
            why: "a PDF wrapping a JPEG",
        },
        Case {
            name: "heic-no-meta",
            ext: "jpg",
            bytes: {
                let mut h = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
                h.extend_from_slice(&[0; 64]);
                h
            },
            expect: rejected("Decode"),
            why: "HEIC brand with no meta box: nothing to decode, said by name",
        },
        Case {
            name: "heic-huge-ispe",
            ext: "heic",
            bytes: heif_declaring(70_000, 70_000, 0),
            expect: rejected("TooManyPixels"),
            why: "a HEIC whose primary item declares 70000x70000: refused from the header",
        },
        Case {
            name: "heic-tile-flood",
            ext: "heic",
            bytes: heif_declaring(512, 512, 5000),
            expect: rejected("Decode"),
            why: "a grid claiming 5000 tiles: over the tile limit, refused before decoding",
        },
        Case {
            name: "raw-cr2",
            ext: "cr2",
            bytes: {
                let mut h = b"II*\0\x10\0\0\0CR\x02\0\0\0\0\0".to_vec();
                h.extend_from_slice(&[0; 64]);
                h
            },
            expect: rejected("Unsupported"),
            why: "Canon CR2 RAW: named, not decoded as its preview TIFF",
        },
        Case {
            name: "raw-dng",
            ext: "tif",
            bytes: {
                // IFD0 with one entry: DNGVersion 1.4.0.0.
                let mut h = b"II*\0\x08\0\0\0\x01\0".to_vec();
                h.extend_from_slice(&[0x12, 0xC6, 1, 0, 4, 0, 0, 0, 1, 4, 0, 0]);
                h.extend_from_slice(&[0; 4]);
                h
            },
            expect: rejected("Unsupported"),
            why: "Adobe DNG RAW, whatever its extension says",
        },
        Case {
            name: "avif-no-meta",
            ext: "avif",
            bytes: {
                let mut h = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf".to_vec();
                h.extend_from_slice(&[0; 64]);
                h
            },
            expect: rejected("Decode"),
            why: "AVIF brand with nothing behind it: said by name",
        },
        Case {
            name: "bigtiff",
            ext: "tif",
            bytes: {
                let mut h = b"II+\0\x08\0\0\0\x10\0\0\0\0\0\0\0".to_vec();
                h.extend_from_slice(&[0; 64]);
                h
            },
            expect: rejected("Unsupported"),
            why: "BigTIFF",
        },
        Case {
            name: "psd",
            ext: "png",
            bytes: {
                let mut h = b"8BPS\0\x01".to_vec();
                h.extend_from_slice(&[0; 64]);
                h
            },
            expect: rejected("Unsupported"),
            why: "Photoshop document",
        },
        // --- Wrong or broken magic.
        Case {
            name: "png-bad-magic",
            ext: "png",
            bytes: {
                let mut x = p.clone();
                x[1] = b'Q';
                x
            },
            expect: rejected("UnknownFormat"),
            why: "a PNG with one byte of its signature changed",
        },
        Case {
            name: "png-magic-then-html",
            ext: "png",
            bytes: {
                let mut x = b"\x89PNG\r\n\x1a\n".to_vec();
                x.extend_from_slice(b"<html><script>alert(1)</script></html>");
                x
            },
            expect: rejected("Decode"),
            why: "PNG signature over HTML: no IHDR",
        },
        Case {
            name: "gif-magic-then-js",
            ext: "gif",
            bytes: b"GIF89a=1;/*\0\0\0\0\0\0*/alert(document.domain);//".to_vec(),
            expect: rejected("Decode"),
            why: "the classic GIF/JavaScript polyglot: a GIF header that is also a script",
        },
        // --- Truncated at several offsets.
        Case {
            name: "jpeg-cut-4",
            ext: "jpg",
            bytes: cut(&j, 4),
            expect: rejected("Truncated"),
            why: "JPEG cut inside its first segment header",
        },
        Case {
            name: "jpeg-cut-header",
            ext: "jpg",
            bytes: cut(&j, 150),
            expect: rejected("Truncated"),
            why: "JPEG cut inside its tables, before the frame header",
        },
        Case {
            name: "jpeg-cut-half",
            ext: "jpg",
            bytes: cut(&j, j.len() / 2),
            expect: rejected("Truncated"),
            why: "JPEG cut in the middle of its scan",
        },
        Case {
            name: "jpeg-cut-before-eoi",
            ext: "jpg",
            bytes: cut(&j, j.len() - 2),
            expect: rejected("Truncated"),
            why: "JPEG missing only its end marker",
        },
        Case {
            name: "png-cut-20",
            ext: "png",
            bytes: cut(&p, 20),
            expect: rejected("Truncated"),
            why: "PNG cut inside IHDR",
        },
        Case {
            name: "png-cut-after-ihdr",
            ext: "png",
            bytes: cut(&p, 33),
            expect: rejected("Truncated"),
            why: "PNG with its header and nothing else",
        },
        Case {
            name: "png-cut-half",
            ext: "png",
            bytes: cut(&p, p.len() / 2),
            expect: rejected("Truncated"),
            why: "PNG cut in the middle of its image data",
        },
        Case {
            name: "webp-cut-20",
            ext: "webp",
            bytes: cut(&w, 20),
            expect: rejected("Truncated"),
            why: "WebP cut inside its first chunk header",
        },
        Case {
            name: "webp-cut-half",
            ext: "webp",
            bytes: cut(&w, w.len() / 2),
            expect: rejected("Truncated"),
            why: "WebP cut in the middle of its bitstream",
        },
        Case {
            name: "gif-cut-10",
            ext: "gif",
            bytes: cut(&g, 10),
            expect: rejected("Truncated"),
            why: "GIF cut inside its screen descriptor",
        },
        Case {
            name: "gif-cut-half",
            ext: "gif",
            bytes: cut(&g, g.len() / 2),
            expect: rejected("Truncated"),
            why: "GIF cut inside its only frame",
        },
        Case {
            name: "tiff-cut-half",
            ext: "tif",
            bytes: cut(&t, t.len() / 2),
            expect: rejected("Truncated"),
            why: "TIFF cut in the middle of its strips",
        },
        Case {
            name: "bmp-cut-40",
            ext: "bmp",
            bytes: cut(&b, 40),
            expect: rejected("Truncated"),
            why: "BMP cut inside its info header",
        },
        // --- Headers claiming huge images (decompression bombs): refused from the header.
        Case {
            name: "png-claims-100000x100000",
            ext: "png",
            bytes: png_claiming(100_000, 100_000),
            expect: rejected("TooManyPixels"),
            why: "10 gigapixels claimed by 100 bytes",
        },
        Case {
            name: "png-claims-10x40000",
            ext: "png",
            bytes: png_claiming(10, 40_000),
            expect: rejected("SideTooLong"),
            why: "few pixels, but a side over the limit",
        },
        Case {
            name: "jpeg-claims-65000x65000",
            ext: "jpg",
            bytes: jpeg_claiming(65_000, 65_000),
            expect: rejected("TooManyPixels"),
            why: "a JPEG frame header claiming 4 gigapixels",
        },
        Case {
            name: "webp-claims-16000x16000",
            ext: "webp",
            bytes: webp_claiming(16_000, 16_000),
            expect: rejected("TooManyPixels"),
            why: "a lossless WebP header claiming 256 megapixels",
        },
        Case {
            name: "webp-canvas-100000x100000",
            ext: "webp",
            bytes: webp_canvas_claiming(100_000, 100_000),
            expect: rejected("TooManyPixels"),
            why: "an extended WebP whose canvas claims 10 gigapixels over a 1x1 bitstream",
        },
        Case {
            name: "gif-claims-65535x65535",
            ext: "gif",
            bytes: gif_frames(65_535, 65_535, 1, 1, 1),
            expect: rejected("TooManyPixels"),
            why: "a GIF screen of 4 gigapixels",
        },
        Case {
            name: "gif-frame-larger-than-screen",
            ext: "gif",
            bytes: gif_frames(16, 16, 65_535, 65_535, 1),
            expect: rejected("TooManyPixels"),
            why: "a small screen whose frame claims 4 gigapixels",
        },
        Case {
            name: "bmp-claims-100000x100000",
            ext: "bmp",
            bytes: bmp_claiming(100_000, 100_000),
            expect: rejected("TooManyPixels"),
            why: "a BMP header claiming 10 gigapixels",
        },
        Case {
            name: "bmp-claims-top-down-huge",
            ext: "bmp",
            bytes: bmp_claiming(30_000, -30_000),
            expect: rejected("TooManyPixels"),
            why: "a top-down (negative height) BMP claiming 900 megapixels",
        },
        Case {
            name: "tiff-claims-100000x100000",
            ext: "tif",
            bytes: tiff_claiming(100_000, 100_000, &[0; 64]),
            expect: rejected("TooManyPixels"),
            why: "a TIFF header claiming 10 gigapixels",
        },
        // --- Frame and scan counts.
        Case {
            name: "gif-5000-frames",
            ext: "gif",
            bytes: gif_frames(1, 1, 1, 1, 5000),
            expect: rejected("TooManyFrames"),
            why: "5000 frames, counted from the blocks without decoding",
        },
        Case {
            name: "apng-claims-100000-frames",
            ext: "png",
            bytes: {
                let mut chunks = png_chunks(&apng(2));
                for (kind, data) in &mut chunks {
                    if kind == b"acTL" {
                        data[..4].copy_from_slice(&100_000u32.to_be_bytes());
                    }
                }
                png_from(&chunks)
            },
            expect: rejected("TooManyFrames"),
            why: "an APNG whose animation control claims 100000 frames",
        },
        Case {
            name: "webp-1500-frames",
            ext: "webp",
            bytes: webp_animation(1500),
            expect: rejected("TooManyFrames"),
            why: "an animated WebP of 1500 frames",
        },
        Case {
            name: "jpeg-600-scans",
            ext: "jpg",
            bytes: jpeg_with_scans(600),
            expect: rejected("Decode"),
            why: "a progressive JPEG with hundreds of scans, each a full pass: a CPU bomb",
        },
        // --- Corrupt structures.
        Case {
            name: "png-zero-width",
            ext: "png",
            bytes: png_claiming(0, 100),
            expect: rejected("Decode"),
            why: "a PNG claiming zero pixels",
        },
        Case {
            name: "png-bad-crc",
            ext: "png",
            bytes: {
                let mut x = p.clone();
                // The IHDR CRC.
                x[29] ^= 0xFF;
                x
            },
            expect: rejected("Decode"),
            why: "a PNG whose header checksum is wrong",
        },
        Case {
            name: "png-palette-16-bit",
            ext: "png",
            bytes: png_from(&[
                (*b"IHDR", ihdr(8, 8, 16, 3)),
                (*b"IDAT", zlib_zeros(64)),
                (*b"IEND", vec![]),
            ]),
            expect: rejected("Decode"),
            why: "an impossible PNG colour type and depth (16-bit palette)",
        },
        Case {
            name: "gif-bad-lzw-size",
            ext: "gif",
            bytes: {
                let mut x = gif_frames(4, 4, 4, 4, 1);
                // The LZW minimum code size byte of the only frame: 15 is out of range.
                let at = x.len() - 6;
                x[at] = 15;
                x
            },
            expect: rejected("Decode"),
            why: "a GIF whose LZW code size is out of range",
        },
        Case {
            name: "gif-no-frame",
            ext: "gif",
            // Found by the fuzzer: a screen and a colour table, then the trailer.
            bytes: b"GIF89a\x04\x00\x04\x00\x80\x00\x44\x01\x00\x2c\x00\x3c\x00\x3b".to_vec(),
            expect: rejected("Decode"),
            why: "a GIF with no image in it at all",
        },
        Case {
            name: "tiff-ifd-loop",
            ext: "tif",
            bytes: tiff_structure(&[(256, LONG, 1, 8)], 8, &[]),
            expect: rejected("Decode"),
            why: "a TIFF whose only directory lacks the required tags and points back to itself",
        },
        Case {
            name: "jpeg-zero-height",
            ext: "jpg",
            bytes: jpeg_claiming(16, 0),
            expect: rejected("Decode"),
            why: "a JPEG frame header with height 0 (DNL, which nothing supports)",
        },
    ];

    // --- Valid, if unusual: these must be accepted, and come out right.
    let exif_orientation = |value: u32| tiff_structure(&[(0x0112, SHORT, 1, value)], 0, &[]);
    cases.extend([
        Case {
            name: "ok-jpeg",
            ext: "jpg",
            bytes: j.clone(),
            expect: Expect::Accepted,
            why: "the reference: a plain JPEG",
        },
        Case {
            name: "ok-jpeg-named-png",
            ext: "png",
            bytes: j.clone(),
            expect: Expect::Accepted,
            why: "a JPEG with a .png name: the magic bytes decide, and they say JPEG",
        },
        Case {
            name: "ok-cmyk-jpeg",
            ext: "jpg",
            bytes: cmyk_jpeg(48, 32),
            expect: Expect::Accepted,
            why: "CMYK JPEG with an Adobe marker (print workflows): converted to RGB",
        },
        Case {
            name: "ok-png-rgb16",
            ext: "png",
            bytes: png16(png::ColorType::Rgb, 40, 30),
            expect: Expect::Accepted,
            why: "16-bit RGB PNG: reduced to 8 bits",
        },
        Case {
            name: "ok-png-rgba16",
            ext: "png",
            bytes: png16(png::ColorType::Rgba, 40, 30),
            expect: Expect::Accepted,
            why: "16-bit RGBA PNG",
        },
        Case {
            name: "ok-png-gray16",
            ext: "png",
            bytes: png16(png::ColorType::Grayscale, 40, 30),
            expect: Expect::Accepted,
            why: "16-bit greyscale PNG (scanners, medical)",
        },
        Case {
            name: "ok-tiff-rgb16",
            ext: "tif",
            bytes: written(
                &DynamicImage::ImageRgb16(ImageBuffer::from_fn(40, 30, |x, y| {
                    Rgb([(x * 1500) as u16, (y * 2000) as u16, 40_000])
                })),
                image::ImageFormat::Tiff,
            ),
            expect: Expect::Accepted,
            why: "16-bit RGB TIFF",
        },
        Case {
            name: "ok-apng",
            ext: "png",
            bytes: apng(3),
            expect: Expect::Accepted,
            why: "an APNG of 3 frames: the first is used",
        },
        Case {
            name: "ok-exif-orientation-9",
            ext: "jpg",
            bytes: jpeg_with_exif(&exif_orientation(9)),
            expect: Expect::Accepted,
            why: "EXIF orientation 9 does not exist: ignored (upright as stored), pixels fine",
        },
        Case {
            name: "ok-exif-orientation-65535",
            ext: "jpg",
            bytes: jpeg_with_exif(&exif_orientation(65_535)),
            expect: Expect::Accepted,
            why: "EXIF orientation 65535: ignored",
        },
        Case {
            name: "ok-exif-giant-ifd-count",
            ext: "jpg",
            bytes: jpeg_with_exif(&{
                let mut t = b"II*\0\x08\0\0\0\xff\xff".to_vec();
                t.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
                t
            }),
            expect: Expect::Accepted,
            why: "an IFD claiming 65535 entries in 12 bytes: unreadable EXIF is ignored",
        },
        Case {
            name: "ok-exif-giant-value-count",
            ext: "jpg",
            bytes: jpeg_with_exif(&tiff_structure(
                &[(0x0112, SHORT, 0xFFFF_FFFF, 26), (0x010F, 2, 0x7FFF_FFFF, 8)],
                0,
                &[],
            )),
            expect: Expect::Accepted,
            why: "EXIF entries claiming 4 billion values each: ignored, nothing allocated",
        },
        Case {
            name: "ok-exif-ifd-loop",
            ext: "jpg",
            bytes: jpeg_with_exif(&tiff_structure(
                // Orientation 6, an Exif sub-IFD pointer and a GPS pointer back at IFD0, and
                // IFD0's next-IFD offset pointing at itself.
                &[(0x0112, SHORT, 1, 6), (0x8769, LONG, 1, 8), (0x8825, LONG, 1, 8)],
                8,
                &[],
            )),
            expect: Expect::Accepted,
            why: "EXIF directories pointing at themselves: read once, no loop",
        },
        Case {
            name: "ok-jpeg-html-appended",
            ext: "jpg",
            bytes: {
                let mut x = j.clone();
                x.extend_from_slice(b"<html><script>alert(document.cookie)</script></html>");
                x
            },
            expect: Expect::Accepted,
            why: "a JPEG/HTML polyglot: the pixels are re-encoded, the payload never reaches an output",
        },
        Case {
            name: "ok-gif-zip-appended",
            ext: "gif",
            bytes: {
                let mut x = gif(32, 32);
                x.extend_from_slice(b"PK\x03\x04\x14\0\0\0\0\0");
                x.extend_from_slice(b"META-INF/MANIFEST.MF");
                x.extend_from_slice(b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
                x
            },
            expect: Expect::Accepted,
            why: "a GIF/ZIP polyglot (GIFAR): the GIF is used, the archive dropped",
        },
        Case {
            name: "ok-png-zeros-16mp",
            ext: "png",
            bytes: zero_png(4000, 4000, png::ColorType::Grayscale, png::BitDepth::Eight),
            expect: Expect::Accepted,
            why: "a 16 MP greyscale PNG of zeros in a few kB: large but within every limit",
        },
        Case {
            name: "ok-png-rgb16-25mp",
            ext: "png",
            bytes: zero_png(5000, 5000, png::ColorType::Rgb, png::BitDepth::Sixteen),
            expect: Expect::Accepted,
            why: "a 25 MP 16-bit PNG in a few hundred kB: 150 MB at 16 bits, decoded to 8 directly",
        },
        Case {
            name: "ok-png-ztxt-bomb",
            ext: "png",
            bytes: png_with_compressed_chunk(b"zTXt", b"Comment\0\0", 64 << 20),
            expect: Expect::Accepted,
            why: "a zTXt chunk inflating to 64 MB: text chunks are never inflated",
        },
        Case {
            name: "ok-png-iccp-bomb",
            ext: "png",
            bytes: png_with_compressed_chunk(b"iCCP", b"ICC\0\0", 64 << 20),
            expect: Expect::Accepted,
            why: "an ICC profile inflating to 64 MB: not inflated past the decoder's limit",
        },
        Case {
            name: "ok-grey-jpeg",
            ext: "jpg",
            bytes: {
                let grey = GrayImage::from_fn(50, 40, |x, _| Luma([(x * 5) as u8]));
                let mut c = turbojpeg::Compressor::new().unwrap();
                c.set_subsamp(turbojpeg::Subsamp::Gray).unwrap();
                c.compress_to_vec(turbojpeg::Image {
                    pixels: grey.as_raw().as_slice(),
                    width: 50,
                    pitch: 50,
                    height: 40,
                    format: turbojpeg::PixelFormat::GRAY,
                })
                .unwrap()
            },
            expect: Expect::Accepted,
            why: "a greyscale JPEG",
        },
    ]);
    cases
}

/// The decodable samples the fuzzer starts from: one small file of each kind.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("seed.jpg", jpeg(24, 16, false)),
        ("seed-progressive.jpg", jpeg(24, 16, true)),
        ("seed-cmyk.jpg", cmyk_jpeg(8, 8)),
        ("seed.png", png(12, 8)),
        ("seed-rgba16.png", png16(png::ColorType::Rgba, 6, 4)),
        ("seed-apng.png", apng(2)),
        ("seed.webp", webp(12, 8)),
        (
            "seed-lossless.webp",
            written(
                &DynamicImage::ImageRgba8(RgbaImage::from_pixel(6, 4, Rgba([1, 2, 3, 128]))),
                image::ImageFormat::WebP,
            ),
        ),
        ("seed-anim.webp", webp_animation(3)),
        ("seed.gif", gif(12, 8)),
        ("seed-frames.gif", gif_frames(4, 4, 4, 4, 3)),
        ("seed.tif", tiff(12, 8)),
        ("seed.bmp", bmp(12, 8)),
        (
            "seed-exif.jpg",
            jpeg_with_exif(&tiff_structure(&[(0x0112, SHORT, 1, 6)], 0, &[])),
        ),
    ]
}
