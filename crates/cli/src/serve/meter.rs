//! The upload body as the multipart parser sees it, metered. The parser (multer) reads
//! whatever the socket has, as far ahead as it can, into its own buffer; left alone, a fast
//! client fills that buffer with the whole body, and a preamble or part header that never
//! ends grows it without bound. The meter gives it a window instead: it reads on only while
//! it has read less than the handler has allowed, then waits for the handler to take data
//! (or to raise the window once the form's signature holds). A hard cap ends the body with an
//! error, and so does a client that sends nothing for [`BODY_IDLE`] or trickles on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use futures::Stream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// An upload that sends nothing for this long is given up: a stalled client holds no
/// connection or temporary file for longer.
pub const BODY_IDLE: Duration = Duration::from_secs(30);
/// After this long, an upload must have averaged [`MIN_RATE`]: a client trickling a byte at a
/// time is given up too.
pub const RATE_GRACE: Duration = Duration::from_secs(30);
/// Bytes a second; a 32 kbit/s line.
pub const MIN_RATE: u64 = 4 * 1024;

/// Why a metered body ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    OverLimit,
    Stalled,
    TooSlow,
}

#[derive(Default)]
struct Shared {
    /// Bytes from the body's start the parser may have read before it waits.
    window: AtomicU64,
    /// Bytes from the body's start past which the body is an error.
    cap: AtomicU64,
    /// Bytes read so far.
    read: AtomicU64,
    /// The reader is waiting for the window to open.
    blocked: AtomicBool,
    blocked_changed: Notify,
    waker: Mutex<Option<Waker>>,
    cut: Mutex<Option<Cut>>,
}

/// The handler's side of a metered body.
#[derive(Clone)]
pub struct Meter(Arc<Shared>);

impl Meter {
    /// A meter that lets the parser read `window` bytes ahead, and never more than `cap`.
    pub fn new(window: u64, cap: u64) -> Meter {
        let shared = Shared::default();
        shared.window.store(window, Ordering::Relaxed);
        shared.cap.store(cap, Ordering::Relaxed);
        Meter(Arc::new(shared))
    }

    /// The body, metered.
    pub fn wrap(&self, body: Body) -> Body {
        let now = Instant::now();
        Body::from_stream(Metered {
            inner: body.into_data_stream(),
            meter: self.clone(),
            read: 0,
            started: now,
            idle: Box::pin(tokio::time::sleep_until(now + BODY_IDLE)),
            done: false,
        })
    }

    /// Lets the parser read up to `window` bytes from the body's start, within `cap`.
    pub fn allow(&self, window: u64, cap: u64) {
        self.0.cap.store(cap, Ordering::Relaxed);
        self.0.window.store(window, Ordering::Relaxed);
        if let Ok(mut waker) = self.0.waker.lock()
            && let Some(w) = waker.take()
        {
            w.wake();
        }
    }

    /// Moves the window `by` bytes on: the handler took that much of the parser's buffer.
    pub fn advance(&self, by: u64) {
        let window = self.0.window.load(Ordering::Relaxed).saturating_add(by);
        self.allow(window, self.0.cap.load(Ordering::Relaxed));
    }

    /// Bytes the parser has read from the body so far.
    pub fn read(&self) -> u64 {
        self.0.read.load(Ordering::Relaxed)
    }

    /// Why the body ended early, if it did.
    pub fn cut(&self) -> Option<Cut> {
        self.0.cut.lock().ok().and_then(|c| *c)
    }

    /// Resolves once the parser waits for a window that only the handler can open: raced
    /// against a parser call that is still pending, it means the parser needs more than the
    /// window holds.
    pub async fn blocked(&self) {
        loop {
            let changed = self.0.blocked_changed.notified();
            if self.0.blocked.load(Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }

    fn stop(&self, cut: Cut) -> std::io::Error {
        if let Ok(mut c) = self.0.cut.lock() {
            *c = Some(cut);
        }
        std::io::Error::other(match cut {
            Cut::OverLimit => "the body is over its limit",
            Cut::Stalled => "the body stalled",
            Cut::TooSlow => "the body arrives too slowly",
        })
    }
}

struct Metered {
    inner: BodyDataStream,
    meter: Meter,
    read: u64,
    started: Instant,
    idle: Pin<Box<Sleep>>,
    done: bool,
}

impl Metered {
    fn fail(&mut self, cut: Cut) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.done = true;
        Poll::Ready(Some(Err(self.meter.stop(cut))))
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let shared = self.meter.0.clone();
        if self.read > shared.cap.load(Ordering::Relaxed) {
            return self.fail(Cut::OverLimit);
        }
        if self.read >= shared.window.load(Ordering::Relaxed) {
            if let Ok(mut waker) = shared.waker.lock() {
                *waker = Some(cx.waker().clone());
            }
            // Checked again now that the waker is in place: the window may have opened.
            if self.read >= shared.window.load(Ordering::Relaxed) {
                shared.blocked.store(true, Ordering::Release);
                shared.blocked_changed.notify_waiters();
                return Poll::Pending;
            }
        }
        if shared.blocked.swap(false, Ordering::AcqRel) {
            // Time spent waiting on the handler is not the client's.
            let next = Instant::now() + BODY_IDLE;
            self.idle.as_mut().reset(next);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.read = self.read.saturating_add(chunk.len() as u64);
                shared.read.store(self.read, Ordering::Relaxed);
                let elapsed = self.started.elapsed();
                if elapsed > RATE_GRACE
                    && self.read < (elapsed - RATE_GRACE).as_secs().saturating_mul(MIN_RATE)
                {
                    return self.fail(Cut::TooSlow);
                }
                let next = Instant::now() + BODY_IDLE;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => self.fail(Cut::Stalled),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
