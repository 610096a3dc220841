//! The steps driven by hand through the in-memory ports, in the order the state machine runs
//! them: what each writes, records and announces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use imaging::{EncodeOptions, Format, Image, image};
use pipeline::io::{CaughtError, FailedState, Job, NotifyInput, Upload, ValidateInput};
use pipeline::memory::{MemoryMetadata, MemoryNotifier, MemoryObjectStore, MemoryWorkStore};
use pipeline::model::{EventKind, Status};
use pipeline::ports::{MetadataStore, ObjectStore};
use pipeline::{Config, Recipe, Steps};

struct World {
    steps: Steps,
    objects: Arc<MemoryObjectStore>,
    metadata: Arc<MemoryMetadata>,
    notifier: Arc<MemoryNotifier>,
    work: Arc<MemoryWorkStore>,
}

fn world(config: Config) -> World {
    let objects = Arc::new(MemoryObjectStore::new());
    let metadata = Arc::new(MemoryMetadata::new());
    let notifier = Arc::new(MemoryNotifier::new());
    let work = Arc::new(MemoryWorkStore::new());
    World {
        steps: Steps {
            config: Arc::new(config),
            uploads: objects.clone(),
            renditions: objects.clone(),
            work: work.clone(),
            metadata: metadata.clone(),
            notifier: notifier.clone(),
        },
        objects,
        metadata,
        notifier,
        work,
    }
}

/// A photo-like gradient, so codecs have real work and crops are visible.
fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    imaging::encode(
        &Image::ImageRgb8(img),
        &EncodeOptions {
            format: Format::Jpeg,
            quality: 90,
            ..Default::default()
        },
    )
    .unwrap()
}

fn upload(key: &str) -> Upload {
    Upload {
        key: key.to_string(),
        ..Upload::default()
    }
}

async fn validate(w: &World, key: &str, exec: &str) -> Result<Job, pipeline::StepError> {
    w.steps
        .validate(ValidateInput {
            upload: upload(key),
            execution_id: exec.to_string(),
        })
        .await
}

#[tokio::test]
async fn web_preset_end_to_end_through_the_steps() {
    let w = world(Config::default());
    let key = "uploads/alice/01TEST/holiday.jpg";
    let original = photo(3000, 2000);
    w.objects.insert(key, original.clone(), BTreeMap::new());

    let job = validate(&w, key, "exec-1").await.unwrap();
    assert!(!job.duplicate);
    assert_eq!(
        (job.owner.as_str(), job.image_id.as_str()),
        ("alice", "01TEST")
    );
    assert_eq!(
        (job.source.width, job.source.height),
        (Some(3000), Some(2000))
    );
    assert_eq!(job.recipe.renditions.len(), 3, "the default preset is web");

    let resized = w.steps.resize(job.clone()).await.unwrap();
    assert_eq!(resized.sha256.len(), 64);
    // 2048 of 3000 is more than half: no shrink-on-load, the full image is decoded.
    assert_eq!(
        (resized.decoded_width, resized.decoded_height),
        (3000, 2000)
    );
    let mut stored = Vec::new();
    for item in resized.items {
        let item = w.steps.filter(item).await.unwrap();
        stored.push(w.steps.store(item).await.unwrap());
    }
    let dims: Vec<_> = stored
        .iter()
        .map(|r| (r.name.as_str(), r.width, r.height, r.format))
        .collect();
    assert_eq!(
        dims,
        [
            ("thumb", 256, 256, Format::Webp),
            ("medium", 1024, 683, Format::Jpeg),
            ("large", 2048, 1365, Format::Jpeg)
        ]
    );
    for r in &stored {
        let obj = w.objects.object(&r.key).expect("rendition written");
        assert_eq!(obj.body.len() as u64, r.bytes);
        assert_eq!(obj.opts.content_type.as_deref(), Some(r.format.mime()));
        assert_eq!(
            obj.opts.cache_control.as_deref(),
            Some(pipeline::RENDITION_CACHE_CONTROL)
        );
        let header = imaging::probe(&obj.body, &imaging::Limits::default()).unwrap();
        assert_eq!(
            (header.width, header.height),
            (r.width, r.height),
            "{}",
            r.name
        );
        assert!(r.key.starts_with("renditions/alice/01TEST/"), "{}", r.key);
    }

    let out = w
        .steps
        .notify(NotifyInput::Success {
            job: Box::new(job),
            sha256: Some(resized.sha256.clone()),
            renditions: stored.clone(),
        })
        .await
        .unwrap();
    assert_eq!(out.status, Status::Complete);
    let record = w.metadata.get("01TEST").await.unwrap().unwrap();
    assert_eq!(record.status, Status::Complete);
    assert_eq!(record.renditions.len(), 3);
    assert_eq!(
        record.source.sha256.as_deref(),
        Some(resized.sha256.as_str())
    );
    let events = w.notifier.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Completed);
    assert!(
        w.work.is_empty(),
        "intermediates are cleared once the image is done"
    );
    assert_eq!(
        w.objects.object(key).unwrap().body.as_ref(),
        &original,
        "original untouched"
    );
}

