//! `imgpipe serve` against hostile clients, one test per kind of attack, each measured from
//! outside: the server's peak RSS (VmHWM) where the attack is about memory, how long until a
//! held connection is dropped where it is about time. Raw TCP where a well-behaved HTTP
//! client would not send what an attacker does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/serve.rs"]
mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's defaults these tests rely on (crates/cli/src/serve/{http,transfer}.rs).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_IDLE: Duration = Duration::from_secs(30);
/// Scheduling slack on a busy 2-core machine, on top of a server deadline.
const SLACK: Duration = Duration::from_secs(8);

/// A process's memory high-water mark, in MB.
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .unwrap()
}

async fn health_ok(http: &reqwest::Client, serve: &Serve) {
    let res = http.get(serve.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

fn addr(serve: &Serve) -> String {
    serve.url.trim_start_matches("http://").to_string()
}

/// Reads until the server answers with a status line or closes; `None` when it closed (or
/// said nothing) within `within`.
async fn status_of(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
        }
    }
    let line = String::from_utf8_lossy(&got);
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

/// Waits until the peer closes the connection (or it errors); the time it took.
async fn closed_after(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// Sends a chunked POST /upload whose body is `head` and then `filler` repeated, up to
/// `cap` bytes or until the server stops reading; the status it answered and the bytes that
/// went out.
async fn chunked_upload(
    serve: &Serve,
    head: &[u8],
    filler: u8,
    cap: usize,
) -> (Option<u16>, usize) {
    let mut stream = TcpStream::connect(addr(serve)).await.unwrap();
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=XYZ\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        addr(serve)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let chunk_of = |data: &[u8]| {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    };
    // (An empty chunk would end the body.)
    if !head.is_empty() {
        stream.write_all(&chunk_of(head)).await.unwrap();
    }
    let filler = chunk_of(&vec![filler; 1 << 20]);
    let mut sent = head.len();
    while sent < cap {
        // A server that stopped reading fills the socket buffers; the write then stalls.
        match tokio::time::timeout(Duration::from_secs(3), stream.write_all(&filler)).await {
            Ok(Ok(())) => sent += 1 << 20,
            _ => break,
        }
    }
    (status_of(&mut stream, Duration::from_secs(20)).await, sent)
}

#[tokio::test]
async fn upload_bodies_are_cut_before_the_signature_check_chunked_or_not() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("data"), &["--no-inbox"]);
    let pid = serve.child.id();
    let http = client();
    health_ok(&http, &serve).await;
    let before = peak_rss_mb(pid);
    const CAP: usize = 300 << 20;

    // A preamble that never reaches a boundary, chunked so no length is declared.
    let (status, sent) = chunked_upload(&serve, b"", b'a', CAP).await;
    assert_eq!(status, Some(413), "after {sent} bytes");
    assert!(
        sent < 64 << 20,
        "the server read {sent} bytes of a preamble"
    );

    // A part header that never ends.
    let (status, sent) = chunked_upload(
        &serve,
        b"--XYZ\r\nContent-Disposition: form-data; name=\"policy\"\r\nX-Pad: ",
        b'a',
        CAP,
    )
    .await;
    assert_eq!(status, Some(413), "after {sent} bytes");

    // A field that never ends: refused at its own 8 KiB limit.
    let (status, _) = chunked_upload(
        &serve,
        b"--XYZ\r\nContent-Disposition: form-data; name=\"policy\"\r\n\r\n",
        b'a',
        CAP,
    )
    .await;
    assert!(matches!(status, Some(400 | 413)), "{status:?}");

    // Fields, then a file with no valid signature: refused before its bytes are stored.
    let (status, _) = chunked_upload(
        &serve,
        b"--XYZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nuploads/x/1/a.jpg\r\n\
          --XYZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n",
        0xff,
        CAP,
    )
    .await;
    assert!(matches!(status, Some(400 | 403)), "{status:?}");

    // A declared length over the limit is answered before anything is read.
    let mut stream = TcpStream::connect(addr(&serve)).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; \
                 boundary=XYZ\r\nContent-Length: 1073741824\r\n\r\n",
                addr(&serve)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        status_of(&mut stream, Duration::from_secs(10)).await,
        Some(413)
    );

    // The API's JSON body, chunked, past its 64 KiB limit.
    let alice = token(&serve.data, "alice", false);
    let mut stream = TcpStream::connect(addr(&serve)).await.unwrap();
    let mut request = format!(
        "POST /v1/uploads HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        addr(&serve)
    )
    .into_bytes();
    for _ in 0..40 {
        request.extend_from_slice(b"1000\r\n");
        request.extend_from_slice(&[b' '; 0x1000]);
        request.extend_from_slice(b"\r\n");
    }
    let _ = stream.write_all(&request).await;
    assert_eq!(
        status_of(&mut stream, Duration::from_secs(10)).await,
        Some(413),
        "a 160 KiB JSON body was not refused"
    );

    let grown = peak_rss_mb(pid).saturating_sub(before);
    assert!(
        grown < 64,
        "the server's peak RSS grew by {grown} MB during the attack"
    );
    health_ok(&http, &serve).await;
}

