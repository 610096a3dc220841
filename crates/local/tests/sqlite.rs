//! The SQLite metadata store's re-render holds (MetadataStore::begin_reprocess and
//! end_reprocess) and the columns it adds to databases made before them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use imaging::Format;
use local::SqliteMetadata;
use pipeline::model::{ImageRecord, RenditionRecord, SourceInfo, Status};
use pipeline::ports::{Begin, MetadataStore, Rerendered};
use pipeline::reprocess::LEASE;
use pipeline::{Presets, Recipe};

fn rendition(name: &str, key: &str, width: u32) -> RenditionRecord {
    RenditionRecord {
        name: name.into(),
        key: key.into(),
        format: Format::Webp,
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

/// Microseconds, as the store keeps times.
fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 0, 0).unwrap()
        + Duration::minutes(minute)
        + Duration::microseconds(123_456)
}

fn processing(id: &str, execution: &str) -> ImageRecord {
    ImageRecord {
        derived: Vec::new(),
        id: id.into(),
        owner: "u1".into(),
        status: Status::Processing,
        source: SourceInfo {
            focal_point: None,
            alpha: None,
            key: format!("uploads/u1/{id}/a.jpg"),
            etag: Some("\"e\"".into()),
            bytes: 10,
            format: Some(Format::Jpeg),
            width: Some(800),
            height: Some(400),
            sha256: None,
            color_profile: None,
            original: None,
        },
        recipe: Some(Presets::builtin().get("web").unwrap().clone()),
        renditions: Vec::new(),
        error: None,
        created_at: at(0),
        updated_at: at(0),
        execution_id: Some(execution.into()),
        tags: vec!["t".into()],
        preset: Some("web".into()),
        reprocessed_at: None,
    }
}

/// A COMPLETE image with two renditions, made the way the pipeline makes one.
async fn complete(db: &SqliteMetadata, id: &str) -> ImageRecord {
    assert!(matches!(
        db.begin(&processing(id, "exec-0")).await.unwrap(),
        Begin::Started(_)
    ));
    db.put_rendition(id, &rendition("large", "renditions/u1/i/large.webp", 800))
        .await
        .unwrap();
    db.put_rendition(id, &rendition("thumb", "renditions/u1/i/thumb.webp", 100))
        .await
        .unwrap();
    db.complete(id, Some("abc")).await.unwrap();
    let r = db.get(id).await.unwrap().unwrap();
    assert_eq!(r.status, Status::Complete);
    r
}

fn changed_recipe() -> Recipe {
    let mut recipe = Presets::builtin().get("web").unwrap().clone();
    recipe.renditions[0].quality = Some(pipeline::Quality::Fixed(41));
    recipe
}

/// New keys for `thumb` and a `medium` in place of `large`, largest first (the order the store
/// lists them in).
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
        at: at(60),
    }
}

fn started(b: Begin) -> bool {
    matches!(b, Begin::Started(_))
}

fn duplicate(b: Begin) -> bool {
    matches!(b, Begin::Duplicate(_))
}

#[tokio::test]
async fn sqlite_reprocess_holds_one_execution_at_a_time() {
    let db = SqliteMetadata::in_memory().unwrap();
    let before = complete(&db, "img").await;

    assert_eq!(
        db.begin_reprocess("img", "re-1").await.unwrap(),
        Begin::Started(before.clone())
    );
    assert_eq!(
        db.begin_reprocess("img", "re-2").await.unwrap(),
        Begin::Duplicate(before.clone())
    );
    // Its own retry.
    assert_eq!(
        db.begin_reprocess("img", "re-1").await.unwrap(),
        Begin::Started(before.clone())
    );
    // The record stays as it was, COMPLETE with its renditions.
    assert_eq!(db.get("img").await.unwrap().as_ref(), Some(&before));

    db.begin(&processing("busy", "exec-9")).await.unwrap();
    match db.begin_reprocess("busy", "re-1").await.unwrap() {
        Begin::Duplicate(r) => assert_eq!(r.status, Status::Processing),
        other => panic!("a PROCESSING image is not re-rendered: {other:?}"),
    }
    // The refusal held nothing: once COMPLETE, another execution takes it.
    db.complete("busy", None).await.unwrap();
    assert!(started(db.begin_reprocess("busy", "re-2").await.unwrap()));
    assert_eq!(
        db.begin_reprocess("none", "re-1").await.unwrap(),
        Begin::Gone
    );
}