#[tokio::test]
async fn shrink_on_load_when_every_rendition_is_small() {
    let w = world(Config::default());
    let key = "uploads/bob/01SHRINK/big.jpg";
    w.objects.insert(key, photo(4000, 3000), BTreeMap::new());
    let mut job = validate(&w, key, "e").await.unwrap();
    job.recipe = Recipe::from_json(
        r#"{"renditions":[{"name":"small","resize":{"width":400},"format":"jpeg"}]}"#,
    )
    .unwrap();
    let resized = w.steps.resize(job).await.unwrap();
    // 400/4000 = 1/10: the DCT scale 1/8 gives 500x375, still at least 400 wide.
    assert_eq!((resized.decoded_width, resized.decoded_height), (500, 375));
    assert_eq!(
        (resized.items[0].width, resized.items[0].height),
        (400, 300)
    );
}

#[tokio::test]
async fn filter_applies_operations_in_order() {
    let w = world(Config::default());
    let key = "uploads/c/01OPS/a.jpg";
    w.objects.insert(key, photo(400, 200), BTreeMap::new());
    let mut job = validate(&w, key, "e").await.unwrap();
    job.recipe = Recipe::from_json(
        r#"{"renditions":[{"name":"g","resize":{"width":100,"height":50,"fit":"fill"},
            "operations":[{"op":"rotate","angle":90},{"op":"grayscale"}],"format":"png"}]}"#,
    )
    .unwrap();
    let item = w.steps.resize(job).await.unwrap().items.remove(0);
    let item = w.steps.filter(item).await.unwrap();
    assert_eq!(
        (item.width, item.height),
        (50, 100),
        "rotate 90 swaps the sides"
    );
    let stored = w.steps.store(item).await.unwrap();
    let png = w.objects.object(&stored.key).unwrap().body;
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    assert!(
        img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
        "grayscale gives R=G=B"
    );
}

