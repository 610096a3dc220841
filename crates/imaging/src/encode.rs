use image::{DynamicImage, ImageEncoder, RgbImage};
use serde::{Deserialize, Serialize};

use crate::embed;
use crate::exif::{raw_exif, reset_orientation};
use crate::{Color, Error, Format, Image};

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
    /// ICC profile to embed: the pixels are in that colour space rather than sRGB (a rendition
    /// that keeps the source's profile). `None` writes sRGB without a profile.
    pub icc: Option<Vec<u8>>,
    /// What transparent pixels are flattened onto when the format has no alpha (JPEG).
    pub background: Color,
}

/// Encodes an image. No metadata is written unless `opts.exif` or `opts.icc` is given.
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
        Format::Jpeg => encode_jpeg(img, quality, opts.progressive, opts.background)?,
        Format::Png => encode_png(img, opts.icc.as_deref())?,
        Format::Webp => encode_webp(img, quality, opts.lossless)?,
        Format::Avif => encode_avif(img, quality)?,
        other => return Err(Error::Unsupported(format!("{other:?} output"))),
    };
    let exif = opts.exif.as_ref().map(|exif| {
        let mut exif = exif.clone();
        reset_orientation(&mut exif);
        exif
    });
    let icc = opts.icc.as_deref();
    out = match format {
        Format::Jpeg => {
            if let Some(exif) = &exif {
                out = embed::jpeg_with_exif(&out, exif);
            }
            match icc {
                Some(icc) => embed::jpeg_with_icc(&out, icc),
                None => out,
            }
        }
        // PNG's profile went in through the encoder (iCCP must precede the image data).
        Format::Png => match &exif {
            Some(exif) => embed::png_with_exif(&out, exif),
            None => out,
        },
        Format::Webp if icc.is_some() || exif.is_some() => embed::webp_with_metadata(
            &out,
            icc,
            exif.as_deref(),
            img.color().has_alpha(),
            (img.width(), img.height()),
        ),
        Format::Avif => match icc {
            Some(icc) => embed::avif_with_icc(&out, icc).ok_or_else(|| {
                enc_err("the encoder's AVIF layout has no place for a profile".into())
            })?,
            None => out,
        },
        _ => out,
    };
    Ok(out)
}

fn encode_jpeg(
    img: &Image,
    quality: u8,
    progressive: bool,
    background: Color,
) -> Result<Vec<u8>, Error> {
    let err = |e: turbojpeg::Error| Error::Encode {
        format: Format::Jpeg,
        message: e.to_string(),
    };
    // JPEG has no alpha: transparent areas are flattened onto the background (white unless
    // the recipe says otherwise), which is what a product photo on a web page expects.
    let flattened;
    let rgb: &RgbImage = match img {
        Image::ImageRgb8(buf) => buf,
        Image::ImageRgba8(buf) => {
            flattened = flatten(buf, background);
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

/// Composites straight-alpha pixels over an opaque background colour.
fn flatten(rgba: &image::RgbaImage, background: Color) -> RgbImage {
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

fn encode_png(img: &Image, icc: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut out = Vec::new();
    let mut enc =
        PngEncoder::new_with_quality(&mut out, CompressionType::Default, FilterType::Adaptive);
    if let Some(icc) = icc {
        enc.set_icc_profile(icc.to_vec())
            .map_err(|e| Error::Encode {
                format: Format::Png,
                message: e.to_string(),
            })?;
    }
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
