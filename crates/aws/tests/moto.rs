//! The S3, DynamoDB and SNS adapters through the real SDK clients against moto_server (its
//! wire protocols, not mocks of our traits).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use aws::{DynamoMetadata, S3Store, SnsNotifier};
use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ProjectionType};
use chrono::{DateTime, Duration, TimeZone, Utc};
use imaging::Format;
use pipeline::PortError;
use pipeline::model::{
    ErrorInfo, Event, EventKind, ImageRecord, ListQuery, RenditionRecord, SourceInfo, Status,
};
use pipeline::ports::{
    Begin, IfAbsent, MetadataStore, Notifier, ObjectStore, PutOptions, Rerendered,
};
use serde_json::Value;
use support::{sdk, subscribed_queue, unique};

// ---------------------------------------------------------------------------------------
// S3

async fn bucket() -> S3Store {
    let sdk = sdk().await;
    let client = S3Store::client_for(&sdk);
    let name = unique("imgpipe");
    client.create_bucket().bucket(&name).send().await.unwrap();
    S3Store::new(client, name)
}

#[tokio::test]
async fn s3_put_writes_encrypted_objects_with_their_headers_and_metadata() {
    let store = bucket().await;
    let key = "renditions/u1/img1/thumb.webp";
    let body = b"RIFF....WEBPVP8 not really".to_vec();
    let opts = PutOptions {
        content_type: Some("image/webp".into()),
        cache_control: Some(pipeline::RENDITION_CACHE_CONTROL.into()),
        metadata: BTreeMap::from([
            ("preset".to_string(), "web".to_string()),
            ("tags".to_string(), "a,b".to_string()),
        ]),
    };
    let etag = store.put(key, body.clone(), opts).await.unwrap();
    assert!(!etag.is_empty());

    let info = store.head(key).await.unwrap();
    assert_eq!(info.size, body.len() as u64);
    assert_eq!(info.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(info.content_type.as_deref(), Some("image/webp"));
    assert_eq!(info.metadata.get("preset").map(String::as_str), Some("web"));
    assert_eq!(info.metadata.get("tags").map(String::as_str), Some("a,b"));

    // What our port does not expose, straight from the service.
    let raw = store
        .client()
        .head_object()
        .bucket(store.bucket())
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    assert_eq!(raw.cache_control(), Some(pipeline::RENDITION_CACHE_CONTROL));

    assert_eq!(store.get(key).await.unwrap(), body);
}

#[tokio::test]
async fn s3_ranged_gets_are_clipped_at_the_end() {
    let store = bucket().await;
    let body: Vec<u8> = (0..=255u8).collect();
    store
        .put("uploads/u/i/a.bin", body.clone(), PutOptions::default())
        .await
        .unwrap();
    let k = "uploads/u/i/a.bin";
    assert_eq!(store.get_range(k, 10, 5).await.unwrap(), body[10..15]);
    assert_eq!(
        store.get_range(k, 250, 64 * 1024).await.unwrap(),
        body[250..]
    );
    assert_eq!(store.get_range(k, 0, 64 * 1024).await.unwrap(), body);
    assert_eq!(store.get_range(k, 256, 10).await.unwrap(), Vec::<u8>::new());
    assert_eq!(
        store.get_range(k, 10_000, 10).await.unwrap(),
        Vec::<u8>::new()
    );
    assert_eq!(store.get_range(k, 3, 0).await.unwrap(), Vec::<u8>::new());

    store
        .put("uploads/u/i/empty", Vec::new(), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.get_range("uploads/u/i/empty", 0, 100).await.unwrap(),
        Vec::<u8>::new()
    );
}

#[tokio::test]
async fn s3_copy_keeps_content_headers_and_encryption() {
    let store = bucket().await;
    // Characters a CopySource must have encoded to name the same object.
    let from = "uploads/u1/img 1/my photo+1%.jpg";
    let to = "quarantine/u1/img 1/my photo+1%.jpg";
    let opts = PutOptions {
        content_type: Some("image/jpeg".into()),
        cache_control: None,
        metadata: BTreeMap::from([("preset".to_string(), "web".to_string())]),
    };
    store.put(from, b"jpeg bytes".to_vec(), opts).await.unwrap();
    store.copy(from, to).await.unwrap();

    assert_eq!(store.get(to).await.unwrap(), b"jpeg bytes");
    let info = store.head(to).await.unwrap();
    assert_eq!(info.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(info.metadata.get("preset").map(String::as_str), Some("web"));
    let raw = store
        .client()
        .head_object()
        .bucket(store.bucket())
        .key(to)
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    // The original stays.
    assert_eq!(store.get(from).await.unwrap(), b"jpeg bytes");

    let e = store
        .copy("uploads/none", "quarantine/none")
        .await
        .unwrap_err();
    assert!(matches!(e, PortError::NotFound(_)), "{e:?}");
}

#[tokio::test]
async fn s3_list_follows_continuation_tokens_and_sorts() {
    let store = bucket().await.with_page_size(2);
    let keys = [
        "work/img1/large.resized",
        "work/img1/thumb.resized",
        "work/img1/medium.resized",
        "work/img1/source.exif",
        "work/img1/a.filtered",
    ];
    for k in keys {
        store.put(k, vec![1], PutOptions::default()).await.unwrap();
    }
    store
        .put("work/img2/large.resized", vec![1], PutOptions::default())
        .await
        .unwrap();

    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(store.list("work/img1/").await.unwrap(), expected);
    assert_eq!(store.list("work/").await.unwrap().len(), 6);
    assert!(store.list("nothing/").await.unwrap().is_empty());

    // The bucket-backed work store clears a prefix through list + delete.
    let work = pipeline::memory::ObjectWorkStore {
        store: Arc::new(store.clone()),
    };
    pipeline::ports::WorkStore::clear(&work, "work/img1/")
        .await
        .unwrap();
    assert_eq!(
        store.list("work/").await.unwrap(),
        vec!["work/img2/large.resized".to_string()]
    );
}

#[tokio::test]
async fn s3_delete_is_idempotent_and_missing_objects_are_not_found() {
    let store = bucket().await;
    store
        .put("uploads/u/i/a.jpg", vec![1, 2, 3], PutOptions::default())
        .await
        .unwrap();
    store.delete("uploads/u/i/a.jpg").await.unwrap();
    store.delete("uploads/u/i/a.jpg").await.unwrap();
    store.delete("never/there").await.unwrap();

    for e in [
        store.get("uploads/u/i/a.jpg").await.unwrap_err(),
        store.head("uploads/u/i/a.jpg").await.unwrap_err(),
        store
            .get_range("uploads/u/i/a.jpg", 0, 10)
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(e, PortError::NotFound(_)), "{e:?}");
    }

    // A missing bucket is a deployment fault, not a missing image.
    let other = S3Store::new(store.client().clone(), unique("missing"));
    let e = other.get("k").await.unwrap_err();
    assert!(matches!(e, PortError::Permanent(_)), "{e:?}");
}

// ---------------------------------------------------------------------------------------
// DynamoDB

async fn table() -> (DynamoMetadata, aws_sdk_dynamodb::Client) {
    let sdk = sdk().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let name = unique("images");
    DynamoMetadata::create_table(&client, &name).await.unwrap();
    (DynamoMetadata::new(client.clone(), name), client)
}

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 0, 0).unwrap()
        + Duration::minutes(minute)
        + Duration::microseconds(123_456)
}