/// A PNG of one pixel.
fn tiny_png() -> Vec<u8> {
    imaging::encode(
        &imaging::Image::ImageRgb8(imaging::image::RgbImage::new(1, 1)),
        &imaging::EncodeOptions {
            format: imaging::Format::Png,
            quality: 90,
            lossless: true,
            ..Default::default()
        },
    )
    .unwrap()
}

async fn create_with_recipe(api: &Api, serve: &Serve, bytes: usize, recipe: Value) -> Value {
    let res = api
        .http
        .post(serve.url("/v1/uploads"))
        .bearer_auth(&api.token)
        .json(&json!({
            "filename": "dot.png",
            "contentType": "image/png",
            "bytes": bytes,
            "recipe": recipe,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_recipe_demanding_gigabytes_is_refused_and_memory_stays_low() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("data"), &["--no-inbox"]);
    let alice = Api::new(&token(&serve.data, "alice", false));
    let png = tiny_png();
    // Sixteen 7000x7000 renditions: each within the 50 MP limit, 784 MP (3 GB) together.
    let renditions: Vec<Value> = (0..16)
        .map(|i| json!({"name": format!("r{i}"), "resize": {"width": 7000, "height": 7000, "fit": "fill"}}))
        .collect();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let created = create_with_recipe(
            &alice,
            &serve,
            png.len(),
            json!({ "renditions": renditions }),
        )
        .await;
        let res = alice
            .post_form(&created, &form_fields(&created), &png, Some("image/png"))
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        ids.push(created["imageId"].as_str().unwrap().to_string());
    }
    for id in ids {
        let record = alice.wait_final(&serve, &id).await;
        assert_eq!(record["status"], "REJECTED", "{record}");
        assert_eq!(record["error"]["type"], "RecipeTooLarge", "{record}");
    }
    let peak = peak_rss_mb(serve.child.id());
    assert!(peak < 300, "peak RSS {peak} MB");
}

/// Opens POST /upload for `created`'s form with its full length declared, sends the fields
/// and half the file, and stops.
async fn stall_upload(created: &Value, file: &[u8]) -> TcpStream {
    let url = created["upload"]["url"].as_str().unwrap();
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (content_type, body) = multipart(&form_fields(created), file, Some("image/jpeg"));
    let mut stream = TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&body[..body.len() - file.len() / 2])
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn stalled_uploads_hold_no_queue_place_and_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &tmp.path().join("data"),
        &["--queue", "1", "--jobs", "1", "--no-inbox"],
    );
    let alice = Api::new(&token(&serve.data, "alice", false));
    let photo = jpeg(320, 240);
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let created = alice.create_upload(&serve, photo.len(), "image/jpeg").await;
        stalled.push(stall_upload(&created, &photo).await);
    }
    let started = Instant::now();
    // With every queue place held by a stalled client, this would answer 503.
    let created = alice.create_upload(&serve, photo.len(), "image/jpeg").await;
    let res = alice
        .post_form(&created, &form_fields(&created), &photo, Some("image/jpeg"))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let record = alice
        .wait_final(&serve, created["imageId"].as_str().unwrap())
        .await;
    assert_eq!(record["status"], "COMPLETE", "{record}");
    for mut stream in stalled {
        let status = status_of(&mut stream, BODY_IDLE + SLACK).await;
        assert_eq!(status, Some(408), "a stalled upload was not answered");
    }
    let took = started.elapsed();
    assert!(
        took < BODY_IDLE + SLACK,
        "stalled uploads were held for {took:?}"
    );
    // Nothing of them was kept.
    assert_eq!(
        files_under(&serve.data.join("objects/uploads")).len(),
        1,
        "{:?}",
        files_under(&serve.data.join("objects"))
    );
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_dropped_and_health_answers_throughout() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("data"), &["--no-inbox"]);
    let http = client();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr(&serve)).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A connection that made one request and then stays idle.
    let mut idle = TcpStream::connect(addr(&serve)).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        status_of(&mut idle, Duration::from_secs(10)).await,
        Some(200)
    );
    let idle_since = Instant::now();

    let mut worst = Duration::ZERO;
    while started.elapsed() < HEADER_TIMEOUT + Duration::from_secs(2) {
        let asked = Instant::now();
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(serve.url("/health")).send(),
        )
        .await
        .expect("/health did not answer within 5 s")
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        worst = worst.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (i, stream) in slow.iter_mut().enumerate() {
        let left = (HEADER_TIMEOUT + SLACK).saturating_sub(started.elapsed());
        let closed = closed_after(stream, left).await;
        assert!(
            closed.is_some(),
            "slow connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    let left = (HEADER_TIMEOUT + SLACK).saturating_sub(idle_since.elapsed());
    assert!(
        closed_after(&mut idle, left).await.is_some(),
        "an idle keep-alive connection stayed open"
    );
    eprintln!("slowest /health during the attack: {worst:?}");
}

#[tokio::test]
async fn a_slow_api_body_is_answered_408() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("data"), &["--no-inbox"]);
    let alice = token(&serve.data, "alice", false);
    let mut stream = TcpStream::connect(addr(&serve)).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let status = status_of(&mut stream, Duration::from_secs(30) + SLACK).await;
    assert_eq!(status, Some(408), "after {:?}", started.elapsed());
}

