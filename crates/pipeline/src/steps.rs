//! The five steps. Each is an async function over the ports with a typed input and output,
//! exactly what the state machine passes; a Lambda or the local runner only (de)serialises.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use imaging::Limits;
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::io::{
    FailedState, Job, NotifyInput, NotifyOutput, ResizeOutput, Upload, ValidateInput, WorkItem,
};
use crate::keys::{self, UploadIdentity};
use crate::model::{ErrorInfo, Event, EventKind, ImageRecord, RenditionRecord, SourceInfo, Status};
use crate::ports::{
    Begin, IfAbsent, MetadataStore, Notifier, ObjectStore, PutOptions, Rerendered, WorkStore,
};
use crate::{ErrorKind, Presets, Recipe, StepError, reprocess, telemetry};

/// How much of an upload Validate reads to find its header; the whole object only when the
/// header does not fit (e.g. large ICC or EXIF segments before a JPEG's frame header).
pub const HEADER_BYTES: u64 = 64 * 1024;
/// Renditions are immutable (new content gets a new image id), so caches may keep them.
pub const RENDITION_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Object metadata an API upload form sets (to the image id): the upload was awaited by a
/// record, so Validate claims that record and never makes a new one.
pub const FORM_METADATA: &str = "form";
/// An API upload that never arrives is forgotten after this long.
pub const AWAITING_UPLOAD_TTL_HOURS: i64 = 24;
const MAX_TAGS: usize = 20;

/// What every step needs to know, the same in every process.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Limits,
    pub presets: Presets,
    pub default_preset: String,
    /// Pixels one job may hold at once: the source plus every resized rendition. `None`:
    /// [`JOB_PIXELS_PER_SOURCE`] times `limits.max_pixels`.
    pub max_job_pixels: Option<u64>,
    /// How many image computations (decode, resize, filter, encode) run at once in this
    /// process, whatever the callers do: see [`ComputeSlots`].
    pub compute: ComputeSlots,
    /// Jobs over a pixel count go to a bigger function (the state machine's `ResizeLarge`)
    /// with a budget of their own. `None`: one kind of job, as on one machine.
    pub large: Option<LargeJobs>,
}

/// Where large jobs start, and what they may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeJobs {
    /// Sources with more pixels than this are large.
    pub above_pixels: u64,
    /// The most pixels a large source may have, in place of `limits.max_pixels` (which
    /// still caps each rendition: Filter and Store are sized for it).
    pub max_pixels: u64,
    /// A large job's budget in place of [`Config::job_pixel_budget`].
    pub job_pixels: u64,
}

/// Places for image computations. A step takes one before its CPU-heavy work starts, and the
/// work itself gives it back when it ends: a step that times out (its future dropped by the
/// state machine) cannot stop a computation already on a thread, but the computation keeps
/// its place until it is done, so the next job waits instead of running beside it, and no
/// more than this many computations ever run.
#[derive(Debug, Clone)]
pub struct ComputeSlots(Arc<tokio::sync::Semaphore>, usize);

impl ComputeSlots {
    pub fn new(slots: usize) -> ComputeSlots {
        let slots = slots.max(1);
        ComputeSlots(Arc::new(tokio::sync::Semaphore::new(slots)), slots)
    }

    /// One place per core.
    pub fn per_core() -> ComputeSlots {
        ComputeSlots::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn slots(&self) -> usize {
        self.1
    }

    /// Computations running now.
    pub fn busy(&self) -> usize {
        self.1.saturating_sub(self.0.available_permits())
    }

    /// Runs `f` on a blocking thread once a place is free; the place is held by `f`'s thread
    /// until `f` returns, even if the caller has stopped waiting.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StepError> + Send + 'static,
    ) -> Result<T, StepError> {
        let place = self
            .0
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StepError::internal("image workers are shut down"))?;
        tokio::task::spawn_blocking(move || {
            let result = f();
            drop(place);
            result
        })
        .await
        .map_err(|e| StepError::internal(format!("image worker stopped: {e}")))?
    }
}

/// The default job budget, in sources of the largest accepted size: room for a full-size
/// source and renditions up to three times its size together, and no more.
pub const JOB_PIXELS_PER_SOURCE: u64 = 4;

impl Config {
    /// The pixels one job may hold at once (see [`Config::max_job_pixels`]).
    pub fn job_pixel_budget(&self) -> u64 {
        self.max_job_pixels
            .unwrap_or_else(|| self.limits.max_pixels.saturating_mul(JOB_PIXELS_PER_SOURCE))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            presets: Presets::builtin(),
            default_preset: "web".to_string(),
            max_job_pixels: None,
            compute: ComputeSlots::per_core(),
            large: None,
        }
    }
}