fn record(id: &str, owner: &str, execution: &str, created: DateTime<Utc>) -> ImageRecord {
    ImageRecord {
        derived: Vec::new(),
        id: id.into(),
        owner: owner.into(),
        status: Status::Processing,
        source: SourceInfo {
            focal_point: None,
            alpha: None,
            key: format!("uploads/{owner}/{id}/a.jpg"),
            etag: Some("\"etag\"".into()),
            bytes: 1234,
            format: Some(Format::Jpeg),
            width: Some(640),
            height: Some(480),
            sha256: None,
            color_profile: None,
            original: None,
        },
        recipe: Some(pipeline::Presets::builtin().get("web").unwrap().clone()),
        renditions: Vec::new(),
        error: None,
        created_at: created,
        updated_at: created,
        execution_id: Some(execution.into()),
        tags: Vec::new(),
        preset: None,
        reprocessed_at: None,
    }
}

fn rendition(name: &str, width: u32) -> RenditionRecord {
    RenditionRecord {
        name: name.into(),
        key: format!("renditions/u1/img1/{name}.jpg"),
        format: Format::Jpeg,
        width,
        height: width / 2,
        bytes: u64::from(width) * 10,
        ms: 5,
        quality: None,
        score: None,
        placeholder: None,
        dominant_color: None,
    }
}

async fn raw_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    id: &str,
) -> std::collections::HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(table)
        .key("id", AttributeValue::S(id.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap()
}

#[tokio::test]
async fn dynamo_table_has_the_fixed_key_schema_and_indexes() {
    let (meta, client) = table().await;
    let t = client
        .describe_table()
        .table_name(meta.table())
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| {
        schema
            .iter()
            .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(t.key_schema()),
        vec![("id".to_string(), KeyType::Hash)]
    );
    let mut indexes: Vec<_> = t
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            (
                g.index_name().unwrap().to_string(),
                keys(g.key_schema()),
                g.projection().and_then(|p| p.projection_type().cloned()),
            )
        })
        .collect();
    indexes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        indexes,
        vec![
            (
                "byOwner".to_string(),
                vec![
                    ("owner".to_string(), KeyType::Hash),
                    ("createdAt".to_string(), KeyType::Range)
                ],
                Some(ProjectionType::All)
            ),
            (
                "byStatus".to_string(),
                vec![
                    ("status".to_string(), KeyType::Hash),
                    ("updatedAt".to_string(), KeyType::Range)
                ],
                Some(ProjectionType::All)
            ),
        ]
    );
}

