use crate::{Error, Image};

/// AVIF through rav1e (ravif), on one thread because imgpipe runs images in parallel rather
/// than splitting one across cores. `effort` 0..=9 is rav1e's speed `10 - effort`: the
/// default 4 is speed 6, which on smooth and monochrome photos needs up to a quarter fewer
/// bytes than speed 8 for the same SSIMULACRA2, at about 1.5 times the CPU (still under
/// sharp's AVIF; docs/performance.md).
///
/// 8-bit AV1: 10-bit costs twice the encode time at high qualities for no fewer bytes at the
/// same score, and decoders built without high bit depth (sharp's prebuilt libheif/aom among
/// them) cannot read it.
#[cfg(feature = "avif")]
pub(super) fn encode(img: &Image, quality: u8, effort: u8) -> Result<Vec<u8>, Error> {
    use crate::Format;
    use ravif::{Encoder, Img};
    use rgb::FromSlice;
    let err = |message: String| Error::Encode {
        format: Format::Avif,
        message,
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let speed = 10 - effort.min(super::MAX_EFFORT);
    let encoder = Encoder::new()
        .with_quality(f32::from(quality))
        .with_alpha_quality(f32::from(quality))
        .with_speed(speed)
        .with_bit_depth(ravif::BitDepth::Eight)
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
pub(super) fn encode(_img: &Image, _quality: u8, _effort: u8) -> Result<Vec<u8>, Error> {
    Err(Error::Unsupported(
        "AVIF output (imaging was built without its avif feature)".into(),
    ))
}
