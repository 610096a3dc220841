use serde::{Deserialize, Serialize};

/// The stable error names a step reports. They reach Step Functions as the Lambda Diagnostic
/// `errorType`, so the state machine can retry `Transient` and catch the rest; they also land
/// in the record's `error.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The bytes are not a well-formed image (empty, truncated, corrupt).
    InvalidImage,
    /// Over a byte, pixel, side or frame limit.
    ImageTooLarge,
    /// Not a format we accept (text, SVG, HTML, HEIC, ...).
    UnsupportedFormat,
    /// The recipe or preset asked for is not valid.
    InvalidRecipe,
    /// The recipe is valid, but for this image its renditions need more pixels than a job
    /// may hold (each rendition, or all of them with the source).
    RecipeTooLarge,
    /// An object or record the step needs does not exist.
    NotFound,
    /// The upload came through a form whose image has been deleted since (a replayed form,
    /// or one posted while its image was deleted): it is discarded, nothing recorded.
    ImageDeleted,
    /// A dependency failed in a way worth retrying.
    Transient,
    /// A step input that does not parse: a wiring bug, not the user's fault.
    InvalidInput,
    /// Anything else: a bug or a permanent dependency failure.
    Internal,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidImage => "InvalidImage",
            ErrorKind::ImageTooLarge => "ImageTooLarge",
            ErrorKind::UnsupportedFormat => "UnsupportedFormat",
            ErrorKind::InvalidRecipe => "InvalidRecipe",
            ErrorKind::RecipeTooLarge => "RecipeTooLarge",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::ImageDeleted => "ImageDeleted",
            ErrorKind::Transient => "Transient",
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::Internal => "Internal",
        }
    }

    pub fn from_name(name: &str) -> Option<ErrorKind> {
        Some(match name {
            "InvalidImage" => ErrorKind::InvalidImage,
            "ImageTooLarge" => ErrorKind::ImageTooLarge,
            "UnsupportedFormat" => ErrorKind::UnsupportedFormat,
            "InvalidRecipe" => ErrorKind::InvalidRecipe,
            "RecipeTooLarge" => ErrorKind::RecipeTooLarge,
            "NotFound" => ErrorKind::NotFound,
            "ImageDeleted" => ErrorKind::ImageDeleted,
            "Transient" => ErrorKind::Transient,
            "InvalidInput" => ErrorKind::InvalidInput,
            "Internal" => ErrorKind::Internal,
            _ => return None,
        })
    }

    /// Rejections are the input's fault: the record says REJECTED and the original is
    /// quarantined. Everything else is ours: FAILED.
    pub fn is_rejection(self) -> bool {
        matches!(
            self,
            ErrorKind::InvalidImage
                | ErrorKind::ImageTooLarge
                | ErrorKind::UnsupportedFormat
                | ErrorKind::InvalidRecipe
                | ErrorKind::RecipeTooLarge
        )
    }
}

/// A step's failure: a stable kind plus a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.name())]
pub struct StepError {
    pub kind: ErrorKind,
    pub message: String,
}

impl StepError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StepError {
            kind,
            message: message.into(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    pub fn invalid_recipe(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRecipe, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl From<imaging::Error> for StepError {
    fn from(e: imaging::Error) -> Self {
        use imaging::Error as E;
        let kind = match &e {
            E::Empty | E::Truncated { .. } | E::Decode { .. } | E::ColorProfile(_) => {
                ErrorKind::InvalidImage
            }
            E::UnknownFormat | E::Unsupported(_) => ErrorKind::UnsupportedFormat,
            E::TooManyBytes { .. }
            | E::TooManyPixels { .. }
            | E::SideTooLong { .. }
            | E::TooManyFrames { .. } => ErrorKind::ImageTooLarge,
            E::InvalidOperation(_) => ErrorKind::InvalidRecipe,
            E::Encode { .. } => ErrorKind::Internal,
        };
        // The imaging kind stays in the message so records say exactly which limit or check.
        StepError::new(kind, format!("{}: {e}", e.kind()))
    }
}

/// Failures of the storage, metadata and notification ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("temporarily unavailable: {0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

impl From<PortError> for StepError {
    fn from(e: PortError) -> Self {
        let kind = match e {
            PortError::NotFound(_) => ErrorKind::NotFound,
            PortError::Transient(_) => ErrorKind::Transient,
            PortError::Permanent(_) => ErrorKind::Internal,
        };
        StepError::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_classify() {
        for kind in [
            ErrorKind::InvalidImage,
            ErrorKind::ImageTooLarge,
            ErrorKind::UnsupportedFormat,
            ErrorKind::InvalidRecipe,
            ErrorKind::RecipeTooLarge,
            ErrorKind::NotFound,
            ErrorKind::Transient,
            ErrorKind::InvalidInput,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::from_name(kind.name()), Some(kind));
        }
        assert!(ErrorKind::ImageTooLarge.is_rejection());
        assert!(ErrorKind::RecipeTooLarge.is_rejection());
        assert!(!ErrorKind::Transient.is_rejection());
        assert_eq!(ErrorKind::from_name("States.ALL"), None);
    }

    #[test]
    fn imaging_errors_map_to_step_names() {
        let e: StepError = imaging::Error::TooManyPixels {
            width: 100_000,
            height: 100_000,
            pixels: 10_000_000_000,
            limit: 50_000_000,
        }
        .into();
        assert_eq!(e.name(), "ImageTooLarge");
        assert!(e.message.starts_with("TooManyPixels"), "{}", e.message);
        let e: StepError = imaging::Error::UnknownFormat.into();
        assert_eq!(e.name(), "UnsupportedFormat");
        let e: StepError = PortError::Transient("slow down".into()).into();
        assert_eq!(e.name(), "Transient");
    }
}
