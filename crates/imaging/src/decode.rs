use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, RgbImage};
use serde::{Deserialize, Serialize};
use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};

use crate::{Error, Format, Image, sniff};

/// What an upload may be. Checked from the header, before any pixel buffer is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_bytes: u64,
    pub max_pixels: u64,
    pub max_side: u32,
    pub max_frames: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 100 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_side: 32_768,
            max_frames: 1_000,
        }
    }
}

/// What the header says, read without decoding pixels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub format: Format,
    /// Stored dimensions, before the EXIF orientation is applied.
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    /// EXIF orientation 1..=8 (1 when absent or invalid).
    pub orientation: u8,
    pub has_alpha: bool,
    /// Colour model as stored, e.g. "rgb8", "rgba16", "l8", "la8", "indexed8", "cmyk", "ycbcr".
    pub color: String,
}

impl Header {
    /// Dimensions after the orientation is applied (5..=8 swap width and height).
    pub fn oriented_dims(&self) -> (u32, u32) {
        if (5..=8).contains(&self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Progressive JPEGs can carry thousands of tiny scans that each cost a full pass over the
/// coefficients: a known decompression bomb. Real encoders write at most a few dozen.
const MAX_JPEG_SCANS: u32 = 500;

/// Sniffs the format and reads the header, then checks every limit. Allocates nothing
/// proportional to the claimed image size.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    let size = bytes.len() as u64;
    if size > limits.max_bytes {
        return Err(Error::TooManyBytes {
            size,
            limit: limits.max_bytes,
        });
    }
    let format = sniff(bytes)?;
    let header = match format {
        Format::Jpeg => jpeg_header(bytes)?,
        Format::Png => png_header(bytes, limits)?,
        Format::Gif => gif_header(bytes, limits)?,
        Format::Webp => webp_header(bytes, limits)?,
        Format::Tiff | Format::Bmp => generic_header(bytes, format, limits)?,
        Format::Avif => {
            return Err(Error::Unsupported(
                "AVIF input (no maintained decoder builds here)".into(),
            ));
        }
        Format::Qoi => return Err(Error::Unsupported("QOI input".into())),
    };
    check_limits(&header, limits)?;
    Ok(header)
}

fn check_limits(h: &Header, limits: &Limits) -> Result<(), Error> {
    check_dims(h.format, h.width, h.height, limits)?;
    if h.frames > limits.max_frames {
        return Err(Error::TooManyFrames {
            frames: u64::from(h.frames),
            limit: limits.max_frames,
        });
    }
    Ok(())
}

/// A width and height (of the image, or of one frame in it) against the pixel and side limits.
fn check_dims(format: Format, width: u32, height: u32, limits: &Limits) -> Result<(), Error> {
    if width == 0 || height == 0 {
        return Err(Error::Decode {
            format,
            message: format!("the header claims {width}x{height} pixels"),
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Error::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    let side = width.max(height);
    if side > limits.max_side {
        return Err(Error::SideTooLong {
            side,
            limit: limits.max_side,
        });
    }
    Ok(())
}

/// Decodes the first frame into upright 8-bit RGB/RGBA. `at_least` is the smallest upright
/// size the caller needs: a JPEG may then be decoded with DCT scaling (shrink-on-load), so the
/// result can be smaller than the source but never smaller than `at_least` on either side.
/// Calls [`probe`] first, so limits hold before any buffer is allocated.
pub fn decode(bytes: &[u8], limits: &Limits, at_least: Option<(u32, u32)>) -> Result<Image, Error> {
    let header = probe(bytes, limits)?;
    let mut img = match header.format {
        Format::Jpeg => {
            // The caller's size is upright; the decoder works on the stored orientation.
            let need = at_least.map(|(w, h)| {
                if (5..=8).contains(&header.orientation) {
                    (h, w)
                } else {
                    (w, h)
                }
            });
            decode_jpeg(bytes, &header, need)?
        }
        Format::Png => decode_png(bytes)?,
        _ => decode_generic(bytes, &header, limits)?,
    };
    if let Some(o) = image::metadata::Orientation::from_exif(header.orientation) {
        img.apply_orientation(o);
    }
    Ok(img)
}

// ---------------------------------------------------------------------------------------------
// JPEG: libjpeg-turbo, for its SIMD decoder and DCT-domain scaling.

/// What the markers before the first scan say, beyond the frame header.
#[derive(Default)]
struct JpegMarkers<'a> {
    /// The TIFF structure of the APP1 `Exif\0\0` segment.
    exif: Option<&'a [u8]>,
    /// An APP14 `Adobe` segment: CMYK data is then stored inverted (Photoshop's convention).
    adobe: bool,
}

/// Walks the marker segments up to the first SOS. Bounded by the input and never allocates.
fn jpeg_markers(bytes: &[u8]) -> JpegMarkers<'_> {
    let mut out = JpegMarkers::default();
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            break;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            // Fill bytes before a marker are allowed.
            i += 1;
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if len < 2 {
            break;
        }
        let body = bytes.get(i + 4..i + 2 + len);
        match (marker, body) {
            (0xE1, Some(b)) if b.starts_with(b"Exif\0\0") && out.exif.is_none() => {
                out.exif = Some(&b[6..]);
            }
            (0xEE, Some(b)) if b.starts_with(b"Adobe") => out.adobe = true,
            _ => {}
        }
        i += 2 + len;
    }
    out
}

fn tj_error(e: turbojpeg::Error) -> Error {
    let message = e.to_string();
    if message.contains("Premature end") {
        Error::Truncated {
            format: Format::Jpeg,
        }
    } else {
        Error::Decode {
            format: Format::Jpeg,
            message: message.trim_start_matches("TurboJPEG error: ").to_string(),
        }
    }
}

/// Whether the data ends before the frame header (SOFn) is complete: libjpeg-turbo then
/// reports something unhelpful, but the file is simply cut short.
fn jpeg_cut_before_frame(bytes: &[u8]) -> bool {
    let mut i = 2;
    loop {
        let Some(&[ff, marker]) = bytes.get(i..i + 2) else {
            return true;
        };
        if ff != 0xFF {
            return false;
        }
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let Some(len) = bytes.get(i + 2..i + 4) else {
            return true;
        };
        let end = i + 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        if end > bytes.len() {
            return true;
        }
        let frame = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if frame || marker == 0xDA || marker == 0xD9 {
            return false;
        }
        i = end;
    }
}

fn jpeg_header(bytes: &[u8]) -> Result<Header, Error> {
    let h = turbojpeg::read_header(bytes).map_err(|e| match jpeg_cut_before_frame(bytes) {
        true => Error::Truncated {
            format: Format::Jpeg,
        },
        false => tj_error(e),
    })?;
    let markers = jpeg_markers(bytes);
    let color = match h.colorspace {
        Colorspace::RGB => "rgb",
        Colorspace::YCbCr => "ycbcr",
        Colorspace::Gray => "gray",
        Colorspace::CMYK => "cmyk",
        Colorspace::YCCK => "ycck",
    };
    Ok(Header {
        format: Format::Jpeg,
        width: dim(h.width, Format::Jpeg)?,
        height: dim(h.height, Format::Jpeg)?,
        frames: 1,
        orientation: markers.exif.map(orientation_of_exif).unwrap_or(1),
        has_alpha: false,
        color: color.to_string(),
    })
}

fn dim(v: usize, format: Format) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::Decode {
        format,
        message: format!("dimension {v} is out of range"),
    })
}

