//! The metadata table on DynamoDB, with the same conditional-write semantics as the SQLite
//! store (decisions from `pipeline::memory::rules`, enforced by condition expressions).
//!
//! Table layout (fixed: template.yaml declares the same):
//! - key `id` (S); `owner` S; `status` S; `createdAt` / `updatedAt` S, RFC 3339 UTC with
//!   microseconds, fixed width, so string order is time order; `executionId` S;
//!   `source` M {key, etag, bytes, format, width, height, sha256}; `recipe` S (JSON);
//!   `renditions` M name -> M {key, format, width, height, bytes, ms} (always present, maybe
//!   empty, so one rendition can be set by path); `error` M {type, message}; `tags` L of S;
//!   `expiresAt` N, epoch seconds, the TTL attribute, only while AWAITING_UPLOAD.
//! - GSI `byOwner` (`owner`, `createdAt`) and GSI `byStatus` (`status`, `updatedAt`), both
//!   projecting ALL.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValue, ScalarAttributeType, TimeToLiveSpecification,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use pipeline::PortError;
use pipeline::memory::rules::{self, BeginDecision};
use pipeline::model::{
    DerivedRendition, ErrorInfo, ImageRecord, ListQuery, Page, RenditionRecord, SourceInfo, Status,
};
use pipeline::ports::{Begin, IfAbsent, MetadataStore, PutDerived, Rerendered};
use serde_json::Value;

use crate::errors::port_error;

pub const ID: &str = "id";
pub const OWNER: &str = "owner";
pub const STATUS: &str = "status";
pub const CREATED_AT: &str = "createdAt";
pub const UPDATED_AT: &str = "updatedAt";
pub const EXECUTION_ID: &str = "executionId";
pub const SOURCE: &str = "source";
pub const RECIPE: &str = "recipe";
pub const RENDITIONS: &str = "renditions";
/// Renditions made on demand: a map from their normalised parameters to the rest.
pub const DERIVED: &str = "derived";
pub const ERROR: &str = "error";
pub const TAGS: &str = "tags";
pub const EXPIRES_AT: &str = "expiresAt";
/// The execution whose outcome was announced ([`MetadataStore::mark_announced`]).
pub const ANNOUNCED_BY: &str = "announcedBy";
/// The preset a record's recipe came from, and when its renditions were last re-rendered.
pub const PRESET: &str = "preset";
pub const REPROCESSED_AT: &str = "reprocessedAt";
/// The re-render holding the image ([`MetadataStore::begin_reprocess`]): a map of
/// `executionId` and `since`.
pub const REPROCESSING: &str = "reprocessing";
pub const BY_OWNER: &str = "byOwner";
pub const BY_STATUS: &str = "byStatus";

/// Page size of `list` when the query names none, and the most it returns.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;
/// A filtered query reads this many index entries per request, so a selective filter does
/// not cost one round trip per match.
const FILTERED_READ: usize = 100;
/// A very selective filter could otherwise walk a whole partition in one API call; past
/// this many round trips `list` returns what it has with a cursor to continue.
const MAX_ROUND_TRIPS: usize = 10;
/// Optimistic writes re-read and re-decide after losing a race; more losses than this in a
/// row mean heavy contention, which the caller may retry.
const MAX_RACES: usize = 8;

type Item = HashMap<String, AttributeValue>;

pub struct DynamoMetadata {
    client: Client,
    table: String,
}

/// Fixed-width UTC timestamps (as the SQLite store writes them), so text order is time order
/// in the indexes and in key conditions.
pub fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, PortError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| PortError::Permanent(format!("stored time `{s}`: {e}")))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn json_err(e: serde_json::Error) -> PortError {
    PortError::Permanent(format!("record does not (de)serialise: {e}"))
}

/// A JSON document as a DynamoDB value, so nested fields stay addressable by path.
fn json_to_av(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(x) => AttributeValue::N(x.to_string()),
        Value::String(x) => AttributeValue::S(x.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(json_to_av).collect()),
        Value::Object(o) => {
            AttributeValue::M(o.iter().map(|(k, v)| (k.clone(), json_to_av(v))).collect())
        }
    }
}

fn number(text: &str) -> Result<Value, PortError> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Ok(u.into());
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| PortError::Permanent(format!("stored number `{text}` is not usable")))
}

fn av_to_json(av: &AttributeValue) -> Result<Value, PortError> {
    Ok(match av {
        AttributeValue::S(x) => Value::String(x.clone()),
        AttributeValue::N(x) => number(x)?,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::L(a) => Value::Array(a.iter().map(av_to_json).collect::<Result<_, _>>()?),
        AttributeValue::M(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), av_to_json(v)?)))
                .collect::<Result<_, PortError>>()?,
        ),
        AttributeValue::Ss(a) => Value::Array(a.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(a) => {
            Value::Array(a.iter().map(|x| number(x)).collect::<Result<_, _>>()?)
        }
        other => {
            return Err(PortError::Permanent(format!(
                "stored attribute of unexpected type: {other:?}"
            )));
        }
    })
}

fn source_av(source: &SourceInfo) -> Result<AttributeValue, PortError> {
    Ok(json_to_av(&serde_json::to_value(source).map_err(json_err)?))
}

