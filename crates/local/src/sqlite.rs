//! The metadata table in SQLite: the same fields as the DynamoDB table, the owner+createdAt
//! and status+updatedAt indexes, and the same conditional writes (inside one IMMEDIATE
//! transaction each, so concurrent duplicates still make one record).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use pipeline::PortError;
use pipeline::memory::rules::{self, BeginDecision};
use pipeline::model::{
    DerivedRendition, ErrorInfo, ImageRecord, ListQuery, Page, RenditionRecord, SourceInfo, Status,
};
use pipeline::ports::{Begin, IfAbsent, MetadataStore, PutDerived, Rerendered};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

mod amend;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS images (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    status       TEXT NOT NULL,
    source       TEXT NOT NULL,
    recipe       TEXT,
    error_type   TEXT,
    error_message TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    execution_id TEXT,
    tags         TEXT NOT NULL DEFAULT '[]',
    expires_at   INTEGER
);
CREATE INDEX IF NOT EXISTS images_by_owner ON images (owner, created_at);
CREATE INDEX IF NOT EXISTS images_by_status ON images (status, updated_at);
CREATE TABLE IF NOT EXISTS renditions (
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    key      TEXT NOT NULL,
    format   TEXT NOT NULL,
    width    INTEGER NOT NULL,
    height   INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    ms       INTEGER NOT NULL,
    PRIMARY KEY (image_id, name)
);
-- Which execution's outcome was announced (MetadataStore::mark_announced). A table of its
-- own, so databases made before it need no migration: CREATE IF NOT EXISTS adds it.
CREATE TABLE IF NOT EXISTS announcements (
    image_id     TEXT PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    execution_id TEXT NOT NULL
);
-- Renditions made on demand (MetadataStore::put_derived): the entry as JSON, its hits apart
-- so counting one is a single UPDATE.
CREATE TABLE IF NOT EXISTS derived (
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    params   TEXT NOT NULL,
    entry    TEXT NOT NULL,
    hits     INTEGER NOT NULL DEFAULT 0,
    created  INTEGER NOT NULL,
    PRIMARY KEY (image_id, params)
);
-- The re-render holding an image (MetadataStore::begin_reprocess), and since when.
CREATE TABLE IF NOT EXISTS reprocess_holds (
    image_id     TEXT PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    execution_id TEXT NOT NULL,
    since        TEXT NOT NULL
);
";

/// Columns added to `images` since its first version, added on open to databases made
/// before them (a backup restored from then, say).
const ADDED_COLUMNS: [(&str, &str, &str); 6] = [
    ("images", "preset", "TEXT"),
    ("images", "reprocessed_at", "TEXT"),
    ("renditions", "quality", "INTEGER"),
    ("renditions", "score", "REAL"),
    ("renditions", "placeholder", "TEXT"),
    ("renditions", "dominant_color", "TEXT"),
];

pub struct SqliteMetadata {
    conn: Arc<Mutex<Connection>>,
    /// The database file as opened, for [`MetadataStore::check`] (none in memory).
    file: Option<DbFile>,
}

/// A file and its identity when opened. An open connection keeps working on a file that was
/// deleted or replaced under it, and every write then goes where no restart will find it:
/// only comparing the path with the file opened tells.
struct DbFile {
    path: std::path::PathBuf,
    id: Option<(u64, u64)>,
}

impl DbFile {
    fn id_of(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some((meta.dev(), meta.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            None
        }
    }

    fn open(path: &Path) -> Result<DbFile, PortError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| PortError::Permanent(format!("{}: {e}", path.display())))?;
        Ok(DbFile {
            path: path.to_path_buf(),
            id: Self::id_of(&meta),
        })
    }

    fn check(&self) -> Result<(), PortError> {
        let gone = |why: String| {
            PortError::Permanent(format!(
                "{}: {why}; the database in use is no longer at its path",
                self.path.display()
            ))
        };
        let meta = std::fs::metadata(&self.path).map_err(|e| gone(e.to_string()))?;
        if Self::id_of(&meta) != self.id {
            return Err(gone("replaced by another file".to_string()));
        }
        Ok(())
    }
}

fn db_err(e: rusqlite::Error) -> PortError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            PortError::Transient(format!("database busy: {e}"))
        }
        other => PortError::Permanent(format!("database: {other}")),
    }
}