/// The smallest of libjpeg-turbo's fast power-of-two DCT scalings whose output still covers
/// `need` (stored orientation). Lossless JPEGs cannot be scaled.
pub(crate) fn jpeg_scale(width: u32, height: u32, need: Option<(u32, u32)>) -> ScalingFactor {
    let Some((nw, nh)) = need else {
        return ScalingFactor::ONE;
    };
    for factor in [
        ScalingFactor::ONE_EIGHTH,
        ScalingFactor::ONE_QUARTER,
        ScalingFactor::ONE_HALF,
    ] {
        let (w, h) = (factor.scale(width as usize), factor.scale(height as usize));
        if w >= nw as usize && h >= nh as usize {
            return factor;
        }
    }
    ScalingFactor::ONE
}

fn decode_jpeg(bytes: &[u8], header: &Header, need: Option<(u32, u32)>) -> Result<Image, Error> {
    let mut d = Decompressor::new().map_err(tj_error)?;
    d.set_scan_limit(MAX_JPEG_SCANS).map_err(tj_error)?;
    let info = d.read_header(bytes).map_err(tj_error)?;
    let factor = if info.is_lossless {
        ScalingFactor::ONE
    } else {
        jpeg_scale(header.width, header.height, need)
    };
    d.set_scaling_factor(factor).map_err(tj_error)?;
    let scaled = info.scaled(factor);
    let (w, h) = (scaled.width, scaled.height);
    let cmyk = matches!(info.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let format = if cmyk {
        PixelFormat::CMYK
    } else {
        PixelFormat::RGB
    };
    let channels = format.size();
    // Dimensions were checked against the pixel limit by probe, so this is bounded.
    let mut pixels = vec![0u8; w * h * channels];
    d.decompress(
        bytes,
        turbojpeg::Image {
            pixels: pixels.as_mut_slice(),
            width: w,
            pitch: w * channels,
            height: h,
            format,
        },
    )
    .map_err(tj_error)?;
    let (w32, h32) = (dim(w, Format::Jpeg)?, dim(h, Format::Jpeg)?);
    if cmyk {
        let inverted = jpeg_markers(bytes).adobe;
        let rgb = cmyk_to_rgb(&pixels, inverted);
        return RgbImage::from_raw(w32, h32, rgb)
            .map(DynamicImage::ImageRgb8)
            .ok_or_else(|| buffer_mismatch(Format::Jpeg));
    }
    RgbImage::from_raw(w32, h32, pixels)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| buffer_mismatch(Format::Jpeg))
}