#[tokio::test]
async fn sqlite_end_reprocess_swaps_renditions_only_for_the_holder() {
    let db = SqliteMetadata::in_memory().unwrap();
    let before = complete(&db, "img").await;
    assert!(started(db.begin_reprocess("img", "re-1").await.unwrap()));

    // Not the holder: nothing written, the hold stays.
    let other = rerendered("bbbbbbbbbb");
    assert!(!db.end_reprocess("img", "re-2", Some(&other)).await.unwrap());
    assert!(!db.end_reprocess("img", "re-2", None).await.unwrap());
    assert_eq!(db.get("img").await.unwrap().as_ref(), Some(&before));
    assert!(duplicate(db.begin_reprocess("img", "re-2").await.unwrap()));

    // The holder: preset, recipe and renditions at once; the old renditions gone.
    let done = rerendered("aaaaaaaaaa");
    assert!(db.end_reprocess("img", "re-1", Some(&done)).await.unwrap());
    let mut expected = before.clone();
    expected.preset = Some(done.preset.clone());
    expected.recipe = Some(done.recipe.clone());
    expected.renditions = done.renditions.clone();
    expected.reprocessed_at = Some(done.at);
    expected.updated_at = done.at;
    let after = db.get("img").await.unwrap().unwrap();
    assert_eq!(after, expected);
    assert_eq!(after.reprocessed_at, Some(after.updated_at));

    // A retry of the same call: written already.
    assert!(db.end_reprocess("img", "re-1", Some(&done)).await.unwrap());
    assert_eq!(db.get("img").await.unwrap().as_ref(), Some(&expected));
    // Another execution's different renditions, without the hold: refused.
    assert!(!db.end_reprocess("img", "re-2", Some(&other)).await.unwrap());
    assert_eq!(db.get("img").await.unwrap().as_ref(), Some(&expected));

    // Ending without a result lets go and writes nothing.
    assert!(started(db.begin_reprocess("img", "re-2").await.unwrap()));
    assert!(db.end_reprocess("img", "re-2", None).await.unwrap());
    assert_eq!(db.get("img").await.unwrap().as_ref(), Some(&expected));
    assert!(started(db.begin_reprocess("img", "re-3").await.unwrap()));
    // The record still lists and serves what it had: nothing moved it out of COMPLETE.
    let listed = db
        .list(&pipeline::model::ListQuery {
            status: Some(Status::Complete),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.items, vec![expected]);
}

fn set_hold_since(path: &Path, id: &str, since: DateTime<Utc>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let n = conn
        .execute(
            "UPDATE reprocess_holds SET since = ?2 WHERE image_id = ?1",
            rusqlite::params![id, since.to_rfc3339_opts(SecondsFormat::Micros, true)],
        )
        .unwrap();
    assert_eq!(n, 1, "a hold on {id}");
}

#[tokio::test]
async fn sqlite_a_hold_older_than_the_lease_can_be_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imgpipe.db");
    let db = SqliteMetadata::open(&path).unwrap();
    let before = complete(&db, "img").await;
    assert!(started(db.begin_reprocess("img", "re-1").await.unwrap()));
    drop(db);

    // Just inside the lease: still held.
    set_hold_since(&path, "img", Utc::now() - LEASE + Duration::minutes(1));
    let db = SqliteMetadata::open(&path).unwrap();
    assert!(duplicate(db.begin_reprocess("img", "re-2").await.unwrap()));
    drop(db);

    // Past it: taken over.
    set_hold_since(&path, "img", Utc::now() - LEASE - Duration::minutes(1));
    let db = SqliteMetadata::open(&path).unwrap();
    assert_eq!(
        db.begin_reprocess("img", "re-2").await.unwrap(),
        Begin::Started(before.clone())
    );
    // The new hold is fresh: the first execution cannot take it back, nor a third one.
    assert!(duplicate(db.begin_reprocess("img", "re-1").await.unwrap()));
    assert!(duplicate(db.begin_reprocess("img", "re-3").await.unwrap()));
    // The execution that lost its hold writes nothing when it ends.
    let late = rerendered("bbbbbbbbbb");
    assert!(!db.end_reprocess("img", "re-1", Some(&late)).await.unwrap());
    assert!(!db.end_reprocess("img", "re-1", None).await.unwrap());
    assert_eq!(db.get("img").await.unwrap().as_ref(), Some(&before));
    // The one that took it over does.
    let done = rerendered("aaaaaaaaaa");
    assert!(db.end_reprocess("img", "re-2", Some(&done)).await.unwrap());
    assert_eq!(
        db.get("img").await.unwrap().unwrap().renditions,
        done.renditions
    );
}

