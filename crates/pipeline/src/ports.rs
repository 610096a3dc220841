use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use imaging::Image;

use crate::model::{
    DerivedRendition, ErrorInfo, Event, ImageRecord, ListQuery, Page, RenditionRecord, Status,
};
use crate::{PortError, Recipe, StepError};

/// An object's metadata, without its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    /// User metadata (S3 `x-amz-meta-*`, without the prefix, lower-case keys).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A bucket-like key/value store of objects.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    async fn head(&self, key: &str) -> Result<ObjectInfo, PortError>;
    async fn get(&self, key: &str) -> Result<Vec<u8>, PortError>;
    /// Up to `len` bytes from `start`; shorter at the end of the object.
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Vec<u8>, PortError>;
    /// Writes the whole object; returns its etag.
    async fn put(&self, key: &str, body: Vec<u8>, opts: PutOptions) -> Result<String, PortError>;
    async fn copy(&self, from: &str, to: &str) -> Result<(), PortError>;
    /// Deleting what is not there is not an error.
    async fn delete(&self, key: &str) -> Result<(), PortError>;
    /// Keys under a prefix, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError>;
}

/// The outcome of claiming an image for an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// This execution owns the image now (new record, an awaited upload, or its own retry).
    Started(ImageRecord),
    /// Another execution already has it: the event is a duplicate.
    Duplicate(ImageRecord),
    /// `claim` only: the upload was awaited, but its record is gone (the image was deleted).
    Gone,
}

/// What a finished re-render writes to the record.
#[derive(Debug, Clone, PartialEq)]
pub struct Rerendered {
    pub preset: String,
    pub recipe: Recipe,
    pub renditions: Vec<RenditionRecord>,
    pub at: DateTime<Utc>,
}

impl Rerendered {
    /// Whether `record` lists exactly these renditions: the write was done (a retry).
    pub fn is_in(&self, record: &ImageRecord) -> bool {
        let mut want: Vec<&str> = self.renditions.iter().map(|r| r.key.as_str()).collect();
        let mut have: Vec<&str> = record.renditions.iter().map(|r| r.key.as_str()).collect();
        want.sort_unstable();
        have.sort_unstable();
        want == have
    }
}

/// What [`MetadataStore::fail`] does when the image has no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAbsent {
    /// Creates it: the failure came before any record existed.
    Create,
    /// Leaves it absent: the record existed, so its absence means the image was deleted.
    Skip,
}

/// What [`MetadataStore::put_derived`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutDerived {
    /// Listed now, or listed already under the same parameters.
    Listed,
    /// The record lists `max` derived renditions already: the caller removes its object.
    Full,
    /// No COMPLETE record (deleted, or being failed): the caller removes its object.
    Gone,
}