/// Naive CMYK -> RGB (no ICC profile), what browsers and most tools do for untagged CMYK.
/// Adobe-marked files store the inks inverted, so there `c` already means `255 - cyan`.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let [c, m, y, k] = [px[0], px[1], px[2], px[3]].map(u32::from);
        let [c, m, y, k] = if inverted {
            [c, m, y, k]
        } else {
            [255 - c, 255 - m, 255 - y, 255 - k]
        };
        // (a * b + 127) / 255, rounded; both are "amount of light" here.
        let mul = |a: u32, b: u32| ((a * b + 127) / 255) as u8;
        out.extend_from_slice(&[mul(c, k), mul(m, k), mul(y, k)]);
    }
    out
}

fn buffer_mismatch(format: Format) -> Error {
    Error::Decode {
        format,
        message: "decoded buffer does not match its dimensions".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Everything else: the `image` crate's pure-Rust decoders.

fn image_format(format: Format) -> Option<ImageFormat> {
    Some(match format {
        Format::Png => ImageFormat::Png,
        Format::Gif => ImageFormat::Gif,
        Format::Webp => ImageFormat::WebP,
        Format::Tiff => ImageFormat::Tiff,
        Format::Bmp => ImageFormat::Bmp,
        _ => return None,
    })
}

fn image_error(format: Format, e: image::ImageError) -> Error {
    use image::ImageError as E;
    match &e {
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Truncated { format }
        }
        E::Limits(_) => Error::Decode {
            format,
            message: format!("decoder limit: {e}"),
        },
        E::Unsupported(u) => Error::Unsupported(format!("{format:?} variant: {u}")),
        _ => {
            let message = e.to_string();
            if message.contains("end of file")
                || message.contains("EOF")
                || message.contains("truncat")
            {
                Error::Truncated { format }
            } else {
                Error::Decode { format, message }
            }
        }
    }
}

fn png_header(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    // IHDR is the first chunk, at a fixed offset: check the size before any decoder runs. Only
    // once the chunk there is a 13-byte IHDR do those bytes mean a width and a height.
    let (width, height) = match (bytes.get(8..16), bytes.get(16..24)) {
        (Some(chunk), _) if chunk != b"\0\0\0\x0dIHDR" => {
            return Err(Error::Decode {
                format: Format::Png,
                message: "the first chunk is not an image header (IHDR)".into(),
            });
        }
        (Some(_), Some(b)) => (
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ),
        _ => {
            return Err(Error::Truncated {
                format: Format::Png,
            });
        }
    };
    let early = Header {
        format: Format::Png,
        width,
        height,
        frames: 1,
        orientation: 1,
        has_alpha: false,
        color: String::new(),
    };
    check_limits(&early, limits)?;
    let decoder = png::Decoder::new(Cursor::new(bytes));
    let reader = decoder.read_info().map_err(|e| png_error(&e))?;
    let info = reader.info();
    let has_alpha = matches!(
        info.color_type,
        png::ColorType::Rgba | png::ColorType::GrayscaleAlpha
    ) || info.trns.is_some();
    let kind = match info.color_type {
        png::ColorType::Grayscale => "l",
        png::ColorType::GrayscaleAlpha => "la",
        png::ColorType::Rgb => "rgb",
        png::ColorType::Rgba => "rgba",
        png::ColorType::Indexed => "indexed",
    };
    let frames = info.animation_control.map(|a| a.num_frames).unwrap_or(1);
    let orientation = info
        .exif_metadata
        .as_deref()
        .map(orientation_of_exif)
        .unwrap_or(1);
    Ok(Header {
        format: Format::Png,
        width: info.width,
        height: info.height,
        frames: frames.max(1),
        orientation,
        has_alpha,
        color: format!("{kind}{}", info.bit_depth as u8),
    })
}

/// PNG straight to 8 bits per sample: palettes and low bit depths are expanded and 16-bit
/// samples cut to their high byte as rows are read, so no 16-bit buffer is ever made. (The
/// `image` crate decodes 16-bit RGBA into 8 bytes a pixel and converts after: 12 bytes a pixel
/// at the peak, 300 MB for a 25 MP image that compresses to a few hundred kilobytes.)
fn decode_png(bytes: &[u8]) -> Result<Image, Error> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| png_error(&e))?;
    let size = reader.output_buffer_size().ok_or_else(|| Error::Decode {
        format: Format::Png,
        message: "the image is too large to address".into(),
    })?;
    let mut buf = vec![0u8; size];
    // The first frame: the default image of an APNG, as browsers show without animation.
    let frame = reader.next_frame(&mut buf).map_err(|e| png_error(&e))?;
    buf.truncate(frame.buffer_size());
    let (w, h) = (frame.width, frame.height);
    let img = match frame.color_type {
        png::ColorType::Rgb => RgbImage::from_raw(w, h, buf).map(DynamicImage::ImageRgb8),
        png::ColorType::Rgba => image::RgbaImage::from_raw(w, h, buf).map(DynamicImage::ImageRgba8),
        png::ColorType::Grayscale => {
            let rgb = buf.iter().flat_map(|&l| [l, l, l]).collect();
            RgbImage::from_raw(w, h, rgb).map(DynamicImage::ImageRgb8)
        }
        png::ColorType::GrayscaleAlpha => {
            let rgba = buf
                .chunks_exact(2)
                .flat_map(|la| [la[0], la[0], la[0], la[1]])
                .collect();
            image::RgbaImage::from_raw(w, h, rgba).map(DynamicImage::ImageRgba8)
        }
        png::ColorType::Indexed => None,
    };
    img.ok_or_else(|| buffer_mismatch(Format::Png))
}

