//! Configuration of a deployed function from its environment variables, with every problem
//! reported at once so a misconfigured stack is fixed in one deploy, not one per variable.

use std::fmt;

use imaging::Limits;
use pipeline::Presets;

pub const UPLOADS_BUCKET: &str = "IMGPIPE_UPLOADS_BUCKET";
pub const RENDITIONS_BUCKET: &str = "IMGPIPE_RENDITIONS_BUCKET";
pub const TABLE: &str = "IMGPIPE_TABLE";
pub const ALERTS_TOPIC_ARN: &str = "IMGPIPE_ALERTS_TOPIC_ARN";
pub const EVENTS_TOPIC_ARN: &str = "IMGPIPE_EVENTS_TOPIC_ARN";
pub const MAX_PIXELS: &str = "IMGPIPE_MAX_PIXELS";
pub const MAX_BYTES: &str = "IMGPIPE_MAX_BYTES";
/// Pixels one job may hold (source plus resized renditions); unset, 4 x the pixel limit.
pub const MAX_JOB_PIXELS: &str = "IMGPIPE_MAX_JOB_PIXELS";
pub const DEFAULT_PRESET: &str = "IMGPIPE_DEFAULT_PRESET";
/// Sources over this many pixels are large jobs (the state machine's `ResizeLarge`); set
/// together with [`LARGE_JOB_PIXELS`], read by Validate.
pub const LARGE_IMAGE_PIXELS: &str = "IMGPIPE_LARGE_IMAGE_PIXELS";
/// The most pixels a large source may have (each rendition stays within [`MAX_PIXELS`]).
pub const LARGE_MAX_PIXELS: &str = "IMGPIPE_LARGE_MAX_PIXELS";
/// A large job's pixel budget (source plus resized renditions).
pub const LARGE_JOB_PIXELS: &str = "IMGPIPE_LARGE_JOB_PIXELS";
/// Upload forms one user may create a minute, per api function instance; `0`: no limit.
pub const FORMS_PER_MINUTE: &str = "IMGPIPE_FORMS_PER_MINUTE";
/// Upload forms one user may have open (file not yet sent), across instances; `0`: no limit.
pub const MAX_OPEN_FORMS: &str = "IMGPIPE_MAX_OPEN_FORMS";
/// The api function's Reprocess state machine; unset, `POST /v1/reprocess` answers 501.
pub const REPROCESS_STATE_MACHINE_ARN: &str = "IMGPIPE_REPROCESS_STATE_MACHINE_ARN";
/// Images a reprocess run re-renders at once (the Distributed Map's MaxConcurrency).
pub const REPROCESS_MAX_CONCURRENCY: &str = "IMGPIPE_REPROCESS_MAX_CONCURRENCY";
/// The share of a run's images that may fail before the run fails (0-100).
pub const REPROCESS_TOLERATED_FAILURE_PERCENTAGE: &str =
    "IMGPIPE_REPROCESS_TOLERATED_FAILURE_PERCENTAGE";
/// The widths on-demand transforms snap up to (`320,640,960`); unset, any width.
pub const TRANSFORM_WIDTHS: &str = "IMGPIPE_TRANSFORM_WIDTHS";
/// `true`: a transform size not on [`TRANSFORM_WIDTHS`] is refused instead of snapped.
pub const TRANSFORM_STRICT: &str = "IMGPIPE_TRANSFORM_STRICT";
/// Keys signed transform links are made with, `ID=SECRET[,ID=SECRET]`, the signing key first;
/// unset (and [`LINK_KEYS_SECRET_ARN`] too), `POST /v1/images/{id}/links` answers 501 and
/// `/t/` links are refused.
pub const LINK_KEYS: &str = "IMGPIPE_LINK_KEYS";
/// A Secrets Manager secret whose string is [`LINK_KEYS`]' value, read when the function
/// starts ([`Config::read_secrets`]): the template's way, so the keys never appear in the
/// function's configuration, which more people may read than the secret. One or the other.
pub const LINK_KEYS_SECRET_ARN: &str = "IMGPIPE_LINK_KEYS_SECRET_ARN";
/// Where signed links point (the API's or a CDN's URL); unset, the request's own host.
pub const PUBLIC_URL: &str = "IMGPIPE_PUBLIC_URL";
/// The CloudFront public key ID the distribution in front of the renditions bucket trusts;
/// with [`CDN_PRIVATE_KEY`], signed links followed through the distribution redirect to it.
pub const CDN_KEY_PAIR_ID: &str = "IMGPIPE_CDN_KEY_PAIR_ID";
/// That public key's private half, PEM.
pub const CDN_PRIVATE_KEY: &str = "IMGPIPE_CDN_PRIVATE_KEY";
/// A Secrets Manager secret, JSON `{"publicKey": PEM, "privateKey": PEM}`, whose private key
/// is read when the function starts in place of [`CDN_PRIVATE_KEY`] (the template's way, as
/// for [`LINK_KEYS_SECRET_ARN`]). One or the other.
pub const CDN_KEY_SECRET_ARN: &str = "IMGPIPE_CDN_KEY_SECRET_ARN";
/// Forces S3 path-style addressing on (`true`) or off (`false`); unset, it follows whether an
/// endpoint override is configured.
pub const S3_PATH_STYLE: &str = "IMGPIPE_S3_PATH_STYLE";