#[tokio::test]
async fn an_overlay_puts_another_of_the_owners_images_over_the_rendition() {
    let w = world(Config::default());
    // The mark: a 40x20 PNG, opaque white, uploaded and claimed like any image of owner c.
    let logo = image::RgbaImage::from_pixel(40, 20, image::Rgba([255, 255, 255, 255]));
    let logo = imaging::encode(
        &Image::ImageRgba8(logo),
        &EncodeOptions {
            format: Format::Png,
            ..Default::default()
        },
    )
    .unwrap();
    let logo_key = "uploads/c/01LOGO/logo.png";
    w.objects.insert(logo_key, logo, BTreeMap::new());
    validate(&w, logo_key, "e-logo").await.unwrap();
    w.metadata.complete("01LOGO", None).await.unwrap();
    let key = "uploads/c/01BASE/a.jpg";
    w.objects.insert(key, photo(400, 200), BTreeMap::new());
    let recipe = |image: &str| {
        Recipe::from_json(&format!(
            r#"{{"renditions":[{{"name":"m","resize":{{"width":400}},"format":"png",
                "operations":[{{"op":"overlay","image":"{image}","gravity":"northwest",
                "margin":10,"scale":0.25}}]}}]}}"#
        ))
        .unwrap()
    };
    let mut job = validate(&w, key, "e").await.unwrap();
    job.recipe = recipe("01LOGO");
    let item = w.steps.resize(job.clone()).await.unwrap().items.remove(0);
    let item = w.steps.filter(item).await.unwrap();
    let stored = w.steps.store(item).await.unwrap();
    let png = w.objects.object(&stored.key).unwrap().body;
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    // 100x50 from (10, 10): white there, the photo's gradient outside.
    assert_eq!(img.get_pixel(50, 30).0, [255, 255, 255]);
    assert_ne!(img.get_pixel(150, 100).0, [255, 255, 255]);

    // Another owner's image, or none, is the recipe's error, named.
    w.objects
        .insert("uploads/d/01THEIRS/x.png", photo(10, 10), BTreeMap::new());
    validate(&w, "uploads/d/01THEIRS/x.png", "e-d")
        .await
        .unwrap();
    w.metadata.complete("01THEIRS", None).await.unwrap();
    for other in ["01THEIRS", "01NONE"] {
        let mut job = job.clone();
        job.recipe = recipe(other);
        let item = w.steps.resize(job).await.unwrap().items.remove(0);
        let e = w.steps.filter(item).await.unwrap_err();
        assert_eq!(e.name(), "InvalidRecipe");
        assert!(e.message.contains(other), "{e}");
    }
    // And a bad value is refused with the recipe.
    let bad = Recipe::from_json(
        r#"{"renditions":[{"name":"m","operations":[{"op":"overlay","image":"x","opacity":2}]}]}"#,
    );
    assert!(bad.unwrap_err().to_string().contains("opacity"));
}

#[tokio::test]
async fn duplicate_events_make_one_claim() {
    let w = world(Config::default());
    let key = "uploads/d/01DUP/a.jpg";
    w.objects.insert(key, photo(64, 64), BTreeMap::new());
    assert!(!validate(&w, key, "exec-a").await.unwrap().duplicate);
    assert!(
        !validate(&w, key, "exec-a").await.unwrap().duplicate,
        "a retry of the owner is not a duplicate"
    );
    assert!(validate(&w, key, "exec-b").await.unwrap().duplicate);
    let page = w.metadata.list(&Default::default()).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].execution_id.as_deref(), Some("exec-a"));
}

#[tokio::test]
async fn hostile_uploads_get_named_errors() {
    let mut config = Config::default();
    config.limits.max_pixels = 1_000_000;
    let w = world(config);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.jpg", Vec::new(), "InvalidImage"),
        (
            "notes.jpg",
            b"just some text, not a photo".to_vec(),
            "UnsupportedFormat",
        ),
        (
            "logo.jpg",
            br#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>"#.to_vec(),
            "UnsupportedFormat",
        ),
        (
            "page.png",
            b"<!DOCTYPE html><html><body>hi</body></html>".to_vec(),
            "UnsupportedFormat",
        ),
        ("huge.jpg", photo(1200, 1000), "ImageTooLarge"),
    ];
    for (name, body, want) in cases {
        let key = format!("uploads/e/01BAD{}/{name}", name.len());
        w.objects.insert(&key, body, BTreeMap::new());
        let err = validate(&w, &key, "e").await.unwrap_err();
        assert_eq!(err.name(), want, "{name}: {err}");
    }
}

#[tokio::test]
async fn a_recipe_over_the_job_budget_is_refused_by_validate() {
    let w = world(Config {
        max_job_pixels: Some(1_000_000),
        ..Config::default()
    });
    let key = "uploads/b/01BUDGET/a.png";
    let mut meta = BTreeMap::new();
    meta.insert(
        "recipe".to_string(),
        r#"{"renditions":[{"name":"a","resize":{"width":700,"height":700,"fit":"fill"}},{"name":"b","resize":{"width":800,"height":700,"fit":"fill"}}]}"#.to_string(),
    );
    w.objects.insert(key, photo(64, 64), meta);
    let err = validate(&w, key, "e").await.unwrap_err();
    assert_eq!(err.name(), "RecipeTooLarge", "{err}");
    assert!(err.message.contains("a job may hold 1000000"), "{err}");
    // The limit follows --max-pixels when no budget is set.
    let mut config = Config::default();
    config.limits.max_pixels = 200_000;
    assert_eq!(config.job_pixel_budget(), 800_000);
}

