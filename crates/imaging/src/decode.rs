use serde::{Deserialize, Serialize};

use crate::{Error, Format, Image};

/// What an upload may be. Checked from the header, before any pixel buffer is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_bytes: u64,
    pub max_pixels: u64,
    pub max_side: u32,
    pub max_frames: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 100 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_side: 32_768,
            max_frames: 1_000,
        }
    }
}

/// What the header says, read without decoding pixels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub format: Format,
    /// Stored dimensions, before the EXIF orientation is applied.
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    /// EXIF orientation 1..=8 (1 when absent or invalid).
    pub orientation: u8,
    pub has_alpha: bool,
    /// Colour model as stored, e.g. "rgb8", "rgba16", "l8", "la8", "palette", "cmyk", "ycbcr".
    pub color: String,
}

impl Header {
    /// Dimensions after the orientation is applied (5..=8 swap width and height).
    pub fn oriented_dims(&self) -> (u32, u32) {
        if (5..=8).contains(&self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Sniffs the format and reads the header, then checks every limit. Allocates nothing
/// proportional to the claimed image size.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<Header, Error> {
    let _ = (bytes, limits);
    todo!("imaging::probe")
}

/// Decodes the first frame into upright 8-bit RGB/RGBA. `at_least` is the smallest upright
/// size the caller needs: a JPEG may then be decoded with DCT scaling (shrink-on-load), so the
/// result can be smaller than the source but never smaller than `at_least` on either side.
/// Calls [`probe`] first, so limits hold before any buffer is allocated.
pub fn decode(bytes: &[u8], limits: &Limits, at_least: Option<(u32, u32)>) -> Result<Image, Error> {
    let _ = (bytes, limits, at_least);
    todo!("imaging::decode")
}
