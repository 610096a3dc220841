//! Making every rendition's resized image from one decode: largest first, each smaller one
//! from the smallest already-made image that is still at least its size.

use std::sync::Arc;
use std::time::Instant;

use imaging::{Image, Plan};

use crate::{Recipe, StepError};

/// One rendition's resized (cropped or padded) image.
pub struct Resized {
    pub index: usize,
    pub image: Arc<Image>,
    pub ms: u64,
}

/// Like [`render`], from a decode that may have kept the source's colour space: renditions
/// that keep it are made from the pixels as decoded, every other one from their sRGB
/// conversion (made once, only when some rendition needs it).
pub fn render_colours(
    decoded: imaging::Decoded,
    source: (u32, u32),
    recipe: &Recipe,
) -> Result<Vec<Resized>, StepError> {
    let Some(profile) = &decoded.profile else {
        return render(&Arc::new(decoded.image), source, recipe);
    };
    let (keep, srgb): (Vec<usize>, Vec<usize>) = (0..recipe.renditions.len())
        .partition(|&i| recipe.renditions[i].color_profile == imaging::ColorHandling::Keep);
    if srgb.is_empty() {
        return render(&Arc::new(decoded.image), source, recipe);
    }
    let converted = imaging::to_srgb(decoded.image.clone(), profile)?;
    let mut out = Vec::with_capacity(recipe.renditions.len());
    for (image, indices) in [(decoded.image, keep), (converted, srgb)] {
        if indices.is_empty() {
            continue;
        }
        let part = Recipe {
            description: None,
            renditions: indices
                .iter()
                .map(|&i| recipe.renditions[i].clone())
                .collect(),
        };
        for r in render(&Arc::new(image), source, &part)? {
            out.push(Resized {
                index: indices[r.index],
                ..r
            });
        }
    }
    out.sort_by_key(|r| r.index);
    Ok(out)
}

/// `decoded` is the upright source, possibly shrunk on load; `source` is the upright size of
/// the original, from which every geometry is planned so outputs do not depend on the shrink.
pub fn render(
    decoded: &Arc<Image>,
    source: (u32, u32),
    recipe: &Recipe,
) -> Result<Vec<Resized>, StepError> {
    let mut plans: Vec<(usize, Option<Plan>)> = recipe
        .renditions
        .iter()
        .enumerate()
        .map(|(i, r)| (i, r.resize.as_ref().map(|spec| imaging::plan(source, spec))))
        .collect();
    let area = |p: &Option<Plan>| match p {
        Some(p) => u64::from(p.scaled.0) * u64::from(p.scaled.1),
        None => u64::MAX,
    };
    plans.sort_by_key(|(_, p)| std::cmp::Reverse(area(p)));

    // Whole-image scalings made so far; a later, smaller one starts from the smallest of
    // these that still covers it, which keeps each resample's ratio small and the work low.
    let mut scaled: Vec<Arc<Image>> = vec![decoded.clone()];
    let mut out = Vec::with_capacity(plans.len());
    for (index, plan) in plans {
        let started = Instant::now();
        let image = match plan {
            None => decoded.clone(),
            Some(plan) => {
                let (tw, th) = plan.scaled;
                let base = scaled
                    .iter()
                    .filter(|img| img.width() >= tw && img.height() >= th)
                    .min_by_key(|img| u64::from(img.width()) * u64::from(img.height()))
                    .cloned()
                    .unwrap_or_else(|| decoded.clone());
                let whole = if base.width() == tw && base.height() == th {
                    base
                } else {
                    let made = Arc::new(imaging::resize_exact(&base, tw, th)?);
                    scaled.push(made.clone());
                    made
                };
                let spec = recipe.renditions[index].resize.as_ref();
                match spec {
                    Some(spec) if plan.output != plan.scaled || plan.offset != (0, 0) => {
                        Arc::new(imaging::finish(&whole, &plan, spec)?)
                    }
                    _ => whole,
                }
            }
        };
        out.push(Resized {
            index,
            image,
            ms: started.elapsed().as_millis() as u64,
        });
    }
    out.sort_by_key(|r| r.index);
    Ok(out)
}