#[tokio::test]
async fn sqlite_deleting_an_image_drops_its_hold() {
    let db = SqliteMetadata::in_memory().unwrap();
    complete(&db, "img").await;
    assert!(started(db.begin_reprocess("img", "re-1").await.unwrap()));
    assert!(db.delete("img").await.unwrap());
    assert_eq!(
        db.begin_reprocess("img", "re-1").await.unwrap(),
        Begin::Gone
    );
    assert!(!db.end_reprocess("img", "re-1", None).await.unwrap());

    // The same id made again is not held by the deleted image's re-render.
    complete(&db, "img").await;
    assert!(started(db.begin_reprocess("img", "re-2").await.unwrap()));
}

/// The `images` table as it was before `preset` and `reprocessed_at`.
const OLD_SCHEMA: &str = "
CREATE TABLE images (
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
CREATE INDEX images_by_owner ON images (owner, created_at);
CREATE INDEX images_by_status ON images (status, updated_at);
CREATE TABLE renditions (
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
";

#[tokio::test]
async fn sqlite_adds_the_preset_columns_to_a_database_made_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(OLD_SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO images (id, owner, status, source, recipe, created_at, updated_at,
                 execution_id, tags)
             VALUES ('old', 'u1', 'COMPLETE', ?1, NULL, ?2, ?2, 'exec-old', '[\"a\"]')",
            rusqlite::params![
                r#"{"key":"uploads/u1/old/a.jpg","bytes":5}"#,
                at(0).to_rfc3339_opts(SecondsFormat::Micros, true)
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO renditions (image_id, name, key, format, width, height, bytes, ms)
             VALUES ('old', 'thumb', 'renditions/u1/old/thumb.webp', 'webp', 100, 50, 7, 1)",
            [],
        )
        .unwrap();
    }

    let db = SqliteMetadata::open(&path).unwrap();
    let old = db.get("old").await.unwrap().unwrap();
    assert_eq!(old.status, Status::Complete);
    assert_eq!(old.preset, None);
    assert_eq!(old.reprocessed_at, None);
    assert_eq!(old.execution_id.as_deref(), Some("exec-old"));
    assert_eq!(old.tags, vec!["a".to_string()]);
    assert_eq!(old.created_at, at(0));
    assert_eq!(
        old.renditions,
        vec![RenditionRecord {
            name: "thumb".into(),
            key: "renditions/u1/old/thumb.webp".into(),
            format: Format::Webp,
            width: 100,
            height: 50,
            bytes: 7,
            ms: 1,
            quality: None,
            score: None,
            placeholder: None,
            dominant_color: None,
        }]
    );

    // New records keep both.
    let mut new = processing("new", "exec-new");
    new.reprocessed_at = Some(at(30));
    assert_eq!(db.begin(&new).await.unwrap(), Begin::Started(new.clone()));
    assert_eq!(db.get("new").await.unwrap().as_ref(), Some(&new));
    drop(db);

    // Opening again finds the columns there and adds nothing; the data stays.
    let db = SqliteMetadata::open(&path).unwrap();
    assert_eq!(db.get("new").await.unwrap(), Some(new));
    assert_eq!(db.get("old").await.unwrap(), Some(old));

    // A record from before preset names can still be held and re-rendered.
    assert!(started(db.begin_reprocess("old", "re-1").await.unwrap()));
    let done = rerendered("aaaaaaaaaa");
    assert!(db.end_reprocess("old", "re-1", Some(&done)).await.unwrap());
    let after = db.get("old").await.unwrap().unwrap();
    assert_eq!(after.preset.as_deref(), Some("web"));
    assert_eq!(after.reprocessed_at, Some(done.at));
    assert_eq!(after.renditions, done.renditions);
}

#[tokio::test]
async fn sqlite_a_holders_retry_renews_its_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imgpipe.db");
    let db = SqliteMetadata::open(&path).unwrap();
    complete(&db, "img").await;
    assert!(started(db.begin_reprocess("img", "re-1").await.unwrap()));
    drop(db);
    // Nearly lapsed; the holder's Validate is retried, which renews it.
    set_hold_since(&path, "img", Utc::now() - LEASE + Duration::seconds(5));
    let db = SqliteMetadata::open(&path).unwrap();
    assert!(started(db.begin_reprocess("img", "re-1").await.unwrap()));
    drop(db);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let since: String = conn
        .query_row(
            "SELECT since FROM reprocess_holds WHERE image_id = 'img'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let since = DateTime::parse_from_rfc3339(&since).unwrap();
    assert!(
        Utc::now() - since.with_timezone(&Utc) < Duration::minutes(1),
        "{since}"
    );
}

fn derived(params: &str, minute: i64) -> pipeline::model::DerivedRendition {
    pipeline::model::DerivedRendition {
        params: params.into(),
        key: format!("renditions/u1/i/t/{}.webp", params.len()),
        format: Format::Webp,
        width: 320,
        height: 240,
        bytes: 999,
        created_at: at(minute),
        hits: 1,
    }
}

#[tokio::test]
async fn sqlite_derived_renditions_are_listed_once_counted_and_dropped_with_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let db = SqliteMetadata::open(&path).unwrap();
    // Only on a COMPLETE record.
    use pipeline::ports::PutDerived;
    let put = |id: &'static str, d: pipeline::model::DerivedRendition, max: usize| {
        let db = &db;
        async move { db.put_derived(id, &d, max).await.unwrap() }
    };
    assert_eq!(put("absent", derived("w=1", 0), 9).await, PutDerived::Gone);
    db.begin(&processing("busy", "exec-0")).await.unwrap();
    assert_eq!(put("busy", derived("w=1", 0), 9).await, PutDerived::Gone);
    assert!(db.get("busy").await.unwrap().unwrap().derived.is_empty());

    complete(&db, "img").await;
    let b = derived("w=320&fit=cover&gravity=center&fmt=webp", 2);
    let a = derived("w=100&fit=cover&gravity=center&fmt=webp", 1);
    assert_eq!(put("img", b.clone(), 2).await, PutDerived::Listed);
    assert_eq!(put("img", a.clone(), 2).await, PutDerived::Listed);
    // At the limit a new one is refused, a listed one is still found.
    assert_eq!(put("img", derived("w=5", 3), 2).await, PutDerived::Full);
    // A second render of the same parameters (a race between two processes) lists nothing
    // new and keeps the first entry.
    let mut again = b.clone();
    again.bytes = 1;
    assert_eq!(put("img", again, 2).await, PutDerived::Listed);
    db.hit_derived("img", &b.params).await.unwrap();
    db.hit_derived("img", &b.params).await.unwrap();
    db.hit_derived("img", "w=7").await.unwrap();
    db.hit_derived("absent", &b.params).await.unwrap();
    let listed = db.get("img").await.unwrap().unwrap().derived;
    let mut b3 = b.clone();
    b3.hits = 3;
    assert_eq!(
        listed,
        vec![a.clone(), b3.clone()],
        "oldest first, hits counted"
    );
    // Read back by another connection, as a second process would.
    drop(db);
    let db = SqliteMetadata::open(&path).unwrap();
    assert_eq!(db.get("img").await.unwrap().unwrap().derived, vec![a, b3]);
    assert!(db.delete("img").await.unwrap());
    complete(&db, "img").await;
    assert!(db.get("img").await.unwrap().unwrap().derived.is_empty());
}

#[tokio::test]
async fn sqlite_sets_and_clears_the_focal_point_in_the_source() {
    let db = SqliteMetadata::in_memory().unwrap();
    assert!(
        !db.set_focal_point("absent", imaging::FocalPoint::new(0.5, 0.5))
            .await
            .unwrap()
    );
    let before = complete(&db, "img").await;
    let point = imaging::FocalPoint::new(0.25, 0.75);
    assert!(db.set_focal_point("img", point).await.unwrap());
    let after = db.get("img").await.unwrap().unwrap();
    assert_eq!(after.source.focal_point, point);
    // Nothing else moves: the rest of the source, the renditions, the status.
    let mut expected = before.clone();
    expected.source.focal_point = point;
    assert_eq!(after, expected);
    assert!(db.set_focal_point("img", None).await.unwrap());
    assert_eq!(db.get("img").await.unwrap().unwrap(), before);
}
