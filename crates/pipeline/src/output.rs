//! Encoding one rendition as its recipe says: at a fixed quality, or at the lowest quality
//! that still scores the rendition's `autoQualityTarget`.

use imaging::{EncodeOptions, Image};

use crate::Rendition;

/// One encoded rendition, with what an automatic quality chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// The quality chosen by `quality: "auto"`; `None` for a fixed quality or a lossless file.
    pub quality: Option<u8>,
    /// The SSIMULACRA2 score measured by `quality: "auto"`, to two decimals.
    pub score: Option<f64>,
}

pub fn encode(
    img: &Image,
    rendition: &Rendition,
    opts: &EncodeOptions,
) -> Result<Encoded, imaging::Error> {
    match rendition.auto_target() {
        Some(target) => {
            let auto = imaging::encode_auto(img, opts, target)?;
            Ok(Encoded {
                bytes: auto.bytes,
                quality: auto.quality,
                score: Some((auto.score * 100.0).round() / 100.0),
            })
        }
        None => Ok(Encoded {
            bytes: imaging::encode(img, opts)?,
            quality: None,
            score: None,
        }),
    }
}
