use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use imaging::Format;
use serde::{Deserialize, Serialize};

use crate::Recipe;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    AwaitingUpload,
    Processing,
    Complete,
    Rejected,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::AwaitingUpload => "AWAITING_UPLOAD",
            Status::Processing => "PROCESSING",
            Status::Complete => "COMPLETE",
            Status::Rejected => "REJECTED",
            Status::Failed => "FAILED",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "AWAITING_UPLOAD" => Status::AwaitingUpload,
            "PROCESSING" => Status::Processing,
            "COMPLETE" => Status::Complete,
            "REJECTED" => Status::Rejected,
            "FAILED" => Status::Failed,
            _ => {
                return Err(format!(
                    "unknown status `{s}` (AWAITING_UPLOAD, PROCESSING, COMPLETE, REJECTED, FAILED)"
                ));
            }
        })
    }
}

/// What Validate learned about the uploaded original.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Upright dimensions (after EXIF orientation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Filled in once the whole original has been read (by Resize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The embedded colour description (ICC profile, nclx, ...), as Validate read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color_profile: Option<imaging::ProfileInfo>,
    /// On one machine, an original kept by reference: the user's own file, not a copy in the
    /// data directory (`imgpipe process` without `--keep-originals`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalFile>,
    /// Whether the original has an alpha channel, as Validate read it (absent on records made
    /// before it was kept): what `fmt=auto` transforms choose PNG over JPEG for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<bool>,
    /// Where `gravity: focal` crops around, set by the owner (`PATCH /v1/images/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focal_point: Option<imaging::FocalPoint>,
}

/// A file an original is read from where it lies, and what it was when processed: if its
/// size or modification time differ later, it is not read as the same original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginalFile {
    /// Absolute.
    pub path: String,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub modified_ns: u64,
}

/// One stored output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenditionRecord {
    pub name: String,
    pub key: String,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// Time spent making this rendition (its resize share, operations and encode).
    pub ms: u64,
    /// The quality `quality: "auto"` chose (absent for a fixed quality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// The SSIMULACRA2 score the automatic search measured for that quality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// A ThumbHash of the rendition (base64), for a page to paint while it loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Its most common colour, `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dominant_color: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// What a page shows while an image's renditions load: the placeholder and dominant colour of
/// its smallest rendition.
pub fn placeholder_of(renditions: &[RenditionRecord]) -> Option<(&str, &str)> {
    let smallest = renditions
        .iter()
        .filter(|r| r.placeholder.is_some() && r.dominant_color.is_some())
        .min_by_key(|r| u64::from(r.width) * u64::from(r.height))?;
    Some((
        smallest.placeholder.as_deref()?,
        smallest.dominant_color.as_deref()?,
    ))
}

/// A rendition made on demand by a transform URL (`GET /v1/images/{id}/transform`), kept
/// and found again by its normalised parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DerivedRendition {
    /// The normalised parameters, e.g. `w=800&fit=cover&fmt=webp`: what identifies it.
    pub params: String,
    pub key: String,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub created_at: DateTime<Utc>,
    /// Requests answered with it, the first included.
    #[serde(default)]
    pub hits: u64,
}

/// The metadata record of one image, the same fields in DynamoDB and SQLite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub id: String,
    pub owner: String,
    pub status: Status,
    pub source: SourceInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<Recipe>,
    #[serde(default)]
    pub renditions: Vec<RenditionRecord>,
    /// Renditions made on demand since the image completed, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived: Vec<DerivedRendition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The preset the recipe came from, when it came from one (not an inline recipe): what
    /// `imgpipe reprocess` and the Reprocess state machine re-render with its current
    /// definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// When the renditions were last re-rendered (a reprocess after its preset changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocessed_at: Option<DateTime<Utc>>,
}

/// A query over one owner's images (or everyone's, for admins), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// `None` lists every owner (admin view).
    pub owner: Option<String>,
    pub status: Option<Status>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub tag: Option<String>,
    pub limit: usize,
    /// Opaque continuation from the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<ImageRecord>,
    pub cursor: Option<String>,
}

/// What Notify announces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: EventKind,
    pub image_id: String,
    pub owner: String,
    pub status: Status,
    pub source_key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renditions: Vec<RenditionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// All renditions stored; goes to the events topic.
    Completed,
    /// Bad input; goes to the alerts topic.
    Rejected,
    /// Processing failed; goes to the alerts topic.
    Failed,
    /// The image is complete, but its completion could not be announced; goes to the
    /// alerts topic with the reason.
    NotAnnounced,
    /// A COMPLETE image was re-rendered with its preset's current definition: new rendition
    /// keys (renditions are immutable), the old ones removed. Goes to the events topic.
    Reprocessed,
    /// Re-rendering a COMPLETE image failed; it keeps the renditions it had. Goes to the
    /// alerts topic.
    NotReprocessed,
}

impl EventKind {
    pub fn is_alert(self) -> bool {
        !matches!(self, EventKind::Completed | EventKind::Reprocessed)
    }
}
