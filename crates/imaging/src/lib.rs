//! Pure, synchronous image work: sniff -> limits -> decode -> orient -> resize -> operations ->
//! encode. Bytes in, bytes out; no I/O, no async, no cloud types.
//!
//! Every decoded [`Image`] is 8-bit RGB or RGBA (`DynamicImage::ImageRgb8` / `ImageRgba8`),
//! already turned upright by its EXIF orientation, so later stages handle exactly two layouts,
//! and in sRGB unless the caller asked to keep the source's colour space
//! ([`ColorHandling::Keep`]).

mod color;
mod decode;
mod embed;
mod encode;
mod error;
mod exif;
mod finish;
mod format;
mod ops;
mod overlay;
mod placeholder;
mod profile;
mod quality;
mod raw;
mod resize;
mod smart;
mod tiff_bytes;

pub use color::Color;
pub use decode::{
    ColorHandling, Decoded, Header, Limits, decode, decode_with, probe, source_profile,
};
pub use encode::{
    DEFAULT_EFFORT, EncodeOptions, JpegEncoder, MAX_EFFORT, OutputFormat, decode_intermediate,
    encode, encode_intermediate, exif_of, writes,
};
pub use error::Error;
pub use finish::finish;
pub use format::{Format, sniff};
pub use ops::{Operation, apply};
pub use overlay::{Placement, overlay};
pub use placeholder::{Placeholder, placeholder};
pub use profile::{ProfileInfo, SourceProfile, from_icc as profile_of_icc, to_srgb};
pub use quality::{
    AutoEncoded, DEFAULT_TARGET as DEFAULT_QUALITY_TARGET, MAX_TRIALS, encode_auto, score,
};
pub use resize::{Fit, FocalPoint, Gravity, Plan, ResizeSpec, plan, resize, resize_exact};

/// The in-memory image: always `ImageRgb8` or `ImageRgba8` (see the crate docs).
pub type Image = image::DynamicImage;

/// Re-exported so callers can build test images without pinning their own `image` version.
pub use image;