fn recipe_av(r: &ImageRecord) -> Result<Option<AttributeValue>, PortError> {
    r.recipe
        .as_ref()
        .map(|recipe| serde_json::to_string(recipe).map(s).map_err(json_err))
        .transpose()
}

/// `value` as a map entry stored under its `key` field: the field left out, as the map key
/// holds it and storing it twice would let the two disagree.
fn keyed_av<T: serde::Serialize>(value: &T, key: &str) -> Result<AttributeValue, PortError> {
    let mut v = serde_json::to_value(value).map_err(json_err)?;
    if let Some(o) = v.as_object_mut() {
        o.remove(key);
    }
    Ok(json_to_av(&v))
}

/// The entries of the map attribute `attr`, each with its map key put back as field `key`.
fn keyed_entries<T: serde::de::DeserializeOwned>(
    item: &Item,
    attr: &str,
    key: &str,
) -> Result<Vec<T>, PortError> {
    match item.get(attr) {
        Some(AttributeValue::M(m)) => m
            .iter()
            .map(|(k, av)| {
                let mut v = av_to_json(av)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert(key.into(), Value::String(k.clone()));
                }
                serde_json::from_value::<T>(v).map_err(json_err)
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn rendition_av(r: &RenditionRecord) -> Result<AttributeValue, PortError> {
    keyed_av(r, "name")
}

fn derived_av(d: &DerivedRendition) -> Result<AttributeValue, PortError> {
    keyed_av(d, "params")
}

fn error_av(e: &ErrorInfo) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("type".to_string(), s(&e.kind)),
        ("message".to_string(), s(&e.message)),
    ]))
}

fn tags_av(tags: &[String]) -> AttributeValue {
    AttributeValue::L(tags.iter().map(s).collect())
}

/// The whole record as an item; `expires_at` only for AWAITING_UPLOAD records.
pub fn to_item(r: &ImageRecord, expires_at: Option<i64>) -> Result<Item, PortError> {
    let mut item = Item::new();
    item.insert(ID.into(), s(&r.id));
    item.insert(OWNER.into(), s(&r.owner));
    item.insert(STATUS.into(), s(r.status.as_str()));
    item.insert(CREATED_AT.into(), s(ts(&r.created_at)));
    item.insert(UPDATED_AT.into(), s(ts(&r.updated_at)));
    if let Some(e) = &r.execution_id {
        item.insert(EXECUTION_ID.into(), s(e));
    }
    item.insert(SOURCE.into(), source_av(&r.source)?);
    if let Some(recipe) = recipe_av(r)? {
        item.insert(RECIPE.into(), recipe);
    }
    let renditions = r
        .renditions
        .iter()
        .map(|x| Ok((x.name.clone(), rendition_av(x)?)))
        .collect::<Result<HashMap<_, _>, PortError>>()?;
    item.insert(RENDITIONS.into(), AttributeValue::M(renditions));
    if !r.derived.is_empty() {
        let derived = r
            .derived
            .iter()
            .map(|d| Ok((d.params.clone(), derived_av(d)?)))
            .collect::<Result<HashMap<_, _>, PortError>>()?;
        item.insert(DERIVED.into(), AttributeValue::M(derived));
    }
    if let Some(e) = &r.error {
        item.insert(ERROR.into(), error_av(e));
    }
    item.insert(TAGS.into(), tags_av(&r.tags));
    if let Some(p) = &r.preset {
        item.insert(PRESET.into(), s(p));
    }
    if let Some(t) = &r.reprocessed_at {
        item.insert(REPROCESSED_AT.into(), s(ts(t)));
    }
    if let Some(t) = expires_at {
        item.insert(EXPIRES_AT.into(), n(t));
    }
    Ok(item)
}

fn text<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, PortError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.as_str())),
        Some(other) => Err(PortError::Permanent(format!(
            "stored attribute `{name}` is not a string: {other:?}"
        ))),
    }
}

fn required<'a>(item: &'a Item, name: &str) -> Result<&'a str, PortError> {
    text(item, name)?.ok_or_else(|| PortError::Permanent(format!("stored record has no `{name}`")))
}