/// Where a deployed function finds its resources, and the step settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ingest bucket: `uploads/`, `work/` and `quarantine/`.
    pub uploads_bucket: String,
    pub renditions_bucket: String,
    pub table: String,
    pub alerts_topic_arn: String,
    pub events_topic_arn: String,
    pub steps: pipeline::Config,
    /// The api function's per-user limits on upload forms.
    pub forms: api::FormLimits,
    /// Where the api function starts reprocess runs, if anywhere.
    pub reprocess: Option<ReprocessConfig>,
    /// The api function's on-demand transforms: sizes allowed, link keys, public URL.
    pub transforms: TransformConfig,
}

/// What [`api::Transforms`] is made from.
#[derive(Debug, Clone, Default)]
pub struct TransformConfig {
    pub policy: pipeline::transform::Policy,
    pub link_keys: Option<api::LinkKeys>,
    pub public_url: Option<String>,
    pub cdn: Option<std::sync::Arc<api::CdnSigner>>,
    /// Keys still in Secrets Manager: [`Config::read_secrets`] reads them into `link_keys` and
    /// `cdn` and empties this.
    pub secrets: SecretRefs,
}

/// Secrets named by the environment and not read yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretRefs {
    /// [`LINK_KEYS_SECRET_ARN`].
    pub link_keys: Option<String>,
    /// [`CDN_KEY_PAIR_ID`] and [`CDN_KEY_SECRET_ARN`].
    pub cdn_key: Option<(String, String)>,
}

impl SecretRefs {
    pub fn is_empty(&self) -> bool {
        self.link_keys.is_none() && self.cdn_key.is_none()
    }
}

/// The Reprocess state machine and how each run is bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct ReprocessConfig {
    pub state_machine_arn: String,
    pub max_concurrency: u32,
    pub tolerated_failure_percentage: f64,
}

impl ReprocessConfig {
    pub const DEFAULT_MAX_CONCURRENCY: u32 = 50;
    pub const DEFAULT_TOLERATED_FAILURE_PERCENTAGE: f64 = 5.0;
}