fn json_err(e: serde_json::Error) -> PortError {
    PortError::Permanent(format!("stored record does not parse: {e}"))
}

/// Fixed-width UTC timestamps, so text order is time order in indexes and cursors.
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, PortError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| PortError::Permanent(format!("stored time `{s}`: {e}")))
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SqliteMetadata {
    pub fn open(path: &Path) -> Result<SqliteMetadata, PortError> {
        let conn = Connection::open(path).map_err(db_err)?;
        let mut db = Self::init(conn)?;
        // After the schema is written, so the file exists.
        db.file = Some(DbFile::open(path)?);
        Ok(db)
    }

    pub fn in_memory() -> Result<SqliteMetadata, PortError> {
        Self::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(conn: Connection) -> Result<SqliteMetadata, PortError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        add_columns(&conn)?;
        Ok(SqliteMetadata {
            conn: Arc::new(Mutex::new(conn)),
            file: None,
        })
    }

    /// Runs `f` on the connection off the async executor.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, PortError> + Send + 'static,
    ) -> Result<T, PortError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| PortError::Permanent(format!("database worker stopped: {e}")))?
    }

    /// `begin` or `claim`, as `decide` rules.
    async fn start(
        &self,
        record: &ImageRecord,
        decide: fn(Option<&ImageRecord>, &ImageRecord) -> BeginDecision,
    ) -> Result<Begin, PortError> {
        let r = record.clone();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let existing = get(&tx, &r.id)?;
            let out = match decide(existing.as_ref(), &r) {
                BeginDecision::Insert => {
                    insert(&tx, &r, None)?;
                    Begin::Started(r)
                }
                BeginDecision::Claim => {
                    let old = existing.unwrap_or_else(|| r.clone());
                    let tags = if r.tags.is_empty() {
                        old.tags.clone()
                    } else {
                        r.tags.clone()
                    };
                    tx.execute(
                        "UPDATE images SET status = ?2, source = ?3, recipe = ?4, updated_at = ?5,
                             execution_id = ?6, tags = ?7, expires_at = NULL, preset = ?8
                         WHERE id = ?1 AND status = 'AWAITING_UPLOAD'",
                        params![
                            r.id,
                            Status::Processing.as_str(),
                            serde_json::to_string(&r.source).map_err(json_err)?,
                            r.recipe
                                .as_ref()
                                .map(serde_json::to_string)
                                .transpose()
                                .map_err(json_err)?,
                            ts(&r.updated_at),
                            r.execution_id,
                            serde_json::to_string(&tags).map_err(json_err)?,
                            r.preset,
                        ],
                    )
                    .map_err(db_err)?;
                    Begin::Started(get(&tx, &r.id)?.unwrap_or(r))
                }
                BeginDecision::Retry => Begin::Started(existing.unwrap_or(r)),
                BeginDecision::Duplicate => Begin::Duplicate(existing.unwrap_or(r)),
                BeginDecision::Gone => Begin::Gone,
            };
            tx.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
    }
}

fn add_columns(conn: &Connection) -> Result<(), PortError> {
    for (table, name, kind) in ADDED_COLUMNS {
        let have: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                [table, name],
                |row| row.get(0),
            )
            .map_err(db_err)?;
        if !have {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {kind}"))
                .map_err(db_err)?;
        }
    }
    Ok(())
}