pub fn from_item(item: &Item) -> Result<ImageRecord, PortError> {
    let id = required(item, ID)?;
    let context = |e: PortError| match e {
        PortError::Permanent(m) => PortError::Permanent(format!("record {id}: {m}")),
        other => other,
    };
    let parse = || -> Result<ImageRecord, PortError> {
        let source: SourceInfo = match item.get(SOURCE) {
            // Written as a map; JSON text, the table design's other allowed layout, reads too.
            Some(AttributeValue::S(json)) => serde_json::from_str(json).map_err(json_err)?,
            Some(av) => serde_json::from_value(av_to_json(av)?).map_err(json_err)?,
            None => return Err(PortError::Permanent(format!("no `{SOURCE}`"))),
        };
        let recipe = text(item, RECIPE)?
            .map(serde_json::from_str)
            .transpose()
            .map_err(json_err)?;
        let mut renditions: Vec<RenditionRecord> = keyed_entries(item, RENDITIONS, "name")?;
        // Largest first, as the SQLite store returns them; a map has no order of its own.
        renditions.sort_by(|a, b| {
            let area = |r: &RenditionRecord| u64::from(r.width) * u64::from(r.height);
            area(b).cmp(&area(a)).then_with(|| a.name.cmp(&b.name))
        });
        let mut derived: Vec<DerivedRendition> = keyed_entries(item, DERIVED, "params")?;
        derived.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.params.cmp(&b.params))
        });
        let error = match item.get(ERROR) {
            Some(AttributeValue::M(m)) => Some(ErrorInfo {
                kind: text(m, "type")?.unwrap_or_default().to_string(),
                message: text(m, "message")?.unwrap_or_default().to_string(),
            }),
            _ => None,
        };
        let tags = match item.get(TAGS) {
            Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
            Some(AttributeValue::Ss(ss)) => ss.clone(),
            _ => Vec::new(),
        };
        Ok(ImageRecord {
            derived,
            id: id.to_string(),
            owner: required(item, OWNER)?.to_string(),
            status: required(item, STATUS)?
                .parse()
                .map_err(PortError::Permanent)?,
            source,
            recipe,
            renditions,
            error,
            created_at: parse_ts(required(item, CREATED_AT)?)?,
            updated_at: parse_ts(required(item, UPDATED_AT)?)?,
            execution_id: text(item, EXECUTION_ID)?.map(str::to_string),
            tags,
            preset: text(item, PRESET)?.map(str::to_string),
            reprocessed_at: text(item, REPROCESSED_AT)?.map(parse_ts).transpose()?,
        })
    };
    parse().map_err(context)
}

/// Collects the placeholders of one expression: every attribute goes by `#name` (several of
/// ours, such as `status` and `source`, are DynamoDB reserved words), every value by `:vN`.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_string());
        placeholder
    }

    /// A placeholder for a name that is data (a rendition's name), not one of ours.
    fn data_name(&mut self, attr: &str) -> String {
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attr.to_string());
        placeholder
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), v);
        placeholder
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

fn update_expression(set: &[String], remove: &[String]) -> String {
    let mut parts = Vec::new();
    if !set.is_empty() {
        parts.push(format!("SET {}", set.join(", ")));
    }
    if !remove.is_empty() {
        parts.push(format!("REMOVE {}", remove.join(", ")));
    }
    parts.join(" ")
}

/// Whether a write failed only because its condition did not hold.
fn lost_condition<E>(e: &SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .is_some_and(|s| s.code() == Some("ConditionalCheckFailedException"))
}

/// Which index a listing reads, and so which attributes make up its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access<'a> {
    Owner(&'a str),
    Status(Status),
    /// Every owner and every status: a full table scan, for admins and small tables only.
    Scan,
}

impl Access<'_> {
    fn key_attributes(self) -> &'static [&'static str] {
        match self {
            Access::Owner(_) => &[ID, OWNER, CREATED_AT],
            Access::Status(_) => &[ID, STATUS, UPDATED_AT],
            Access::Scan => &[ID],
        }
    }

    fn key_of(self, item: &Item) -> Item {
        self.key_attributes()
            .iter()
            .filter_map(|a| item.get(*a).map(|v| (a.to_string(), v.clone())))
            .collect()
    }
}

/// The opaque cursor: base64url of the JSON of an index position (all its attributes are
/// strings).
fn encode_cursor(key: &Item) -> String {
    let map: BTreeMap<&str, &str> = key
        .iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.as_str(), v.as_str())))
        .collect();
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&map).unwrap_or_default())
}

/// Checks a cursor is a position this listing could have issued: the right attributes, the
/// same owner or status, well-formed times. Anything else is a client error, never a query
/// DynamoDB would reject or, worse, accept for another partition.
fn decode_cursor(cursor: &str, access: Access<'_>) -> Result<Item, PortError> {
    let bad = || PortError::Permanent("cursor: not a cursor this server issued".to_string());
    if cursor.len() > 4096 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let mut expected: Vec<&str> = access.key_attributes().to_vec();
    expected.sort_unstable();
    if !map.keys().map(String::as_str).eq(expected.iter().copied()) {
        return Err(bad());
    }
    let field = |name: &str| map.get(name).map(String::as_str).ok_or_else(bad);
    if field(ID)?.is_empty() {
        return Err(bad());
    }
    match access {
        Access::Owner(owner) => {
            if field(OWNER)? != owner {
                return Err(bad());
            }
            parse_ts(field(CREATED_AT)?).map_err(|_| bad())?;
        }
        Access::Status(status) => {
            if field(STATUS)? != status.as_str() {
                return Err(bad());
            }
            parse_ts(field(UPDATED_AT)?).map_err(|_| bad())?;
        }
        Access::Scan => {}
    }
    Ok(map.into_iter().map(|(k, v)| (k, s(v))).collect())
}

