use image::DynamicImage;

use crate::{Error, Format, Image};

/// libwebp, as sharp uses it. `effort` 0..=9 picks libwebp's method 0..=6 (`min(effort, 6)`):
/// the default 4 is libwebp's and sharp's own default.
pub(super) fn encode(
    img: &Image,
    quality: u8,
    lossless: bool,
    effort: u8,
) -> Result<Vec<u8>, Error> {
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
    config.method = i32::from(effort.min(6));
    config.alpha_compression = i32::from(!lossless);
    let mem = encoder
        .encode_advanced(&config)
        .map_err(|e| err(format!("{e:?}")))?;
    Ok(mem.to_vec())
}