#[tokio::test]
async fn dynamo_begin_twice_starts_once_and_reports_the_duplicate() {
    let (meta, _) = table().await;
    let first = record("img1", "u1", "exec-a", at(0));
    let second = record("img1", "u1", "exec-b", at(1));

    assert_eq!(
        meta.begin(&first).await.unwrap(),
        Begin::Started(first.clone())
    );
    match meta.begin(&second).await.unwrap() {
        Begin::Duplicate(existing) => assert_eq!(existing, first),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // The same execution again is its own retry.
    assert_eq!(
        meta.begin(&first).await.unwrap(),
        Begin::Started(first.clone())
    );
    assert_eq!(meta.get("img1").await.unwrap(), Some(first));
    let all = meta
        .list(&ListQuery {
            owner: Some("u1".into()),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamo_concurrent_begins_start_exactly_one_execution() {
    let (meta, _) = table().await;
    let meta = Arc::new(meta);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let meta = meta.clone();
            tokio::spawn(async move {
                let r = record("img-race", "u1", &format!("exec-{i}"), at(i));
                meta.begin(&r).await.unwrap()
            })
        })
        .collect();
    let mut started = Vec::new();
    let mut duplicates = 0;
    for t in tasks {
        match t.await.unwrap() {
            Begin::Started(r) => started.push(r),
            Begin::Duplicate(_) => duplicates += 1,
            Begin::Gone => panic!("begin never answers Gone"),
        }
    }
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(duplicates, 9);
    let stored = meta.get("img-race").await.unwrap().unwrap();
    assert_eq!(stored.execution_id, started[0].execution_id);
}

#[tokio::test]
async fn dynamo_awaited_uploads_are_created_once_and_claimed_by_begin() {
    let (meta, client) = table().await;
    let mut expected = record("img-api", "u1", "unused", at(0));
    expected.execution_id = None;
    expected.tags = vec!["from-api".into()];
    let expires = at(0) + Duration::hours(24);

    assert!(meta.create_awaiting(&expected, expires).await.unwrap());
    assert!(!meta.create_awaiting(&expected, expires).await.unwrap());
    let item = raw_item(&client, meta.table(), "img-api").await;
    assert_eq!(item["status"], AttributeValue::S("AWAITING_UPLOAD".into()));
    assert_eq!(
        item["expiresAt"],
        AttributeValue::N(expires.timestamp().to_string())
    );

    let upload = record("img-api", "u1", "exec-1", at(5));
    let Begin::Started(claimed) = meta.begin(&upload).await.unwrap() else {
        panic!("an awaited upload must be claimed");
    };
    assert_eq!(claimed.status, Status::Processing);
    assert_eq!(claimed.execution_id.as_deref(), Some("exec-1"));
    assert_eq!(claimed.created_at, at(0), "creation time stays the API's");
    assert_eq!(claimed.updated_at, at(5));
    assert_eq!(claimed.tags, vec!["from-api".to_string()]);
    assert_eq!(claimed.source, upload.source);
    let item = raw_item(&client, meta.table(), "img-api").await;
    assert!(
        !item.contains_key("expiresAt"),
        "a claimed record must not expire"
    );

    // Another execution of the same upload is now a duplicate.
    let late = record("img-api", "u1", "exec-2", at(6));
    assert!(matches!(
        meta.begin(&late).await.unwrap(),
        Begin::Duplicate(_)
    ));
}

#[tokio::test]
async fn dynamo_renditions_then_complete() {
    let (meta, _) = table().await;
    let r = record("img1", "u1", "exec-a", at(0));
    meta.begin(&r).await.unwrap();
    meta.put_rendition("img1", &rendition("thumb", 256))
        .await
        .unwrap();
    meta.put_rendition("img1", &rendition("large", 2048))
        .await
        .unwrap();
    // A retried Store replaces its rendition rather than adding another.
    let mut thumb = rendition("thumb", 256);
    thumb.bytes = 42;
    // An automatic quality's choice and score come back as written (a number with decimals).
    thumb.quality = Some(63);
    thumb.score = Some(71.37);
    meta.put_rendition("img1", &thumb).await.unwrap();
    // Renditions leave updatedAt (the byStatus sort key) alone: it moves with the status.
    let midway = meta.get("img1").await.unwrap().unwrap();
    assert_eq!(midway.updated_at, r.updated_at);
    meta.complete("img1", Some("abc123")).await.unwrap();
    // So does a retried Notify.
    meta.complete("img1", None).await.unwrap();

    let done = meta.get("img1").await.unwrap().unwrap();
    assert_eq!(done.status, Status::Complete);
    assert_eq!(done.source.sha256.as_deref(), Some("abc123"));
    assert_eq!(done.renditions, vec![rendition("large", 2048), thumb]);
    assert!(done.updated_at > r.updated_at);
    assert_eq!(done.created_at, r.created_at);

    let e = meta
        .put_rendition("img1", &rendition("late", 10))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PortError::Permanent(m) if m.contains("COMPLETE")),
        "{e:?}"
    );
    let e = meta
        .put_rendition("nope", &rendition("thumb", 10))
        .await
        .unwrap_err();
    assert!(matches!(e, PortError::NotFound(_)), "{e:?}");
    let e = meta.complete("nope", None).await.unwrap_err();
    assert!(matches!(e, PortError::NotFound(_)), "{e:?}");
}

#[tokio::test]
async fn dynamo_marks_each_executions_announcement_once_and_failures_drop_renditions() {
    let (meta, client) = table().await;
    let e = meta.mark_announced("img1", "exec-a").await.unwrap_err();
    assert!(matches!(e, PortError::NotFound(_)), "{e:?}");
    assert!(meta.get("img1").await.unwrap().is_none(), "no item made");
    let r = record("img1", "u1", "exec-a", at(0));
    meta.begin(&r).await.unwrap();
    assert!(meta.mark_announced("img1", "exec-a").await.unwrap());
    assert!(
        !meta.mark_announced("img1", "exec-a").await.unwrap(),
        "a retry"
    );
    // Taken back after a failed publish: the retry marks (and publishes) again.
    meta.unmark_announced("img1", "exec-a").await.unwrap();
    assert!(meta.mark_announced("img1", "exec-a").await.unwrap());
    // Another execution's mark is not undone by this one, and its own is new.
    assert!(meta.mark_announced("img1", "exec-b").await.unwrap());
    meta.unmark_announced("img1", "exec-a").await.unwrap();
    assert!(!meta.mark_announced("img1", "exec-b").await.unwrap());
    let item = raw_item(&client, meta.table(), "img1").await;
    assert_eq!(
        item.get(aws::dynamo::ANNOUNCED_BY),
        Some(&AttributeValue::S("exec-b".into()))
    );

    meta.put_rendition("img1", &rendition("thumb", 256))
        .await
        .unwrap();
    let error = ErrorInfo {
        kind: "Internal".into(),
        message: "medium failed".into(),
    };
    meta.fail("img1", Status::Failed, &error, &r, IfAbsent::Skip)
        .await
        .unwrap();
    let failed = meta.get("img1").await.unwrap().unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert!(failed.renditions.is_empty(), "{:?}", failed.renditions);
    let item = raw_item(&client, meta.table(), "img1").await;
    assert!(!item.contains_key(aws::dynamo::RENDITIONS), "{item:?}");
}