#[tokio::test]
async fn without_auth_only_loopback_host_names_are_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("data"), &["--auth", "none", "--no-inbox"]);
    let ask = |host: &'static str| {
        let addr = addr(&serve);
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(format!("GET /v1/images HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            status_of(&mut stream, Duration::from_secs(10)).await
        }
    };
    // A DNS-rebinding page reaches the server under its own name.
    assert_eq!(ask("rebind.example.com:8080").await, Some(421));
    assert_eq!(ask("127.0.0.1.nip.io").await, Some(421));
    assert_eq!(ask("localhost:8080").await, Some(200));
    assert_eq!(ask("127.0.0.1").await, Some(200));
    let res = client()
        .get(serve.url("/v1/images"))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_error(res, StatusCode::MISDIRECTED_REQUEST, "MisdirectedRequest").await;
}

#[tokio::test]
async fn one_form_posted_eight_times_at_once_stores_one_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("data"), &["--no-inbox"]);
    let alice = Api::new(&token(&serve.data, "alice", false));
    let photo = jpeg(640, 480);
    let created = alice.create_upload(&serve, photo.len(), "image/jpeg").await;
    let fields = form_fields(&created);
    let answers = futures::future::join_all(
        (0..8).map(|_| alice.post_form(&created, &fields, &photo, Some("image/jpeg"))),
    )
    .await;
    let mut codes: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    codes.sort();
    assert_eq!(codes, [204, 409, 409, 409, 409, 409, 409, 409]);
    let record = alice
        .wait_final(&serve, created["imageId"].as_str().unwrap())
        .await;
    assert_eq!(record["status"], "COMPLETE", "{record}");
}

/// Every file of image `id` in the store: original, renditions, quarantine, metadata.
fn files_of(serve: &Serve, id: &str) -> Vec<String> {
    files_under(&serve.data.join("objects"))
        .into_iter()
        .filter(|f| f.contains(id))
        .collect()
}

