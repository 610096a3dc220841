//! HEIC/HEIF: the `heic-decoder` crate (pure Rust HEVC: grids, 8 and 10 bit, `irot`/`imir`,
//! alpha, ICC and `nclx`). The declared size (`ispe`) is checked against the limits before
//! the decoder parses anything, and the coded size and tile count before any pixel is decoded.

use heic_decoder::HeifError;
use image::{DynamicImage, RgbImage, RgbaImage};

use super::{Header, Limits, buffer_mismatch, check_dims, dim, isobmff, unpremultiply};
use crate::profile::{self, SourceProfile};
use crate::{Error, Format, Image};

fn heif_error(e: HeifError) -> Error {
    let format = Format::Heic;
    match e {
        HeifError::Truncated { .. } => Error::Truncated { format },
        HeifError::Unsupported(what) => Error::Unsupported(format!("HEIC variant: {what}")),
        other => Error::Decode {
            format,
            message: other.to_string(),
        },
    }
}

pub(super) fn header(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    isobmff::check_declared(Format::Heic, bytes, limits)?;
    let info = heic_decoder::probe(bytes).map_err(heif_error)?;
    let (width, height) = (
        dim(info.width, Format::Heic)?,
        dim(info.height, Format::Heic)?,
    );
    check_dims(Format::Heic, width, height, limits)?;
    let (cw, ch) = (
        dim(info.coded_width, Format::Heic)?,
        dim(info.coded_height, Format::Heic)?,
    );
    check_dims(Format::Heic, cw, ch, limits)?;
    let chroma = match info.chroma_format_idc {
        0 => "gray",
        1 => "ycbcr420",
        2 => "ycbcr422",
        _ => "ycbcr444",
    };
    Ok(Header {
        format: Format::Heic,
        width,
        height,
        frames: 1,
        // HEIF's own `irot`/`imir` turn the picture upright while decoding; its EXIF
        // orientation only restates them and is never applied a second time.
        orientation: 1,
        has_alpha: info.alpha_bit_depth.is_some(),
        color: format!("{chroma}-{}bit", info.bit_depth_luma),
        color_profile: None,
    })
}

/// The primary image's colour: its ICC profile (iPhones embed Display P3), else its `nclx`.
pub(super) fn profile(bytes: &[u8]) -> Option<SourceProfile> {
    let meta = heic_decoder::read_metadata(bytes).ok()?;
    if let Some(icc) = &meta.icc_profile {
        return Some(profile::from_icc(icc));
    }
    let c = meta.color_info?;
    Some(profile::from_cicp(
        "nclx",
        c.color_primaries,
        c.transfer_characteristics,
        c.matrix_coefficients,
    ))
}

/// Decodes the primary image (grid tiles assembled, transforms applied) to 8-bit RGB(A).
/// The caller has run [`header`] (through `probe`), which checked every size first.
pub(super) fn decode(bytes: &[u8]) -> Result<Image, Error> {
    let decoded = heic_decoder::decode(bytes).map_err(heif_error)?;
    if decoded.alpha.is_some() {
        let rgba = decoded.to_rgba8().map_err(heif_error)?;
        let (w, h) = (
            dim(rgba.width, Format::Heic)?,
            dim(rgba.height, Format::Heic)?,
        );
        let mut img = RgbaImage::from_raw(w, h, rgba.data).ok_or(buffer_mismatch(Format::Heic))?;
        if rgba.premultiplied {
            unpremultiply(&mut img);
        }
        Ok(DynamicImage::ImageRgba8(img))
    } else {
        let rgb = decoded.to_rgb8().map_err(heif_error)?;
        let (w, h) = (
            dim(rgb.width, Format::Heic)?,
            dim(rgb.height, Format::Heic)?,
        );
        RgbImage::from_raw(w, h, rgb.data)
            .map(DynamicImage::ImageRgb8)
            .ok_or(buffer_mismatch(Format::Heic))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::decode::isobmff::tests::heif_declaring;

    #[test]
    fn declared_size_is_checked_before_decoding() {
        let huge = heif_declaring(b"heic", 70_000, 70_000, 0);
        assert!(matches!(
            header(&huge, &Limits::default()),
            Err(Error::TooManyPixels {
                width: 70_000,
                height: 70_000,
                ..
            })
        ));
    }
}
