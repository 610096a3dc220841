//! Re-rendering COMPLETE images when their preset changes (a backfill): which images are due,
//! and the keys their new renditions get. `imgpipe reprocess`, the api's `POST /v1/reprocess`
//! and the Reprocess state machine all select with [`plan`]; Validate checks it again for each
//! image, so a selection made a while ago never re-renders an image that is up to date.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::io::Upload;
use crate::model::{ImageRecord, ListQuery, Status};
use crate::ports::MetadataStore;
use crate::{PortError, Presets, Recipe, Rendition};

/// How long a re-render holds an image. An execution that died without reaching
/// NotifyFailure (the whole pipeline times out after 300 s) leaves its hold behind; after this
/// long another re-render may take the image over.
pub const LEASE: chrono::Duration = chrono::Duration::minutes(15);

/// The execution input's `reprocess` field: re-render the image at `key` with its preset's
/// current definition, if it matches the filter. Owners are selected before (by listing), so
/// the filter holds only what needs the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// Only images made with this preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Only images created at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Only images created before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// What a re-render would do to one image.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Due: its preset's definition differs from the recipe it was made with.
    Redo { preset: String, recipe: Recipe },
    /// Made with its preset's current definition already.
    UpToDate,
    /// Outside the filter, not COMPLETE, made with an inline recipe (nothing to re-render
    /// with), or made with a preset that no longer exists: left as it is, for this reason.
    Skip(&'static str),
}

impl Plan {
    pub fn is_due(&self) -> bool {
        matches!(self, Plan::Redo { .. })
    }
}

/// Decides for one record.
pub fn plan(record: &ImageRecord, filter: &Filter, presets: &Presets) -> Plan {
    if record.status != Status::Complete {
        return Plan::Skip("not COMPLETE");
    }
    if filter.since.is_some_and(|t| record.created_at < t)
        || filter.until.is_some_and(|t| record.created_at >= t)
    {
        return Plan::Skip("created outside the time range");
    }
    let Some(name) = &record.preset else {
        return Plan::Skip("made with an inline recipe, not a preset");
    };
    if filter.preset.as_ref().is_some_and(|p| p != name) {
        return Plan::Skip("made with another preset");
    }
    let Ok(current) = presets.get(name) else {
        return Plan::Skip("its preset is no longer defined");
    };
    if record.recipe.as_ref() == Some(current) && !record.renditions.is_empty() {
        return Plan::UpToDate;
    }
    Plan::Redo {
        preset: name.clone(),
        recipe: current.clone(),
    }
}

/// A rendition's version: the start of the hash of its definition. A re-rendered rendition is
/// stored under a key with it (`thumb.3f9a1c2e7b.webp`): renditions are served as immutable,
/// so new content must have a new key, and the same definition always gets the same key, so
/// a repeated re-render overwrites rather than duplicates.
pub fn version(rendition: &Rendition) -> String {
    let json = serde_json::to_vec(rendition).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..5])
}

/// Whether `record` is held by a re-render other than `execution_id` that may still be
/// running, given when that hold was taken.
pub fn held_by_another(
    holder: Option<(&str, DateTime<Utc>)>,
    execution_id: &str,
    now: DateTime<Utc>,
) -> bool {
    matches!(holder, Some((by, since)) if by != execution_id && now - since < LEASE)
}

/// The images a reprocess run covers, and what it would do to each.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Due, with the preset each is re-rendered with.
    pub due: Vec<ImageRecord>,
    pub up_to_date: usize,
    /// Left as they are, counted by reason.
    pub skipped: BTreeMap<&'static str, usize>,
}

impl Selection {
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }
}

/// Walks the COMPLETE images (of `owner`, or everyone's) created within the filter's time
/// range, newest first, and plans each one.
pub async fn select(
    metadata: &dyn MetadataStore,
    owner: Option<&str>,
    filter: &Filter,
    presets: &Presets,
) -> Result<Selection, PortError> {
    let mut selection = Selection::default();
    let mut cursor = None;
    loop {
        let page = metadata
            .list(&ListQuery {
                owner: owner.map(str::to_string),
                status: Some(Status::Complete),
                since: filter.since,
                until: filter.until,
                tag: None,
                limit: 100,
                cursor,
            })
            .await?;
        for record in page.items {
            match plan(&record, filter, presets) {
                Plan::Redo { .. } => selection.due.push(record),
                Plan::UpToDate => selection.up_to_date += 1,
                Plan::Skip(why) => *selection.skipped.entry(why).or_default() += 1,
            }
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(selection),
        }
    }
}