#[tokio::test]
async fn large_sources_are_marked_and_get_the_large_budget() {
    let w = world(Config {
        max_job_pixels: Some(1_000_000),
        large: Some(pipeline::LargeJobs {
            above_pixels: 300_000,
            max_pixels: 2_000_000,
            job_pixels: 4_000_000,
        }),
        ..Config::default()
    });
    // 800 x 600 = 480,000 pixels: large. Its web renditions (large 2048 wide) would not fit
    // the 1 MP budget of an ordinary job, but fit the large one.
    let big = "uploads/l/01LARGE/pano.jpg";
    w.objects.insert(big, photo(800, 600), BTreeMap::new());
    let job = validate(&w, big, "e1").await.unwrap();
    assert!(job.large);
    assert!(
        serde_json::to_value(&job).unwrap()["large"] == true,
        "the state machine's Choice reads $.job.large"
    );
    // 500 x 500 = 250,000: an ordinary job, and the field is left out.
    let small = "uploads/l/01SMALL/a.jpg";
    w.objects.insert(small, photo(500, 500), BTreeMap::new());
    let job = validate(&w, small, "e2").await.unwrap();
    assert!(!job.large);
    assert!(serde_json::to_value(&job).unwrap().get("large").is_none());

    // Each rendition stays within the ordinary pixel limit, which Filter and Store are sized
    // for: a large source's full-size rendition is refused, a resized one is not.
    let mut config = Config {
        large: Some(pipeline::LargeJobs {
            above_pixels: 100_000,
            max_pixels: 2_000_000,
            job_pixels: 4_000_000,
        }),
        ..Config::default()
    };
    config.limits.max_pixels = 400_000;
    let w = world(config);
    let full = "uploads/l/01FULL/pano.jpg";
    let meta = |recipe: &str| BTreeMap::from([("recipe".to_string(), recipe.to_string())]);
    w.objects.insert(
        full,
        photo(800, 600),
        meta(r#"{"renditions":[{"name":"full"}]}"#),
    );
    let err = validate(&w, full, "e3").await.unwrap_err();
    assert_eq!(err.name(), "RecipeTooLarge", "{err}");
    assert!(err.message.contains("give it a resize"), "{err}");
    let small_rendition = "uploads/l/01FIT/pano.jpg";
    w.objects.insert(
        small_rendition,
        photo(800, 600),
        meta(r#"{"renditions":[{"name":"m","resize":{"width":400}}]}"#),
    );
    assert!(validate(&w, small_rendition, "e4").await.unwrap().large);
    // Over the large limit: refused from the header.
    let huge = "uploads/l/01HUGE/pano.png";
    w.objects.insert(huge, photo(1600, 1400), BTreeMap::new());
    let err = validate(&w, huge, "e5").await.unwrap_err();
    assert_eq!(err.name(), "ImageTooLarge", "{err}");
}

#[tokio::test]
async fn an_ordinary_source_over_the_ordinary_limit_is_refused_when_large_jobs_start_higher() {
    // LargeImagePixels set above MaxPixels: sources between the two are not large, and too
    // big for Resize.
    let mut config = Config {
        large: Some(pipeline::LargeJobs {
            above_pixels: 1_000_000,
            max_pixels: 2_000_000,
            job_pixels: 8_000_000,
        }),
        ..Config::default()
    };
    config.limits.max_pixels = 400_000;
    let w = world(config);
    let key = "uploads/l/01GAP/a.jpg";
    w.objects.insert(key, photo(800, 600), BTreeMap::new());
    let err = validate(&w, key, "e").await.unwrap_err();
    assert_eq!(err.name(), "ImageTooLarge", "{err}");
}

#[tokio::test]
async fn truncated_jpeg_is_rejected_by_resize() {
    let w = world(Config::default());
    let key = "uploads/t/01TRUNC/cut.jpg";
    let mut body = photo(800, 600);
    body.truncate(body.len() / 2);
    w.objects.insert(key, body, BTreeMap::new());
    let job = validate(&w, key, "e").await.expect("the header is intact");
    let err = w.steps.resize(job).await.unwrap_err();
    assert_eq!(err.name(), "InvalidImage", "{err}");
}

#[tokio::test]
async fn recipe_comes_from_object_metadata_and_bad_ones_name_the_field() {
    let w = world(Config::default());
    let key = "uploads/m/01META/a.jpg";
    let mut meta = BTreeMap::new();
    meta.insert("preset".to_string(), "thumbnail".to_string());
    w.objects.insert(key, photo(300, 300), meta);
    let job = validate(&w, key, "e").await.unwrap();
    assert_eq!(job.recipe.renditions.len(), 1);
    assert_eq!(job.recipe.renditions[0].name, "thumb");

    let key = "uploads/m/01BADRECIPE/a.jpg";
    let mut meta = BTreeMap::new();
    meta.insert(
        "recipe".to_string(),
        r#"{"renditions":[{"name":"x","resize":{"width":99999}}]}"#.to_string(),
    );
    w.objects.insert(key, photo(300, 300), meta);
    let err = validate(&w, key, "e").await.unwrap_err();
    assert_eq!(err.name(), "InvalidRecipe");
    assert_eq!(err.message, "renditions[0].resize.width: must be 1..=16384");
}

#[tokio::test]
async fn a_rejection_is_recorded_quarantined_and_alerted_with_the_original_kept() {
    let w = world(Config::default());
    let key = "uploads/q/01REJ/notes.jpg";
    w.objects
        .insert(key, b"plain text".to_vec(), BTreeMap::new());
    let err = validate(&w, key, "exec-q").await.unwrap_err();
    let out = w
        .steps
        .notify(NotifyInput::Failure {
            state: Box::new(FailedState {
                upload: upload(key),
                job: None,
                error: CaughtError {
                    error: err.name().to_string(),
                    cause: Some(
                        serde_json::json!({"errorType": err.name(), "errorMessage": err.message})
                            .to_string(),
                    ),
                },
            }),
            execution_id: "exec-q".into(),
        })
        .await
        .unwrap();
    assert_eq!(out.status, Status::Rejected);
    let record = w.metadata.get("01REJ").await.unwrap().unwrap();
    assert_eq!(record.status, Status::Rejected);
    let error = record.error.unwrap();
    assert_eq!(error.kind, "UnsupportedFormat");
    assert!(
        error.message.starts_with("UnknownFormat"),
        "{}",
        error.message
    );
    assert_eq!(
        w.objects.get(key).await.unwrap(),
        b"plain text",
        "original stays"
    );
    assert_eq!(
        w.objects.get("quarantine/q/01REJ/notes.jpg").await.unwrap(),
        b"plain text"
    );
    let reason = w
        .objects
        .get("quarantine/q/01REJ/notes.jpg.reason.json")
        .await
        .unwrap();
    assert!(
        String::from_utf8(reason)
            .unwrap()
            .contains("UnsupportedFormat")
    );
    let events = w.notifier.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Rejected);
    assert!(events[0].kind.is_alert());
}

#[tokio::test]
async fn a_failure_is_failed_not_rejected() {
    let w = world(Config::default());
    let key = "uploads/f/01FAIL/a.jpg";
    w.objects.insert(key, photo(64, 64), BTreeMap::new());
    let job = validate(&w, key, "exec-f").await.unwrap();
    w.steps
        .notify(NotifyInput::Failure {
            state: Box::new(FailedState {
                upload: upload(key),
                job: Some(job),
                error: CaughtError {
                    error: "States.Timeout".into(),
                    cause: None,
                },
            }),
            execution_id: "exec-f".into(),
        })
        .await
        .unwrap();
    let record = w.metadata.get("01FAIL").await.unwrap().unwrap();
    assert_eq!(record.status, Status::Failed);
    assert!(
        w.objects.object("quarantine/f/01FAIL/a.jpg").is_none(),
        "failures are not quarantined"
    );
    assert_eq!(w.notifier.events()[0].kind, EventKind::Failed);
}

/// Runs NotifyFailure for `err`, as the state machine's Catch does.
async fn notify_failure(
    w: &World,
    key: &str,
    job: Option<Job>,
    error: &str,
    exec: &str,
) -> pipeline::io::NotifyOutput {
    w.steps
        .notify(NotifyInput::Failure {
            state: Box::new(FailedState {
                upload: upload(key),
                job,
                error: CaughtError {
                    error: error.to_string(),
                    cause: None,
                },
            }),
            execution_id: exec.into(),
        })
        .await
        .unwrap()
}

/// The record the API makes before it hands out a form, and the form's object metadata.
async fn awaited(w: &World, owner: &str, id: &str, key: &str) -> BTreeMap<String, String> {
    let now = chrono::Utc::now();
    let record = pipeline::model::ImageRecord {
        derived: Vec::new(),
        id: id.into(),
        owner: owner.into(),
        status: Status::AwaitingUpload,
        source: pipeline::model::SourceInfo {
            focal_point: None,
            alpha: None,
            key: key.into(),
            etag: None,
            bytes: 1,
            format: None,
            width: None,
            height: None,
            sha256: None,
            color_profile: None,
            original: None,
        },
        recipe: None,
        renditions: Vec::new(),
        error: None,
        created_at: now,
        updated_at: now,
        execution_id: None,
        tags: Vec::new(),
        preset: None,
        reprocessed_at: None,
    };
    assert!(w.steps.expect_upload(&record).await.unwrap());
    BTreeMap::from([(pipeline::FORM_METADATA.to_string(), id.to_string())])
}

#[tokio::test]
async fn a_form_posted_after_its_image_was_deleted_brings_nothing_back() {
    let w = world(Config::default());
    let key = "uploads/alice/01GONE/a.jpg";
    let form = awaited(&w, "alice", "01GONE", key).await;
    // The owner deletes the image (the API's DELETE), then the form's file arrives.
    assert!(w.metadata.delete("01GONE").await.unwrap());
    w.objects.insert(key, photo(64, 64), form.clone());
    let err = validate(&w, key, "exec-replay").await.unwrap_err();
    assert_eq!(err.name(), "ImageDeleted");
    let out = notify_failure(&w, key, None, err.name(), "exec-replay").await;
    assert_eq!(out.error.unwrap().kind, "ImageDeleted");
    assert_eq!(w.metadata.get("01GONE").await.unwrap(), None);
    assert!(w.objects.keys().is_empty(), "{:?}", w.objects.keys());
    assert!(w.notifier.events().is_empty(), "nothing to announce");

    // Without the form's mark (a drop into the bucket) an upload still makes its record.
    let drop = "uploads/alice/01DROP/b.jpg";
    w.objects.insert(drop, photo(64, 64), BTreeMap::new());
    validate(&w, drop, "exec-drop").await.unwrap();
    assert!(w.metadata.get("01DROP").await.unwrap().is_some());
}

#[tokio::test]
async fn an_image_deleted_while_processing_leaves_nothing() {
    let w = world(Config::default());
    let key = "uploads/bob/01DEL/a.jpg";
    let form = awaited(&w, "bob", "01DEL", key).await;
    w.objects.insert(key, photo(640, 480), form);
    let job = validate(&w, key, "exec-del").await.unwrap();
    let resized = w.steps.resize(job.clone()).await.unwrap();
    let item = resized.items.into_iter().next().unwrap();
    // The API's DELETE runs between two steps: it removes the original and the record.
    w.objects.delete(key).await.unwrap();
    assert!(w.metadata.delete("01DEL").await.unwrap());
    // The next Store still writes its rendition, then finds the record gone.
    let err = w.steps.store(item).await.unwrap_err();
    assert_eq!(err.name(), "NotFound");
    assert!(
        !w.objects
            .keys()
            .iter()
            .any(|k| k.starts_with("renditions/")),
        "a Store that finds the record gone removes the rendition it wrote"
    );
    // What a Store wrote before the DELETE listed nothing yet is removed by NotifyFailure.
    let early = "renditions/bob/01DEL/early.jpg";
    w.objects
        .insert(early, b"written before".to_vec(), BTreeMap::new());
    let out = notify_failure(&w, key, Some(job), err.name(), "exec-del").await;
    assert_eq!(out.status, Status::Failed);
    assert_eq!(
        w.metadata.get("01DEL").await.unwrap(),
        None,
        "no record comes back"
    );
    assert!(w.objects.keys().is_empty(), "{:?}", w.objects.keys());
    assert!(w.notifier.events().is_empty());
}

#[tokio::test]
async fn invoke_speaks_json_and_names_bad_input() {
    let w = world(Config::default());
    let err = w
        .steps
        .invoke(
            pipeline::StepName::Validate,
            serde_json::json!({"nonsense": true}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.name(), "InvalidInput");
    for step in pipeline::StepName::ALL {
        assert_eq!(
            pipeline::StepName::from_resource(step.resource()),
            Some(step)
        );
    }
}

/// Validate, Resize, then Filter and Store for the first `stored` renditions: where an
/// execution stands when its next Store fails.
async fn up_to_store(
    w: &World,
    key: &str,
    exec: &str,
    stored: usize,
) -> (Job, String, Vec<pipeline::model::RenditionRecord>) {
    w.objects.insert(key, photo(640, 480), BTreeMap::new());
    let job = validate(w, key, exec).await.unwrap();
    let resized = w.steps.resize(job.clone()).await.unwrap();
    let mut records = Vec::new();
    for item in resized.items.into_iter().take(stored) {
        let item = w.steps.filter(item).await.unwrap();
        records.push(w.steps.store(item).await.unwrap());
    }
    (job, resized.sha256, records)
}

fn success(
    job: &Job,
    sha256: &str,
    renditions: &[pipeline::model::RenditionRecord],
) -> NotifyInput {
    NotifyInput::Success {
        job: Box::new(job.clone()),
        sha256: Some(sha256.to_string()),
        renditions: renditions.to_vec(),
    }
}

/// Fails every `publish` of the given kinds, as an unreachable or forbidden topic does.
struct TopicDown {
    inner: Arc<MemoryNotifier>,
    kinds: Vec<EventKind>,
}

#[async_trait::async_trait]
impl pipeline::ports::Notifier for TopicDown {
    async fn publish(&self, event: &pipeline::model::Event) -> Result<(), pipeline::PortError> {
        if self.kinds.contains(&event.kind) {
            return Err(pipeline::PortError::Permanent(
                "topic: access denied".into(),
            ));
        }
        self.inner.publish(event).await
    }
}

#[tokio::test]
async fn a_retried_notify_publishes_once_and_a_failed_publish_is_sent_by_the_retry() {
    let mut w = world(Config::default());
    let (job, sha, stored) = up_to_store(&w, "uploads/a/01ONCE/a.jpg", "exec-1", 3).await;
    // Notify runs, its message goes out, and the step is retried anyway (a timeout, a lost
    // answer): one message.
    w.steps.notify(success(&job, &sha, &stored)).await.unwrap();
    w.steps.notify(success(&job, &sha, &stored)).await.unwrap();
    assert_eq!(w.notifier.events().len(), 1);

    // The first publish fails: the retry is the one that sends it, once.
    let (job, sha, stored) = up_to_store(&w, "uploads/a/01LATE/a.jpg", "exec-2", 3).await;
    let flaky = Arc::new(pipeline::memory::FlakyNotifier::new(
        w.notifier.clone(),
        pipeline::memory::Fault::Transient(1),
    ));
    w.steps.notifier = flaky.clone();
    let err = w
        .steps
        .notify(success(&job, &sha, &stored))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "Transient");
    let record = w.metadata.get("01LATE").await.unwrap().unwrap();
    assert_eq!(
        record.status,
        Status::Complete,
        "recorded before announcing"
    );
    w.steps.notify(success(&job, &sha, &stored)).await.unwrap();
    w.steps.notify(success(&job, &sha, &stored)).await.unwrap();
    let late: Vec<_> = w
        .notifier
        .events()
        .into_iter()
        .filter(|e| e.image_id == "01LATE")
        .collect();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].kind, EventKind::Completed);
    assert_eq!(flaky.faults.calls(), 2, "the third Notify did not publish");
}