fn insert(conn: &Connection, r: &ImageRecord, expires_at: Option<i64>) -> Result<(), PortError> {
    conn.execute(
        "INSERT INTO images (id, owner, status, source, recipe, error_type, error_message,
             created_at, updated_at, execution_id, tags, expires_at, preset, reprocessed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            r.id,
            r.owner,
            r.status.as_str(),
            serde_json::to_string(&r.source).map_err(json_err)?,
            r.recipe
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(json_err)?,
            r.error.as_ref().map(|e| e.kind.clone()),
            r.error.as_ref().map(|e| e.message.clone()),
            ts(&r.created_at),
            ts(&r.updated_at),
            r.execution_id,
            serde_json::to_string(&r.tags).map_err(json_err)?,
            expires_at,
            r.preset,
            r.reprocessed_at.as_ref().map(ts),
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

fn put_rendition_row(conn: &Connection, id: &str, r: &RenditionRecord) -> Result<(), PortError> {
    let format = serde_json::to_value(r.format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    conn.execute(
        "INSERT OR REPLACE INTO renditions
             (image_id, name, key, format, width, height, bytes, ms, quality, score,
              placeholder, dominant_color)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            id,
            r.name,
            r.key,
            format,
            r.width,
            r.height,
            i64::try_from(r.bytes).unwrap_or(i64::MAX),
            i64::try_from(r.ms).unwrap_or(i64::MAX),
            r.quality,
            r.score,
            r.placeholder,
            r.dominant_color
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

/// The re-render holding `id`, and since when.
fn hold_of(conn: &Connection, id: &str) -> Result<Option<(String, DateTime<Utc>)>, PortError> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT execution_id, since FROM reprocess_holds WHERE image_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err)?;
    row.map(|(by, since)| Ok((by, parse_ts(&since)?)))
        .transpose()
}

const COLUMNS: &str = "id, owner, status, source, recipe, error_type, error_message, created_at, updated_at, execution_id, tags, preset, reprocessed_at";

fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: row.get(0)?,
        owner: row.get(1)?,
        status: row.get(2)?,
        source: row.get(3)?,
        recipe: row.get(4)?,
        error_type: row.get(5)?,
        error_message: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        execution_id: row.get(9)?,
        tags: row.get(10)?,
        preset: row.get(11)?,
        reprocessed_at: row.get(12)?,
    })
}

struct RawRecord {
    id: String,
    owner: String,
    status: String,
    source: String,
    recipe: Option<String>,
    error_type: Option<String>,
    error_message: Option<String>,
    created_at: String,
    updated_at: String,
    execution_id: Option<String>,
    tags: String,
    preset: Option<String>,
    reprocessed_at: Option<String>,
}

impl RawRecord {
    fn into_record(self, conn: &Connection) -> Result<ImageRecord, PortError> {
        let source: SourceInfo = serde_json::from_str(&self.source).map_err(json_err)?;
        let recipe = self
            .recipe
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(json_err)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, key, format, width, height, bytes, ms, quality, score, placeholder,
                        dominant_color FROM renditions
                 WHERE image_id = ?1 ORDER BY width * height DESC, name",
            )
            .map_err(db_err)?;
        let renditions = stmt
            .query_map([&self.id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, u32>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, Option<u8>>(7)?,
                    row.get::<_, Option<f64>>(8)?,
                    row.get::<_, Option<String>>(9)?,
                    row.get::<_, Option<String>>(10)?,
                ))
            })
            .map_err(db_err)?
            .map(|row| {
                let (
                    name,
                    key,
                    format,
                    width,
                    height,
                    bytes,
                    ms,
                    quality,
                    score,
                    placeholder,
                    dominant_color,
                ) = row.map_err(db_err)?;
                Ok(RenditionRecord {
                    name,
                    key,
                    format: serde_json::from_value(serde_json::Value::String(format))
                        .map_err(json_err)?,
                    width,
                    height,
                    bytes: u64::try_from(bytes).unwrap_or(0),
                    ms: u64::try_from(ms).unwrap_or(0),
                    quality,
                    score,
                    placeholder,
                    dominant_color,
                })
            })
            .collect::<Result<Vec<_>, PortError>>()?;
        let derived = derived_of(conn, &self.id)?;
        Ok(ImageRecord {
            derived,
            status: self.status.parse().map_err(PortError::Permanent)?,
            error: match (self.error_type, self.error_message) {
                (Some(kind), message) => Some(ErrorInfo {
                    kind,
                    message: message.unwrap_or_default(),
                }),
                _ => None,
            },
            created_at: parse_ts(&self.created_at)?,
            updated_at: parse_ts(&self.updated_at)?,
            tags: serde_json::from_str(&self.tags).map_err(json_err)?,
            id: self.id,
            owner: self.owner,
            source,
            recipe,
            renditions,
            execution_id: self.execution_id,
            preset: self.preset,
            reprocessed_at: self.reprocessed_at.as_deref().map(parse_ts).transpose()?,
        })
    }
}

/// The record's derived renditions, oldest first.
fn derived_of(conn: &Connection, id: &str) -> Result<Vec<DerivedRendition>, PortError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT entry, hits FROM derived WHERE image_id = ?1 ORDER BY created, params",
        )
        .map_err(db_err)?;
    stmt.query_map([id], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })
    .map_err(db_err)?
    .map(|row| {
        let (entry, hits) = row.map_err(db_err)?;
        let mut d: DerivedRendition = serde_json::from_str(&entry).map_err(json_err)?;
        d.hits = u64::try_from(hits).unwrap_or(0);
        Ok(d)
    })
    .collect()
}