impl DynamoMetadata {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoMetadata {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table exactly as template.yaml declares it (on-demand, both GSIs, TTL on
    /// `expiresAt`), for tests and emulators; a deployed stack gets it from the template.
    pub async fn create_table(client: &Client, table: &str) -> Result<(), PortError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let index = |name: &str, hash: &str, range: &str| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(hash, KeyType::Hash)?)
                .key_schema(key(range, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
        };
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            PortError::Permanent(format!("create table {table}: {e}"))
        };
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(
                [ID, OWNER, CREATED_AT, STATUS, UPDATED_AT]
                    .iter()
                    .map(|a| attr(a))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(build)?,
            ))
            .key_schema(key(ID, KeyType::Hash).map_err(build)?)
            .global_secondary_indexes(index(BY_OWNER, OWNER, CREATED_AT).map_err(build)?)
            .global_secondary_indexes(index(BY_STATUS, STATUS, UPDATED_AT).map_err(build)?)
            .send()
            .await
            .map_err(|e| port_error(&format!("dynamodb create table {table}"), e))?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(EXPIRES_AT)
                    .enabled(true)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await
            .map_err(|e| port_error(&format!("dynamodb update ttl {table}"), e))?;
        Ok(())
    }

    fn what(&self, op: &str, id: &str) -> String {
        format!("dynamodb {op} {}/{id}", self.table)
    }

    fn key(id: &str) -> Item {
        HashMap::from([(ID.to_string(), s(id))])
    }

    async fn read(&self, id: &str) -> Result<Option<ImageRecord>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error(&self.what("get", id), e))?;
        out.item().map(from_item).transpose()
    }

    /// Writes `item` unless the id exists; `Ok(false)` if it did.
    async fn insert(&self, item: Item, id: &str) -> Result<bool, PortError> {
        let mut x = Expr::default();
        let condition = format!("attribute_not_exists({})", x.name(ID));
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names(x.names())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if lost_condition(&e) => Ok(false),
            Err(e) => Err(port_error(&self.what("put", id), e)),
        }
    }

    /// Runs an update; `Ok(None)` if its condition did not hold, else the new item.
    async fn update(
        &self,
        id: &str,
        x: &Expr,
        update: String,
        condition: String,
    ) -> Result<Option<Item>, PortError> {
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(x.names())
            .set_expression_attribute_values(x.values())
            .return_values(ReturnValue::AllNew)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
            Err(e) if lost_condition(&e) => Ok(None),
            Err(e) => Err(port_error(&self.what("update", id), e)),
        }
    }

    /// Explains a failed "must be PROCESSING" condition the way the SQLite store reports it.
    async fn not_processing(&self, id: &str) -> PortError {
        match self.read(id).await {
            Ok(None) => PortError::NotFound(format!("image {id}")),
            Ok(Some(r)) => PortError::Permanent(format!("{id} is {}, not PROCESSING", r.status)),
            Err(e) => e,
        }
    }

    /// `begin` or `claim`, as `decide` rules.
    async fn start(
        &self,
        record: &ImageRecord,
        decide: fn(Option<&ImageRecord>, &ImageRecord) -> BeginDecision,
    ) -> Result<Begin, PortError> {
        let id = record.id.as_str();
        for _ in 0..MAX_RACES {
            let existing = self.read(id).await?;
            match decide(existing.as_ref(), record) {
                BeginDecision::Insert => {
                    if self.insert(to_item(record, None)?, id).await? {
                        return Ok(Begin::Started(record.clone()));
                    }
                }
                BeginDecision::Claim => {
                    let mut x = Expr::default();
                    let mut set = vec![
                        format!(
                            "{} = {}",
                            x.name(STATUS),
                            x.value(s(Status::Processing.as_str()))
                        ),
                        format!(
                            "{} = {}",
                            x.name(SOURCE),
                            x.value(source_av(&record.source)?)
                        ),
                        format!(
                            "{} = {}",
                            x.name(UPDATED_AT),
                            x.value(s(ts(&record.updated_at)))
                        ),
                    ];
                    let mut remove = vec![x.name(EXPIRES_AT)];
                    match recipe_av(record)? {
                        Some(v) => set.push(format!("{} = {}", x.name(RECIPE), x.value(v))),
                        None => remove.push(x.name(RECIPE)),
                    }
                    match &record.execution_id {
                        Some(e) => {
                            set.push(format!("{} = {}", x.name(EXECUTION_ID), x.value(s(e))))
                        }
                        None => remove.push(x.name(EXECUTION_ID)),
                    }
                    match &record.preset {
                        Some(p) => set.push(format!("{} = {}", x.name(PRESET), x.value(s(p)))),
                        None => remove.push(x.name(PRESET)),
                    }
                    // An upload's own tags win; the API's, given when the upload was expected,
                    // stay otherwise.
                    if !record.tags.is_empty() {
                        set.push(format!(
                            "{} = {}",
                            x.name(TAGS),
                            x.value(tags_av(&record.tags))
                        ));
                    }
                    let condition = format!(
                        "{} = {}",
                        x.name(STATUS),
                        x.value(s(Status::AwaitingUpload.as_str()))
                    );
                    let update = update_expression(&set, &remove);
                    if let Some(item) = self.update(id, &x, update, condition).await? {
                        return Ok(Begin::Started(from_item(&item)?));
                    }
                }
                BeginDecision::Retry => {
                    return Ok(Begin::Started(existing.unwrap_or_else(|| record.clone())));
                }
                BeginDecision::Duplicate => {
                    return Ok(Begin::Duplicate(existing.unwrap_or_else(|| record.clone())));
                }
                BeginDecision::Gone => return Ok(Begin::Gone),
            }
        }
        Err(self.raced("begin", id))
    }

    fn raced(&self, op: &str, id: &str) -> PortError {
        PortError::Transient(format!(
            "{}: lost {MAX_RACES} races with concurrent writers",
            self.what(op, id)
        ))
    }
}