#[tokio::test]
async fn a_failed_rendition_takes_the_stored_ones_with_it_and_alerts_once() {
    let w = world(Config::default());
    let key = "uploads/a/01HALF/a.jpg";
    let (job, _, stored) = up_to_store(&w, key, "exec-half", 2).await;
    assert_eq!(stored.len(), 2);
    let listed = |w: &World| {
        w.objects
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("renditions/a/01HALF/"))
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&w).len(), 2);
    // The third rendition's Store fails for good; the Map's Catch runs NotifyFailure, twice
    // (its own retry).
    for _ in 0..2 {
        let out = notify_failure(&w, key, Some(job.clone()), "Internal", "exec-half").await;
        assert_eq!(out.status, Status::Failed);
    }
    let record = w.metadata.get("01HALF").await.unwrap().unwrap();
    assert_eq!(record.status, Status::Failed);
    assert!(record.renditions.is_empty(), "{:?}", record.renditions);
    assert!(listed(&w).is_empty(), "{:?}", listed(&w));
    assert!(w.objects.object(key).is_some(), "the original is kept");
    let events = w.notifier.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::Failed);
}

#[tokio::test]
async fn a_completion_that_cannot_be_announced_is_alerted_and_the_image_kept() {
    let mut w = world(Config::default());
    let key = "uploads/a/01MUTE/a.jpg";
    let (job, sha, stored) = up_to_store(&w, key, "exec-mute", 3).await;
    w.steps.notifier = Arc::new(TopicDown {
        inner: w.notifier.clone(),
        kinds: vec![EventKind::Completed],
    });
    // NotifySuccess fails on every attempt; then the Catch runs NotifyFailure.
    let err = w
        .steps
        .notify(success(&job, &sha, &stored))
        .await
        .unwrap_err();
    let out = notify_failure(&w, key, Some(job.clone()), err.name(), "exec-mute").await;
    assert_eq!(out.status, Status::Complete);
    assert_eq!(out.renditions.len(), 3);
    let record = w.metadata.get("01MUTE").await.unwrap().unwrap();
    assert_eq!(record.status, Status::Complete, "the image is not failed");
    assert_eq!(record.renditions.len(), 3);
    for r in &record.renditions {
        assert!(w.objects.object(&r.key).is_some(), "{} kept", r.key);
    }
    // NotifyFailure retried: still one alert.
    notify_failure(&w, key, Some(job), err.name(), "exec-mute").await;
    let events = w.notifier.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::NotAnnounced);
    assert!(events[0].kind.is_alert());
    assert_eq!(events[0].status, Status::Complete);
    assert_eq!(events[0].error.as_ref().unwrap().kind, err.name());
}

#[tokio::test]
async fn a_notify_failure_after_the_completion_went_out_alerts_nothing() {
    let w = world(Config::default());
    let key = "uploads/a/01SENT/a.jpg";
    let (job, sha, stored) = up_to_store(&w, key, "exec-sent", 3).await;
    // The completion is published, then NotifySuccess fails anyway (a timeout after
    // publishing): the Catch runs NotifyFailure.
    w.steps.notify(success(&job, &sha, &stored)).await.unwrap();
    let out = notify_failure(&w, key, Some(job), "States.Timeout", "exec-sent").await;
    assert_eq!(out.status, Status::Complete);
    assert_eq!(
        out.error, None,
        "nothing went wrong that anyone needs to hear of"
    );
    let events = w.notifier.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::Completed);
    for r in &stored {
        assert!(w.objects.object(&r.key).is_some(), "{} kept", r.key);
    }
}
