use serde::{Deserialize, Serialize};

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
        let _ = (source, has_alpha);
        todo!("OutputFormat::resolve")
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
    let _ = (img, opts);
    todo!("imaging::encode")
}

/// The source's raw EXIF block, for recipes that keep metadata.
pub fn exif_of(bytes: &[u8], format: Format) -> Option<Vec<u8>> {
    let _ = (bytes, format);
    todo!("imaging::exif_of")
}

/// Fast lossless form for intermediates between steps (QOI).
pub fn encode_intermediate(img: &Image) -> Result<Vec<u8>, Error> {
    let _ = img;
    todo!("imaging::encode_intermediate")
}

/// Reads back [`encode_intermediate`] output.
pub fn decode_intermediate(bytes: &[u8]) -> Result<Image, Error> {
    let _ = bytes;
    todo!("imaging::decode_intermediate")
}
