use serde::{Deserialize, Serialize};

use crate::{Color, Error, Image};

/// How the image fits the box, with sharp's meanings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Fill the box, keeping aspect ratio, cropping what overflows (by gravity).
    #[default]
    Cover,
    /// Fit inside the box, keeping aspect ratio, padding with the background colour.
    Contain,
    /// Stretch to exactly the box.
    Fill,
    /// Largest size inside the box, keeping aspect ratio; no padding.
    Inside,
    /// Smallest size covering the box, keeping aspect ratio; no cropping.
    Outside,
}

/// Which part of the image `cover` keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gravity {
    #[default]
    #[serde(alias = "centre")]
    Center,
    North,
    NorthEast,
    East,
    SouthEast,
    South,
    SouthWest,
    West,
    NorthWest,
}

/// A resize request. With only one of width/height, the other follows the aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResizeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default)]
    pub fit: Fit,
    #[serde(default)]
    pub gravity: Gravity,
    /// Never make the image larger than the source (sharp's `withoutEnlargement`).
    #[serde(default)]
    pub without_enlargement: bool,
    /// Padding colour for `contain` (default transparent for images with alpha, else black).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<Color>,
}

/// The geometry of a resize, computed from dimensions alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Size the whole source is scaled to (before any crop or pad).
    pub scaled: (u32, u32),
    /// Final output size.
    pub output: (u32, u32),
    /// Offset of the output window in the scaled image (cover: crop; contain: negative = pad).
    pub offset: (i64, i64),
}

/// Works out the geometry for a source of `src` (upright) dimensions.
pub fn plan(src: (u32, u32), spec: &ResizeSpec) -> Plan {
    let _ = (src, spec);
    todo!("imaging::plan")
}

/// Scales the whole image to exactly `width` x `height` with Lanczos3 (alpha premultiplied).
pub fn resize_exact(img: &Image, width: u32, height: u32) -> Result<Image, Error> {
    let _ = (img, width, height);
    todo!("imaging::resize_exact")
}

/// `plan` + `resize_exact` + crop/pad: the whole resize in one call.
pub fn resize(img: &Image, spec: &ResizeSpec) -> Result<Image, Error> {
    let _ = (img, spec);
    todo!("imaging::resize")
}
