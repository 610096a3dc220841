use serde::{Deserialize, Serialize};

use crate::Error;

/// A container format, as told by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Gif,
    Tiff,
    Bmp,
    Avif,
    Qoi,
}

impl Format {
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Gif => "image/gif",
            Format::Tiff => "image/tiff",
            Format::Bmp => "image/bmp",
            Format::Avif => "image/avif",
            Format::Qoi => "image/qoi",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Gif => "gif",
            Format::Tiff => "tiff",
            Format::Bmp => "bmp",
            Format::Avif => "avif",
            Format::Qoi => "qoi",
        }
    }

    /// Formats accepted as uploads (decodable here).
    pub fn is_decodable(self) -> bool {
        matches!(
            self,
            Format::Jpeg | Format::Png | Format::Webp | Format::Gif | Format::Tiff | Format::Bmp
        )
    }
}

/// Tells the format from the leading bytes only; the file name and Content-Type are never trusted.
/// Recognised-but-unsupported content (SVG, HTML, PDF, HEIC, AVIF decode) is `Unsupported` with
/// its name, anything else `UnknownFormat`, no bytes at all `Empty`.
pub fn sniff(bytes: &[u8]) -> Result<Format, Error> {
    let _ = bytes;
    todo!("imaging::sniff")
}