/// Every missing required variable and every unusable value, together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub missing: Vec<&'static str>,
    pub invalid: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            let noun = if self.missing.len() == 1 {
                "variable"
            } else {
                "variables"
            };
            parts.push(format!(
                "missing environment {noun}: {}",
                self.missing.join(", ")
            ));
        }
        parts.extend(self.invalid.iter().cloned());
        f.write_str(&parts.join("; "))
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        // Blank counts as unset: a template parameter left empty is as missing as an absent one.
        let value = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut missing = Vec::new();
        let mut required = |name: &'static str| {
            value(name).unwrap_or_else(|| {
                missing.push(name);
                String::new()
            })
        };
        let uploads_bucket = required(UPLOADS_BUCKET);
        let renditions_bucket = required(RENDITIONS_BUCKET);
        let table = required(TABLE);
        let alerts_topic_arn = required(ALERTS_TOPIC_ARN);
        let events_topic_arn = required(EVENTS_TOPIC_ARN);

        let mut invalid = Vec::new();
        let mut limits = Limits::default();
        let mut number = |name: &str, slot: &mut u64| {
            if let Some(text) = value(name) {
                match text.parse::<u64>() {
                    Ok(n) if n > 0 => *slot = n,
                    _ => invalid.push(format!("{name}: `{text}` is not a whole number")),
                }
            }
        };
        number(MAX_PIXELS, &mut limits.max_pixels);
        number(MAX_BYTES, &mut limits.max_bytes);
        let mut max_job_pixels = 0;
        number(MAX_JOB_PIXELS, &mut max_job_pixels);
        let max_job_pixels = (max_job_pixels > 0).then_some(max_job_pixels);
        let (mut above_pixels, mut large_max, mut job_pixels) = (0, 0, 0);
        number(LARGE_IMAGE_PIXELS, &mut above_pixels);
        number(LARGE_MAX_PIXELS, &mut large_max);
        number(LARGE_JOB_PIXELS, &mut job_pixels);
        let large = match (above_pixels, large_max, job_pixels) {
            (0, 0, 0) => None,
            (0, _, _) | (_, 0, _) | (_, _, 0) => {
                invalid.push(format!(
                    "{LARGE_IMAGE_PIXELS}, {LARGE_MAX_PIXELS} and {LARGE_JOB_PIXELS} go \
                     together: set all three or none"
                ));
                None
            }
            (above_pixels, max_pixels, job_pixels) => Some(pipeline::LargeJobs {
                above_pixels,
                max_pixels,
                job_pixels,
            }),
        };
        let mut forms = api::FormLimits::default();
        // Zero is allowed here: it turns the limit off.
        let mut limit = |name: &str| -> Option<u32> {
            let text = value(name)?;
            match text.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    invalid.push(format!("{name}: `{text}` is not a whole number"));
                    None
                }
            }
        };
        if let Some(n) = limit(FORMS_PER_MINUTE) {
            forms.per_minute = n;
        }
        if let Some(n) = limit(MAX_OPEN_FORMS) {
            forms.open = n as usize;
        }

        let reprocess = value(REPROCESS_STATE_MACHINE_ARN).map(|arn| {
            let mut r = ReprocessConfig {
                state_machine_arn: arn,
                max_concurrency: ReprocessConfig::DEFAULT_MAX_CONCURRENCY,
                tolerated_failure_percentage: ReprocessConfig::DEFAULT_TOLERATED_FAILURE_PERCENTAGE,
            };
            if let Some(text) = value(REPROCESS_MAX_CONCURRENCY) {
                match text.parse::<u32>() {
                    Ok(n) if n >= 1 => r.max_concurrency = n,
                    _ => invalid.push(format!(
                        "{REPROCESS_MAX_CONCURRENCY}: `{text}` is not a whole number of at least 1"
                    )),
                }
            }
            if let Some(text) = value(REPROCESS_TOLERATED_FAILURE_PERCENTAGE) {
                match text.parse::<f64>() {
                    Ok(p) if (0.0..=100.0).contains(&p) => r.tolerated_failure_percentage = p,
                    _ => invalid.push(format!(
                        "{REPROCESS_TOLERATED_FAILURE_PERCENTAGE}: `{text}` is not a percentage \
                         from 0 to 100"
                    )),
                }
            }
            r
        });

        let mut transforms = TransformConfig::default();
        if let Some(text) = value(TRANSFORM_WIDTHS) {
            match pipeline::transform::Policy::parse_widths(&text) {
                Ok(widths) => transforms.policy.widths = widths,
                Err(e) => invalid.push(format!("{TRANSFORM_WIDTHS}: {e}")),
            }
        }
        match value(TRANSFORM_STRICT)
            .map(|t| t.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false" | "0" | "no" | "off") => {}
            Some("true" | "1" | "yes" | "on") if !transforms.policy.widths.is_empty() => {
                transforms.policy.strict = true
            }
            Some("true" | "1" | "yes" | "on") => invalid.push(format!(
                "{TRANSFORM_STRICT}: strict sizes need the list in {TRANSFORM_WIDTHS}"
            )),
            Some(other) => invalid.push(format!(
                "{TRANSFORM_STRICT}: `{other}` is not true or false"
            )),
        }
        match (value(LINK_KEYS), value(LINK_KEYS_SECRET_ARN)) {
            (None, None) => {}
            (Some(text), None) => match api::LinkKeys::parse(&text) {
                Ok(keys) => transforms.link_keys = Some(keys),
                // The value is secret: only the problem is reported.
                Err(e) => invalid.push(format!("{LINK_KEYS}: {e}")),
            },
            (None, Some(arn)) => transforms.secrets.link_keys = Some(arn),
            (Some(_), Some(_)) => invalid.push(format!(
                "{LINK_KEYS} and {LINK_KEYS_SECRET_ARN} are both set: set one or the other"
            )),
        }
        transforms.public_url = value(PUBLIC_URL);
        match (
            value(CDN_KEY_PAIR_ID),
            value(CDN_PRIVATE_KEY),
            value(CDN_KEY_SECRET_ARN),
        ) {
            (None, None, None) => {}
            (Some(id), Some(pem), None) => match api::CdnSigner::new(&id, &pem) {
                Ok(signer) => transforms.cdn = Some(std::sync::Arc::new(signer)),
                // The key is secret: only the problem is reported.
                Err(e) => invalid.push(format!("{CDN_PRIVATE_KEY}: {e}")),
            },
            (Some(id), None, Some(arn)) => transforms.secrets.cdn_key = Some((id, arn)),
            (_, Some(_), Some(_)) => invalid.push(format!(
                "{CDN_PRIVATE_KEY} and {CDN_KEY_SECRET_ARN} are both set: set one or the other"
            )),
            (Some(_), None, None) => invalid.push(format!(
                "{CDN_KEY_PAIR_ID} is set without {CDN_PRIVATE_KEY} or {CDN_KEY_SECRET_ARN}: \
                 set both halves or neither"
            )),
            (None, Some(_), None) => invalid.push(format!(
                "{CDN_PRIVATE_KEY} is set without {CDN_KEY_PAIR_ID}: set both or neither"
            )),
            (None, None, Some(_)) => invalid.push(format!(
                "{CDN_KEY_SECRET_ARN} is set without {CDN_KEY_PAIR_ID}: set both or neither"
            )),
        }

        let presets = Presets::builtin();
        let default_preset = value(DEFAULT_PRESET).unwrap_or_else(|| "web".to_string());
        if presets.get(&default_preset).is_err() {
            let known: Vec<&str> = presets.iter().map(|(name, _)| name).collect();
            invalid.push(format!(
                "{DEFAULT_PRESET}: unknown preset `{default_preset}` (known: {})",
                known.join(", ")
            ));
        }

        if !missing.is_empty() || !invalid.is_empty() {
            return Err(ConfigError { missing, invalid });
        }
        Ok(Config {
            uploads_bucket,
            renditions_bucket,
            table,
            alerts_topic_arn,
            events_topic_arn,
            steps: pipeline::Config {
                limits,
                presets,
                default_preset,
                max_job_pixels,
                // One invocation at a time per function instance: its vCPUs are the limit.
                compute: pipeline::ComputeSlots::per_core(),
                large,
            },
            forms,
            reprocess,
            transforms,
        })
    }
}

