//! Outcomes the embedded mode records outside the steps: a job whose renditions the command
//! could not deliver, and jobs whose process stopped before they finished. Neither has an
//! execution left to record it, so these writes are unconditional on the execution (unlike
//! [`MetadataStore::fail`](pipeline::ports::MetadataStore::fail)).

use chrono::Utc;
use pipeline::PortError;
use pipeline::model::{ErrorInfo, ImageRecord, OriginalFile, SourceInfo, Status};
use rusqlite::{Connection, TransactionBehavior, params};

use super::{SqliteMetadata, db_err, get, insert, json_err, lock, ts};

/// Sets `id` FAILED with `error` and drops its rendition rows, in one transaction with the
/// read of what it was.
fn fail_row(conn: &Connection, id: &str, error: &ErrorInfo) -> Result<(), PortError> {
    conn.execute("DELETE FROM renditions WHERE image_id = ?1", [id])
        .map_err(db_err)?;
    conn.execute(
        "UPDATE images SET status = ?2, error_type = ?3, error_message = ?4, updated_at = ?5,
             expires_at = NULL
         WHERE id = ?1",
        params![
            id,
            Status::Failed.as_str(),
            error.kind,
            error.message,
            ts(&Utc::now())
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

fn set_original_in(
    conn: &mut Connection,
    id: &str,
    original: OriginalFile,
) -> Result<bool, PortError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let source: Option<String> = tx
        .query_row("SELECT source FROM images WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(db_err)?;
    let Some(source) = source else {
        return Ok(false);
    };
    let mut source: SourceInfo = serde_json::from_str(&source).map_err(json_err)?;
    source.original = Some(original);
    tx.execute(
        "UPDATE images SET source = ?2 WHERE id = ?1",
        params![id, serde_json::to_string(&source).map_err(json_err)?],
    )
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(true)
}

impl SqliteMetadata {
    /// Records that the job of `id` failed with `error`, whatever status it reached: COMPLETE
    /// too, when the command could not write its renditions where asked. Without a record,
    /// `fallback` is recorded FAILED (a job stopped before Validate made one), if given.
    /// Returns the record as it was, so the caller can remove the objects it listed.
    pub async fn force_fail(
        &self,
        id: &str,
        error: &ErrorInfo,
        fallback: Option<ImageRecord>,
    ) -> Result<Option<ImageRecord>, PortError> {
        let id = id.to_string();
        let error = error.clone();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let before = get(&tx, &id)?;
            match (&before, fallback) {
                (Some(_), _) => fail_row(&tx, &id, &error)?,
                (None, Some(mut r)) => {
                    r.id = id.clone();
                    r.status = Status::Failed;
                    r.error = Some(error);
                    r.renditions.clear();
                    insert(&tx, &r, None)?;
                }
                (None, None) => {}
            }
            tx.commit().map_err(db_err)?;
            Ok(before)
        })
        .await
    }

    /// Notes on the record of `id` that its original is the user's file `original`, kept by
    /// reference. `Ok(false)` without a record.
    pub async fn set_original(&self, id: &str, original: &OriginalFile) -> Result<bool, PortError> {
        let id = id.to_string();
        let original = original.clone();
        self.with(move |conn| set_original_in(conn, &id, original))
            .await
    }

    /// [`SqliteMetadata::set_original`], blocking: while the data directory is opened.
    pub fn set_original_now(&self, id: &str, original: &OriginalFile) -> Result<bool, PortError> {
        set_original_in(&mut lock(&self.conn), id, original.clone())
    }

    /// Marks every PROCESSING record FAILED with `error` and returns them as they were. Only
    /// for when no process is running jobs on this database (the data directory's run lock
    /// says so): then nothing will ever finish them. Blocking: it runs while the data
    /// directory is opened, before any job starts.
    pub fn fail_unfinished(&self, error: &ErrorInfo) -> Result<Vec<ImageRecord>, PortError> {
        let mut conn = lock(&self.conn);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let ids: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT id FROM images WHERE status = ?1")
                .map_err(db_err)?;
            stmt.query_map([Status::Processing.as_str()], |row| row.get(0))
                .map_err(db_err)?
                .collect::<Result<_, _>>()
                .map_err(db_err)?
        };
        let mut records = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(r) = get(&tx, id)? {
                records.push(r);
            }
            fail_row(&tx, id, error)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(records)
    }
}
