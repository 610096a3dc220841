use image::{DynamicImage, ImageEncoder, RgbImage};
use serde::{Deserialize, Serialize};

use crate::decode::{raw_exif, reset_orientation};
use crate::{Error, Format, Image};

/// The output format a rendition asks for; `Same` keeps the source's format where it can be
/// encoded (JPEG, PNG, WebP), else JPEG for opaque and PNG for transparent images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
    Avif,
    #[default]
    Same,
}

impl OutputFormat {
    /// The concrete format for a source of `source` format and an image with/without alpha.
    pub fn resolve(self, source: Format, has_alpha: bool) -> Format {
        match self {
            OutputFormat::Jpeg => Format::Jpeg,
            OutputFormat::Png => Format::Png,
            OutputFormat::Webp => Format::Webp,
            OutputFormat::Avif => Format::Avif,
            OutputFormat::Same => match source {
                Format::Jpeg | Format::Png | Format::Webp => source,
                _ if has_alpha => Format::Png,
                _ => Format::Jpeg,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Jpeg, Png, Webp or Avif.
    pub format: Format,
    /// 1..=100, for JPEG, lossy WebP and AVIF.
    pub quality: u8,
    /// Progressive JPEG (4:2:0 either way).
    pub progressive: bool,
    /// Lossless WebP.
    pub lossless: bool,
    /// Raw EXIF (TIFF structure) to embed; `None` strips all metadata. Orientation inside it is
    /// reset to 1 because pixels are already upright.
    pub exif: Option<Vec<u8>>,
}

/// Encodes an image. No metadata is written unless `opts.exif` is given.
pub fn encode(img: &Image, opts: &EncodeOptions) -> Result<Vec<u8>, Error> {
    let format = opts.format;
    let enc_err = |message: String| Error::Encode { format, message };
    if !matches!(img, Image::ImageRgb8(_) | Image::ImageRgba8(_)) {
        return Err(enc_err(format!(
            "expects 8-bit RGB or RGBA, got {:?}",
            img.color()
        )));
    }
    let quality = opts.quality.clamp(1, 100);
    let mut out = match format {
        Format::Jpeg => encode_jpeg(img, quality, opts.progressive)?,
        Format::Png => encode_png(img)?,
        Format::Webp => encode_webp(img, quality, opts.lossless)?,
        Format::Avif => encode_avif(img, quality)?,
        other => return Err(Error::Unsupported(format!("{other:?} output"))),
    };
    if let Some(exif) = &opts.exif {
        let mut exif = exif.clone();
        reset_orientation(&mut exif);
        out = match format {
            Format::Jpeg => jpeg_with_exif(&out, &exif),
            Format::Png => png_with_exif(&out, &exif),
            Format::Webp => webp_with_exif(
                &out,
                &exif,
                img.color().has_alpha(),
                img.width(),
                img.height(),
            ),
            _ => out,
        };
    }
    Ok(out)
}

fn encode_jpeg(img: &Image, quality: u8, progressive: bool) -> Result<Vec<u8>, Error> {
    let err = |e: turbojpeg::Error| Error::Encode {
        format: Format::Jpeg,
        message: e.to_string(),
    };
    // JPEG has no alpha: transparent areas are flattened onto white, which is what a
    // product photo on a web page expects (black would show the transparent pixels' colours).
    let flattened;
    let rgb: &RgbImage = match img {
        Image::ImageRgb8(buf) => buf,
        Image::ImageRgba8(buf) => {
            flattened = flatten_on_white(buf);
            &flattened
        }
        _ => {
            return Err(Error::Encode {
                format: Format::Jpeg,
                message: "unexpected layout".into(),
            });
        }
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

fn flatten_on_white(rgba: &image::RgbaImage) -> RgbImage {
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
    for px in rgba.as_raw().chunks_exact(4) {
        let a = u32::from(px[3]);
        for &c in &px[..3] {
            out.push(((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

fn encode_png(img: &Image) -> Result<Vec<u8>, Error> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut out = Vec::new();
    let enc =
        PngEncoder::new_with_quality(&mut out, CompressionType::Default, FilterType::Adaptive);
    enc.write_image(
        img.as_bytes(),
        img.width(),
        img.height(),
        img.color().into(),
    )
    .map_err(|e| Error::Encode {
        format: Format::Png,
        message: e.to_string(),
    })?;
    Ok(out)
}

fn encode_webp(img: &Image, quality: u8, lossless: bool) -> Result<Vec<u8>, Error> {
    let err = |message: String| Error::Encode {
        format: Format::Webp,
        message,
    };
    // libwebp's limit; larger images cannot be WebP at all.
    if img.width() > 16383 || img.height() > 16383 {
        return Err(err(format!(
            "{}x{} exceeds WebP's 16383x16383 limit",
            img.width(),
            img.height()
        )));
    }
    let encoder = match img {
        DynamicImage::ImageRgba8(buf) => {
            webp::Encoder::from_rgba(buf.as_raw(), img.width(), img.height())
        }
        DynamicImage::ImageRgb8(buf) => {
            webp::Encoder::from_rgb(buf.as_raw(), img.width(), img.height())
        }
        _ => return Err(err("unexpected layout".into())),
    };
    let mut config = webp::WebPConfig::new().map_err(|()| err("cannot set up libwebp".into()))?;
    config.lossless = i32::from(lossless);
    config.quality = if lossless { 75.0 } else { f32::from(quality) };
    // Effort 4 of 0..=6: libwebp's (and sharp's) default balance of size and speed.
    config.method = 4;
    config.alpha_compression = i32::from(!lossless);
    let mem = encoder
        .encode_advanced(&config)
        .map_err(|e| err(format!("{e:?}")))?;
    Ok(mem.to_vec())
}

/// AVIF through rav1e (ravif). Speed 8 of 1..=10: rav1e's slower presets cost seconds per
/// megapixel for a few per cent of size, and one thread because imgpipe runs images in
/// parallel rather than splitting one across cores.
#[cfg(feature = "avif")]
fn encode_avif(img: &Image, quality: u8) -> Result<Vec<u8>, Error> {
    use ravif::{Encoder, Img};
    use rgb::FromSlice;
    let err = |message: String| Error::Encode {
        format: Format::Avif,
        message,
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let encoder = Encoder::new()
        .with_quality(f32::from(quality))
        .with_alpha_quality(f32::from(quality))
        .with_speed(8)
        .with_num_threads(Some(1));
    let encoded = match img {
        Image::ImageRgb8(buf) => encoder.encode_rgb(Img::new(buf.as_raw().as_rgb(), w, h)),
        Image::ImageRgba8(buf) => encoder.encode_rgba(Img::new(buf.as_raw().as_rgba(), w, h)),
        _ => return Err(err("unexpected layout".into())),
    }
    .map_err(|e| err(e.to_string()))?;
    Ok(encoded.avif_file)
}

#[cfg(not(feature = "avif"))]
fn encode_avif(_img: &Image, _quality: u8) -> Result<Vec<u8>, Error> {
    Err(Error::Unsupported(
        "AVIF output (imaging was built without its avif feature)".into(),
    ))
}

/// APP1 `Exif` right after SOI, where readers look for it first.
fn jpeg_with_exif(jpeg: &[u8], exif: &[u8]) -> Vec<u8> {
    let len = exif.len() + 8;
    // A marker segment length is 16 bits: an EXIF block too big for one is dropped.
    let Ok(len16) = u16::try_from(len) else {
        return jpeg.to_vec();
    };
    let mut out = Vec::with_capacity(jpeg.len() + len + 2);
    out.extend_from_slice(&jpeg[..2.min(jpeg.len())]);
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len16.to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(exif);
    out.extend_from_slice(jpeg.get(2..).unwrap_or_default());
    out
}

/// An `eXIf` chunk after IHDR (which is 8 + 25 bytes into the file).
fn png_with_exif(png: &[u8], exif: &[u8]) -> Vec<u8> {
    let at = 33;
    let Ok(len) = u32::try_from(exif.len()) else {
        return png.to_vec();
    };
    if png.len() < at {
        return png.to_vec();
    }
    let mut chunk = Vec::with_capacity(exif.len() + 12);
    chunk.extend_from_slice(&len.to_be_bytes());
    chunk.extend_from_slice(b"eXIf");
    chunk.extend_from_slice(exif);
    let crc = crc32fast::hash(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    let mut out = Vec::with_capacity(png.len() + chunk.len());
    out.extend_from_slice(&png[..at]);
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&png[at..]);
    out
}

/// WebP keeps EXIF in an `EXIF` chunk of the extended format: a simple file (one VP8/VP8L
/// chunk) gets a VP8X header first; an extended one gets its EXIF flag set.
fn webp_with_exif(webp: &[u8], exif: &[u8], has_alpha: bool, width: u32, height: u32) -> Vec<u8> {
    if webp.len() < 20 || &webp[0..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return webp.to_vec();
    }
    let Ok(exif_len) = u32::try_from(exif.len()) else {
        return webp.to_vec();
    };
    let mut chunks = webp[12..].to_vec();
    if &chunks[0..4] == b"VP8X" {
        chunks[8] |= 0x08;
    } else {
        let mut vp8x = Vec::with_capacity(18);
        vp8x.extend_from_slice(b"VP8X");
        vp8x.extend_from_slice(&10u32.to_le_bytes());
        vp8x.push(0x08 | if has_alpha { 0x10 } else { 0 });
        vp8x.extend_from_slice(&[0, 0, 0]);
        vp8x.extend_from_slice(&(width.saturating_sub(1)).to_le_bytes()[..3]);
        vp8x.extend_from_slice(&(height.saturating_sub(1)).to_le_bytes()[..3]);
        vp8x.extend_from_slice(&chunks);
        chunks = vp8x;
    }
    chunks.extend_from_slice(b"EXIF");
    chunks.extend_from_slice(&exif_len.to_le_bytes());
    chunks.extend_from_slice(exif);
    if exif.len() % 2 == 1 {
        chunks.push(0);
    }
    let Ok(riff_len) = u32::try_from(chunks.len() + 4) else {
        return webp.to_vec();
    };
    let mut out = Vec::with_capacity(chunks.len() + 12);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff_len.to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&chunks);
    out
}

/// Largest EXIF block carried over: enough for any camera's, and one JPEG segment's worth.
const MAX_EXIF: usize = 65_000;

/// The source's raw EXIF block, for recipes that keep metadata.
pub fn exif_of(bytes: &[u8], format: Format) -> Option<Vec<u8>> {
    raw_exif(bytes, format).filter(|e| !e.is_empty() && e.len() <= MAX_EXIF)
}

/// Largest intermediate accepted back: the pixel budget of the biggest rendition.
const MAX_INTERMEDIATE_PIXELS: u64 = 16_384 * 16_384;

/// Fast lossless form for intermediates between steps (QOI).
pub fn encode_intermediate(img: &Image) -> Result<Vec<u8>, Error> {
    let err = |e: qoi::Error| Error::Encode {
        format: Format::Qoi,
        message: e.to_string(),
    };
    match img {
        Image::ImageRgb8(buf) => {
            qoi::encode_to_vec(buf.as_raw(), img.width(), img.height()).map_err(err)
        }
        Image::ImageRgba8(buf) => {
            qoi::encode_to_vec(buf.as_raw(), img.width(), img.height()).map_err(err)
        }
        other => Err(Error::Encode {
            format: Format::Qoi,
            message: format!("expects 8-bit RGB or RGBA, got {:?}", other.color()),
        }),
    }
}

/// Reads back [`encode_intermediate`] output.
pub fn decode_intermediate(bytes: &[u8]) -> Result<Image, Error> {
    let err = |e: qoi::Error| Error::Decode {
        format: Format::Qoi,
        message: e.to_string(),
    };
    let header = qoi::decode_header(bytes).map_err(err)?;
    if u64::from(header.width) * u64::from(header.height) > MAX_INTERMEDIATE_PIXELS {
        return Err(Error::TooManyPixels {
            width: header.width,
            height: header.height,
            pixels: u64::from(header.width) * u64::from(header.height),
            limit: MAX_INTERMEDIATE_PIXELS,
        });
    }
    let (header, pixels) = qoi::decode_to_vec(bytes).map_err(err)?;
    let (w, h) = (header.width, header.height);
    let img = match header.channels {
        qoi::Channels::Rgb => RgbImage::from_raw(w, h, pixels).map(Image::ImageRgb8),
        qoi::Channels::Rgba => image::RgbaImage::from_raw(w, h, pixels).map(Image::ImageRgba8),
    };
    img.ok_or_else(|| Error::Decode {
        format: Format::Qoi,
        message: "pixel data does not match the header".into(),
    })
}