/// The metadata table. Every write that changes status is conditional, so duplicate or
/// reordered events cannot make two records or move a record backwards.
#[async_trait]
pub trait MetadataStore: Send + Sync {
    /// Creates the record AWAITING_UPLOAD; `Ok(false)` if the id exists already.
    async fn create_awaiting(
        &self,
        record: &ImageRecord,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, PortError>;
    /// Claims the image for `record.execution_id`: creates it PROCESSING if absent, moves an
    /// AWAITING_UPLOAD record to PROCESSING, accepts a retry of the same execution, and
    /// reports anything else as a duplicate without writing.
    async fn begin(&self, record: &ImageRecord) -> Result<Begin, PortError>;
    /// [`MetadataStore::begin`] for an upload an AWAITING_UPLOAD record was made for (one
    /// through an API form): the same, except that an absent record is not created but
    /// answered [`Begin::Gone`], so a form replayed after its image was deleted brings
    /// nothing back.
    async fn claim(&self, record: &ImageRecord) -> Result<Begin, PortError>;
    async fn get(&self, id: &str) -> Result<Option<ImageRecord>, PortError>;
    /// Adds or replaces one rendition of a PROCESSING record. `updatedAt` is left alone: it
    /// is when the status last changed, so the DynamoDB `byStatus` index (keyed on it) moves
    /// an entry once per status, not once per rendition (docs/scaling.md).
    async fn put_rendition(&self, id: &str, rendition: &RenditionRecord) -> Result<(), PortError>;
    /// PROCESSING -> COMPLETE, filling in the source hash.
    async fn complete(&self, id: &str, sha256: Option<&str>) -> Result<(), PortError>;
    /// Records a rejection or failure of the execution `fallback.execution_id`, which drops
    /// the renditions the record listed (NotifyFailure removes their objects). Without a
    /// record, creates `fallback` with that status if `if_absent` says so (the upload never
    /// got as far as Validate's claim), and writes nothing otherwise (the image had a record
    /// and was deleted since).
    async fn fail(
        &self,
        id: &str,
        status: Status,
        error: &ErrorInfo,
        fallback: &ImageRecord,
        if_absent: IfAbsent,
    ) -> Result<(), PortError>;
    /// Marks the outcome of `execution_id` as announced, just before it is published:
    /// `Ok(true)` when this call set the mark, `Ok(false)` when that execution's mark was
    /// there already (a retry after the message went out), `NotFound` without a record. So a
    /// retried Notify publishes once per image and outcome.
    async fn mark_announced(&self, id: &str, execution_id: &str) -> Result<bool, PortError>;
    /// Takes `execution_id`'s mark back after publishing failed, so that the retry publishes.
    /// Nothing happens when the mark is another execution's or absent.
    async fn unmark_announced(&self, id: &str, execution_id: &str) -> Result<(), PortError>;
    /// Holds a COMPLETE image for `execution_id`'s re-render: `Started` when it is COMPLETE
    /// and no other re-render holds it (a hold older than [`crate::reprocess::LEASE`] has
    /// lapsed) or this one does already (a retry, which renews the hold), `Duplicate` when
    /// another holds it or it is not COMPLETE, `Gone` without a record. The record stays
    /// COMPLETE, its renditions listed and served, while the new ones are made.
    async fn begin_reprocess(&self, id: &str, execution_id: &str) -> Result<Begin, PortError>;
    /// Ends `execution_id`'s hold. With `done`, the record takes the new preset, recipe and
    /// renditions all at once, and `reprocessedAt` and `updatedAt`. `Ok(false)` when the hold
    /// is not this execution's and, with `done`, the record does not list those renditions
    /// already (a retry after the write): nothing is written then.
    async fn end_reprocess(
        &self,
        id: &str,
        execution_id: &str,
        done: Option<&Rerendered>,
    ) -> Result<bool, PortError>;
    /// Lists a rendition made on demand on a COMPLETE record, unless one with the same
    /// `params` is listed already (a concurrent render got there first: both made the same
    /// file under the same key), and only while the record lists fewer than `max`: checked
    /// in the write itself, so concurrent renders cannot pass it together.
    async fn put_derived(
        &self,
        id: &str,
        derived: &DerivedRendition,
        max: usize,
    ) -> Result<PutDerived, PortError>;
    /// Sets (or with `None` clears) the image's focal point, `source.focalPoint`; `Ok(false)`
    /// without a record. Renditions already made keep their crop; transforms with
    /// `gravity=focal` name the point in their parameters, so new ones follow it.
    async fn set_focal_point(
        &self,
        id: &str,
        point: Option<imaging::FocalPoint>,
    ) -> Result<bool, PortError>;
    /// Counts one more request answered by the derived rendition `params`; nothing happens
    /// when the record or the entry is gone.
    async fn hit_derived(&self, id: &str, params: &str) -> Result<(), PortError>;
    async fn list(&self, query: &ListQuery) -> Result<Page, PortError>;
    /// Removes the record and its renditions; `Ok(false)` if there was none.
    async fn delete(&self, id: &str) -> Result<bool, PortError>;
    /// One cheap round trip that reads the table, for health checks: `Ok` when the store
    /// answers and the table is there.
    async fn check(&self) -> Result<(), PortError>;
}

/// Announces outcomes: completions to the events channel, rejections and failures as alerts.
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn publish(&self, event: &Event) -> Result<(), PortError>;
}

/// Where decoded images wait between steps. In the cloud that is a lossless fast encoding in
/// the bucket; on one machine the images simply stay in memory.
#[async_trait]
pub trait WorkStore: Send + Sync {
    async fn put_image(&self, key: &str, image: Arc<Image>) -> Result<(), StepError>;
    async fn get_image(&self, key: &str) -> Result<Arc<Image>, StepError>;
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StepError>;
    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StepError>;
    /// Drops everything under the prefix (an image's `work/{id}/`).
    async fn clear(&self, prefix: &str) -> Result<(), StepError>;
}