/// The steps with their ports. `uploads` holds originals and quarantine; `renditions` holds
/// the outputs (one bucket or two, as deployed).
#[derive(Clone)]
pub struct Steps {
    pub config: Arc<Config>,
    pub uploads: Arc<dyn ObjectStore>,
    pub renditions: Arc<dyn ObjectStore>,
    pub work: Arc<dyn WorkStore>,
    pub metadata: Arc<dyn MetadataStore>,
    pub notifier: Arc<dyn Notifier>,
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Steps {
    /// Checks an upload from its header alone, resolves its recipe and claims the image for
    /// this execution.
    pub async fn validate(&self, input: ValidateInput) -> Result<Job, StepError> {
        let upload = input.upload.decoded();
        if let Some(filter) = &upload.reprocess {
            return self
                .validate_rerender(&upload, filter, input.execution_id)
                .await;
        }
        let ident = keys::identify(&upload.key, upload.etag.as_deref())?;
        // The header may be as large as a large job's source; whether it is one, and so
        // which limits hold, is decided once its size is known.
        let mut limits = self.config.limits;
        if let Some(large) = self.config.large {
            limits.max_pixels = limits.max_pixels.max(large.max_pixels);
        }
        let info = self.uploads.head(&upload.key).await?;
        if info.size == 0 {
            return Err(imaging::Error::Empty.into());
        }
        if info.size > limits.max_bytes {
            return Err(imaging::Error::TooManyBytes {
                size: info.size,
                limit: limits.max_bytes,
            }
            .into());
        }
        let head = self.uploads.get_range(&upload.key, 0, HEADER_BYTES).await?;
        let header = match imaging::probe(&head, &limits) {
            Ok(h) => h,
            Err(_) if (head.len() as u64) < info.size => {
                let all = self.uploads.get(&upload.key).await?;
                imaging::probe(&all, &limits)?
            }
            Err(e) => return Err(e.into()),
        };
        if !header.format.is_decodable() {
            return Err(imaging::Error::Unsupported(format!("{:?}", header.format)).into());
        }
        let (recipe, preset) = self.resolve_recipe(&upload, &info.metadata)?;
        let (width, height) = header.oriented_dims();
        let large = self.check_budgets(&recipe, (header.width, header.height), (width, height))?;
        let now = Utc::now();
        let record = ImageRecord {
            derived: Vec::new(),
            id: ident.id.clone(),
            owner: ident.owner.clone(),
            status: Status::Processing,
            source: SourceInfo {
                focal_point: None,
                alpha: Some(header.has_alpha),
                key: upload.key.clone(),
                etag: upload.etag.clone().or(info.etag.clone()),
                bytes: info.size,
                format: Some(header.format),
                width: Some(width),
                height: Some(height),
                sha256: None,
                color_profile: header.color_profile.clone(),
                original: None,
            },
            recipe: Some(recipe.clone()),
            renditions: Vec::new(),
            error: None,
            created_at: now,
            updated_at: now,
            execution_id: Some(input.execution_id.clone()),
            tags: tags_of(&upload, &info.metadata),
            preset: preset.clone(),
            reprocessed_at: None,
        };
        // An upload through an API form only ever claims the record made for it: if that is
        // gone, the image was deleted, and a replay of its form must not bring it back.
        let awaited = info.metadata.get(FORM_METADATA) == Some(&ident.id);
        let begun = if awaited {
            self.metadata.claim(&record).await?
        } else {
            self.metadata.begin(&record).await?
        };
        let duplicate = match begun {
            Begin::Gone => {
                return Err(StepError::new(
                    ErrorKind::ImageDeleted,
                    format!(
                        "image {}: deleted before its upload was processed; the upload is \
                         discarded",
                        ident.id
                    ),
                ));
            }
            Begin::Started(_) => false,
            Begin::Duplicate(existing) => {
                info!(status = %existing.status, "duplicate event; another execution owns this image");
                true
            }
        };
        info!(format = ?header.format, width, height, large = large.is_some(), "validated");
        if !duplicate {
            // Counted once per image: a duplicate event reads the same pixels again.
            telemetry::record_megapixels_in(header.format, width, height);
        }
        Ok(Job {
            duplicate,
            image_id: ident.id,
            owner: ident.owner,
            execution_id: input.execution_id,
            name: keys::sanitise_name(&ident.name),
            source: record.source,
            recipe,
            large: large.is_some(),
            reprocess: false,
            preset,
        })
    }

    /// The source and job budgets for `recipe` on a source of `stored` (as in the file) and
    /// `upright` dimensions: `Some(job budget)` when the job is a large one.
    fn check_budgets(
        &self,
        recipe: &Recipe,
        stored: (u32, u32),
        upright: (u32, u32),
    ) -> Result<Option<u64>, StepError> {
        // Per frame, as imaging's header check counts them (frames have their own limit).
        let pixels = u64::from(upright.0) * u64::from(upright.1);
        let large = self
            .config
            .large
            .filter(|l| pixels > l.above_pixels)
            .map(|l| l.job_pixels);
        // An ordinary job's source is within the ordinary limit, whatever large jobs may have
        // (with LargeImagePixels set above MaxPixels, the sources between are refused here).
        if large.is_none() && pixels > self.config.limits.max_pixels {
            return Err(imaging::Error::TooManyPixels {
                width: stored.0,
                height: stored.1,
                pixels,
                limit: self.config.limits.max_pixels,
            }
            .into());
        }
        recipe.check_outputs(
            upright,
            self.config.limits.max_pixels,
            large.unwrap_or_else(|| self.config.job_pixel_budget()),
        )?;
        Ok(large)
    }

    /// Validate for a re-render: the image's record, not the file's header, says what it is
    /// (the original was checked when it arrived), and [`reprocess::plan`] says whether it is
    /// due. An image that is not due, or that another re-render holds, ends the execution as
    /// a duplicate does, with nothing written.
    async fn validate_rerender(
        &self,
        upload: &Upload,
        filter: &reprocess::Filter,
        execution_id: String,
    ) -> Result<Job, StepError> {
        let record = self.record_of_upload(upload).await?;
        let ident = keys::identify(&upload.key, upload.etag.as_deref())?;
        let skip = |why: &str, source: SourceInfo, recipe: Recipe| {
            info!(reason = why, "nothing to re-render");
            Job {
                duplicate: true,
                image_id: record.as_ref().map_or(ident.id.clone(), |r| r.id.clone()),
                owner: record
                    .as_ref()
                    .map_or(ident.owner.clone(), |r| r.owner.clone()),
                execution_id: execution_id.clone(),
                name: keys::sanitise_name(&ident.name),
                source,
                recipe,
                large: false,
                reprocess: true,
                preset: None,
            }
        };
        let Some(record) = record.clone() else {
            let source = upload.unread_source();
            return Ok(skip("no record", source, Recipe::default()));
        };
        let (preset, recipe) = match reprocess::plan(&record, filter, &self.config.presets) {
            reprocess::Plan::Redo { preset, recipe } => (preset, recipe),
            reprocess::Plan::UpToDate => {
                let recipe = record.recipe.clone().unwrap_or_default();
                return Ok(skip("up to date", record.source, recipe));
            }
            reprocess::Plan::Skip(why) => {
                let recipe = record.recipe.clone().unwrap_or_default();
                return Ok(skip(why, record.source, recipe));
            }
        };
        let (Some(width), Some(height)) = (record.source.width, record.source.height) else {
            return Err(StepError::new(
                ErrorKind::InvalidInput,
                format!("image {}: the record has no source dimensions", record.id),
            ));
        };
        // The record holds upright dimensions; the stored ones only name the source in the
        // message of a refusal.
        let large = self.check_budgets(&recipe, (width, height), (width, height))?;
        let duplicate = match self
            .metadata
            .begin_reprocess(&record.id, &execution_id)
            .await?
        {
            Begin::Started(_) => false,
            Begin::Duplicate(r) => {
                info!(status = %r.status, "another re-render holds this image, or it is no longer COMPLETE");
                true
            }
            Begin::Gone => {
                return Err(StepError::new(
                    ErrorKind::ImageDeleted,
                    format!("image {}: deleted before it was re-rendered", record.id),
                ));
            }
        };
        info!(preset = %preset, large = large.is_some(), duplicate, "re-render validated");
        Ok(Job {
            duplicate,
            image_id: record.id,
            owner: record.owner,
            execution_id,
            name: keys::sanitise_name(&ident.name),
            source: record.source,
            recipe,
            large: large.is_some(),
            reprocess: true,
            preset: Some(preset),
        })
    }

    /// The record of the image whose original is `upload.key`. A drop-in's id comes from
    /// its key and etag, and listings quote etags where events do not: both spellings are
    /// tried, and only a record of that very key is taken.
    async fn record_of_upload(&self, upload: &Upload) -> Result<Option<ImageRecord>, StepError> {
        let given = upload.etag.as_deref().unwrap_or("");
        let bare = given.trim_matches('"');
        let mut tried = Vec::new();
        // Without an etag in the event, the id was made from none.
        for etag in [
            given.to_string(),
            bare.to_string(),
            format!("\"{bare}\""),
            String::new(),
        ] {
            let ident = keys::identify(&upload.key, Some(&etag))?;
            if tried.contains(&ident.id) {
                continue;
            }
            if let Some(r) = self.metadata.get(&ident.id).await?
                && r.source.key == upload.key
            {
                return Ok(Some(r));
            }
            tried.push(ident.id);
        }
        Ok(None)
    }

    /// The recipe and the preset it came from, if any: the explicit recipe, else the named
    /// preset, else the object's metadata, else the default preset.
    fn resolve_recipe(
        &self,
        upload: &Upload,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(Recipe, Option<String>), StepError> {
        let presets = &self.config.presets;
        let preset = |name: &String| Ok((presets.get(name)?.clone(), Some(name.clone())));
        if let Some(value) = &upload.recipe {
            let recipe: Recipe = serde_json::from_value(value.clone())
                .map_err(|e| StepError::invalid_recipe(format!("recipe: {e}")))?;
            recipe.validate()?;
            return Ok((recipe, None));
        }
        if let Some(name) = &upload.preset {
            return preset(name);
        }
        if let Some(text) = metadata.get("recipe") {
            return Ok((Recipe::from_json(text)?, None));
        }
        if let Some(name) = metadata.get("preset") {
            return preset(name);
        }
        preset(&self.config.default_preset)
    }

    /// Reads the original once, decodes it once (shrunk on load where the largest rendition
    /// allows) and makes every rendition's resized image.
    pub async fn resize(&self, job: Job) -> Result<ResizeOutput, StepError> {
        let bytes = self.uploads.get(&job.source.key).await?;
        let limits = self.config.limits;
        let source = match (job.source.width, job.source.height) {
            (Some(w), Some(h)) => (w, h),
            _ => {
                return Err(StepError::new(
                    ErrorKind::InvalidInput,
                    "job.source: no dimensions",
                ));
            }
        };
        let mut recipe = job.recipe.clone();
        // `gravity: focal` crops around the point the owner set on the image (a re-render
        // after it was set); the spec never carries one from the recipe itself.
        for spec in recipe
            .renditions
            .iter_mut()
            .filter_map(|r| r.resize.as_mut())
        {
            spec.focal_point = job.source.focal_point;
        }
        let keep_metadata = recipe.renditions.iter().any(|r| r.keep_metadata);
        let color = match recipe
            .renditions
            .iter()
            .any(|r| r.color_profile == imaging::ColorHandling::Keep)
        {
            true => imaging::ColorHandling::Keep,
            false => imaging::ColorHandling::Srgb,
        };
        let started = Instant::now();
        let (sha256, decoded, resized, exif, icc) = self
            .config
            .compute
            .run(move || {
                let sha256 = hex::encode(Sha256::digest(&bytes));
                let decoded =
                    imaging::decode_with(&bytes, &limits, Some(recipe.max_output(source)), color)?;
                let dims = (decoded.image.width(), decoded.image.height());
                let icc = decoded
                    .profile
                    .as_ref()
                    .and_then(|p| p.icc_to_embed())
                    .map(<[u8]>::to_vec);
                let resized = crate::render::render_colours(decoded, source, &recipe)?;
                let exif = match keep_metadata {
                    true => imaging::sniff(&bytes)
                        .ok()
                        .and_then(|f| imaging::exif_of(&bytes, f)),
                    false => None,
                };
                Ok((sha256, dims, resized, exif, icc))
            })
            .await?;
        let decode_ms = elapsed_ms(started).saturating_sub(resized.iter().map(|r| r.ms).sum());
        let prefix = keys::work_prefix(&job.image_id);
        let exif_key = self.put_work(format!("{prefix}source.exif"), exif).await?;
        // Only renditions that keep the source's colour space are in it; they carry its profile.
        let icc_key = self.put_work(format!("{prefix}source.icc"), icc).await?;
        let share = decode_ms / (resized.len().max(1) as u64);
        let source_format = job.source.format.unwrap_or(imaging::Format::Jpeg);
        let mut items = Vec::with_capacity(resized.len());
        for r in resized {
            let rendition = job.recipe.renditions[r.index].clone();
            let work_key = format!("{prefix}{}.resized", rendition.name);
            let (width, height) = (r.image.width(), r.image.height());
            self.work.put_image(&work_key, r.image).await?;
            items.push(WorkItem {
                image_id: job.image_id.clone(),
                owner: job.owner.clone(),
                execution_id: Some(job.execution_id.clone()),
                exif_key: exif_key.clone().filter(|_| rendition.keep_metadata),
                icc_key: icc_key
                    .clone()
                    .filter(|_| rendition.color_profile == imaging::ColorHandling::Keep),
                version: job.reprocess.then(|| reprocess::version(&rendition)),
                rendition,
                source_format,
                work_key,
                width,
                height,
                ms: r.ms + share,
            });
        }
        info!(renditions = items.len(), decoded = ?decoded, ms = elapsed_ms(started), "resized");
        Ok(ResizeOutput {
            image_id: job.image_id,
            sha256,
            decoded_width: decoded.0,
            decoded_height: decoded.1,
            items,
        })
    }

    /// Writes `bytes`, when there are any, to the work store under `key`, which it returns.
    async fn put_work(
        &self,
        key: String,
        bytes: Option<Vec<u8>>,
    ) -> Result<Option<String>, StepError> {
        match bytes {
            Some(bytes) => {
                self.work.put_bytes(&key, bytes).await?;
                Ok(Some(key))
            }
            None => Ok(None),
        }
    }

    /// Applies one rendition's operations in order.
    pub async fn filter(&self, item: WorkItem) -> Result<WorkItem, StepError> {
        if item.rendition.operations.is_empty() {
            return Ok(item);
        }
        let started = Instant::now();
        let image = self.work.get_image(&item.work_key).await?;
        let ops = item.rendition.operations.clone();
        // The originals overlays put over the image, read before the computation starts.
        let limits = self.config.limits;
        let marks = crate::operations::load_overlays(
            &ops,
            &item.owner,
            self.metadata.as_ref(),
            self.uploads.as_ref(),
            &limits,
        )
        .await?;
        let image = self
            .config
            .compute
            .run(move || {
                crate::operations::apply(Arc::unwrap_or_clone(image), &ops, &marks, &limits)
            })
            .await?;
        let work_key = format!(
            "{}{}.filtered",
            keys::work_prefix(&item.image_id),
            item.rendition.name
        );
        let (width, height) = (image.width(), image.height());
        self.work.put_image(&work_key, Arc::new(image)).await?;
        info!(rendition = %item.rendition.name, operations = item.rendition.operations.len(), ms = elapsed_ms(started), "filtered");
        Ok(WorkItem {
            work_key,
            width,
            height,
            ms: item.ms + elapsed_ms(started),
            ..item
        })
    }

    /// Encodes the final format (metadata stripped unless kept), writes the rendition and
    /// adds it to the record.
    pub async fn store(&self, item: WorkItem) -> Result<RenditionRecord, StepError> {
        let started = Instant::now();
        let image = self.work.get_image(&item.work_key).await?;
        let exif = match &item.exif_key {
            Some(key) => Some(self.work.get_bytes(key).await?),
            None => None,
        };
        let icc = match &item.icc_key {
            Some(key) => Some(self.work.get_bytes(key).await?),
            None => None,
        };
        let r = &item.rendition;
        let format = r
            .format
            .resolve(item.source_format, image.color().has_alpha());
        let opts = r.encode_options(format, exif, icc);
        let rendition = r.clone();
        let (encoded, placeholder) = self
            .config
            .compute
            .run(move || {
                let encoded = crate::output::encode(&image, &rendition, &opts)?;
                // From the final pixels: what a page paints until the rendition loads. Never
                // a reason to fail the rendition.
                let placeholder = imaging::placeholder(&image)
                    .map_err(|e| warn!(error = %e, "no placeholder"))
                    .ok();
                Ok((encoded, placeholder))
            })
            .await?;
        let bytes = encoded.bytes;
        let key = match &item.version {
            Some(v) => keys::versioned_rendition_key(
                &item.owner,
                &item.image_id,
                &r.name,
                v,
                format.extension(),
            ),
            None => keys::rendition_key(&item.owner, &item.image_id, &r.name, format.extension()),
        };
        let size = bytes.len() as u64;
        self.renditions
            .put(
                &key,
                bytes,
                PutOptions {
                    content_type: Some(format.mime().to_string()),
                    cache_control: Some(RENDITION_CACHE_CONTROL.to_string()),
                    metadata: BTreeMap::new(),
                },
            )
            .await?;
        let record = RenditionRecord {
            name: r.name.clone(),
            key,
            format,
            width: item.width,
            height: item.height,
            bytes: size,
            ms: item.ms + elapsed_ms(started),
            quality: encoded.quality,
            score: encoded.score,
            dominant_color: placeholder.as_ref().map(|p| p.dominant_color.to_string()),
            placeholder: placeholder.map(|p| p.thumbhash),
        };
        if item.version.is_some() {
            // A re-render: NotifySuccess gives the record every new rendition at once, so the
            // image is never listed half old, half new. Deleted meanwhile, the object goes.
            if self.metadata.get(&item.image_id).await?.is_none() {
                delete_if_there(self.renditions.as_ref(), &record.key).await?;
                return Err(StepError::new(
                    ErrorKind::ImageDeleted,
                    format!("image {}: deleted while it was re-rendered", item.image_id),
                ));
            }
            telemetry::record_bytes_out(format, size);
            info!(rendition = %record.name, key = %record.key, bytes = size, ms = record.ms, "stored (re-render)");
            return Ok(record);
        }
        if let Err(e) = self.metadata.put_rendition(&item.image_id, &record).await {
            // The image was deleted or failed while this rendition was being made
            // (NotifyFailure may have cleared its renditions already): the object goes too.
            // Not while the record is PROCESSING (the write failed for now; the retry puts the
            // object again) or COMPLETE (another attempt of this Store finished first, and the
            // record lists this very key). Best effort: the write's error is the one to report.
            let listed = matches!(
                self.metadata.get(&item.image_id).await,
                Ok(Some(r)) if matches!(r.status, Status::Processing | Status::Complete)
            );
            if !listed && let Err(d) = delete_if_there(self.renditions.as_ref(), &record.key).await
            {
                warn!(key = %record.key, error = %d, "unlisted rendition not deleted");
            }
            return Err(e.into());
        }
        telemetry::record_bytes_out(format, size);
        info!(rendition = %record.name, key = %record.key, bytes = size, ms = record.ms, "stored");
        Ok(record)
    }

    /// Records the outcome and announces it.
    pub async fn notify(&self, input: NotifyInput) -> Result<NotifyOutput, StepError> {
        match input {
            NotifyInput::Success {
                job,
                sha256,
                renditions,
            } => self.notify_success(*job, sha256, renditions).await,
            NotifyInput::Failure {
                state,
                execution_id,
            } => self.notify_failure(*state, execution_id).await,
        }
    }

    async fn notify_success(
        &self,
        job: Job,
        sha256: Option<String>,
        renditions: Vec<RenditionRecord>,
    ) -> Result<NotifyOutput, StepError> {
        if job.reprocess {
            return self.notify_rerendered(job, renditions).await;
        }
        self.metadata
            .complete(&job.image_id, sha256.as_deref())
            .await?;
        let event = Event {
            kind: EventKind::Completed,
            image_id: job.image_id.clone(),
            owner: job.owner.clone(),
            status: Status::Complete,
            source_key: job.source.key.clone(),
            renditions: renditions.clone(),
            error: None,
            execution_id: Some(job.execution_id.clone()),
            at: Utc::now(),
        };
        self.announce(&event, &job.execution_id).await?;
        // The image is complete and announced: intermediates left behind (they also expire
        // under the work/ lifecycle rule) must not turn it into a failure.
        if let Err(e) = self.work.clear(&keys::work_prefix(&job.image_id)).await {
            warn!(error = %e, "intermediates not cleared");
        }
        telemetry::record_outcome(Status::Complete, job.source.format);
        info!(renditions = renditions.len(), "complete");
        Ok(NotifyOutput {
            image_id: job.image_id,
            owner: job.owner,
            status: Status::Complete,
            renditions,
            error: None,
        })
    }

    /// A re-render's end: the record takes the new renditions all at once, the objects it no
    /// longer lists go, and the change is announced (new keys) on the events topic.
    async fn notify_rerendered(
        &self,
        job: Job,
        renditions: Vec<RenditionRecord>,
    ) -> Result<NotifyOutput, StepError> {
        let ident = UploadIdentity {
            owner: job.owner.clone(),
            id: job.image_id.clone(),
            name: job.name.clone(),
        };
        let done = Rerendered {
            preset: job.preset.clone().unwrap_or_default(),
            recipe: job.recipe.clone(),
            renditions: renditions.clone(),
            at: Utc::now(),
        };
        if !self
            .metadata
            .end_reprocess(&job.image_id, &job.execution_id, Some(&done))
            .await?
        {
            // Deleted meanwhile, or the hold lapsed and another re-render took the image: what
            // this one wrote is not listed, and goes unless the record lists it.
            let listed = self.listed_keys(&job.image_id).await?;
            for r in &renditions {
                if !listed.contains(&r.key) {
                    delete_if_there(self.renditions.as_ref(), &r.key).await?;
                }
            }
            self.work.clear(&keys::work_prefix(&job.image_id)).await?;
            warn!("this re-render no longer holds the image; what it wrote is removed");
            return Err(StepError::new(
                ErrorKind::ImageDeleted,
                format!(
                    "image {}: deleted or taken by another re-render before this one finished",
                    job.image_id
                ),
            ));
        }
        let keep: Vec<String> = renditions.iter().map(|r| r.key.clone()).collect();
        self.prune_renditions(&ident, &keep).await?;
        let event = Event {
            kind: EventKind::Reprocessed,
            image_id: job.image_id.clone(),
            owner: job.owner.clone(),
            status: Status::Complete,
            source_key: job.source.key.clone(),
            renditions: renditions.clone(),
            error: None,
            execution_id: Some(job.execution_id.clone()),
            at: done.at,
        };
        self.announce(&event, &job.execution_id).await?;
        if let Err(e) = self.work.clear(&keys::work_prefix(&job.image_id)).await {
            warn!(error = %e, "intermediates not cleared");
        }
        info!(renditions = renditions.len(), preset = %done.preset, "re-rendered");
        Ok(NotifyOutput {
            image_id: job.image_id,
            owner: job.owner,
            status: Status::Complete,
            renditions,
            error: None,
        })
    }

    /// A re-render failed: the image keeps the renditions it lists, what the re-render wrote
    /// goes, its hold is released, and an alert says why. Nothing else about the image
    /// changes: it stays COMPLETE.
    async fn rerender_failed(
        &self,
        state: FailedState,
        execution_id: String,
    ) -> Result<NotifyOutput, StepError> {
        let error = ErrorInfo {
            kind: state.error.error.clone(),
            message: cause_message(state.error.cause.as_deref()),
        };
        let record = match &state.job {
            Some(job) => self.metadata.get(&job.image_id).await?,
            None => self.record_of_upload(&state.upload).await?,
        };
        let Some(record) = record else {
            // Deleted meanwhile: whatever this execution stored goes with the rest.
            if let Some(job) = &state.job {
                let ident = UploadIdentity {
                    owner: job.owner.clone(),
                    id: job.image_id.clone(),
                    name: job.name.clone(),
                };
                self.remove_renditions(&ident).await?;
                self.work.clear(&keys::work_prefix(&ident.id)).await?;
            }
            info!(error = %error.kind, "re-render of an image deleted meanwhile; nothing to keep");
            return Ok(NotifyOutput {
                image_id: state
                    .job
                    .as_ref()
                    .map(|j| j.image_id.clone())
                    .unwrap_or_default(),
                owner: state
                    .job
                    .as_ref()
                    .map(|j| j.owner.clone())
                    .unwrap_or_default(),
                status: Status::Failed,
                renditions: Vec::new(),
                error: Some(error),
            });
        };
        let ident = UploadIdentity {
            owner: record.owner.clone(),
            id: record.id.clone(),
            name: String::new(),
        };
        let held = self
            .metadata
            .end_reprocess(&record.id, &execution_id, None)
            .await?;
        if held {
            let keep: Vec<String> = record.renditions.iter().map(|r| r.key.clone()).collect();
            self.prune_renditions(&ident, &keep).await?;
            self.work.clear(&keys::work_prefix(&record.id)).await?;
        }
        // Without the hold, Validate failed before taking the image (worth an alert: a preset
        // now over the budget, say), or another re-render holds it and owns the objects and
        // the outcome (nothing to say).
        if held || state.job.is_none() {
            let event = Event {
                kind: EventKind::NotReprocessed,
                image_id: record.id.clone(),
                owner: record.owner.clone(),
                status: record.status,
                source_key: record.source.key.clone(),
                renditions: record.renditions.clone(),
                error: Some(error.clone()),
                execution_id: Some(execution_id.clone()),
                at: Utc::now(),
            };
            self.announce(&event, &execution_id).await?;
            warn!(error = %error.kind, reason = %error.message, "not re-rendered; the image keeps its renditions");
        }
        Ok(NotifyOutput {
            image_id: record.id.clone(),
            owner: record.owner.clone(),
            status: Status::Failed,
            renditions: record.renditions,
            error: Some(error),
        })
    }

    /// Keys the record of `id` lists now (none without a record).
    async fn listed_keys(&self, id: &str) -> Result<Vec<String>, StepError> {
        Ok(self
            .metadata
            .get(id)
            .await?
            .map(|r| r.renditions.into_iter().map(|x| x.key).collect())
            .unwrap_or_default())
    }

    /// Deletes the rendition objects of the image that are not in `keep`.
    async fn prune_renditions(
        &self,
        ident: &UploadIdentity,
        keep: &[String],
    ) -> Result<(), StepError> {
        if keys::valid_segment(&ident.owner) && keys::valid_segment(&ident.id) {
            let prefix = format!("renditions/{}/{}/", ident.owner, ident.id);
            // Transforms (`t/`) are made from the original, not the recipe: a re-render
            // leaves them, and the record still lists them.
            let transforms = format!("{prefix}t/");
            for key in self.renditions.list(&prefix).await? {
                if !keep.contains(&key) && !key.starts_with(&transforms) {
                    delete_if_there(self.renditions.as_ref(), &key).await?;
                }
            }
        }
        Ok(())
    }

    async fn notify_failure(
        &self,
        state: FailedState,
        execution_id: String,
    ) -> Result<NotifyOutput, StepError> {
        let mut state = state;
        state.upload = state.upload.decoded();
        if state.upload.reprocess.is_some() {
            return self.rerender_failed(state, execution_id).await;
        }
        let kind = ErrorKind::from_name(&state.error.error);
        let status = match kind {
            Some(k) if k.is_rejection() => Status::Rejected,
            _ => Status::Failed,
        };
        let error = ErrorInfo {
            kind: state.error.error.clone(),
            message: cause_message(state.error.cause.as_deref()),
        };
        let ident = match &state.job {
            Some(job) => UploadIdentity {
                owner: job.owner.clone(),
                id: job.image_id.clone(),
                name: job.name.clone(),
            },
            None => keys::identify(&state.upload.key, state.upload.etag.as_deref())?,
        };
        let now = Utc::now();
        let fallback = ImageRecord {
            derived: Vec::new(),
            id: ident.id.clone(),
            owner: ident.owner.clone(),
            status,
            source: state
                .job
                .as_ref()
                .map(|j| j.source.clone())
                .unwrap_or_else(|| state.upload.unread_source()),
            recipe: state.job.as_ref().map(|j| j.recipe.clone()),
            renditions: Vec::new(),
            error: Some(error.clone()),
            created_at: now,
            updated_at: now,
            execution_id: Some(execution_id.clone()),
            tags: state.upload.tags.clone(),
            preset: state.job.as_ref().and_then(|j| j.preset.clone()),
            reprocessed_at: None,
        };
        if kind == Some(ErrorKind::ImageDeleted) {
            return self.discard(&state.upload.key, ident, error).await;
        }
        // After Validate's claim the image had a record: if it is gone now, the image was
        // deleted while this execution ran, and the failure must not bring a record back.
        let claimed = state.job.is_some();
        let if_absent = if claimed {
            IfAbsent::Skip
        } else {
            IfAbsent::Create
        };
        self.metadata
            .fail(&ident.id, status, &error, &fallback, if_absent)
            .await?;
        // The write above is conditional: it records the outcome only for the execution that
        // owns the image (or claims it, when there was no record). Any other execution got
        // here through a duplicate event, or one that failed after another had finished, and
        // must not alert, quarantine or clear the owner's intermediates: one alert per image.
        let record = self.metadata.get(&ident.id).await?;
        if record.is_none() && claimed {
            return self.discard(&state.upload.key, ident, error).await;
        }
        let owner = record.as_ref().and_then(|r| r.execution_id.as_deref());
        if let Some(r) = &record
            && r.status == Status::Complete
            && owner == Some(execution_id.as_str())
        {
            return self.completed_unannounced(r, error, &execution_id).await;
        }
        if owner != Some(execution_id.as_str()) || record.as_ref().map(|r| r.status) != Some(status)
        {
            info!(owner = ?owner, status = ?record.as_ref().map(|r| r.status), error = %error.kind, "failure of an execution that does not own the image (a duplicate event, or one that failed after another finished); nothing recorded");
            return Ok(NotifyOutput {
                image_id: ident.id,
                owner: ident.owner,
                status,
                renditions: Vec::new(),
                error: Some(error),
            });
        }
        if status == Status::Rejected {
            self.quarantine(&state.upload.key, &ident, &error).await?;
        }
        // The record lists no renditions now; the objects of those that were stored before
        // the failure go too.
        self.remove_renditions(&ident).await?;
        let event = Event {
            kind: if status == Status::Rejected {
                EventKind::Rejected
            } else {
                EventKind::Failed
            },
            image_id: ident.id.clone(),
            owner: ident.owner.clone(),
            status,
            source_key: state.upload.key.clone(),
            renditions: Vec::new(),
            error: Some(error.clone()),
            execution_id: Some(execution_id.clone()),
            at: now,
        };
        self.announce(&event, &execution_id).await?;
        self.work.clear(&keys::work_prefix(&ident.id)).await?;
        let source_format = state.job.as_ref().and_then(|j| j.source.format);
        telemetry::record_outcome(status, source_format);
        warn!(status = %status, error = %error.kind, reason = %error.message, "not processed");
        Ok(NotifyOutput {
            image_id: ident.id,
            owner: ident.owner,
            status,
            renditions: Vec::new(),
            error: Some(error),
        })
    }

    /// Removes what an execution wrote for an image deleted before or while it ran: the
    /// upload (a replayed form's file; the one DELETE removed is gone already), renditions
    /// stored after DELETE listed them, intermediates. Nothing is recorded or announced:
    /// the owner asked for the image to go.
    async fn discard(
        &self,
        upload_key: &str,
        ident: UploadIdentity,
        error: ErrorInfo,
    ) -> Result<NotifyOutput, StepError> {
        delete_if_there(self.uploads.as_ref(), upload_key).await?;
        self.remove_renditions(&ident).await?;
        self.work.clear(&keys::work_prefix(&ident.id)).await?;
        info!(error = %error.kind, "image deleted; what this execution wrote is removed");
        Ok(NotifyOutput {
            image_id: ident.id,
            owner: ident.owner,
            status: Status::Failed,
            renditions: Vec::new(),
            error: Some(error),
        })
    }

    /// Deletes every rendition object of the image (its keys are deterministic, under one
    /// prefix): for a failure, what Store wrote before another rendition failed.
    /// Every object under the image's renditions prefix, transforms included.
    async fn remove_renditions(&self, ident: &UploadIdentity) -> Result<(), StepError> {
        if keys::valid_segment(&ident.owner) && keys::valid_segment(&ident.id) {
            let prefix = format!("renditions/{}/{}/", ident.owner, ident.id);
            for key in self.renditions.list(&prefix).await? {
                delete_if_there(self.renditions.as_ref(), &key).await?;
            }
        }
        Ok(())
    }

    /// Publishes `event` once per image and execution: the record is marked before the
    /// message goes out, and the mark is taken back when publishing fails so that the retry
    /// publishes. A retry that finds the mark (the message went out, then the step failed or
    /// timed out) does not publish again. A crash between marking and publishing loses the
    /// message rather than sending it twice; the log says so.
    /// `Ok(true)`: published now; `Ok(false)`: this execution had published its outcome.
    async fn announce(&self, event: &Event, execution_id: &str) -> Result<bool, StepError> {
        if !self
            .metadata
            .mark_announced(&event.image_id, execution_id)
            .await?
        {
            info!(kind = ?event.kind, "this execution announced the outcome already; not published again");
            return Ok(false);
        }
        if let Err(e) = self.notifier.publish(event).await {
            if let Err(u) = self
                .metadata
                .unmark_announced(&event.image_id, execution_id)
                .await
            {
                error!(kind = ?event.kind, error = %u, "publishing failed and its mark could not be taken back: a retry will not publish this outcome");
            }
            return Err(e.into());
        }
        Ok(true)
    }

    /// NotifySuccess failed for good after the record became COMPLETE (its message could not
    /// be published): the renditions are stored and listed, but nobody was told. Alerts with
    /// the reason, unless this execution's completion did go out before the step failed.
    async fn completed_unannounced(
        &self,
        record: &ImageRecord,
        error: ErrorInfo,
        execution_id: &str,
    ) -> Result<NotifyOutput, StepError> {
        let event = Event {
            kind: EventKind::NotAnnounced,
            image_id: record.id.clone(),
            owner: record.owner.clone(),
            status: Status::Complete,
            source_key: record.source.key.clone(),
            renditions: record.renditions.clone(),
            error: Some(error.clone()),
            execution_id: Some(execution_id.to_string()),
            at: Utc::now(),
        };
        // The mark is this execution's whichever message took it: set already, the
        // completion went out before NotifySuccess failed (a timeout after publishing), and
        // there is nothing to alert about.
        let alerted = self.announce(&event, execution_id).await?;
        if alerted {
            error!(error = %error.kind, reason = %error.message, "the image is COMPLETE and its renditions stored, but announcing its completion failed");
        } else {
            warn!(error = %error.kind, reason = %error.message, "NotifySuccess failed after the completion was announced; the image is COMPLETE");
        }
        Ok(NotifyOutput {
            image_id: record.id.clone(),
            owner: record.owner.clone(),
            status: Status::Complete,
            renditions: record.renditions.clone(),
            error: alerted.then_some(error),
        })
    }

    /// Copies a rejected original under `quarantine/` with the reason beside it. The original
    /// stays where it was: nothing a user sent is ever deleted by a rejection.
    async fn quarantine(
        &self,
        key: &str,
        ident: &UploadIdentity,
        error: &ErrorInfo,
    ) -> Result<(), StepError> {
        let target = keys::quarantine_key(&ident.owner, &ident.id, &ident.name);
        match self.uploads.copy(key, &target).await {
            Ok(()) => {}
            // Nothing to keep if the object itself is gone; the record still says why.
            Err(crate::PortError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let reason = serde_json::json!({
            "imageId": ident.id,
            "owner": ident.owner,
            "sourceKey": key,
            "error": error,
            "at": Utc::now(),
        });
        self.uploads
            .put(
                &format!("{target}.reason.json"),
                reason.to_string().into_bytes(),
                PutOptions {
                    content_type: Some("application/json".into()),
                    ..PutOptions::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Creates the AWAITING_UPLOAD record of an API upload.
    pub async fn expect_upload(&self, record: &ImageRecord) -> Result<bool, StepError> {
        let expires = Utc::now() + Duration::hours(AWAITING_UPLOAD_TTL_HOURS);
        Ok(self.metadata.create_awaiting(record, expires).await?)
    }
}

/// Deletes `key`; one already gone is what was wanted.
async fn delete_if_there(store: &dyn ObjectStore, key: &str) -> Result<(), StepError> {
    match store.delete(key).await {
        Ok(()) | Err(crate::PortError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Lambda causes are JSON (`{"errorType", "errorMessage"}`); show the message when there is one.
fn cause_message(cause: Option<&str>) -> String {
    let Some(cause) = cause else {
        return String::new();
    };
    serde_json::from_str::<serde_json::Value>(cause)
        .ok()
        .and_then(|v| {
            v.get("errorMessage")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| cause.to_string())
}

/// Tags from the upload and from `x-amz-meta-tags` (comma separated), cleaned and bounded.
fn tags_of(upload: &Upload, metadata: &BTreeMap<String, String>) -> Vec<String> {
    let from_meta = metadata
        .get("tags")
        .map(|t| t.split(',').map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut tags: Vec<String> = upload
        .tags
        .iter()
        .cloned()
        .chain(from_meta)
        .map(|t| t.trim().to_lowercase())
        .filter(|t| {
            !t.is_empty()
                && t.len() <= 64
                && t.chars().all(|c| c.is_alphanumeric() || "-_:.".contains(c))
        })
        .collect();
    tags.sort();
    tags.dedup();
    tags.truncate(MAX_TAGS);
    tags
}

#[cfg(test)]
mod compute_tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_computation_keeps_its_place_after_its_caller_gives_up() {
        let slots = ComputeSlots::new(1);
        // What the state machine does to a step past its TimeoutSeconds.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            slots.run(|| {
                std::thread::sleep(Duration::from_millis(600));
                Ok(())
            }),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(slots.busy(), 1, "the abandoned computation still runs");
        let started = std::time::Instant::now();
        slots.run(|| Ok(())).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "the next computation ran beside the abandoned one"
        );
        assert_eq!(slots.busy(), 0);
    }
}