/// Whether S3 requests should use path-style addressing: emulators and most S3-compatible
/// stores need it, real S3 prefers virtual-hosted style. `setting` is [`S3_PATH_STYLE`].
pub fn s3_path_style(endpoint_override: bool, setting: Option<&str>) -> bool {
    match setting.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("1" | "true" | "yes" | "on") => true,
        Some("0" | "false" | "no" | "off") => false,
        _ => endpoint_override,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn complete() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (UPLOADS_BUCKET, "up"),
            (RENDITIONS_BUCKET, "out"),
            (TABLE, "images"),
            (
                ALERTS_TOPIC_ARN,
                "arn:aws:sns:us-east-1:123456789012:alerts",
            ),
            (
                EVENTS_TOPIC_ARN,
                "arn:aws:sns:us-east-1:123456789012:events",
            ),
        ])
    }

    fn load(env: &HashMap<&str, &str>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| env.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn every_missing_variable_is_named_at_once() {
        let e = load(&HashMap::new()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("missing environment variables: "),
            "{text}"
        );
        for name in [
            UPLOADS_BUCKET,
            RENDITIONS_BUCKET,
            TABLE,
            ALERTS_TOPIC_ARN,
            EVENTS_TOPIC_ARN,
        ] {
            assert!(text.contains(name), "{name} not in {text}");
        }
        assert!(e.invalid.is_empty());

        let mut env = complete();
        env.remove(TABLE);
        env.insert(EVENTS_TOPIC_ARN, "  ");
        assert_eq!(
            load(&env).unwrap_err().to_string(),
            "missing environment variables: IMGPIPE_TABLE, IMGPIPE_EVENTS_TOPIC_ARN"
        );
    }

    #[test]
    fn bad_values_are_named_with_the_missing_ones() {
        let mut env = complete();
        env.remove(TABLE);
        env.insert(MAX_PIXELS, "abc");
        env.insert(MAX_BYTES, "-5");
        env.insert(DEFAULT_PRESET, "nope");
        let text = load(&env).unwrap_err().to_string();
        assert!(
            text.contains("missing environment variable: IMGPIPE_TABLE"),
            "{text}"
        );
        assert!(
            text.contains("IMGPIPE_MAX_PIXELS: `abc` is not a whole number"),
            "{text}"
        );
        assert!(
            text.contains("IMGPIPE_MAX_BYTES: `-5` is not a whole number"),
            "{text}"
        );
        assert!(
            text.contains("IMGPIPE_DEFAULT_PRESET: unknown preset `nope`"),
            "{text}"
        );
        assert!(text.contains("web"), "{text}");
    }

    #[test]
    fn a_complete_environment_loads_with_defaults() {
        let c = load(&complete()).unwrap();
        assert_eq!(c.uploads_bucket, "up");
        assert_eq!(c.table, "images");
        assert_eq!(c.steps.default_preset, "web");
        assert_eq!(c.steps.limits, Limits::default());
        assert!(c.steps.presets.get("web").is_ok());

        let mut env = complete();
        env.insert(MAX_PIXELS, "1000");
        env.insert(MAX_BYTES, "2048");
        let c = load(&env).unwrap();
        assert_eq!(c.steps.limits.max_pixels, 1000);
        assert_eq!(c.steps.limits.max_bytes, 2048);
        // The job budget follows the pixel limit unless it is set.
        assert_eq!(c.steps.job_pixel_budget(), 4000);
        env.insert(MAX_JOB_PIXELS, "2500");
        assert_eq!(load(&env).unwrap().steps.job_pixel_budget(), 2500);
    }

    #[test]
    fn large_jobs_need_both_variables() {
        let mut env = complete();
        assert_eq!(load(&env).unwrap().steps.large, None);
        env.insert(LARGE_IMAGE_PIXELS, "24000000");
        let text = load(&env).unwrap_err().to_string();
        assert!(text.contains("set all three"), "{text}");
        env.insert(LARGE_JOB_PIXELS, "400000000");
        let text = load(&env).unwrap_err().to_string();
        assert!(text.contains("set all three"), "{text}");
        env.insert(LARGE_MAX_PIXELS, "200000000");
        assert_eq!(
            load(&env).unwrap().steps.large,
            Some(pipeline::LargeJobs {
                above_pixels: 24_000_000,
                max_pixels: 200_000_000,
                job_pixels: 400_000_000
            })
        );
    }

    #[test]
    fn reprocess_is_configured_by_its_state_machine_and_bounded() {
        let mut env = complete();
        assert_eq!(load(&env).unwrap().reprocess, None);
        env.insert(
            REPROCESS_STATE_MACHINE_ARN,
            "arn:aws:states:us-east-1:1:stateMachine:s-reprocess",
        );
        let r = load(&env).unwrap().reprocess.unwrap();
        assert_eq!(
            (r.max_concurrency, r.tolerated_failure_percentage),
            (50, 5.0)
        );
        env.insert(REPROCESS_MAX_CONCURRENCY, "0");
        env.insert(REPROCESS_TOLERATED_FAILURE_PERCENTAGE, "101");
        let text = load(&env).unwrap_err().to_string();
        assert!(
            text.contains(REPROCESS_MAX_CONCURRENCY)
                && text.contains(REPROCESS_TOLERATED_FAILURE_PERCENTAGE),
            "{text}"
        );
        env.insert(REPROCESS_MAX_CONCURRENCY, "200");
        env.insert(REPROCESS_TOLERATED_FAILURE_PERCENTAGE, "0");
        let r = load(&env).unwrap().reprocess.unwrap();
        assert_eq!(
            (r.max_concurrency, r.tolerated_failure_percentage),
            (200, 0.0)
        );
    }

    #[test]
    fn form_limits_default_are_set_and_zero_turns_them_off() {
        let mut env = complete();
        assert_eq!(load(&env).unwrap().forms, api::FormLimits::default());
        env.insert(FORMS_PER_MINUTE, "0");
        env.insert(MAX_OPEN_FORMS, "7");
        let forms = load(&env).unwrap().forms;
        assert_eq!((forms.per_minute, forms.open), (0, 7));
        env.insert(MAX_OPEN_FORMS, "-1");
        let e = load(&env).unwrap_err().to_string();
        assert!(e.contains("IMGPIPE_MAX_OPEN_FORMS: `-1`"), "{e}");
    }
}
