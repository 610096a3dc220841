use image::ImageEncoder;

use crate::{Error, Format, Image};

pub(super) fn encode(img: &Image, icc: Option<&[u8]>) -> Result<Vec<u8>, Error> {
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
