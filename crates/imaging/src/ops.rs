use serde::{Deserialize, Serialize};

use crate::{Color, Error, Image};

/// One operation of a rendition, applied in order after the resize.
/// JSON form: `{"op": "blur", "sigma": 2}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Operation {
    /// Clockwise degrees; multiples of 90 are lossless, others fill corners with `background`.
    Rotate {
        angle: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        background: Option<Color>,
    },
    /// Mirror top to bottom.
    Flip,
    /// Mirror left to right.
    Flop,
    /// Extract a region.
    Crop {
        left: u32,
        top: u32,
        width: u32,
        height: u32,
    },
    Grayscale,
    Sepia,
    /// Gaussian blur, sigma in pixels (0.3..=100).
    Blur { sigma: f32 },
    /// Unsharp mask.
    Sharpen {
        sigma: f32,
        #[serde(default = "one")]
        amount: f32,
    },
    /// Multiply lightness; 1.0 = unchanged.
    Brightness { factor: f32 },
    /// Scale distance from mid-grey; 1.0 = unchanged.
    Contrast { factor: f32 },
    /// Scale colourfulness; 0.0 = grey, 1.0 = unchanged.
    Saturation { factor: f32 },
    /// Rotate hue by degrees.
    Hue { degrees: f32 },
    /// Gamma correction; 1.0 = unchanged.
    Gamma { gamma: f32 },
    Invert,
    /// Multiply by a colour, keeping luminance structure.
    Tint { color: Color },
}

fn one() -> f32 {
    1.0
}

impl Operation {
    /// Checks parameter ranges. On error returns (parameter name, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        todo!("Operation::validate")
    }
}

/// Applies one operation.
pub fn apply(img: Image, op: &Operation) -> Result<Image, Error> {
    let _ = (img, op);
    todo!("imaging::apply")
}