fn png_error(e: &png::DecodingError) -> Error {
    match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Truncated {
                format: Format::Png,
            }
        }
        other => {
            let message = other.to_string();
            if message.contains("EOF") || message.contains("end of") || message.contains("truncat")
            {
                Error::Truncated {
                    format: Format::Png,
                }
            } else {
                Error::Decode {
                    format: Format::Png,
                    message,
                }
            }
        }
    }
}

/// GIF: the logical screen gives the size; the frames are counted by walking the blocks,
/// which needs no decoding and no allocation. Each frame's own size is held to the limits
/// too: a small screen can carry a frame claiming gigapixels, which the decoder would need a
/// buffer for.
fn gif_header(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    let truncated = Error::Truncated {
        format: Format::Gif,
    };
    let screen = bytes.get(6..13).ok_or(Error::Truncated {
        format: Format::Gif,
    })?;
    let width = u32::from(u16::from_le_bytes([screen[0], screen[1]]));
    let height = u32::from(u16::from_le_bytes([screen[2], screen[3]]));
    let flags = screen[4];
    let mut i = 13;
    if flags & 0x80 != 0 {
        i += 3 << ((flags & 0x07) + 1);
    }
    let skip_sub_blocks = |mut i: usize| -> Option<usize> {
        loop {
            let n = usize::from(*bytes.get(i)?);
            i += 1;
            if n == 0 {
                return Some(i);
            }
            i += n;
        }
    };
    let mut frames: u32 = 0;
    let mut has_alpha = false;
    loop {
        let Some(&block) = bytes.get(i) else {
            // A file cut after its first frame still shows that frame; only a file without
            // a single complete frame is truncated.
            if frames == 0 {
                return Err(truncated);
            }
            break;
        };
        match block {
            0x21 => {
                let label = *bytes.get(i + 1).ok_or(Error::Truncated {
                    format: Format::Gif,
                })?;
                // Graphic Control Extension: bit 0 of its packed byte = transparency.
                if label == 0xF9 && bytes.get(i + 3).is_some_and(|p| p & 1 == 1) {
                    has_alpha = true;
                }
                i = skip_sub_blocks(i + 2).ok_or(Error::Truncated {
                    format: Format::Gif,
                })?;
            }
            0x2C => {
                let desc = bytes.get(i + 1..i + 10).ok_or(Error::Truncated {
                    format: Format::Gif,
                })?;
                let frame_w = u32::from(u16::from_le_bytes([desc[4], desc[5]]));
                let frame_h = u32::from(u16::from_le_bytes([desc[6], desc[7]]));
                // An empty frame is odd but harmless; only a large one costs memory.
                if frame_w > 0 && frame_h > 0 {
                    check_dims(Format::Gif, frame_w, frame_h, limits)?;
                }
                let packed = desc[8];
                i += 10;
                if packed & 0x80 != 0 {
                    i += 3 << ((packed & 0x07) + 1);
                }
                // LZW minimum code size, then the image data sub-blocks.
                i = skip_sub_blocks(i + 1).ok_or(Error::Truncated {
                    format: Format::Gif,
                })?;
                frames = frames.saturating_add(1);
            }
            // A trailer before any frame: a screen with no image on it.
            0x3B if frames == 0 => {
                return Err(Error::Decode {
                    format: Format::Gif,
                    message: "no image before the trailer".into(),
                });
            }
            0x3B => break,
            other => {
                if frames == 0 {
                    return Err(Error::Decode {
                        format: Format::Gif,
                        message: format!("unexpected block 0x{other:02x}"),
                    });
                }
                break;
            }
        }
    }
    Ok(Header {
        format: Format::Gif,
        width,
        height,
        frames,
        orientation: 1,
        has_alpha,
        color: "indexed8".into(),
    })
}