#[async_trait]
impl MetadataStore for DynamoMetadata {
    async fn create_awaiting(
        &self,
        record: &ImageRecord,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let mut r = record.clone();
        r.status = Status::AwaitingUpload;
        self.insert(to_item(&r, Some(expires_at.timestamp()))?, &r.id)
            .await
    }

    async fn begin(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        self.start(record, rules::begin).await
    }

    async fn claim(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        self.start(record, rules::claim).await
    }

    async fn get(&self, id: &str) -> Result<Option<ImageRecord>, PortError> {
        self.read(id).await
    }

    async fn put_rendition(&self, id: &str, rendition: &RenditionRecord) -> Result<(), PortError> {
        let mut x = Expr::default();
        let set = vec![format!(
            "{}.{} = {}",
            x.name(RENDITIONS),
            x.data_name(&rendition.name),
            x.value(rendition_av(rendition)?)
        )];
        let condition = format!(
            "attribute_exists({}) AND {} = {}",
            x.name(ID),
            x.name(STATUS),
            x.value(s(Status::Processing.as_str()))
        );
        match self
            .update(id, &x, update_expression(&set, &[]), condition)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(self.not_processing(id).await),
        }
    }

    async fn complete(&self, id: &str, sha256: Option<&str>) -> Result<(), PortError> {
        let mut x = Expr::default();
        let mut set = vec![
            format!(
                "{} = {}",
                x.name(STATUS),
                x.value(s(Status::Complete.as_str()))
            ),
            format!("{} = {}", x.name(UPDATED_AT), x.value(s(ts(&Utc::now())))),
        ];
        if let Some(sha) = sha256 {
            set.push(format!(
                "{}.{} = {}",
                x.name(SOURCE),
                x.name("sha256"),
                x.value(s(sha))
            ));
        }
        // COMPLETE again is a retried Notify: accepted, as by the other stores.
        let condition = format!(
            "attribute_exists({}) AND {} IN ({}, {})",
            x.name(ID),
            x.name(STATUS),
            x.value(s(Status::Processing.as_str())),
            x.value(s(Status::Complete.as_str()))
        );
        match self
            .update(id, &x, update_expression(&set, &[]), condition)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(self.not_processing(id).await),
        }
    }

    async fn fail(
        &self,
        id: &str,
        status: Status,
        error: &ErrorInfo,
        fallback: &ImageRecord,
        if_absent: IfAbsent,
    ) -> Result<(), PortError> {
        let execution_id = fallback.execution_id.as_deref();
        for _ in 0..MAX_RACES {
            match self.read(id).await? {
                None if if_absent == IfAbsent::Skip => return Ok(()),
                None => {
                    let mut r = fallback.clone();
                    r.id = id.to_string();
                    r.status = status;
                    r.error = Some(error.clone());
                    if self.insert(to_item(&r, None)?, id).await? {
                        return Ok(());
                    }
                }
                Some(existing) if rules::may_fail(&existing, execution_id) => {
                    let mut x = Expr::default();
                    let mut set = vec![
                        format!("{} = {}", x.name(STATUS), x.value(s(status.as_str()))),
                        format!("{} = {}", x.name(ERROR), x.value(error_av(error))),
                        format!("{} = {}", x.name(UPDATED_AT), x.value(s(ts(&Utc::now())))),
                    ];
                    if let Some(e) = execution_id {
                        let name = x.name(EXECUTION_ID);
                        set.push(format!("{name} = if_not_exists({name}, {})", x.value(s(e))));
                    }
                    let remove = vec![x.name(EXPIRES_AT), x.name(RENDITIONS)];
                    // Only if the record is still as read, so the decision still holds.
                    let owner_matches = match &existing.execution_id {
                        Some(e) => format!("{} = {}", x.name(EXECUTION_ID), x.value(s(e))),
                        None => format!("attribute_not_exists({})", x.name(EXECUTION_ID)),
                    };
                    let condition = format!(
                        "{} = {} AND {owner_matches}",
                        x.name(STATUS),
                        x.value(s(existing.status.as_str()))
                    );
                    let update = update_expression(&set, &remove);
                    if self.update(id, &x, update, condition).await?.is_some() {
                        return Ok(());
                    }
                }
                Some(_) => return Ok(()),
            }
        }
        Err(self.raced("fail", id))
    }

    /// Two conditional writes, as DynamoDB cannot create a map and set an entry of it in one
    /// expression: an entry into the `derived` map when the record has one, else the map
    /// with this entry. Each also requires the record COMPLETE; a record that has neither
    /// shape afterwards is gone or not COMPLETE.
    async fn put_derived(
        &self,
        id: &str,
        d: &DerivedRendition,
        max: usize,
    ) -> Result<PutDerived, PortError> {
        for _ in 0..MAX_RACES {
            let Some(record) = self.read(id).await? else {
                return Ok(PutDerived::Gone);
            };
            if record.status != Status::Complete {
                return Ok(PutDerived::Gone);
            }
            if record.derived.iter().any(|x| x.params == d.params) {
                return Ok(PutDerived::Listed);
            }
            if record.derived.len() >= max {
                return Ok(PutDerived::Full);
            }
            // The count read above must still hold when the entry goes in: the map's size is
            // in the condition, so concurrent renders cannot pass the limit together.
            let mut x = Expr::default();
            let map = x.name(DERIVED);
            let complete = format!(
                "attribute_exists({}) AND {} = {}",
                x.name(ID),
                x.name(STATUS),
                x.value(s(Status::Complete.as_str()))
            );
            let (set, condition) = if record.derived.is_empty() {
                (
                    format!(
                        "{map} = {}",
                        x.value(AttributeValue::M(HashMap::from([(
                            d.params.clone(),
                            derived_av(d)?
                        )])))
                    ),
                    format!("{complete} AND attribute_not_exists({map})"),
                )
            } else {
                let entry = x.data_name(&d.params);
                (
                    format!("{map}.{entry} = {}", x.value(derived_av(d)?)),
                    format!(
                        "{complete} AND size({map}) = {} AND attribute_not_exists({map}.{entry})",
                        x.value(n(record.derived.len()))
                    ),
                )
            };
            if self
                .update(id, &x, update_expression(&[set], &[]), condition)
                .await?
                .is_some()
            {
                return Ok(PutDerived::Listed);
            }
            // Another render changed the map (or the record) meanwhile: read again.
        }
        Err(PortError::Transient(format!(
            "image {id}: the derived renditions changed {MAX_RACES} times while one was added"
        )))
    }

    async fn set_focal_point(
        &self,
        id: &str,
        point: Option<imaging::FocalPoint>,
    ) -> Result<bool, PortError> {
        let mut x = Expr::default();
        let path = format!("{}.{}", x.name(SOURCE), x.name("focalPoint"));
        let expression = match point {
            Some(p) => {
                let value = json_to_av(&serde_json::to_value(p).map_err(json_err)?);
                update_expression(&[format!("{path} = {}", x.value(value))], &[])
            }
            None => update_expression(&[], &[path]),
        };
        let condition = format!("attribute_exists({})", x.name(ID));
        Ok(self.update(id, &x, expression, condition).await?.is_some())
    }

    async fn hit_derived(&self, id: &str, params: &str) -> Result<(), PortError> {
        let mut x = Expr::default();
        let map = x.name(DERIVED);
        let entry = x.data_name(params);
        let hits = x.name("hits");
        let set = vec![format!(
            "{map}.{entry}.{hits} = if_not_exists({map}.{entry}.{hits}, {zero}) + {one}",
            zero = x.value(n(0)),
            one = x.value(n(1))
        )];
        let condition = format!("attribute_exists({map}.{entry})");
        // A failed condition: the entry or the record is gone, and there is nothing to count.
        self.update(id, &x, update_expression(&set, &[]), condition)
            .await
            .map(|_| ())
    }

    /// Newest first. With an owner: the `byOwner` index by `createdAt`, status and tag
    /// filtered. Without (admins): the `byStatus` index by `updatedAt` when a status is
    /// given, else a scan, sorted newest first within each page only, fit for small tables.
    async fn list(&self, query: &ListQuery) -> Result<Page, PortError> {
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            l => l.min(MAX_LIMIT),
        };
        let access = match (&query.owner, query.status) {
            (Some(owner), _) => Access::Owner(owner),
            (None, Some(status)) => Access::Status(status),
            (None, None) => Access::Scan,
        };
        let mut start = query
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, access))
            .transpose()?;
        // `until` is exclusive, as in the other stores; one microsecond before it is the
        // inclusive bound BETWEEN needs, exact with these fixed-precision timestamps.
        if let (Some(since), Some(until)) = (query.since, query.until)
            && until <= since
        {
            return Ok(Page {
                items: Vec::new(),
                cursor: None,
            });
        }
        let since = query.since.map(|t| ts(&t));
        let until_incl = query.until.map(|t| ts(&(t - Duration::microseconds(1))));

        let mut x = Expr::default();
        let mut filters = Vec::new();
        let key_condition = match access {
            Access::Owner(owner) => {
                let mut kc = format!("{} = {}", x.name(OWNER), x.value(s(owner)));
                // Only named when used: DynamoDB refuses unused placeholders.
                match (&since, &until_incl) {
                    (Some(a), Some(b)) => kc.push_str(&format!(
                        " AND {} BETWEEN {} AND {}",
                        x.name(CREATED_AT),
                        x.value(s(a)),
                        x.value(s(b))
                    )),
                    (Some(a), None) => {
                        kc.push_str(&format!(" AND {} >= {}", x.name(CREATED_AT), x.value(s(a))))
                    }
                    (None, Some(b)) => {
                        kc.push_str(&format!(" AND {} <= {}", x.name(CREATED_AT), x.value(s(b))))
                    }
                    (None, None) => {}
                }
                if let Some(status) = query.status {
                    filters.push(format!(
                        "{} = {}",
                        x.name(STATUS),
                        x.value(s(status.as_str()))
                    ));
                }
                Some((BY_OWNER, kc))
            }
            Access::Status(status) => Some((
                BY_STATUS,
                format!("{} = {}", x.name(STATUS), x.value(s(status.as_str()))),
            )),
            Access::Scan => None,
        };
        if !matches!(access, Access::Owner(_)) {
            if let Some(a) = &since {
                filters.push(format!("{} >= {}", x.name(CREATED_AT), x.value(s(a))));
            }
            if let Some(b) = &until_incl {
                filters.push(format!("{} <= {}", x.name(CREATED_AT), x.value(s(b))));
            }
        }
        if let Some(tag) = &query.tag {
            filters.push(format!("contains({}, {})", x.name(TAGS), x.value(s(tag))));
        }
        let filter = (!filters.is_empty()).then(|| filters.join(" AND "));

        // Reads one more than a page so the cursor is only given when more exists.
        let mut found: Vec<(ImageRecord, Item)> = Vec::new();
        let mut cursor = None;
        for round in 1..=MAX_ROUND_TRIPS {
            let want = limit + 1 - found.len();
            let read = if filter.is_some() {
                want.max(FILTERED_READ)
            } else {
                want
            };
            let read = i32::try_from(read).unwrap_or(i32::MAX);
            let (items, last) = match &key_condition {
                Some((index, kc)) => {
                    let out = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .index_name(*index)
                        .key_condition_expression(kc)
                        .set_filter_expression(filter.clone())
                        .set_expression_attribute_names(x.names())
                        .set_expression_attribute_values(x.values())
                        .scan_index_forward(false)
                        .limit(read)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| port_error(&self.what("query", index), e))?;
                    (out.items, out.last_evaluated_key)
                }
                None => {
                    let out = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .set_filter_expression(filter.clone())
                        .set_expression_attribute_names(x.names())
                        .set_expression_attribute_values(x.values())
                        .limit(read)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| port_error(&self.what("scan", "*"), e))?;
                    (out.items, out.last_evaluated_key)
                }
            };
            for item in items.unwrap_or_default() {
                found.push((from_item(&item)?, access.key_of(&item)));
            }
            if found.len() > limit {
                found.truncate(limit);
                cursor = found.last().map(|(_, key)| encode_cursor(key));
                break;
            }
            match last {
                Some(key) if !key.is_empty() => {
                    if round == MAX_ROUND_TRIPS {
                        cursor = Some(encode_cursor(&key));
                    }
                    start = Some(key);
                }
                _ => break,
            }
        }
        let mut items: Vec<ImageRecord> = found.into_iter().map(|(r, _)| r).collect();
        if access == Access::Scan {
            items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        }
        Ok(Page { items, cursor })
    }

    async fn mark_announced(&self, id: &str, execution_id: &str) -> Result<bool, PortError> {
        let mut x = Expr::default();
        let set = vec![format!(
            "{} = {}",
            x.name(ANNOUNCED_BY),
            x.value(s(execution_id))
        )];
        let condition = format!(
            "attribute_exists({}) AND (attribute_not_exists({by}) OR {by} <> {})",
            x.name(ID),
            x.value(s(execution_id)),
            by = x.name(ANNOUNCED_BY),
        );
        if self
            .update(id, &x, update_expression(&set, &[]), condition)
            .await?
            .is_some()
        {
            return Ok(true);
        }
        // The condition failed: either there is no record, or this execution's mark is there.
        match self.read(id).await? {
            None => Err(PortError::NotFound(format!("image {id}"))),
            Some(_) => Ok(false),
        }
    }

    async fn begin_reprocess(&self, id: &str, execution_id: &str) -> Result<Begin, PortError> {
        let now = Utc::now();
        let mut x = Expr::default();
        let hold = AttributeValue::M(HashMap::from([
            ("executionId".to_string(), s(execution_id)),
            ("since".to_string(), s(ts(&now))),
        ]));
        let held = x.name(REPROCESSING);
        let set = vec![format!("{held} = {}", x.value(hold))];
        // Fixed-width UTC text: string order is time order.
        let condition = format!(
            "attribute_exists({}) AND {} = {} AND (attribute_not_exists({held})              OR {held}.{by} = {} OR {held}.{since} < {})",
            x.name(ID),
            x.name(STATUS),
            x.value(s(Status::Complete.as_str())),
            x.value(s(execution_id)),
            x.value(s(ts(&(now - pipeline::reprocess::LEASE)))),
            by = x.name("executionId"),
            since = x.name("since"),
        );
        if let Some(item) = self
            .update(id, &x, update_expression(&set, &[]), condition)
            .await?
        {
            return Ok(Begin::Started(from_item(&item)?));
        }
        Ok(match self.read(id).await? {
            None => Begin::Gone,
            Some(r) => Begin::Duplicate(r),
        })
    }

    async fn end_reprocess(
        &self,
        id: &str,
        execution_id: &str,
        done: Option<&Rerendered>,
    ) -> Result<bool, PortError> {
        let mut x = Expr::default();
        let held = x.name(REPROCESSING);
        let mut set = Vec::new();
        if let Some(d) = done {
            let renditions = d
                .renditions
                .iter()
                .map(|r| Ok((r.name.clone(), rendition_av(r)?)))
                .collect::<Result<HashMap<_, _>, PortError>>()?;
            let recipe = serde_json::to_string(&d.recipe).map_err(json_err)?;
            set = vec![
                format!("{} = {}", x.name(PRESET), x.value(s(&d.preset))),
                format!("{} = {}", x.name(RECIPE), x.value(s(recipe))),
                format!(
                    "{} = {}",
                    x.name(RENDITIONS),
                    x.value(AttributeValue::M(renditions))
                ),
                format!("{} = {}", x.name(REPROCESSED_AT), x.value(s(ts(&d.at)))),
                format!("{} = {}", x.name(UPDATED_AT), x.value(s(ts(&d.at)))),
            ];
        }
        let condition = format!(
            "{held}.{} = {}",
            x.name("executionId"),
            x.value(s(execution_id))
        );
        let remove = vec![held.clone()];
        if self
            .update(id, &x, update_expression(&set, &remove), condition)
            .await?
            .is_some()
        {
            return Ok(true);
        }
        Ok(match self.read(id).await? {
            Some(r) => done.is_some_and(|d| d.is_in(&r)),
            None => false,
        })
    }

    async fn unmark_announced(&self, id: &str, execution_id: &str) -> Result<(), PortError> {
        let mut x = Expr::default();
        let remove = vec![x.name(ANNOUNCED_BY)];
        let condition = format!("{} = {}", x.name(ANNOUNCED_BY), x.value(s(execution_id)));
        // A lost condition means the mark is another execution's, or gone: nothing to undo.
        self.update(id, &x, update_expression(&[], &remove), condition)
            .await?;
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<bool, PortError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| port_error(&self.what("delete", id), e))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }

    /// A read of an id no image can have (ids are ULIDs or hashes): a data-plane round trip
    /// with the permission every reader has already, where DescribeTable would need another
    /// and is throttled far sooner.
    async fn check(&self) -> Result<(), PortError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(HEALTH_PROBE_ID)))
            .send()
            .await
            .map_err(|e| port_error(&self.what("get", HEALTH_PROBE_ID), e))?;
        Ok(())
    }
}

