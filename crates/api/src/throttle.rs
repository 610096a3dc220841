//! Per-user limits on upload forms. Each form creates a record, so a caller creating them in a
//! loop fills the metadata store (300 records in 0.7 s by one user, before these limits).
//!
//! Two limits, both answered 429 `TooManyRequests` with `Retry-After`:
//! - a rate: at most `per_minute` forms a minute for each user (a token bucket that refills
//!   evenly over the minute, so a batch may start with a burst of that many). It is kept in
//!   this process: `imgpipe serve` has one; each api Lambda instance has its own, so in the
//!   cloud API Gateway's stage throttling is the bound across instances.
//! - open forms: at most `open` forms created in the last [`UPLOAD_FORM_TTL`] whose file has
//!   not arrived. This is counted in the metadata store, so it holds across every process
//!   and Lambda instance.

use std::num::NonZeroU32;
use std::time::Duration;

use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::StatusCode;
use pipeline::model::{ListQuery, Status};
use pipeline::ports::MetadataStore;

use crate::ApiError;
use crate::routes::UPLOAD_FORM_TTL;

/// Defaults: a photographer's batch through the web page or a script stays well inside
/// them; a loop creating records does not.
pub const DEFAULT_FORMS_PER_MINUTE: u32 = 120;
pub const DEFAULT_OPEN_FORMS: usize = 100;
/// The rate limiter forgets users idle for a minute once it tracks this many, so its memory
/// stays bounded by the users active in the last minute.
const FORGET_ABOVE: usize = 10_000;

/// What the limits are; `0` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormLimits {
    pub per_minute: u32,
    pub open: usize,
}

impl Default for FormLimits {
    fn default() -> Self {
        FormLimits {
            per_minute: DEFAULT_FORMS_PER_MINUTE,
            open: DEFAULT_OPEN_FORMS,
        }
    }
}

impl FormLimits {
    /// No limits: for tests that create many forms on purpose.
    pub fn off() -> Self {
        FormLimits {
            per_minute: 0,
            open: 0,
        }
    }
}

/// The limits and the rate limiter's state; shared by every request of a process.
pub struct FormThrottle {
    limits: FormLimits,
    rate: Option<DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for FormThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormThrottle")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for FormThrottle {
    fn default() -> Self {
        FormThrottle::new(FormLimits::default())
    }
}

impl FormThrottle {
    pub fn new(limits: FormLimits) -> Self {
        let rate = NonZeroU32::new(limits.per_minute)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)));
        FormThrottle { limits, rate }
    }

    pub fn limits(&self) -> FormLimits {
        self.limits
    }

    /// Takes one form from `owner`'s rate, or says how long to wait for the next.
    pub fn take(&self, owner: &str) -> Result<(), ApiError> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        if rate.len() > FORGET_ABOVE {
            rate.retain_recent();
        }
        match rate.check_key(&owner.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(too_many(
                    format!(
                        "at most {} upload forms a minute for each user; retry after the \
                         seconds in Retry-After",
                        self.limits.per_minute
                    ),
                    wait,
                ))
            }
        }
    }

    /// Refuses a new form when `owner` already has the limit's number of open ones.
    pub async fn check_open(
        &self,
        metadata: &dyn MetadataStore,
        owner: &str,
    ) -> Result<(), ApiError> {
        if self.limits.open == 0 {
            return Ok(());
        }
        let ttl = chrono::Duration::seconds(UPLOAD_FORM_TTL.as_secs() as i64);
        let page = metadata
            .list(&ListQuery {
                owner: Some(owner.to_string()),
                status: Some(Status::AwaitingUpload),
                since: Some(Utc::now() - ttl),
                until: None,
                tag: None,
                limit: self.limits.open,
                cursor: None,
            })
            .await?;
        if page.items.len() < self.limits.open {
            return Ok(());
        }
        // The oldest of them expires first; a new form is possible once it has.
        let oldest = page.items.iter().map(|r| r.created_at).min();
        let wait = oldest
            .map(|t| (t + ttl - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(UPLOAD_FORM_TTL);
        Err(too_many(
            format!(
                "{} upload forms are open (created in the last {} minutes, file not sent); \
                 send their files or wait for them to expire",
                self.limits.open,
                UPLOAD_FORM_TTL.as_secs() / 60
            ),
            wait,
        ))
    }
}

fn too_many(message: String, wait: Duration) -> ApiError {
    // Whole seconds, rounded up: a client that waits exactly that long gets through.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
        .with_retry_after(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_per_user_and_says_when_to_retry() {
        let throttle = FormThrottle::new(FormLimits {
            per_minute: 3,
            open: 0,
        });
        for _ in 0..3 {
            throttle.take("alice").unwrap();
        }
        let e = throttle.take("alice").unwrap_err();
        assert_eq!((e.status, e.error.as_str()), (429, "TooManyRequests"));
        // One form every 20 s at 3 a minute.
        let after = e.retry_after.unwrap();
        assert!((1..=20).contains(&after), "{after}");
        throttle.take("bob").unwrap();
    }

    #[test]
    fn zero_turns_the_rate_off() {
        let throttle = FormThrottle::new(FormLimits::off());
        for _ in 0..1000 {
            throttle.take("alice").unwrap();
        }
    }
}