/// Whether a RIFF file is shorter than its own header says: any decoding error is then
/// the truncation's doing.
fn riff_cut(bytes: &[u8]) -> bool {
    bytes
        .get(4..8)
        .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) + 8)
        .is_some_and(|declared| declared > bytes.len() as u64)
}

fn webp_header(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    let webp_err = |e: image_webp::DecodingError| match e {
        _ if riff_cut(bytes) => Error::Truncated {
            format: Format::Webp,
        },
        image_webp::DecodingError::IoError(io)
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Error::Truncated {
                format: Format::Webp,
            }
        }
        other => Error::Decode {
            format: Format::Webp,
            message: other.to_string(),
        },
    };
    // An extended file's canvas size, which the decoder refuses past its own limit without
    // saying so by name: checked here first.
    if let (Some(b"VP8X"), Some(c)) = (bytes.get(12..16), bytes.get(24..30)) {
        let w = u32::from_le_bytes([c[0], c[1], c[2], 0]) + 1;
        let h = u32::from_le_bytes([c[3], c[4], c[5], 0]) + 1;
        check_dims(Format::Webp, w, h, limits)?;
    }
    let mut d = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(webp_err)?;
    let (width, height) = d.dimensions();
    let orientation = d
        .exif_metadata()
        .ok()
        .flatten()
        .map(|e| orientation_of_exif(&e))
        .unwrap_or(1);
    Ok(Header {
        format: Format::Webp,
        width,
        height,
        frames: if d.is_animated() { d.num_frames() } else { 1 },
        orientation,
        has_alpha: d.has_alpha(),
        color: if d.has_alpha() { "rgba8" } else { "rgb8" }.into(),
    })
}