const HEALTH_PROBE_ID: &str = "~health";

#[cfg(test)]
mod tests {
    use super::*;
    use imaging::Format;

    fn record() -> ImageRecord {
        let t = DateTime::parse_from_rfc3339("2024-05-06T07:08:09.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        ImageRecord {
            derived: Vec::new(),
            id: "img1".into(),
            owner: "u1".into(),
            status: Status::Processing,
            source: SourceInfo {
                focal_point: None,
                alpha: None,
                key: "uploads/u1/img1/a.jpg".into(),
                etag: Some("\"e\"".into()),
                bytes: 123,
                format: Some(Format::Jpeg),
                width: Some(640),
                height: Some(480),
                sha256: None,
                color_profile: None,
                original: None,
            },
            recipe: Some(pipeline::Presets::builtin().get("web").unwrap().clone()),
            // Largest first, the order reads return.
            renditions: vec![
                RenditionRecord {
                    name: "large".into(),
                    key: "renditions/u1/img1/large.jpg".into(),
                    format: Format::Jpeg,
                    width: 640,
                    height: 480,
                    bytes: 9000,
                    ms: 7,
                    quality: None,
                    score: None,
                    placeholder: None,
                    dominant_color: None,
                },
                RenditionRecord {
                    name: "thumb".into(),
                    key: "renditions/u1/img1/thumb.webp".into(),
                    format: Format::Webp,
                    width: 256,
                    height: 192,
                    bytes: 1000,
                    ms: 3,
                    quality: None,
                    score: None,
                    placeholder: None,
                    dominant_color: None,
                },
            ],
            error: Some(ErrorInfo {
                kind: "InvalidImage".into(),
                message: "truncated".into(),
            }),
            created_at: t,
            updated_at: t,
            execution_id: Some("exec-1".into()),
            tags: vec!["a".into(), "b".into()],
            preset: None,
            reprocessed_at: None,
        }
    }