#[tokio::test]
async fn dynamo_fail_records_rejections_only_where_it_may() {
    let (meta, _) = table().await;
    let error = ErrorInfo {
        kind: "InvalidImage".into(),
        message: "truncated".into(),
    };
    // Its own execution's record: rejected, with the error.
    let r = record("img1", "u1", "exec-a", at(0));
    meta.begin(&r).await.unwrap();
    meta.fail("img1", Status::Rejected, &error, &r, IfAbsent::Create)
        .await
        .unwrap();
    let got = meta.get("img1").await.unwrap().unwrap();
    assert_eq!(got.status, Status::Rejected);
    assert_eq!(got.error, Some(error.clone()));
    assert_eq!(got.execution_id.as_deref(), Some("exec-a"));

    // No record yet: the fallback is written with the failure.
    let fallback = record("img2", "u1", "exec-b", at(1));
    meta.fail("img2", Status::Failed, &error, &fallback, IfAbsent::Create)
        .await
        .unwrap();
    let got = meta.get("img2").await.unwrap().unwrap();
    assert_eq!(got.status, Status::Failed);
    assert_eq!(got.error, Some(error.clone()));
    assert_eq!(got.owner, "u1");

    // Another execution's record, or a complete one, is left alone.
    let owned = record("img3", "u1", "exec-c", at(2));
    meta.begin(&owned).await.unwrap();
    let intruder = record("img3", "u1", "exec-d", at(3));
    meta.fail("img3", Status::Failed, &error, &intruder, IfAbsent::Create)
        .await
        .unwrap();
    assert_eq!(meta.get("img3").await.unwrap(), Some(owned.clone()));
    meta.complete("img3", None).await.unwrap();
    meta.fail("img3", Status::Failed, &error, &owned, IfAbsent::Create)
        .await
        .unwrap();
    assert_eq!(
        meta.get("img3").await.unwrap().unwrap().status,
        Status::Complete
    );
}

#[tokio::test]
async fn dynamo_a_deleted_image_is_not_brought_back_by_its_form_or_its_execution() {
    let (meta, _) = table().await;
    let r = record("img1", "u1", "exec-a", at(0));
    // An awaited upload claims its record...
    meta.create_awaiting(&r, at(60)).await.unwrap();
    assert!(matches!(meta.claim(&r).await.unwrap(), Begin::Started(_)));
    assert_eq!(
        meta.get("img1").await.unwrap().unwrap().status,
        Status::Processing
    );
    // ...and is retried as its own execution...
    assert!(matches!(meta.claim(&r).await.unwrap(), Begin::Started(_)));
    // ...but once the image is deleted, neither a replayed form nor the failure of the
    // execution that was running makes a record again.
    assert!(meta.delete("img1").await.unwrap());
    assert!(matches!(meta.claim(&r).await.unwrap(), Begin::Gone));
    let error = ErrorInfo {
        kind: "NotFound".into(),
        message: "the original is gone".into(),
    };
    meta.fail("img1", Status::Failed, &error, &r, IfAbsent::Skip)
        .await
        .unwrap();
    assert_eq!(meta.get("img1").await.unwrap(), None);
}

/// Seven images of u1 a minute apart (img0 oldest), three of u2; tags and statuses mixed.
async fn seeded() -> (DynamoMetadata, aws_sdk_dynamodb::Client) {
    let (meta, client) = table().await;
    for i in 0..7 {
        let mut r = record(&format!("img{i}"), "u1", &format!("exec-{i}"), at(i));
        if i % 2 == 0 {
            r.tags = vec!["even".into(), "all".into()];
        } else {
            r.tags = vec!["all".into()];
        }
        meta.begin(&r).await.unwrap();
        if i < 3 {
            meta.complete(&r.id, None).await.unwrap();
        }
    }
    for i in 0..3 {
        let r = record(
            &format!("other{i}"),
            "u2",
            &format!("exec-o{i}"),
            at(10 + i),
        );
        meta.begin(&r).await.unwrap();
        meta.complete(&r.id, None).await.unwrap();
    }
    (meta, client)
}

fn ids(items: &[ImageRecord]) -> Vec<&str> {
    items.iter().map(|r| r.id.as_str()).collect()
}