/// TIFF and BMP through the `image` crate's decoders, which read only the header on creation.
fn generic_header(bytes: &[u8], format: Format, limits: &Limits) -> Result<Header, Error> {
    // The decoders refuse sizes over their own limits with errors that do not say the image is
    // too large, so the claimed size is read and checked here first.
    if let Some((w, h)) = claimed_dims(bytes, format)
        && w > 0
        && h > 0
    {
        check_dims(format, w, h, limits)?;
    }
    let fmt = image_format(format).ok_or_else(|| Error::Unsupported(format!("{format:?}")))?;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    reader.limits(image_limits(limits));
    let mut decoder = reader.into_decoder().map_err(|e| image_error(format, e))?;
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    let orientation = decoder
        .orientation()
        .ok()
        .map(orientation_number)
        .unwrap_or(1);
    Ok(Header {
        format,
        width,
        height,
        frames: 1,
        orientation,
        has_alpha: color.has_alpha(),
        color: format!("{color:?}").to_lowercase(),
    })
}

/// The width and height a BMP or TIFF header claims, read without a decoder; `None` when the
/// header is too short or not laid out as expected (the decoder then says what is wrong).
fn claimed_dims(bytes: &[u8], format: Format) -> Option<(u32, u32)> {
    let u16_le = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_le = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match format {
        Format::Bmp => match u32_le(14)? {
            // OS/2 BITMAPCOREHEADER: 16-bit sizes.
            12 => Some((u32::from(u16_le(18)?), u32::from(u16_le(20)?))),
            // BITMAPINFOHEADER and its successors: signed 32-bit, negative height = top-down.
            n if n >= 16 => {
                let w = u32_le(18)? as i32;
                let h = u32_le(22)? as i32;
                Some((w.unsigned_abs(), h.unsigned_abs()))
            }
            _ => None,
        },
        Format::Tiff => {
            let little = bytes.get(0..2)? == b"II";
            let u16_at = |i: usize| {
                bytes.get(i..i + 2).map(|b| match little {
                    true => u16::from_le_bytes([b[0], b[1]]),
                    false => u16::from_be_bytes([b[0], b[1]]),
                })
            };
            let u32_at = |i: usize| {
                bytes.get(i..i + 4).map(|b| match little {
                    true => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    false => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                })
            };
            let ifd = usize::try_from(u32_at(4)?).ok()?;
            let count = usize::from(u16_at(ifd)?);
            let (mut width, mut height) = (None, None);
            for n in 0..count {
                let entry = ifd.checked_add(2 + n * 12)?;
                let value = match u16_at(entry + 2)? {
                    3 => u32::from(u16_at(entry + 8)?),
                    4 => u32_at(entry + 8)?,
                    _ => continue,
                };
                match u16_at(entry)? {
                    256 => width = Some(value),
                    257 => height = Some(value),
                    _ => {}
                }
                if let (Some(w), Some(h)) = (width, height) {
                    return Some((w, h));
                }
            }
            None
        }
        _ => None,
    }
}

fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    // The largest decoded frame (16-bit RGBA) plus room for the decoder's own buffers.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}

fn decode_generic(bytes: &[u8], header: &Header, limits: &Limits) -> Result<Image, Error> {
    let format = header.format;
    let fmt = image_format(format).ok_or_else(|| Error::Unsupported(format!("{format:?}")))?;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    reader.limits(image_limits(limits));
    // The first frame of an animation: `decode` on GIF, APNG and animated WebP gives it.
    let img = reader.decode().map_err(|e| match format {
        Format::Webp if riff_cut(bytes) => Error::Truncated { format },
        _ => image_error(format, e),
    })?;
    Ok(to_rgb_or_rgba(img))
}

