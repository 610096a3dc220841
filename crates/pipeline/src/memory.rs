//! In-memory ports (tests, and images between steps on one machine), the bucket-backed work
//! store used in the cloud, and a fault-injecting wrapper for resilience tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use imaging::Image;

use crate::model::{
    DerivedRendition, ErrorInfo, Event, ImageRecord, ListQuery, Page, RenditionRecord, Status,
};
use crate::ports::{
    Begin, IfAbsent, MetadataStore, Notifier, ObjectInfo, ObjectStore, PutDerived, PutOptions,
    Rerendered, WorkStore,
};
use crate::{ErrorKind, PortError, StepError};

/// A poisoned lock only means another thread panicked mid-update of plain maps; the data is
/// still usable, so recover it rather than propagate the panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone)]
pub struct StoredObject {
    pub body: Arc<Vec<u8>>,
    pub opts: PutOptions,
    pub etag: String,
}

#[derive(Default)]
pub struct MemoryObjectStore {
    objects: Mutex<BTreeMap<String, StoredObject>>,
}

impl MemoryObjectStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn object(&self, key: &str) -> Option<StoredObject> {
        lock(&self.objects).get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }

    /// Seeds an object with user metadata, as an S3 upload with `x-amz-meta-*` would.
    pub fn insert(&self, key: &str, body: Vec<u8>, metadata: BTreeMap<String, String>) {
        let etag = etag_of(&body);
        lock(&self.objects).insert(
            key.to_string(),
            StoredObject {
                body: Arc::new(body),
                opts: PutOptions {
                    metadata,
                    ..PutOptions::default()
                },
                etag,
            },
        );
    }
}

fn etag_of(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("\"{}\"", &hex::encode(Sha256::digest(body))[..32])
}

