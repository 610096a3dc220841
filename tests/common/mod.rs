//! What both end-to-end tests make: test photos and the events that announce them.

use serde_json::{Value, json};

/// A JPEG with gradients and texture, so resizing and encoding have work to do.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = imaging::image::RgbImage::from_fn(w, h, |x, y| {
        imaging::image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    });
    imaging::encode(
        &imaging::Image::ImageRgb8(img),
        &imaging::EncodeOptions {
            format: imaging::Format::Jpeg,
            quality: 90,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The key as S3 puts it in event notifications: each path segment form-encoded (`+` for a
/// space, `%28` for `(`), the slashes as they are.
pub fn event_key(key: &str) -> String {
    key.split('/')
        .map(|segment| form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>())
        .collect::<Vec<_>>()
        .join("/")
}

/// The event EventBridge delivers for an object created in the ingest bucket (`key` as
/// named in the bucket; the event carries it encoded).
pub fn object_created(bucket: &str, key: &str, size: usize, etag: &str) -> Value {
    let key = event_key(key);
    json!({
        "version": "0",
        "id": ulid::Ulid::new().to_string(),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-23T00:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:s3:::{bucket}")],
        "detail": {
            "version": "0",
            "bucket": { "name": bucket },
            "object": { "key": key, "size": size, "etag": etag, "sequencer": "00" },
            "request-id": "r", "requester": "123456789012", "reason": "PutObject"
        }
    })
}