    #[test]
    fn records_round_trip_through_items() {
        let r = record();
        let item = to_item(&r, Some(42)).unwrap();
        assert_eq!(item[CREATED_AT], s("2024-05-06T07:08:09.123456Z"));
        assert_eq!(item[EXPIRES_AT], n(42));
        assert!(matches!(&item[SOURCE], AttributeValue::M(m) if m["bytes"] == n(123)));
        assert!(
            matches!(&item[RENDITIONS], AttributeValue::M(m) if !m["thumb"].as_m().unwrap().contains_key("name"))
        );
        assert_eq!(from_item(&item).unwrap(), r);
    }

    #[test]
    fn cursors_must_match_the_listing() {
        let key = HashMap::from([
            (ID.to_string(), s("img1")),
            (OWNER.to_string(), s("u1")),
            (CREATED_AT.to_string(), s("2024-05-06T07:08:09.123456Z")),
        ]);
        let c = encode_cursor(&key);
        assert_eq!(decode_cursor(&c, Access::Owner("u1")).unwrap(), key);
        for (cursor, access) in [
            (c.as_str(), Access::Owner("u2")),
            (c.as_str(), Access::Status(Status::Complete)),
            (c.as_str(), Access::Scan),
            ("not base64!", Access::Owner("u1")),
            ("e30", Access::Owner("u1")),
        ] {
            let e = decode_cursor(cursor, access).unwrap_err();
            assert!(e.to_string().contains("cursor"), "{e}");
        }
    }
}