fn get(conn: &Connection, id: &str) -> Result<Option<ImageRecord>, PortError> {
    let raw = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM images WHERE id = ?1"),
            [id],
            read_record,
        )
        .optional()
        .map_err(db_err)?;
    raw.map(|r| r.into_record(conn)).transpose()
}

/// Opaque page cursor: the last item's (createdAt, id), hex-encoded.
fn encode_cursor(r: &ImageRecord) -> String {
    let s = format!("{}|{}", ts(&r.created_at), r.id);
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(c: &str) -> Result<(String, String), PortError> {
    let bad = || PortError::Permanent("cursor: not a cursor this server issued".to_string());
    if !c.len().is_multiple_of(2) || c.len() > 512 {
        return Err(bad());
    }
    let bytes = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(c.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, _>>()?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (t, id) = s.split_once('|').ok_or_else(bad)?;
    parse_ts(t).map_err(|_| bad())?;
    Ok((t.to_string(), id.to_string()))
}

#[async_trait]
impl MetadataStore for SqliteMetadata {
    async fn create_awaiting(
        &self,
        record: &ImageRecord,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let mut r = record.clone();
        r.status = Status::AwaitingUpload;
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            if get(&tx, &r.id)?.is_some() {
                return Ok(false);
            }
            insert(&tx, &r, Some(expires_at.timestamp()))?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn begin(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        self.start(record, rules::begin).await
    }

    async fn claim(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        self.start(record, rules::claim).await
    }

    async fn get(&self, id: &str) -> Result<Option<ImageRecord>, PortError> {
        let id = id.to_string();
        self.with(move |conn| get(conn, &id)).await
    }

    async fn put_rendition(&self, id: &str, r: &RenditionRecord) -> Result<(), PortError> {
        let id = id.to_string();
        let r = r.clone();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1)",
                    [&id],
                    |row| row.get(0),
                )
                .map_err(db_err)?;
            if !exists {
                return Err(PortError::NotFound(id));
            }
            put_rendition_row(&tx, &id, &r)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn complete(&self, id: &str, sha256: Option<&str>) -> Result<(), PortError> {
        let id = id.to_string();
        let sha256 = sha256.map(str::to_string);
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let Some(mut record) = get(&tx, &id)? else {
                return Err(PortError::NotFound(id));
            };
            if record.status != Status::Processing && record.status != Status::Complete {
                return Err(PortError::Permanent(format!(
                    "{id} is {}, not PROCESSING",
                    record.status
                )));
            }
            if let Some(s) = sha256 {
                record.source.sha256 = Some(s);
            }
            tx.execute(
                "UPDATE images SET status = 'COMPLETE', source = ?2, updated_at = ?3 WHERE id = ?1",
                params![
                    id,
                    serde_json::to_string(&record.source).map_err(json_err)?,
                    ts(&Utc::now())
                ],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn fail(
        &self,
        id: &str,
        status: Status,
        error: &ErrorInfo,
        fallback: &ImageRecord,
        if_absent: IfAbsent,
    ) -> Result<(), PortError> {
        let id = id.to_string();
        let error = error.clone();
        let fallback = fallback.clone();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            match get(&tx, &id)? {
                None if if_absent == IfAbsent::Skip => {}
                None => {
                    let mut r = fallback;
                    r.id = id;
                    r.status = status;
                    r.error = Some(error);
                    insert(&tx, &r, None)?;
                }
                Some(existing) if rules::may_fail(&existing, fallback.execution_id.as_deref()) => {
                    tx.execute("DELETE FROM renditions WHERE image_id = ?1", [&id])
                        .map_err(db_err)?;
                    tx.execute(
                        "UPDATE images SET status = ?2, error_type = ?3, error_message = ?4,
                             updated_at = ?5, expires_at = NULL,
                             execution_id = COALESCE(execution_id, ?6)
                         WHERE id = ?1",
                        params![
                            id,
                            status.as_str(),
                            error.kind,
                            error.message,
                            ts(&Utc::now()),
                            fallback.execution_id
                        ],
                    )
                    .map_err(db_err)?;
                }
                Some(_) => {}
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, PortError> {
        let q = query.clone();
        self.with(move |conn| {
            let mut sql = format!("SELECT {COLUMNS} FROM images WHERE 1 = 1");
            let mut args: Vec<Box<dyn rusqlite::ToSql + Send>> = Vec::new();
            let mut arg = |sql: &mut String, clause: &str, v: Box<dyn rusqlite::ToSql + Send>| {
                args.push(v);
                sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
            };
            if let Some(owner) = &q.owner {
                arg(&mut sql, " AND owner = ?", Box::new(owner.clone()));
            }
            if let Some(status) = q.status {
                arg(&mut sql, " AND status = ?", Box::new(status.as_str()));
            }
            if let Some(since) = &q.since {
                arg(&mut sql, " AND created_at >= ?", Box::new(ts(since)));
            }
            if let Some(until) = &q.until {
                arg(&mut sql, " AND created_at < ?", Box::new(ts(until)));
            }
            if let Some(tag) = &q.tag {
                arg(
                    &mut sql,
                    " AND EXISTS (SELECT 1 FROM json_each(images.tags) WHERE json_each.value = ?)",
                    Box::new(tag.clone()),
                );
            }
            if let Some(cursor) = &q.cursor {
                let (t, id) = decode_cursor(cursor)?;
                arg(&mut sql, " AND (created_at < ?", Box::new(t.clone()));
                arg(&mut sql, " OR (created_at = ?", Box::new(t));
                arg(&mut sql, " AND id < ?))", Box::new(id));
            }
            let limit = if q.limit == 0 { 50 } else { q.limit.min(1000) };
            sql.push_str(&format!(
                " ORDER BY created_at DESC, id DESC LIMIT {}",
                limit + 1
            ));
            let mut stmt = conn.prepare(&sql).map_err(db_err)?;
            let params: Vec<&dyn rusqlite::ToSql> = args
                .iter()
                .map(|a| a.as_ref() as &dyn rusqlite::ToSql)
                .collect();
            let raws = stmt
                .query_map(params.as_slice(), read_record)
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            let mut items = raws
                .into_iter()
                .map(|r| r.into_record(conn))
                .collect::<Result<Vec<_>, _>>()?;
            let cursor = if items.len() > limit {
                items.truncate(limit);
                items.last().map(encode_cursor)
            } else {
                None
            };
            Ok(Page { items, cursor })
        })
        .await
    }

    async fn begin_reprocess(&self, id: &str, execution_id: &str) -> Result<Begin, PortError> {
        let id = id.to_string();
        let execution_id = execution_id.to_string();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let existing = get(&tx, &id)?;
            let holder = hold_of(&tx, &id)?;
            let now = Utc::now();
            let held = holder.as_ref().map(|(by, since)| (by.as_str(), *since));
            let out = match (
                rules::begin_reprocess(existing.as_ref(), held, &execution_id, now),
                existing,
            ) {
                // A retry renews the hold, as the other stores do.
                (BeginDecision::Claim | BeginDecision::Retry | BeginDecision::Insert, Some(r)) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO reprocess_holds (image_id, execution_id, since)
                         VALUES (?1, ?2, ?3)",
                        params![id, execution_id, ts(&now)],
                    )
                    .map_err(db_err)?;
                    Begin::Started(r)
                }
                (BeginDecision::Duplicate, Some(r)) => Begin::Duplicate(r),
                (_, _) => Begin::Gone,
            };
            tx.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
    }

    async fn end_reprocess(
        &self,
        id: &str,
        execution_id: &str,
        done: Option<&Rerendered>,
    ) -> Result<bool, PortError> {
        let id = id.to_string();
        let execution_id = execution_id.to_string();
        let done = done.cloned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let ours = hold_of(&tx, &id)?.is_some_and(|(by, _)| by == execution_id);
            let Some(record) = get(&tx, &id)? else {
                return Ok(false);
            };
            if !ours {
                return Ok(done.is_some_and(|d| d.is_in(&record)));
            }
            tx.execute("DELETE FROM reprocess_holds WHERE image_id = ?1", [&id])
                .map_err(db_err)?;
            if let Some(d) = done {
                tx.execute(
                    "UPDATE images SET preset = ?2, recipe = ?3, reprocessed_at = ?4,
                         updated_at = ?4 WHERE id = ?1",
                    params![
                        id,
                        d.preset,
                        serde_json::to_string(&d.recipe).map_err(json_err)?,
                        ts(&d.at)
                    ],
                )
                .map_err(db_err)?;
                tx.execute("DELETE FROM renditions WHERE image_id = ?1", [&id])
                    .map_err(db_err)?;
                for r in &d.renditions {
                    put_rendition_row(&tx, &id, r)?;
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn mark_announced(&self, id: &str, execution_id: &str) -> Result<bool, PortError> {
        let id = id.to_string();
        let execution_id = execution_id.to_string();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1)",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            if !exists {
                return Err(PortError::NotFound(id));
            }
            let by: Option<String> = tx
                .query_row(
                    "SELECT execution_id FROM announcements WHERE image_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if by.as_deref() == Some(execution_id.as_str()) {
                return Ok(false);
            }
            tx.execute(
                "INSERT OR REPLACE INTO announcements (image_id, execution_id) VALUES (?1, ?2)",
                params![id, execution_id],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn unmark_announced(&self, id: &str, execution_id: &str) -> Result<(), PortError> {
        let id = id.to_string();
        let execution_id = execution_id.to_string();
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM announcements WHERE image_id = ?1 AND execution_id = ?2",
                params![id, execution_id],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn put_derived(
        &self,
        id: &str,
        d: &DerivedRendition,
        max: usize,
    ) -> Result<PutDerived, PortError> {
        let id = id.to_string();
        let d = d.clone();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let entry = serde_json::to_string(&d).map_err(json_err)?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let complete: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1 AND status = ?2)",
                    params![id, Status::Complete.as_str()],
                    |row| row.get(0),
                )
                .map_err(db_err)?;
            if !complete {
                return Ok(PutDerived::Gone);
            }
            let (listed, count): (bool, i64) = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM derived WHERE image_id = ?1 AND params = ?2),
                            (SELECT count(*) FROM derived WHERE image_id = ?1)",
                    params![id, d.params],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(db_err)?;
            if listed {
                return Ok(PutDerived::Listed);
            }
            if count >= max {
                return Ok(PutDerived::Full);
            }
            tx.execute(
                "INSERT INTO derived (image_id, params, entry, hits, created)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    id,
                    d.params,
                    entry,
                    i64::try_from(d.hits).unwrap_or(i64::MAX),
                    d.created_at.timestamp_micros()
                ],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(PutDerived::Listed)
        })
        .await
    }

    async fn set_focal_point(
        &self,
        id: &str,
        point: Option<imaging::FocalPoint>,
    ) -> Result<bool, PortError> {
        let id = id.to_string();
        self.with(move |conn| {
            // The source is JSON text: read, change, write, in one transaction.
            let tx = conn.transaction().map_err(db_err)?;
            let source: Option<String> = tx
                .query_row("SELECT source FROM images WHERE id = ?1", [&id], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(db_err)?;
            let Some(source) = source else {
                return Ok(false);
            };
            let mut source: SourceInfo = serde_json::from_str(&source).map_err(json_err)?;
            source.focal_point = point;
            let text = serde_json::to_string(&source).map_err(json_err)?;
            tx.execute(
                "UPDATE images SET source = ?2 WHERE id = ?1",
                params![id, text],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn hit_derived(&self, id: &str, params: &str) -> Result<(), PortError> {
        let (id, params) = (id.to_string(), params.to_string());
        self.with(move |conn| {
            conn.execute(
                "UPDATE derived SET hits = hits + 1 WHERE image_id = ?1 AND params = ?2",
                [&id, &params],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<bool, PortError> {
        let id = id.to_string();
        self.with(move |conn| {
            let n = conn
                .execute("DELETE FROM images WHERE id = ?1", [&id])
                .map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    /// The file is still the one opened ([`DbFile`]), and a query reads the table rather
    /// than `SELECT 1` (which SQLite answers without the database): a locked database or a
    /// missing table fails here.
    async fn check(&self) -> Result<(), PortError> {
        if let Some(file) = &self.file {
            file.check()?;
        }
        self.with(|conn| {
            conn.query_row(
                "SELECT count(*) FROM (SELECT 1 FROM images LIMIT 1)",
                [],
                |_| Ok(()),
            )
            .map_err(db_err)
        })
        .await
    }
}