/// The execution input that re-renders `record` if it is still due when Validate looks.
pub fn input_for(record: &ImageRecord, filter: &Filter) -> Upload {
    Upload {
        key: record.source.key.clone(),
        etag: record.source.etag.clone(),
        size: Some(record.source.bytes),
        reprocess: Some(filter.clone()),
        ..Upload::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SourceInfo;

    fn record(preset: Option<&str>, recipe: Option<Recipe>) -> ImageRecord {
        let now = Utc::now();
        ImageRecord {
            derived: Vec::new(),
            id: "i".into(),
            owner: "o".into(),
            status: Status::Complete,
            source: SourceInfo {
                focal_point: None,
                alpha: None,
                key: "uploads/o/i/a.jpg".into(),
                etag: None,
                bytes: 1,
                format: None,
                width: Some(10),
                height: Some(10),
                sha256: None,
                color_profile: None,
                original: None,
            },
            recipe,
            renditions: vec![crate::model::RenditionRecord {
                name: "thumb".into(),
                key: "renditions/o/i/thumb.webp".into(),
                format: imaging::Format::Webp,
                width: 1,
                height: 1,
                bytes: 1,
                ms: 0,
                quality: None,
                score: None,
                placeholder: None,
                dominant_color: None,
            }],
            error: None,
            created_at: now,
            updated_at: now,
            execution_id: None,
            tags: Vec::new(),
            preset: preset.map(str::to_string),
            reprocessed_at: None,
        }
    }

    #[test]
    fn due_only_when_the_preset_changed_and_the_filter_matches() {
        let presets = Presets::builtin();
        let web = presets.get("web").unwrap().clone();
        let mut changed = web.clone();
        changed.renditions[0].quality = Some(crate::Quality::Fixed(41));
        assert_eq!(
            plan(
                &record(Some("web"), Some(web.clone())),
                &Filter::default(),
                &presets
            ),
            Plan::UpToDate
        );
        assert!(
            plan(
                &record(Some("web"), Some(changed.clone())),
                &Filter::default(),
                &presets
            )
            .is_due()
        );
        let other = Filter {
            preset: Some("archive".into()),
            ..Filter::default()
        };
        assert_eq!(
            plan(
                &record(Some("web"), Some(changed.clone())),
                &other,
                &presets
            ),
            Plan::Skip("made with another preset")
        );
        assert!(matches!(
            plan(
                &record(None, Some(changed.clone())),
                &Filter::default(),
                &presets
            ),
            Plan::Skip(_)
        ));
        let later = Filter {
            since: Some(Utc::now() + chrono::Duration::hours(1)),
            ..Filter::default()
        };
        assert!(matches!(
            plan(
                &record(Some("web"), Some(changed.clone())),
                &later,
                &presets
            ),
            Plan::Skip(_)
        ));
        let mut failed = record(Some("web"), Some(changed));
        failed.status = Status::Failed;
        assert_eq!(
            plan(&failed, &Filter::default(), &presets),
            Plan::Skip("not COMPLETE")
        );
    }

    #[test]
    fn versions_follow_the_definition() {
        let web = Presets::builtin().get("web").unwrap().clone();
        let mut changed = web.renditions[0].clone();
        changed.quality = Some(crate::Quality::Fixed(41));
        assert_eq!(
            version(&web.renditions[0]),
            version(&web.renditions[0].clone())
        );
        assert_ne!(version(&web.renditions[0]), version(&changed));
        assert_eq!(version(&changed).len(), 10);
    }

    #[test]
    fn a_hold_lapses_after_the_lease() {
        let now = Utc::now();
        assert!(held_by_another(Some(("a", now)), "b", now));
        assert!(!held_by_another(Some(("a", now)), "a", now));
        assert!(!held_by_another(Some(("a", now - LEASE)), "b", now));
        assert!(!held_by_another(None, "b", now));
    }
}
