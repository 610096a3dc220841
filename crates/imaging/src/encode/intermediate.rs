use image::RgbImage;

use crate::{Error, Format, Image};

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
