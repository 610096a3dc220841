use crate::Format;

/// Everything that can go wrong with an image. Each variant has a stable [`Error::kind`] name,
/// which the pipeline maps onto its step errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the file is empty")]
    Empty,
    #[error("not an image format imgpipe recognises (checked the magic bytes)")]
    UnknownFormat,
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("file is {size} bytes; the limit is {limit}")]
    TooManyBytes { size: u64, limit: u64 },
    #[error("{width}x{height} is {pixels} pixels; the limit is {limit}")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("a side of {side} pixels exceeds the limit of {limit}")]
    SideTooLong { side: u32, limit: u32 },
    #[error("{frames} frames; the limit is {limit}")]
    TooManyFrames { frames: u64, limit: u32 },
    #[error("{format:?} data is truncated")]
    Truncated { format: Format },
    #[error("cannot decode {format:?}: {message}")]
    Decode { format: Format, message: String },
    #[error("cannot encode {format:?}: {message}")]
    Encode { format: Format, message: String },
    #[error("invalid operation: {0}")]
    InvalidOperation(String),
    #[error("colour profile: {0}")]
    ColorProfile(String),
}

impl Error {
    /// Stable name of the error, for records, logs and the state machine.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Empty => "Empty",
            Error::UnknownFormat => "UnknownFormat",
            Error::Unsupported(_) => "Unsupported",
            Error::TooManyBytes { .. } => "TooManyBytes",
            Error::TooManyPixels { .. } => "TooManyPixels",
            Error::SideTooLong { .. } => "SideTooLong",
            Error::TooManyFrames { .. } => "TooManyFrames",
            Error::Truncated { .. } => "Truncated",
            Error::Decode { .. } => "Decode",
            Error::Encode { .. } => "Encode",
            Error::InvalidOperation(_) => "InvalidOperation",
            Error::ColorProfile(_) => "ColorProfile",
        }
    }
}