#[tokio::test]
async fn dynamo_list_by_owner_pages_newest_first() {
    let (meta, _) = seeded().await;
    let mut q = ListQuery {
        owner: Some("u1".into()),
        limit: 3,
        ..ListQuery::default()
    };
    let p1 = meta.list(&q).await.unwrap();
    assert_eq!(ids(&p1.items), ["img6", "img5", "img4"]);
    q.cursor = Some(p1.cursor.clone().expect("more pages"));
    let p2 = meta.list(&q).await.unwrap();
    assert_eq!(ids(&p2.items), ["img3", "img2", "img1"]);
    q.cursor = Some(p2.cursor.clone().expect("one more page"));
    let p3 = meta.list(&q).await.unwrap();
    assert_eq!(ids(&p3.items), ["img0"]);
    assert_eq!(p3.cursor, None);

    // A page that ends exactly at the last item gives no cursor to an empty page.
    let exact = meta
        .list(&ListQuery {
            owner: Some("u1".into()),
            limit: 7,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 7);
    assert_eq!(exact.cursor, None);

    // `since` inclusive, `until` exclusive.
    let window = meta
        .list(&ListQuery {
            owner: Some("u1".into()),
            since: Some(at(2)),
            until: Some(at(5)),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&window.items), ["img4", "img3", "img2"]);
    let until = meta
        .list(&ListQuery {
            owner: Some("u1".into()),
            until: Some(at(1)),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&until.items), ["img0"]);
    let empty = meta
        .list(&ListQuery {
            owner: Some("u1".into()),
            since: Some(at(5)),
            until: Some(at(5)),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(empty.items.is_empty());
}

#[tokio::test]
async fn dynamo_list_filters_by_status_and_tag() {
    let (meta, _) = seeded().await;
    // An owner's complete images (a filter on byOwner), paged through the filter.
    let mut q = ListQuery {
        owner: Some("u1".into()),
        status: Some(Status::Complete),
        limit: 2,
        ..ListQuery::default()
    };
    let p1 = meta.list(&q).await.unwrap();
    assert_eq!(ids(&p1.items), ["img2", "img1"]);
    q.cursor = p1.cursor;
    let p2 = meta.list(&q).await.unwrap();
    assert_eq!(ids(&p2.items), ["img0"]);
    assert_eq!(p2.cursor, None);

    let tagged = meta
        .list(&ListQuery {
            owner: Some("u1".into()),
            tag: Some("even".into()),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&tagged.items), ["img6", "img4", "img2", "img0"]);

    // Admin: every owner's COMPLETE images through byStatus, most recently updated first.
    let mut q = ListQuery {
        status: Some(Status::Complete),
        limit: 4,
        ..ListQuery::default()
    };
    let p1 = meta.list(&q).await.unwrap();
    assert_eq!(p1.items.len(), 4);
    assert!(p1.items.iter().all(|r| r.status == Status::Complete));
    assert!(
        p1.items
            .windows(2)
            .all(|w| w[0].updated_at >= w[1].updated_at)
    );
    q.cursor = p1.cursor;
    let p2 = meta.list(&q).await.unwrap();
    assert_eq!(p2.items.len(), 2);
    assert_eq!(p2.cursor, None);
    let all: HashSet<&str> = ids(&p1.items).into_iter().chain(ids(&p2.items)).collect();
    assert_eq!(
        all,
        HashSet::from(["img0", "img1", "img2", "other0", "other1", "other2"])
    );

    // Admin without a status: a scan, newest first within the page.
    let scan = meta
        .list(&ListQuery {
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(scan.items.len(), 10);
    assert_eq!(scan.items[0].id, "other2");
    assert_eq!(scan.cursor, None);
    let mut q = ListQuery {
        tag: Some("all".into()),
        limit: 4,
        ..ListQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = meta.list(&q).await.unwrap();
        seen.extend(page.items.into_iter().map(|r| r.id));
        match page.cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        ["img0", "img1", "img2", "img3", "img4", "img5", "img6"]
    );
}

#[tokio::test]
async fn dynamo_list_refuses_cursors_it_did_not_issue() {
    let (meta, _) = seeded().await;
    let p = meta
        .list(&ListQuery {
            owner: Some("u1".into()),
            limit: 2,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    let theirs = p.cursor.unwrap();
    for (owner, cursor) in [
        (Some("u1"), "garbage!!".to_string()),
        (Some("u1"), "eyJpZCI6MX0".to_string()),
        // A valid cursor of u1's listing replayed against u2's.
        (Some("u2"), theirs.clone()),
        (None, theirs),
    ] {
        let e = meta
            .list(&ListQuery {
                owner: owner.map(str::to_string),
                status: owner.is_none().then_some(Status::Complete),
                cursor: Some(cursor.clone()),
                ..ListQuery::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, PortError::Permanent(m) if m.contains("cursor")),
            "{cursor}: {e:?}"
        );
    }
}

#[tokio::test]
async fn dynamo_delete_removes_the_record() {
    let (meta, _) = table().await;
    let r = record("img1", "u1", "exec-a", at(0));
    meta.begin(&r).await.unwrap();
    meta.put_rendition("img1", &rendition("thumb", 256))
        .await
        .unwrap();
    assert!(meta.delete("img1").await.unwrap());
    assert_eq!(meta.get("img1").await.unwrap(), None);
    assert!(!meta.delete("img1").await.unwrap());
}

/// Sets the `since` of the re-render holding `id`, as an execution that took it then would
/// have left it.
async fn set_hold_since(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    id: &str,
    since: DateTime<Utc>,
) {
    client
        .update_item()
        .table_name(table)
        .key("id", AttributeValue::S(id.into()))
        .update_expression("SET #r.#s = :since")
        .condition_expression("attribute_exists(#r)")
        .expression_attribute_names("#r", "reprocessing")
        .expression_attribute_names("#s", "since")
        .expression_attribute_values(":since", AttributeValue::S(aws::dynamo::ts(&since)))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn dynamo_reprocess_holds_one_execution_and_swaps_renditions_at_once() {
    let (meta, client) = table().await;

    // Records round-trip their preset and re-render time.
    let mut named = record("named", "u1", "exec-n", at(0));
    named.preset = Some("web".into());
    named.reprocessed_at = Some(at(30));
    assert_eq!(
        meta.begin(&named).await.unwrap(),
        Begin::Started(named.clone())
    );
    assert_eq!(meta.get("named").await.unwrap().as_ref(), Some(&named));
    let item = raw_item(&client, meta.table(), "named").await;
    assert_eq!(item["preset"], AttributeValue::S("web".into()));
    assert_eq!(
        item["reprocessedAt"],
        AttributeValue::S(aws::dynamo::ts(&at(30)))
    );
    let plain = record("plain", "u1", "exec-p", at(0));
    meta.begin(&plain).await.unwrap();
    assert_eq!(meta.get("plain").await.unwrap(), Some(plain));
    let item = raw_item(&client, meta.table(), "plain").await;
    assert!(!item.contains_key("preset") && !item.contains_key("reprocessedAt"));

    // A COMPLETE image with two renditions.
    let mut r = record("img1", "u1", "exec-a", at(0));
    r.preset = Some("web".into());
    meta.begin(&r).await.unwrap();
    meta.put_rendition("img1", &rendition("large", 2048))
        .await
        .unwrap();
    meta.put_rendition("img1", &rendition("thumb", 256))
        .await
        .unwrap();
    meta.complete("img1", Some("abc")).await.unwrap();
    let before = meta.get("img1").await.unwrap().unwrap();
    assert_eq!(before.status, Status::Complete);

    // (a) One execution holds it; another is a duplicate; its own retry starts.
    assert_eq!(
        meta.begin_reprocess("img1", "re-1").await.unwrap(),
        Begin::Started(before.clone())
    );
    let item = raw_item(&client, meta.table(), "img1").await;
    let hold = item["reprocessing"].as_m().unwrap();
    assert_eq!(hold["executionId"], AttributeValue::S("re-1".into()));
    assert_eq!(
        meta.begin_reprocess("img1", "re-2").await.unwrap(),
        Begin::Duplicate(before.clone())
    );
    assert_eq!(
        meta.begin_reprocess("img1", "re-1").await.unwrap(),
        Begin::Started(before.clone())
    );
    assert_eq!(meta.get("img1").await.unwrap().as_ref(), Some(&before));
    // Not COMPLETE: a duplicate, and nothing held once it completes.
    let busy = record("busy", "u1", "exec-b", at(0));
    meta.begin(&busy).await.unwrap();
    match meta.begin_reprocess("busy", "re-1").await.unwrap() {
        Begin::Duplicate(r) => assert_eq!(r.status, Status::Processing),
        other => panic!("a PROCESSING image is not re-rendered: {other:?}"),
    }
    meta.complete("busy", None).await.unwrap();
    assert!(matches!(
        meta.begin_reprocess("busy", "re-2").await.unwrap(),
        Begin::Started(_)
    ));
    assert_eq!(
        meta.begin_reprocess("none", "re-1").await.unwrap(),
        Begin::Gone
    );
    assert_eq!(meta.get("none").await.unwrap(), None, "no item made");

    // (b) New keys for thumb, medium in place of large (largest first, as listed).
    let version = |v: &str| {
        vec![
            RenditionRecord {
                key: format!("renditions/u1/img1/medium.{v}.jpg"),
                ..rendition("medium", 1024)
            },
            RenditionRecord {
                key: format!("renditions/u1/img1/thumb.{v}.jpg"),
                ..rendition("thumb", 256)
            },
        ]
    };
    let mut recipe = pipeline::Presets::builtin().get("web").unwrap().clone();
    recipe.renditions[0].quality = Some(pipeline::Quality::Fixed(41));
    let done = Rerendered {
        preset: "web".into(),
        recipe: recipe.clone(),
        renditions: version("aaaaaaaaaa"),
        at: at(90),
    };
    let other = Rerendered {
        preset: "web".into(),
        recipe,
        renditions: version("bbbbbbbbbb"),
        at: at(95),
    };
    // Not the holder: nothing written, the hold stays.
    assert!(
        !meta
            .end_reprocess("img1", "re-2", Some(&other))
            .await
            .unwrap()
    );
    assert!(!meta.end_reprocess("img1", "re-2", None).await.unwrap());
    assert_eq!(meta.get("img1").await.unwrap().as_ref(), Some(&before));
    assert!(matches!(
        meta.begin_reprocess("img1", "re-2").await.unwrap(),
        Begin::Duplicate(_)
    ));
    // The holder swaps preset, recipe and renditions at once.
    assert!(
        meta.end_reprocess("img1", "re-1", Some(&done))
            .await
            .unwrap()
    );
    let mut expected = before.clone();
    expected.preset = Some("web".into());
    expected.recipe = Some(done.recipe.clone());
    expected.renditions = done.renditions.clone();
    expected.reprocessed_at = Some(at(90));
    expected.updated_at = at(90);
    assert_eq!(meta.get("img1").await.unwrap().as_ref(), Some(&expected));
    let item = raw_item(&client, meta.table(), "img1").await;
    assert!(!item.contains_key("reprocessing"), "the hold is gone");
    assert_eq!(
        item["reprocessedAt"],
        AttributeValue::S(aws::dynamo::ts(&at(90)))
    );
    // A retry of that call finds it written; another's different renditions are refused.
    assert!(
        meta.end_reprocess("img1", "re-1", Some(&done))
            .await
            .unwrap()
    );
    assert!(
        !meta
            .end_reprocess("img1", "re-2", Some(&other))
            .await
            .unwrap()
    );
    assert_eq!(meta.get("img1").await.unwrap().as_ref(), Some(&expected));
    // Ending without a result lets go and writes nothing.
    assert!(matches!(
        meta.begin_reprocess("img1", "re-2").await.unwrap(),
        Begin::Started(_)
    ));
    assert!(meta.end_reprocess("img1", "re-2", None).await.unwrap());
    assert_eq!(meta.get("img1").await.unwrap().as_ref(), Some(&expected));
    assert!(
        !raw_item(&client, meta.table(), "img1")
            .await
            .contains_key("reprocessing")
    );

    // (c) A hold just inside the lease stands; one older than it lapses.
    assert!(matches!(
        meta.begin_reprocess("img1", "re-3").await.unwrap(),
        Begin::Started(_)
    ));
    let lease = pipeline::reprocess::LEASE;
    set_hold_since(
        &client,
        meta.table(),
        "img1",
        Utc::now() - lease + Duration::minutes(1),
    )
    .await;
    assert!(matches!(
        meta.begin_reprocess("img1", "re-4").await.unwrap(),
        Begin::Duplicate(_)
    ));
    set_hold_since(
        &client,
        meta.table(),
        "img1",
        Utc::now() - lease - Duration::minutes(1),
    )
    .await;
    assert_eq!(
        meta.begin_reprocess("img1", "re-4").await.unwrap(),
        Begin::Started(expected.clone())
    );
    // The new hold is fresh: neither the one that lost it nor a third execution takes it.
    assert!(matches!(
        meta.begin_reprocess("img1", "re-3").await.unwrap(),
        Begin::Duplicate(_)
    ));
    assert!(matches!(
        meta.begin_reprocess("img1", "re-5").await.unwrap(),
        Begin::Duplicate(_)
    ));
    // The execution that lost its hold writes nothing when it ends.
    assert!(
        !meta
            .end_reprocess("img1", "re-3", Some(&other))
            .await
            .unwrap()
    );
    assert_eq!(meta.get("img1").await.unwrap().as_ref(), Some(&expected));
    assert!(
        meta.end_reprocess("img1", "re-4", Some(&other))
            .await
            .unwrap()
    );
    assert_eq!(
        meta.get("img1").await.unwrap().unwrap().renditions,
        other.renditions
    );
}

#[tokio::test]
async fn dynamo_check_passes_on_the_table_and_fails_without_it() {
    let (meta, client) = table().await;
    meta.check().await.unwrap();
    let missing = DynamoMetadata::new(client, unique("absent"));
    assert!(missing.check().await.is_err());
}

// ---------------------------------------------------------------------------------------
// SNS

/// The SNS envelopes waiting on a queue.
async fn envelopes(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            return out;
        }
        for m in messages {
            out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

fn event(kind: EventKind, id: &str) -> Event {
    let (status, error) = match kind {
        EventKind::Completed => (Status::Complete, None),
        EventKind::Rejected => (
            Status::Rejected,
            Some(ErrorInfo {
                kind: "UnsupportedFormat".into(),
                message: "not an image".into(),
            }),
        ),
        EventKind::Failed => (
            Status::Failed,
            Some(ErrorInfo {
                kind: "Internal".into(),
                message: "bug".into(),
            }),
        ),
        EventKind::NotAnnounced | EventKind::NotReprocessed => (
            Status::Complete,
            Some(ErrorInfo {
                kind: "Transient".into(),
                message: "events topic unreachable".into(),
            }),
        ),
        EventKind::Reprocessed => (Status::Complete, None),
    };
    Event {
        kind,
        image_id: id.into(),
        owner: "u1".into(),
        status,
        source_key: format!("uploads/u1/{id}/a.jpg"),
        renditions: if kind == EventKind::Completed {
            vec![rendition("thumb", 256)]
        } else {
            Vec::new()
        },
        error,
        execution_id: Some("exec-1".into()),
        at: at(0),
    }
}

fn attribute<'a>(envelope: &'a Value, name: &str) -> Option<&'a str> {
    envelope["MessageAttributes"][name]["Value"].as_str()
}

#[tokio::test]
async fn sns_routes_completions_to_events_and_rejections_to_alerts() {
    let sdk = sdk().await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let topic = |name: String| {
        let sns = sns.clone();
        async move {
            sns.create_topic()
                .name(name)
                .send()
                .await
                .unwrap()
                .topic_arn
                .unwrap()
        }
    };
    let alerts = topic(unique("alerts")).await;
    let events = topic(unique("events")).await;
    let alerts_q = subscribed_queue(&sqs, &sns, &alerts).await;
    let events_q = subscribed_queue(&sqs, &sns, &events).await;
    let notifier = SnsNotifier::new(sns.clone(), alerts.clone(), events.clone());

    let done = event(EventKind::Completed, "img-ok");
    let rejected = event(EventKind::Rejected, "img-bad");
    let unannounced = event(EventKind::NotAnnounced, "img-quiet");
    notifier.publish(&done).await.unwrap();
    notifier.publish(&rejected).await.unwrap();
    notifier.publish(&unannounced).await.unwrap();

    let on_events = envelopes(&sqs, &events_q).await;
    assert_eq!(on_events.len(), 1, "{on_events:?}");
    let e = &on_events[0];
    assert_eq!(e["TopicArn"], Value::String(events.clone()));
    assert_eq!(e["Subject"], "imgpipe: image img-ok COMPLETE");
    let body: Event = serde_json::from_str(e["Message"].as_str().unwrap()).unwrap();
    assert_eq!(body, done);
    assert_eq!(attribute(e, "kind"), Some("completed"));
    assert_eq!(attribute(e, "errorType"), None);

    let mut on_alerts = envelopes(&sqs, &alerts_q).await;
    on_alerts.sort_by_key(|a| a["Subject"].as_str().unwrap_or("").to_string());
    assert_eq!(on_alerts.len(), 2, "{on_alerts:?}");
    let q = &on_alerts[1];
    assert_eq!(
        q["Subject"],
        "imgpipe: image img-quiet COMPLETE, completion not announced"
    );
    assert_eq!(attribute(q, "kind"), Some("notAnnounced"));
    assert_eq!(attribute(q, "status"), Some("COMPLETE"));
    let a = &on_alerts[0];
    assert_eq!(a["TopicArn"], Value::String(alerts.clone()));
    assert_eq!(a["Subject"], "imgpipe: image img-bad REJECTED");
    let body: Event = serde_json::from_str(a["Message"].as_str().unwrap()).unwrap();
    assert_eq!(body, rejected);
    assert_eq!(attribute(a, "kind"), Some("rejected"));
    assert_eq!(attribute(a, "status"), Some("REJECTED"));
    assert_eq!(attribute(a, "owner"), Some("u1"));
    assert_eq!(attribute(a, "imageId"), Some("img-bad"));
    assert_eq!(attribute(a, "errorType"), Some("UnsupportedFormat"));
    assert_eq!(a["MessageAttributes"]["kind"]["Type"], "String");

    // A topic that does not exist is an error the step reports, not a silent drop.
    let lost = SnsNotifier::new(
        sns,
        format!("{alerts}-missing"),
        format!("{events}-missing"),
    );
    assert!(lost.publish(&rejected).await.is_err());
}

// ---------------------------------------------------------------------------------------
// Configuration from the environment, as a Lambda has it

const CHILD: &str = "IMGPIPE_TEST_ENV_CHILD";
const ENV_TEST: &str = "steps_from_env_reach_every_resource_through_the_environment";

/// The child half: only the environment says where things are.
async fn write_through_steps_from_env() {
    let steps = aws::lambda::steps_from_env().await.unwrap();
    steps
        .uploads
        .put(
            "uploads/u1/img1/a.jpg",
            b"original".to_vec(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    steps
        .renditions
        .put(
            "renditions/u1/img1/thumb.webp",
            b"thumb".to_vec(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    steps
        .work
        .put_bytes("work/img1/source.exif", b"exif".to_vec())
        .await
        .unwrap();
    let r = record("img1", "u1", "exec-env", at(0));
    assert!(matches!(
        steps.metadata.begin(&r).await.unwrap(),
        Begin::Started(_)
    ));
    steps
        .notifier
        .publish(&event(EventKind::Failed, "img1"))
        .await
        .unwrap();
}

/// `steps_from_env` as a step Lambda runs it: the SDK finds moto through `AWS_ENDPOINT_URL`
/// (S3 then path-style), credentials and region through their variables, resources through
/// `IMGPIPE_*`. The environment belongs to the process, so the half that reads it runs in a
/// child copy of this test binary.
#[tokio::test]
async fn steps_from_env_reach_every_resource_through_the_environment() {
    if std::env::var_os(CHILD).is_some() {
        write_through_steps_from_env().await;
        return;
    }
    let sdk = sdk().await;
    let s3 = S3Store::client_for(&sdk);
    let (uploads, renditions, table) = (unique("up"), unique("out"), unique("images"));
    for b in [&uploads, &renditions] {
        s3.create_bucket().bucket(b).send().await.unwrap();
    }
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    DynamoMetadata::create_table(&dynamo, &table).await.unwrap();
    let sns = aws_sdk_sns::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let mut topics = Vec::new();
    for name in ["alerts", "events"] {
        let arn = sns
            .create_topic()
            .name(unique(name))
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        topics.push(arn);
    }
    let alerts_q = subscribed_queue(&sqs, &sns, &topics[0]).await;

    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([ENV_TEST, "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env("AWS_ENDPOINT_URL", support::endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env_remove("IMGPIPE_S3_PATH_STYLE")
        .env("IMGPIPE_UPLOADS_BUCKET", &uploads)
        .env("IMGPIPE_RENDITIONS_BUCKET", &renditions)
        .env("IMGPIPE_TABLE", &table)
        .env("IMGPIPE_ALERTS_TOPIC_ARN", &topics[0])
        .env("IMGPIPE_EVENTS_TOPIC_ARN", &topics[1])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child did not run the test: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let up = S3Store::new(s3.clone(), uploads);
    assert_eq!(
        up.list("").await.unwrap(),
        ["uploads/u1/img1/a.jpg", "work/img1/source.exif"]
    );
    let out_bucket = S3Store::new(s3, renditions);
    assert_eq!(
        out_bucket
            .get("renditions/u1/img1/thumb.webp")
            .await
            .unwrap(),
        b"thumb"
    );
    let meta = DynamoMetadata::new(dynamo, table);
    let stored = meta.get("img1").await.unwrap().unwrap();
    assert_eq!(stored.execution_id.as_deref(), Some("exec-env"));
    let alerts = envelopes(&sqs, &alerts_q).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(attribute(&alerts[0], "kind"), Some("failed"));
}

// ---------------------------------------------------------------------------------------
// Step Functions: reprocess runs

#[tokio::test]
async fn sfn_reprocess_runs_start_the_state_machine_with_the_maps_input_and_read_back() {
    use api::reprocess::{ReprocessRequest, Reprocessor, RunStatus};
    use aws::sfn::{RunInput, SfnReprocessor};

    let sdk = sdk().await;
    let client = aws_sdk_sfn::Client::new(&sdk);
    let definition = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../statemachine/reprocess.asl.json"),
    )
    .unwrap()
    .replace("${UploadsBucketName}", "uploads-bucket")
    .replace(
        "${ImagePipelineArn}",
        "arn:aws:states:us-east-1:123456789012:stateMachine:pipeline",
    )
    .replace(
        "${AlertsTopicArn}",
        "arn:aws:sns:us-east-1:123456789012:alerts",
    );
    let machine = client
        .create_state_machine()
        .name(unique("reprocess"))
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/reprocess")
        .send()
        .await
        .unwrap();
    let config = aws::config::ReprocessConfig {
        state_machine_arn: machine.state_machine_arn.clone(),
        max_concurrency: 7,
        tolerated_failure_percentage: 2.5,
    };
    let reprocessor = SfnReprocessor::new(client.clone(), config.clone());
    let request = ReprocessRequest {
        preset: Some("web".into()),
        owner: Some("alice".into()),
        since: Some(at(0)),
        until: None,
    };
    let admin = api::Caller {
        sub: "root".into(),
        admin: true,
    };
    let started = reprocessor.start(&request, &admin).await.unwrap();
    assert_eq!(started.status, RunStatus::Running);

    // The execution is named by the run's id, and its input is what the Map reads by path.
    let arn = format!(
        "{}:{}",
        machine
            .state_machine_arn
            .replacen(":stateMachine:", ":execution:", 1),
        started.id
    );
    let described = client
        .describe_execution()
        .execution_arn(&arn)
        .send()
        .await
        .unwrap();
    let input: RunInput = serde_json::from_str(described.input.as_deref().unwrap()).unwrap();
    assert_eq!(input, RunInput::new(&request, &admin, &config));
    assert_eq!(input.prefix, "uploads/alice/");
    let as_json: Value = serde_json::from_str(described.input.as_deref().unwrap()).unwrap();
    let asl: Value =
        serde_json::from_str(include_str!("../../../statemachine/reprocess.asl.json")).unwrap();
    let map = &asl["States"]["Images"];
    for (path_field, input_field) in [
        ("MaxConcurrencyPath", "maxConcurrency"),
        (
            "ToleratedFailurePercentagePath",
            "toleratedFailurePercentage",
        ),
    ] {
        assert_eq!(map[path_field], format!("$.{input_field}"));
        assert!(as_json[input_field].is_number(), "{as_json}");
    }
    assert_eq!(map["ItemReader"]["Parameters"]["Prefix.$"], "$.prefix");
    assert_eq!(map["ItemSelector"]["reprocess.$"], "$.filter");

    let run = reprocessor.run(&started.id).await.unwrap().unwrap();
    assert_eq!(run.id, started.id);
    assert_eq!(run.request, request);
    assert!(
        matches!(run.status, RunStatus::Running | RunStatus::Succeeded),
        "{run:?}"
    );
    assert!(
        reprocessor
            .run("01ZZZZZZZZZZZZZZZZZZZZZZZZ")
            .await
            .unwrap()
            .is_none()
    );
}