/// Every later stage handles exactly two layouts: 8-bit RGB and 8-bit RGBA.
pub(crate) fn to_rgb_or_rgba(img: DynamicImage) -> Image {
    match img {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => img,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

// ---------------------------------------------------------------------------------------------
// EXIF orientation.

/// The Orientation tag of IFD0 in a raw EXIF (TIFF) block; 1 when absent or out of range.
pub(crate) fn orientation_of_exif(tiff: &[u8]) -> u8 {
    let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
        return 1;
    };
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .and_then(|v| u8::try_from(v).ok())
        .filter(|v| (1..=8).contains(v))
        .unwrap_or(1)
}

fn orientation_number(o: image::metadata::Orientation) -> u8 {
    use image::metadata::Orientation as O;
    match o {
        O::NoTransforms => 1,
        O::FlipHorizontal => 2,
        O::Rotate180 => 3,
        O::FlipVertical => 4,
        O::Rotate90FlipH => 5,
        O::Rotate90 => 6,
        O::Rotate270FlipH => 7,
        O::Rotate270 => 8,
    }
}

/// Rewrites the Orientation tag of IFD0 to 1 in place, for EXIF copied onto pixels that are
/// already upright. Leaves a block it cannot parse unchanged.
pub(crate) fn reset_orientation(tiff: &mut [u8]) {
    let little = match tiff.get(0..2) {
        Some(b"II") => true,
        Some(b"MM") => false,
        _ => return,
    };
    let u16_at = |b: &[u8], i: usize| -> Option<u16> {
        let s = b.get(i..i + 2)?;
        Some(if little {
            u16::from_le_bytes([s[0], s[1]])
        } else {
            u16::from_be_bytes([s[0], s[1]])
        })
    };
    let Some(ifd) = tiff.get(4..8).map(|s| {
        let a = [s[0], s[1], s[2], s[3]];
        (if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }) as usize
    }) else {
        return;
    };
    let Some(count) = u16_at(tiff, ifd) else {
        return;
    };
    for n in 0..usize::from(count) {
        let entry = ifd + 2 + n * 12;
        if u16_at(tiff, entry) == Some(0x0112) && u16_at(tiff, entry + 2) == Some(3) {
            let one = if little { [1, 0] } else { [0, 1] };
            if let Some(v) = tiff.get_mut(entry + 8..entry + 10) {
                v.copy_from_slice(&one);
            }
            return;
        }
    }
}

/// The raw EXIF (TIFF structure) of a JPEG, PNG or WebP, if it has one.
pub(crate) fn raw_exif(bytes: &[u8], format: Format) -> Option<Vec<u8>> {
    match format {
        Format::Jpeg => jpeg_markers(bytes).exif.map(<[u8]>::to_vec),
        Format::Png => {
            let reader = png::Decoder::new(Cursor::new(bytes)).read_info().ok()?;
            reader.info().exif_metadata.as_deref().map(<[u8]>::to_vec)
        }
        Format::Webp => image_webp::WebPDecoder::new(Cursor::new(bytes))
            .ok()?
            .exif_metadata()
            .ok()
            .flatten(),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scaling_keeps_at_least_the_needed_size() {
        assert_eq!(
            jpeg_scale(5640, 3172, Some((1024, 576))),
            ScalingFactor::ONE_QUARTER
        );
        assert_eq!(
            jpeg_scale(5640, 3172, Some((2048, 1152))),
            ScalingFactor::ONE_HALF
        );
        assert_eq!(
            jpeg_scale(5640, 3172, Some((455, 256))),
            ScalingFactor::ONE_EIGHTH
        );
        assert_eq!(
            jpeg_scale(5640, 3172, Some((3000, 1000))),
            ScalingFactor::ONE
        );
        assert_eq!(jpeg_scale(5640, 3172, None), ScalingFactor::ONE);
    }

    #[test]
    fn cmyk_conversion_honours_adobe_inversion() {
        // Pure red ink-wise is C=0 M=Y=255 K=0; Adobe files store 255 minus that.
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 255], true), [255, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[0, 255, 255, 0], false), [255, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255], false), [0, 0, 0]);
    }

    #[test]
    fn orientation_tag_is_read_and_reset() {
        // A minimal little-endian TIFF with IFD0 = { Orientation (SHORT) = 6 }.
        let mut tiff = vec![b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0];
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        tiff.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(orientation_of_exif(&tiff), 6);
        reset_orientation(&mut tiff);
        assert_eq!(orientation_of_exif(&tiff), 1);
        assert_eq!(orientation_of_exif(b"garbage"), 1);
    }
}
