//! A rendition's operations, applied in order, with what overlays need: the originals of the
//! owner's images they put over it, read before the computation and decoded once each.

use std::collections::BTreeMap;

use imaging::{Image, Operation};

use crate::StepError;
use crate::ports::{MetadataStore, ObjectStore};

/// Different images one rendition may put over itself: each original is held in memory
/// until the rendition is made.
pub const MAX_OVERLAYS: usize = 4;

/// The originals `ops`' overlays name, by image id: only `owner`'s own images, each within
/// the byte limit, anything else the recipe's error naming the image.
pub async fn load_overlays(
    ops: &[Operation],
    owner: &str,
    metadata: &dyn MetadataStore,
    uploads: &dyn ObjectStore,
    limits: &imaging::Limits,
) -> Result<BTreeMap<String, Vec<u8>>, StepError> {
    let mut marks = BTreeMap::new();
    for op in ops {
        let Operation::Overlay { image: id, .. } = op else {
            continue;
        };
        if marks.contains_key(id) {
            continue;
        }
        if marks.len() == MAX_OVERLAYS {
            return Err(StepError::invalid_recipe(format!(
                "overlay: a rendition may put at most {MAX_OVERLAYS} images over it"
            )));
        }
        let record = metadata.get(id).await?;
        let Some(record) = record.filter(|r| r.owner == owner) else {
            return Err(StepError::invalid_recipe(format!(
                "overlay: no image {id} of this owner to put over it"
            )));
        };
        // Its original is there for good only once it has been processed.
        if record.status != crate::model::Status::Complete {
            return Err(StepError::invalid_recipe(format!(
                "overlay: image {id} is {}; only COMPLETE images can be put over others",
                record.status
            )));
        }
        if record.source.bytes > limits.max_bytes {
            return Err(StepError::invalid_recipe(format!(
                "overlay: image {id} is {} bytes, over the limit of {}",
                record.source.bytes, limits.max_bytes
            )));
        }
        let bytes = match uploads.get(&record.source.key).await {
            Err(crate::PortError::NotFound(_)) => {
                return Err(StepError::invalid_recipe(format!(
                    "overlay: image {id}'s original is gone"
                )));
            }
            other => other?,
        };
        marks.insert(id.clone(), bytes);
    }
    Ok(marks)
}

/// Applies `ops` in order; overlays take their image from `marks` (see [`load_overlays`]).
pub fn apply(
    mut img: Image,
    ops: &[Operation],
    marks: &BTreeMap<String, Vec<u8>>,
    limits: &imaging::Limits,
) -> Result<Image, StepError> {
    let mut decoded: BTreeMap<&str, Image> = BTreeMap::new();
    for op in ops {
        img = match op {
            Operation::Overlay {
                image: id,
                gravity,
                margin,
                opacity,
                scale,
            } => {
                if !decoded.contains_key(id.as_str()) {
                    let bytes = marks.get(id).ok_or_else(|| {
                        StepError::internal(format!("overlay: image {id} was not read"))
                    })?;
                    // A mark is never shown larger than the image it goes on.
                    let mark = imaging::decode(bytes, limits, Some((img.width(), img.height())))?;
                    decoded.insert(id.as_str(), mark);
                }
                let placement = imaging::Placement {
                    gravity: *gravity,
                    margin: *margin,
                    opacity: *opacity,
                    scale: *scale,
                };
                match decoded.get(id.as_str()) {
                    Some(mark) => imaging::overlay(img, mark, &placement)?,
                    None => img,
                }
            }
            op => imaging::apply(img, op)?,
        };
    }
    Ok(img)
}