#[tokio::test]
async fn a_deleted_image_stays_deleted_whatever_its_form_or_execution_does() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("data"), &["--no-inbox", "--jobs", "1"]);
    let alice = Api::new(&token(&serve.data, "alice", false));
    let photo = jpeg(320, 240);

    // A form replayed after its image was processed and deleted: refused, nothing returns.
    let created = alice.create_upload(&serve, photo.len(), "image/jpeg").await;
    let id = created["imageId"].as_str().unwrap().to_string();
    let fields = form_fields(&created);
    let res = alice
        .post_form(&created, &fields, &photo, Some("image/jpeg"))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(alice.wait_final(&serve, &id).await["status"], "COMPLETE");
    assert_eq!(
        alice.delete_image(&serve, &id).await,
        StatusCode::NO_CONTENT
    );
    let res = alice
        .post_form(&created, &fields, &photo, Some("image/jpeg"))
        .await;
    assert_error(res, StatusCode::GONE, "ImageDeleted").await;
    // A form whose image was deleted before any file came: the same.
    let unused = alice.create_upload(&serve, photo.len(), "image/jpeg").await;
    let unused_id = unused["imageId"].as_str().unwrap().to_string();
    assert_eq!(
        alice.delete_image(&serve, &unused_id).await,
        StatusCode::NO_CONTENT
    );
    let res = alice
        .post_form(&unused, &form_fields(&unused), &photo, Some("image/jpeg"))
        .await;
    assert_error(res, StatusCode::GONE, "ImageDeleted").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in [&id, &unused_id] {
        let (status, _) = alice.get(&serve.url(&format!("/v1/images/{id}"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(files_of(&serve, id), Vec::<String>::new());
    }

    // DELETE while the image is processing: slow renditions of a large photo, deleted as
    // soon as the record says PROCESSING. What the execution writes after goes too.
    let big = jpeg(3000, 2000);
    let renditions: Vec<Value> = (0..6)
        .map(|i| {
            json!({"name": format!("r{i}"), "resize": {"width": 2400},
                   "operations": [{"op": "blur", "sigma": 20.0}]})
        })
        .collect();
    let res = alice
        .http
        .post(serve.url("/v1/uploads"))
        .bearer_auth(&alice.token)
        .json(&json!({
            "filename": "big.jpg",
            "contentType": "image/jpeg",
            "bytes": big.len(),
            "recipe": { "renditions": renditions },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let id = created["imageId"].as_str().unwrap().to_string();
    let res = alice
        .post_form(&created, &form_fields(&created), &big, Some("image/jpeg"))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let url = serve.url(&format!("/v1/images/{id}"));
    let started = Instant::now();
    loop {
        let (status, record) = alice.get(&url).await;
        assert_eq!(status, StatusCode::OK);
        match record["status"].as_str().unwrap() {
            "PROCESSING" => break,
            "AWAITING_UPLOAD" => {}
            other => panic!("{other} before the DELETE could be sent: make the recipe slower"),
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        alice.delete_image(&serve, &id).await,
        StatusCode::NO_CONTENT
    );
    // The execution ends by removing what it wrote; the log says when. If its Resize finds
    // the original gone before DELETE has removed the record (DELETE removes the object
    // first), it ends as a failure instead; either way nothing may be left.
    let started = Instant::now();
    while !serve.log().contains("what this execution wrote is removed")
        && !serve.log().contains("not processed status=FAILED")
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the execution did not end; log:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, record) = alice.get(&url).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{record}");
    assert_eq!(files_of(&serve, &id), Vec::<String>::new());
}

#[tokio::test]
async fn one_user_creating_forms_in_a_loop_is_stopped_and_others_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    // The defaults: 120 forms a minute, 100 open.
    let serve = Serve::start(&tmp.path().join("data"), &["--no-inbox"]);
    let mallory = Api::new(&token(&serve.data, "mallory", false));
    let body = json!({"filename": "x.jpg", "contentType": "image/jpeg", "bytes": 100});
    let mut created = 0;
    let mut refused = None;
    for _ in 0..300 {
        let res = mallory
            .http
            .post(serve.url("/v1/uploads"))
            .bearer_auth(&mallory.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        match res.status() {
            StatusCode::CREATED => created += 1,
            _ => {
                refused = Some(res);
                break;
            }
        }
    }
    assert_eq!(created, 100, "the open-forms limit is 100");
    let res = refused.expect("300 forms were created in a loop");
    let after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        after >= 60,
        "Retry-After {after}: the first form expires in 15 minutes"
    );
    assert_error(res, StatusCode::TOO_MANY_REQUESTS, "TooManyRequests").await;
    // Nothing more was recorded for the refused request; another user is served.
    let alice = Api::new(&token(&serve.data, "alice", true));
    let (status, page) = alice.get(&serve.url("/v1/images?limit=100")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 100);
    assert!(page["cursor"].is_null(), "more than 100 records: {page}");
    alice.create_upload(&serve, 100, "image/jpeg").await;
}

#[tokio::test]
async fn metrics_beyond_loopback_need_an_admin_token() {
    let tmp = tempfile::tempdir().unwrap();
    // On every interface: reached here through 127.0.0.1, but not a loopback-only server.
    let serve = Serve::start_at(&tmp.path().join("data"), "0.0.0.0:0", &["--no-inbox"]);
    let url = serve.url.replace("0.0.0.0", "127.0.0.1");
    let http = client();
    let metrics = format!("{url}/metrics");
    let res = http.get(&metrics).send().await.unwrap();
    assert_error(res, StatusCode::UNAUTHORIZED, "Unauthorized").await;
    let user = token(&serve.data, "alice", false);
    let res = http.get(&metrics).bearer_auth(&user).send().await.unwrap();
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;
    let res = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "/health stays open");
    let admin = token(&serve.data, "ops", true);
    let res = http.get(&metrics).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(text.contains("imgpipe_http_requests"), "{text}");

    // On loopback only this machine reaches it, and no token is needed.
    let local = Serve::start(&tmp.path().join("local"), &["--no-inbox"]);
    let res = http.get(local.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[test]
fn no_user_may_take_the_name_that_owns_inbox_and_bucket_drops() {
    let tmp = tempfile::tempdir().unwrap();
    for user in ["inbox", "drop"] {
        let out = std::process::Command::new(BIN)
            .args(["token", "--user", user, "--data"])
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "a token for `{user}` was issued");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("reserved"), "{stderr}");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = tmp.path().join("photo.jpg");
    std::fs::write(&photo, jpeg(64, 48)).unwrap();
    // `imgpipe inspect photo.jpg | head -0`, without the race: the reading end is closed
    // before the command starts.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(BIN)
        .arg("inspect")
        .arg(&photo)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn the_inbox_leaves_links_pipes_and_oversized_files_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("data"), &["--max-bytes", "1000000"]);
    let inbox = serve.data.join("inbox");
    std::os::unix::fs::symlink(serve.data.join("auth.key"), inbox.join("key.jpg")).unwrap();
    nix::unistd::mkfifo(&inbox.join("pipe.jpg"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // 1 GiB that takes no disk until someone copies it.
    std::fs::File::create(inbox.join("huge.jpg"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    std::fs::write(inbox.join("ok.jpg"), jpeg(320, 240)).unwrap();
    let started = Instant::now();
    while inbox.join("ok.jpg").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the inbox stopped: {}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more polls for the others to be looked at.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for left in ["key.jpg", "pipe.jpg", "huge.jpg"] {
        assert!(
            std::fs::symlink_metadata(inbox.join(left)).is_ok(),
            "{left} was taken"
        );
    }
    let stored = files_under(&serve.data.join("objects/uploads/inbox"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].ends_with("ok.jpg"), "{stored:?}");
    assert!(
        serve.log().contains("inbox file left where it is"),
        "{}",
        serve.log()
    );
    // The pipe never held the inbox: it still stops at once.
    let status = serve.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_data_directory_is_private_and_exports_are_not() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let photo = tmp.path().join("photo.jpg");
    std::fs::write(&photo, jpeg(64, 48)).unwrap();
    let data = tmp.path().join("new/data");
    let out = tmp.path().join("out");
    let run = std::process::Command::new(BIN)
        .args(["process", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg(&photo)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("objects")), 0o700);
    assert_eq!(mode(&data.join("imgpipe.db")), 0o600);
    assert_eq!(mode(&data.join("events.jsonl")), 0o600);
    let objects = files_under(&data.join("objects"));
    assert!(!objects.is_empty());
    for object in &objects {
        assert_eq!(mode(&data.join("objects").join(object)), 0o600, "{object}");
    }
    let exported = files_under(&out);
    assert!(!exported.is_empty());
    for file in &exported {
        assert_eq!(mode(&out.join(file)), 0o644, "{file}");
    }
}