#[async_trait]
impl ObjectStore for MemoryObjectStore {
    async fn head(&self, key: &str) -> Result<ObjectInfo, PortError> {
        let o = self
            .object(key)
            .ok_or_else(|| PortError::NotFound(key.to_string()))?;
        Ok(ObjectInfo {
            size: o.body.len() as u64,
            etag: Some(o.etag),
            content_type: o.opts.content_type,
            metadata: o.opts.metadata,
        })
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, PortError> {
        let o = self
            .object(key)
            .ok_or_else(|| PortError::NotFound(key.to_string()))?;
        Ok(o.body.as_ref().clone())
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Vec<u8>, PortError> {
        let o = self
            .object(key)
            .ok_or_else(|| PortError::NotFound(key.to_string()))?;
        let size = o.body.len();
        let from = usize::try_from(start).unwrap_or(usize::MAX).min(size);
        let to = from
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .min(size);
        Ok(o.body[from..to].to_vec())
    }

    async fn put(&self, key: &str, body: Vec<u8>, opts: PutOptions) -> Result<String, PortError> {
        let etag = etag_of(&body);
        lock(&self.objects).insert(
            key.to_string(),
            StoredObject {
                body: Arc::new(body),
                opts,
                etag: etag.clone(),
            },
        );
        Ok(etag)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), PortError> {
        let mut objects = lock(&self.objects);
        let o = objects
            .get(from)
            .cloned()
            .ok_or_else(|| PortError::NotFound(from.to_string()))?;
        objects.insert(to.to_string(), o);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        lock(&self.objects).remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        Ok(lock(&self.objects)
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }
}

/// The metadata table in a map, with the same conditional rules as the real stores.
#[derive(Default)]
pub struct MemoryMetadata {
    records: Mutex<BTreeMap<String, ImageRecord>>,
    /// Image id -> the execution whose outcome was announced.
    announced: Mutex<BTreeMap<String, String>>,
    /// Image id -> the re-render holding it, and since when.
    holds: Mutex<BTreeMap<String, (String, DateTime<Utc>)>>,
}

impl MemoryMetadata {
    pub fn new() -> Self {
        Self::default()
    }

    fn start(
        &self,
        record: &ImageRecord,
        decide: fn(Option<&ImageRecord>, &ImageRecord) -> rules::BeginDecision,
    ) -> Begin {
        let mut records = lock(&self.records);
        let existing = records.get(&record.id);
        match decide(existing, record) {
            rules::BeginDecision::Insert => {
                records.insert(record.id.clone(), record.clone());
                Begin::Started(record.clone())
            }
            rules::BeginDecision::Claim => {
                let old = existing.cloned();
                let mut r = record.clone();
                if let Some(old) = old {
                    r.created_at = old.created_at;
                    if r.tags.is_empty() {
                        r.tags = old.tags;
                    }
                }
                records.insert(r.id.clone(), r.clone());
                Begin::Started(r)
            }
            rules::BeginDecision::Retry => {
                Begin::Started(existing.cloned().unwrap_or_else(|| record.clone()))
            }
            rules::BeginDecision::Duplicate => {
                Begin::Duplicate(existing.cloned().unwrap_or_else(|| record.clone()))
            }
            rules::BeginDecision::Gone => Begin::Gone,
        }
    }
}

/// The conditional-write rules every MetadataStore follows, in one place, so the in-memory
/// store and tests agree with the SQL and DynamoDB conditions.
pub mod rules {
    use super::*;

    /// What `begin` does given the existing record, if any.
    pub fn begin(existing: Option<&ImageRecord>, new: &ImageRecord) -> BeginDecision {
        start(existing, new, false)
    }

    /// What `claim` does: as `begin`, but an absent record is not created.
    pub fn claim(existing: Option<&ImageRecord>, new: &ImageRecord) -> BeginDecision {
        start(existing, new, true)
    }

    fn start(existing: Option<&ImageRecord>, new: &ImageRecord, awaited: bool) -> BeginDecision {
        match existing {
            None if awaited => BeginDecision::Gone,
            None => BeginDecision::Insert,
            Some(r) if r.status == Status::AwaitingUpload => BeginDecision::Claim,
            Some(r) if r.execution_id.is_some() && r.execution_id == new.execution_id => {
                BeginDecision::Retry
            }
            Some(_) => BeginDecision::Duplicate,
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum BeginDecision {
        Insert,
        Claim,
        Retry,
        Duplicate,
        /// An awaited upload whose record is gone: its image was deleted.
        Gone,
    }

    /// What `begin_reprocess` does given the record and the re-render holding it, if any.
    pub fn begin_reprocess(
        existing: Option<&ImageRecord>,
        holder: Option<(&str, DateTime<Utc>)>,
        execution_id: &str,
        now: DateTime<Utc>,
    ) -> BeginDecision {
        match existing {
            None => BeginDecision::Gone,
            Some(r) if r.status != Status::Complete => BeginDecision::Duplicate,
            Some(_) if holder.is_some_and(|(by, _)| by == execution_id) => BeginDecision::Retry,
            Some(_) if crate::reprocess::held_by_another(holder, execution_id, now) => {
                BeginDecision::Duplicate
            }
            Some(_) => BeginDecision::Claim,
        }
    }

    /// `fail` only touches a record this execution owns (or one not yet claimed) and never
    /// turns a COMPLETE image into a failure.
    pub fn may_fail(existing: &ImageRecord, execution_id: Option<&str>) -> bool {
        existing.status != Status::Complete
            && (existing.status == Status::AwaitingUpload
                || existing.execution_id.is_none()
                || existing.execution_id.as_deref() == execution_id)
    }
}

#[async_trait]
impl MetadataStore for MemoryMetadata {
    async fn create_awaiting(
        &self,
        record: &ImageRecord,
        _expires_at: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let mut records = lock(&self.records);
        if records.contains_key(&record.id) {
            return Ok(false);
        }
        let mut r = record.clone();
        r.status = Status::AwaitingUpload;
        records.insert(r.id.clone(), r);
        Ok(true)
    }

    async fn begin(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        Ok(self.start(record, rules::begin))
    }

    async fn claim(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        Ok(self.start(record, rules::claim))
    }

    async fn get(&self, id: &str) -> Result<Option<ImageRecord>, PortError> {
        Ok(lock(&self.records).get(id).cloned())
    }

    async fn put_rendition(&self, id: &str, rendition: &RenditionRecord) -> Result<(), PortError> {
        let mut records = lock(&self.records);
        let r = records
            .get_mut(id)
            .ok_or_else(|| PortError::NotFound(id.to_string()))?;
        r.renditions.retain(|x| x.name != rendition.name);
        r.renditions.push(rendition.clone());
        Ok(())
    }

    async fn complete(&self, id: &str, sha256: Option<&str>) -> Result<(), PortError> {
        let mut records = lock(&self.records);
        let r = records
            .get_mut(id)
            .ok_or_else(|| PortError::NotFound(id.to_string()))?;
        if r.status != Status::Processing && r.status != Status::Complete {
            return Err(PortError::Permanent(format!(
                "{id} is {}, not PROCESSING",
                r.status
            )));
        }
        r.status = Status::Complete;
        if let Some(s) = sha256 {
            r.source.sha256 = Some(s.to_string());
        }
        r.updated_at = Utc::now();
        Ok(())
    }

    async fn fail(
        &self,
        id: &str,
        status: Status,
        error: &ErrorInfo,
        fallback: &ImageRecord,
        if_absent: IfAbsent,
    ) -> Result<(), PortError> {
        let mut records = lock(&self.records);
        match records.get_mut(id) {
            None if if_absent == IfAbsent::Skip => {}
            None => {
                let mut r = fallback.clone();
                r.status = status;
                r.error = Some(error.clone());
                records.insert(id.to_string(), r);
            }
            Some(r) if rules::may_fail(r, fallback.execution_id.as_deref()) => {
                r.status = status;
                r.error = Some(error.clone());
                r.renditions.clear();
                r.updated_at = Utc::now();
                // As the SQL and DynamoDB stores do: a record nobody had claimed now belongs
                // to the execution that recorded its failure.
                if r.execution_id.is_none() {
                    r.execution_id = fallback.execution_id.clone();
                }
            }
            Some(_) => {}
        }
        Ok(())
    }

    async fn put_derived(
        &self,
        id: &str,
        derived: &DerivedRendition,
        max: usize,
    ) -> Result<PutDerived, PortError> {
        let mut records = lock(&self.records);
        match records.get_mut(id) {
            Some(r) if r.status == Status::Complete => {
                if r.derived.iter().any(|d| d.params == derived.params) {
                    Ok(PutDerived::Listed)
                } else if r.derived.len() >= max {
                    Ok(PutDerived::Full)
                } else {
                    r.derived.push(derived.clone());
                    Ok(PutDerived::Listed)
                }
            }
            _ => Ok(PutDerived::Gone),
        }
    }

    async fn set_focal_point(
        &self,
        id: &str,
        point: Option<imaging::FocalPoint>,
    ) -> Result<bool, PortError> {
        let mut records = lock(&self.records);
        match records.get_mut(id) {
            Some(r) => {
                r.source.focal_point = point;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn hit_derived(&self, id: &str, params: &str) -> Result<(), PortError> {
        let mut records = lock(&self.records);
        if let Some(d) = records
            .get_mut(id)
            .and_then(|r| r.derived.iter_mut().find(|d| d.params == params))
        {
            d.hits += 1;
        }
        Ok(())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, PortError> {
        let records = lock(&self.records);
        let mut items: Vec<ImageRecord> = records
            .values()
            .filter(|r| query.owner.as_ref().is_none_or(|o| &r.owner == o))
            .filter(|r| query.status.is_none_or(|s| r.status == s))
            .filter(|r| query.since.is_none_or(|t| r.created_at >= t))
            .filter(|r| query.until.is_none_or(|t| r.created_at < t))
            .filter(|r| query.tag.as_ref().is_none_or(|t| r.tags.contains(t)))
            .cloned()
            .collect();
        items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        let start = query
            .cursor
            .as_ref()
            .and_then(|c| items.iter().position(|r| &r.id == c).map(|p| p + 1))
            .unwrap_or(0);
        let limit = if query.limit == 0 { 50 } else { query.limit };
        let page: Vec<ImageRecord> = items.iter().skip(start).take(limit).cloned().collect();
        let cursor = (start + page.len() < items.len())
            .then(|| page.last().map(|r| r.id.clone()))
            .flatten();
        Ok(Page {
            items: page,
            cursor,
        })
    }

    async fn mark_announced(&self, id: &str, execution_id: &str) -> Result<bool, PortError> {
        let records = lock(&self.records);
        if !records.contains_key(id) {
            return Err(PortError::NotFound(id.to_string()));
        }
        let mut announced = lock(&self.announced);
        if announced.get(id).map(String::as_str) == Some(execution_id) {
            return Ok(false);
        }
        announced.insert(id.to_string(), execution_id.to_string());
        Ok(true)
    }

    async fn unmark_announced(&self, id: &str, execution_id: &str) -> Result<(), PortError> {
        let mut announced = lock(&self.announced);
        if announced.get(id).map(String::as_str) == Some(execution_id) {
            announced.remove(id);
        }
        Ok(())
    }

    async fn begin_reprocess(&self, id: &str, execution_id: &str) -> Result<Begin, PortError> {
        let records = lock(&self.records);
        let mut holds = lock(&self.holds);
        let existing = records.get(id);
        let holder = holds.get(id).map(|(by, since)| (by.as_str(), *since));
        Ok(
            match rules::begin_reprocess(existing, holder, execution_id, Utc::now()) {
                rules::BeginDecision::Gone => Begin::Gone,
                rules::BeginDecision::Duplicate => {
                    existing.cloned().map_or(Begin::Gone, Begin::Duplicate)
                }
                // Claim, or a retry, which renews the hold as the other stores do.
                _ => {
                    holds.insert(id.to_string(), (execution_id.to_string(), Utc::now()));
                    existing.cloned().map_or(Begin::Gone, Begin::Started)
                }
            },
        )
    }

    async fn end_reprocess(
        &self,
        id: &str,
        execution_id: &str,
        done: Option<&Rerendered>,
    ) -> Result<bool, PortError> {
        let mut records = lock(&self.records);
        let mut holds = lock(&self.holds);
        let ours = holds.get(id).is_some_and(|(by, _)| by == execution_id);
        let Some(r) = records.get_mut(id) else {
            holds.remove(id);
            return Ok(false);
        };
        if !ours {
            return Ok(done.is_some_and(|d| d.is_in(r)));
        }
        holds.remove(id);
        if let Some(d) = done {
            r.preset = Some(d.preset.clone());
            r.recipe = Some(d.recipe.clone());
            r.renditions = d.renditions.clone();
            r.reprocessed_at = Some(d.at);
            r.updated_at = d.at;
        }
        Ok(true)
    }

    async fn delete(&self, id: &str) -> Result<bool, PortError> {
        let mut records = lock(&self.records);
        lock(&self.announced).remove(id);
        lock(&self.holds).remove(id);
        Ok(records.remove(id).is_some())
    }

    async fn check(&self) -> Result<(), PortError> {
        Ok(())
    }
}

/// Collects events.
#[derive(Default)]
pub struct MemoryNotifier {
    pub events: Mutex<Vec<Event>>,
}

impl MemoryNotifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn events(&self) -> Vec<Event> {
        lock(&self.events).clone()
    }
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn publish(&self, event: &Event) -> Result<(), PortError> {
        lock(&self.events).push(event.clone());
        Ok(())
    }
}

/// Images kept as they are, between steps in one process: no encode, no copy.
#[derive(Default)]
pub struct MemoryWorkStore {
    images: Mutex<HashMap<String, Arc<Image>>>,
    bytes: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryWorkStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        lock(&self.images).len() + lock(&self.bytes).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn missing(key: &str) -> StepError {
    StepError::new(ErrorKind::NotFound, format!("work item {key} is gone"))
}

#[async_trait]
impl WorkStore for MemoryWorkStore {
    async fn put_image(&self, key: &str, image: Arc<Image>) -> Result<(), StepError> {
        lock(&self.images).insert(key.to_string(), image);
        Ok(())
    }

    async fn get_image(&self, key: &str) -> Result<Arc<Image>, StepError> {
        lock(&self.images)
            .get(key)
            .cloned()
            .ok_or_else(|| missing(key))
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StepError> {
        lock(&self.bytes).insert(key.to_string(), bytes);
        Ok(())
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StepError> {
        lock(&self.bytes)
            .get(key)
            .cloned()
            .ok_or_else(|| missing(key))
    }

    async fn clear(&self, prefix: &str) -> Result<(), StepError> {
        lock(&self.images).retain(|k, _| !k.starts_with(prefix));
        lock(&self.bytes).retain(|k, _| !k.starts_with(prefix));
        Ok(())
    }
}

/// Work items as objects in a bucket, images in the fast lossless intermediate encoding:
/// what steps in separate processes (Lambdas) share.
pub struct ObjectWorkStore {
    pub store: Arc<dyn ObjectStore>,
}

#[async_trait]
impl WorkStore for ObjectWorkStore {
    async fn put_image(&self, key: &str, image: Arc<Image>) -> Result<(), StepError> {
        let bytes = tokio::task::spawn_blocking(move || imaging::encode_intermediate(&image))
            .await
            .map_err(|e| StepError::internal(e.to_string()))??;
        self.put_bytes(key, bytes).await
    }

    async fn get_image(&self, key: &str) -> Result<Arc<Image>, StepError> {
        let bytes = self.get_bytes(key).await?;
        let image = tokio::task::spawn_blocking(move || imaging::decode_intermediate(&bytes))
            .await
            .map_err(|e| StepError::internal(e.to_string()))??;
        Ok(Arc::new(image))
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StepError> {
        self.store
            .put(
                key,
                bytes,
                PutOptions {
                    content_type: Some("application/octet-stream".into()),
                    ..PutOptions::default()
                },
            )
            .await?;
        Ok(())
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StepError> {
        Ok(self.store.get(key).await?)
    }

    async fn clear(&self, prefix: &str) -> Result<(), StepError> {
        for key in self.store.list(prefix).await? {
            self.store.delete(&key).await?;
        }
        Ok(())
    }
}

/// Which calls a fault-injecting wrapper ([`Flaky`], [`FlakyMetadata`], [`FlakyNotifier`])
/// fails, counting only the calls to the operations it was told to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The first `n` matching calls fail with a transient error, then all succeed.
    Transient(usize),
    /// Every `k`-th matching call (the k-th, 2k-th, ...) fails with a transient error, for as
    /// long as the wrapper lives: a dependency that keeps dropping a share of requests.
    Every(usize),
    /// Every matching call fails permanently.
    Permanent,
}

/// The shared bookkeeping of the fault-injecting wrappers: which operations, which fault, how
/// many matching calls so far and how many of them failed.
pub struct Faults {
    ops: Vec<&'static str>,
    fault: Fault,
    /// Only calls whose key (or id) contains this are watched.
    only: Option<&'static str>,
    calls: AtomicUsize,
    failed: AtomicUsize,
}

impl Faults {
    pub fn new(ops: &[&'static str], fault: Fault) -> Self {
        Faults {
            ops: ops.to_vec(),
            fault,
            only: None,
            calls: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// Watches only the calls whose key (or id) contains `needle`: one rendition's writes,
    /// say, while the others' succeed.
    pub fn only(mut self, needle: &'static str) -> Self {
        self.only = Some(needle);
        self
    }

    /// How many calls have been failed so far.
    pub fn failures(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// How many calls to the watched operations there have been.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Counts a call to `op` and says whether it fails.
    pub fn check(&self, op: &'static str, what: &str) -> Result<(), PortError> {
        if !self.ops.contains(&op) || self.only.is_some_and(|n| !what.contains(n)) {
            return Ok(());
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let fails = match self.fault {
            Fault::Permanent => true,
            Fault::Transient(first) => n <= first,
            Fault::Every(k) => k > 0 && n.is_multiple_of(k),
        };
        if !fails {
            return Ok(());
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        Err(match self.fault {
            Fault::Permanent => PortError::Permanent(format!("injected: {op} {what} refused")),
            _ => PortError::Transient(format!("injected: {op} {what} timed out")),
        })
    }
}

/// Wraps an object store and fails the calls whose operation name (`get`, `put`, ...) is in
/// `ops`: the fault injection of the resilience tests.
pub struct Flaky {
    pub inner: Arc<dyn ObjectStore>,
    pub faults: Faults,
}

impl Flaky {
    pub fn new(inner: Arc<dyn ObjectStore>, ops: &[&'static str], fault: Fault) -> Self {
        Flaky {
            inner,
            faults: Faults::new(ops, fault),
        }
    }

    /// How many calls it has failed so far.
    pub fn failures(&self) -> usize {
        self.faults.failures()
    }

    fn check(&self, op: &'static str, key: &str) -> Result<(), PortError> {
        self.faults.check(op, key)
    }
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn head(&self, key: &str) -> Result<ObjectInfo, PortError> {
        self.check("head", key)?;
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, PortError> {
        self.check("get", key)?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Vec<u8>, PortError> {
        self.check("get_range", key)?;
        self.inner.get_range(key, start, len).await
    }
    async fn put(&self, key: &str, body: Vec<u8>, opts: PutOptions) -> Result<String, PortError> {
        self.check("put", key)?;
        self.inner.put(key, body, opts).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<(), PortError> {
        self.check("copy", from)?;
        self.inner.copy(from, to).await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.check("delete", key)?;
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        self.check("list", prefix)?;
        self.inner.list(prefix).await
    }
}

/// Wraps a metadata store and fails the calls whose operation name (`begin`, `get`,
/// `put_rendition`, `complete`, `fail`, ...) is in `ops`.
pub struct FlakyMetadata {
    pub inner: Arc<dyn MetadataStore>,
    pub faults: Faults,
}

impl FlakyMetadata {
    pub fn new(inner: Arc<dyn MetadataStore>, ops: &[&'static str], fault: Fault) -> Self {
        FlakyMetadata {
            inner,
            faults: Faults::new(ops, fault),
        }
    }
}

#[async_trait]
impl MetadataStore for FlakyMetadata {
    async fn create_awaiting(
        &self,
        record: &ImageRecord,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.faults.check("create_awaiting", &record.id)?;
        self.inner.create_awaiting(record, expires_at).await
    }
    async fn begin(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        self.faults.check("begin", &record.id)?;
        self.inner.begin(record).await
    }
    async fn claim(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        self.faults.check("begin", &record.id)?;
        self.inner.claim(record).await
    }
    async fn get(&self, id: &str) -> Result<Option<ImageRecord>, PortError> {
        self.faults.check("get", id)?;
        self.inner.get(id).await
    }
    async fn put_rendition(&self, id: &str, rendition: &RenditionRecord) -> Result<(), PortError> {
        self.faults.check("put_rendition", id)?;
        self.inner.put_rendition(id, rendition).await
    }
    async fn complete(&self, id: &str, sha256: Option<&str>) -> Result<(), PortError> {
        self.faults.check("complete", id)?;
        self.inner.complete(id, sha256).await
    }
    async fn fail(
        &self,
        id: &str,
        status: Status,
        error: &ErrorInfo,
        fallback: &ImageRecord,
        if_absent: IfAbsent,
    ) -> Result<(), PortError> {
        self.faults.check("fail", id)?;
        self.inner
            .fail(id, status, error, fallback, if_absent)
            .await
    }
    async fn mark_announced(&self, id: &str, execution_id: &str) -> Result<bool, PortError> {
        self.faults.check("mark_announced", id)?;
        self.inner.mark_announced(id, execution_id).await
    }
    async fn unmark_announced(&self, id: &str, execution_id: &str) -> Result<(), PortError> {
        self.faults.check("unmark_announced", id)?;
        self.inner.unmark_announced(id, execution_id).await
    }
    async fn begin_reprocess(&self, id: &str, execution_id: &str) -> Result<Begin, PortError> {
        self.faults.check("begin_reprocess", id)?;
        self.inner.begin_reprocess(id, execution_id).await
    }
    async fn end_reprocess(
        &self,
        id: &str,
        execution_id: &str,
        done: Option<&Rerendered>,
    ) -> Result<bool, PortError> {
        self.faults.check("end_reprocess", id)?;
        self.inner.end_reprocess(id, execution_id, done).await
    }
    async fn put_derived(
        &self,
        id: &str,
        derived: &DerivedRendition,
        max: usize,
    ) -> Result<PutDerived, PortError> {
        self.faults.check("put_derived", id)?;
        self.inner.put_derived(id, derived, max).await
    }
    async fn set_focal_point(
        &self,
        id: &str,
        point: Option<imaging::FocalPoint>,
    ) -> Result<bool, PortError> {
        self.faults.check("set_focal_point", id)?;
        self.inner.set_focal_point(id, point).await
    }
    async fn hit_derived(&self, id: &str, params: &str) -> Result<(), PortError> {
        self.faults.check("hit_derived", id)?;
        self.inner.hit_derived(id, params).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, PortError> {
        self.faults.check("list", "images")?;
        self.inner.list(query).await
    }
    async fn delete(&self, id: &str) -> Result<bool, PortError> {
        self.faults.check("delete", id)?;
        self.inner.delete(id).await
    }
    async fn check(&self) -> Result<(), PortError> {
        self.faults.check("check", "images")?;
        self.inner.check().await
    }
}

/// Wraps a notifier and fails `publish` as told (the only operation, named `publish`).
pub struct FlakyNotifier {
    pub inner: Arc<dyn Notifier>,
    pub faults: Faults,
}

impl FlakyNotifier {
    pub fn new(inner: Arc<dyn Notifier>, fault: Fault) -> Self {
        FlakyNotifier {
            inner,
            faults: Faults::new(&["publish"], fault),
        }
    }
}

#[async_trait]
impl Notifier for FlakyNotifier {
    async fn publish(&self, event: &Event) -> Result<(), PortError> {
        self.faults.check("publish", &event.image_id)?;
        self.inner.publish(event).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::model::SourceInfo;
    use crate::{Presets, Recipe};

    fn rendition(name: &str, key: &str, width: u32) -> RenditionRecord {
        RenditionRecord {
            name: name.into(),
            key: key.into(),
            format: imaging::Format::Webp,
            width,
            height: width / 2,
            bytes: u64::from(width),
            ms: 1,
            quality: None,
            score: None,
            placeholder: None,
            dominant_color: None,
        }
    }

    fn processing(id: &str, execution: &str) -> ImageRecord {
        let now = Utc::now();
        ImageRecord {
            derived: Vec::new(),
            id: id.into(),
            owner: "u1".into(),
            status: Status::Processing,
            source: SourceInfo {
                focal_point: None,
                alpha: None,
                key: format!("uploads/u1/{id}/a.jpg"),
                etag: None,
                bytes: 10,
                format: None,
                width: Some(800),
                height: Some(400),
                sha256: None,
                color_profile: None,
                original: None,
            },
            recipe: Some(Presets::builtin().get("web").unwrap().clone()),
            renditions: Vec::new(),
            error: None,
            created_at: now,
            updated_at: now,
            execution_id: Some(execution.into()),
            tags: vec!["t".into()],
            preset: Some("web".into()),
            reprocessed_at: None,
        }
    }

    /// A COMPLETE image with two renditions, made the way the pipeline makes one.
    async fn complete(m: &MemoryMetadata, id: &str) -> ImageRecord {
        m.begin(&processing(id, "exec-0")).await.unwrap();
        m.put_rendition(id, &rendition("large", "renditions/u1/i/large.webp", 800))
            .await
            .unwrap();
        m.put_rendition(id, &rendition("thumb", "renditions/u1/i/thumb.webp", 100))
            .await
            .unwrap();
        m.complete(id, Some("abc")).await.unwrap();
        m.get(id).await.unwrap().unwrap()
    }

    fn changed_recipe() -> Recipe {
        let mut recipe = Presets::builtin().get("web").unwrap().clone();
        recipe.renditions[0].quality = Some(crate::Quality::Fixed(41));
        recipe
    }

    /// New keys for `thumb` and a `medium` in place of `large`, largest first.
    fn rerendered(version: &str) -> Rerendered {
        Rerendered {
            preset: "web".into(),
            recipe: changed_recipe(),
            renditions: vec![
                rendition(
                    "medium",
                    &format!("renditions/u1/i/medium.{version}.webp"),
                    400,
                ),
                rendition(
                    "thumb",
                    &format!("renditions/u1/i/thumb.{version}.webp"),
                    100,
                ),
            ],
            at: Utc.with_ymd_and_hms(2031, 2, 3, 4, 5, 6).unwrap()
                + chrono::Duration::microseconds(123_456),
        }
    }

    #[tokio::test]
    async fn reprocess_holds_one_execution_and_swaps_renditions_at_once() {
        let m = MemoryMetadata::new();
        let before = complete(&m, "img").await;
        assert_eq!(before.status, Status::Complete);

        // (a) One execution holds the image; another is a duplicate; its own retry starts.
        assert_eq!(
            m.begin_reprocess("img", "re-1").await.unwrap(),
            Begin::Started(before.clone())
        );
        assert_eq!(
            m.begin_reprocess("img", "re-2").await.unwrap(),
            Begin::Duplicate(before.clone())
        );
        assert_eq!(
            m.begin_reprocess("img", "re-1").await.unwrap(),
            Begin::Started(before.clone())
        );
        assert_eq!(m.get("img").await.unwrap().as_ref(), Some(&before));
        m.begin(&processing("busy", "exec-9")).await.unwrap();
        assert!(matches!(
            m.begin_reprocess("busy", "re-1").await.unwrap(),
            Begin::Duplicate(r) if r.status == Status::Processing
        ));
        assert_eq!(
            m.begin_reprocess("none", "re-1").await.unwrap(),
            Begin::Gone
        );

        // (b) Not the holder: nothing written, the hold stays.
        let other = rerendered("bbbbbbbbbb");
        assert!(!m.end_reprocess("img", "re-2", Some(&other)).await.unwrap());
        assert!(!m.end_reprocess("img", "re-2", None).await.unwrap());
        assert_eq!(m.get("img").await.unwrap().as_ref(), Some(&before));
        assert!(matches!(
            m.begin_reprocess("img", "re-2").await.unwrap(),
            Begin::Duplicate(_)
        ));

        // The holder swaps preset, recipe and renditions at once.
        let done = rerendered("aaaaaaaaaa");
        assert!(m.end_reprocess("img", "re-1", Some(&done)).await.unwrap());
        let after = m.get("img").await.unwrap().unwrap();
        let mut expected = before.clone();
        expected.preset = Some(done.preset.clone());
        expected.recipe = Some(done.recipe.clone());
        expected.renditions = done.renditions.clone();
        expected.reprocessed_at = Some(done.at);
        expected.updated_at = done.at;
        assert_eq!(after, expected);
        // A retry of that call finds it written.
        assert!(m.end_reprocess("img", "re-1", Some(&done)).await.unwrap());
        assert_eq!(m.get("img").await.unwrap().as_ref(), Some(&expected));
        // Another execution's different renditions are not.
        assert!(!m.end_reprocess("img", "re-2", Some(&other)).await.unwrap());
        assert_eq!(m.get("img").await.unwrap().as_ref(), Some(&expected));

        // Ending without a result only lets go.
        assert!(matches!(
            m.begin_reprocess("img", "re-2").await.unwrap(),
            Begin::Started(_)
        ));
        assert!(m.end_reprocess("img", "re-2", None).await.unwrap());
        assert_eq!(m.get("img").await.unwrap().as_ref(), Some(&expected));
        assert!(matches!(
            m.begin_reprocess("img", "re-3").await.unwrap(),
            Begin::Started(_)
        ));

        // (c) A hold older than the lease lapses; one just inside it does not.
        lock(&m.holds).get_mut("img").unwrap().1 =
            Utc::now() - crate::reprocess::LEASE + chrono::Duration::minutes(1);
        assert!(matches!(
            m.begin_reprocess("img", "re-4").await.unwrap(),
            Begin::Duplicate(_)
        ));
        lock(&m.holds).get_mut("img").unwrap().1 =
            Utc::now() - crate::reprocess::LEASE - chrono::Duration::minutes(1);
        assert!(matches!(
            m.begin_reprocess("img", "re-4").await.unwrap(),
            Begin::Started(_)
        ));
        // The execution that lost it writes nothing.
        assert!(!m.end_reprocess("img", "re-3", Some(&other)).await.unwrap());
        assert_eq!(m.get("img").await.unwrap().as_ref(), Some(&expected));

        // (e) Deleting the image drops its hold.
        assert!(m.delete("img").await.unwrap());
        complete(&m, "img").await;
        assert!(matches!(
            m.begin_reprocess("img", "re-5").await.unwrap(),
            Begin::Started(_)
        ));
    }
}
