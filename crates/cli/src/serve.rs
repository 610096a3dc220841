//! `imgpipe serve`: the HTTP API of the deployed stack on one machine. The api crate's routes
//! over the local store and SQLite, a signed upload form and download URLs standing in for S3,
//! a bounded queue of background jobs standing in for EventBridge + Step Functions, the inbox
//! folder standing in for an S3 drop, a small web page, and for operators `/metrics` and a
//! `/health` that checks the store and the database.

mod guard;
mod http;
mod inbox;
mod meter;
mod observe;
pub mod presign;
mod queue;
mod reprocess;
pub mod secret;
mod transfer;
mod web;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use api::auth::{JwksIssuer, JwtAuth, NoAuth};
use api::{ApiState, CallerSource};
use clap::{Args, ValueEnum};
use local::LocalPipeline;
use tokio::sync::watch;

use crate::CommonArgs;
use presign::LocalPresigner;
use queue::Queue;

#[derive(Args)]
#[command(after_help = "Authentication (--auth):\n  \
    local   bearer tokens of the local issuer, signed with DIR/auth.key (see `imgpipe token`)\n  \
    jwks    also tokens of Cognito-style issuers: --issuer ISS [--jwks-url URL] --audience CLIENT_ID\n  \
    none    no authentication, everyone is the admin `local`: loopback addresses only\n\n\
    The web page is at http://ADDR/. Files dropped into DIR/inbox/ are processed with the \
    default preset.")]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the startup line names it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// How callers authenticate.
    #[arg(long, value_enum, default_value = "local")]
    pub auth: AuthMode,
    /// A JWKS issuer's exact `iss` (repeatable; with --auth jwks).
    #[arg(long = "issuer", value_name = "ISS")]
    pub issuers: Vec<String>,
    /// Where the keys of the issuer in the same position are (default: ISS/.well-known/jwks.json).
    #[arg(long = "jwks-url", value_name = "URL")]
    pub jwks_urls: Vec<String>,
    /// An accepted app client id (`aud` or `client_id`), for every JWKS issuer (repeatable).
    #[arg(long = "audience", value_name = "ID")]
    pub audiences: Vec<String>,
    /// How many uploads may wait for processing; beyond that uploads answer 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub queue: u64,
    /// How many images are processed at once (default: the number of CPU cores).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// The URL clients reach this server at, for upload forms and download links (default:
    /// http://ADDR, with a wildcard address replaced by the loopback one).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Do not watch DIR/inbox/.
    #[arg(long)]
    pub no_inbox: bool,
    /// Who owns the images dropped into DIR/inbox/: a user name (as in their tokens), so that
    /// user sees them on the page and through the API. The default, `inbox`, is no user's:
    /// only admins see those.
    #[arg(long, value_name = "USER", default_value = inbox::OWNER, value_parser = parse_inbox_owner)]
    pub inbox_owner: String,
    /// Open connections at most (default 1024, fewer when the open-files limit is lower); more
    /// wait to be accepted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: Option<u64>,
    /// Upload forms (POST /v1/uploads) one user may create a minute; 0 for no limit. Over it:
    /// 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = api::throttle::DEFAULT_FORMS_PER_MINUTE)]
    pub forms_per_minute: u32,
    /// Upload forms one user may hold open (created in the last 15 minutes, file not yet
    /// sent); 0 for no limit. Over it: 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = api::throttle::DEFAULT_OPEN_FORMS)]
    pub max_open_forms: usize,
    /// Widths on-demand transforms (GET /v1/images/{id}/transform) snap up to, e.g.
    /// 320,640,960,1280,1920; default: any width.
    #[arg(long, value_name = "W,W,...", value_parser = parse_widths)]
    pub widths: Option<Widths>,
    /// Refuse transform sizes that are not on --widths (400 naming the allowed ones) instead
    /// of snapping them up.
    #[arg(long, requires = "widths")]
    pub strict_widths: bool,
    /// A key signed transform links are made with, ID=SECRET (a secret of 32 bytes or more;
    /// repeatable: the first signs new links, every one is accepted, so keys rotate without
    /// breaking links). Default: one derived from the server key DIR/auth.key.
    #[arg(long = "link-key", value_name = "ID=SECRET")]
    pub link_keys: Vec<String>,
    /// Caps how long upload forms stay valid, in seconds (tests of expiry).
    #[arg(long, hide = true)]
    pub upload_ttl: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    Local,
    Jwks,
    None,
}

fn resolve_addr(text: &str) -> Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .with_context(|| format!("--addr {text}: expected HOST:PORT, e.g. 127.0.0.1:8080"))?
        .next()
        .with_context(|| format!("--addr {text}: the name resolves to no address"))
}

/// The base URL clients use when none is given: the bound address, with a wildcard one
/// (0.0.0.0, ::) replaced by loopback, which at least works on this machine.
fn default_base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

fn auth_source(args: &ServeArgs, secret: &[u8]) -> Result<(Arc<dyn CallerSource>, String)> {
    if args.auth != AuthMode::Jwks && !(args.issuers.is_empty() && args.jwks_urls.is_empty()) {
        bail!("--issuer and --jwks-url need --auth jwks");
    }
    match args.auth {
        AuthMode::None => Ok((
            Arc::new(NoAuth {
                sub: "local".to_string(),
            }),
            "none".to_string(),
        )),
        AuthMode::Local => Ok((
            Arc::new(JwtAuth::new().with_local(secret.to_vec())),
            "local tokens".to_string(),
        )),
        AuthMode::Jwks => {
            if args.issuers.is_empty() {
                bail!("--auth jwks needs at least one --issuer");
            }
            if args.jwks_urls.len() > args.issuers.len() {
                bail!(
                    "more --jwks-url than --issuer: each URL belongs to the issuer in its position"
                );
            }
            if args.audiences.is_empty() {
                bail!("--auth jwks needs at least one --audience (an app client id)");
            }
            let mut auth = JwtAuth::new().with_local(secret.to_vec());
            for (i, issuer) in args.issuers.iter().enumerate() {
                let issuer = issuer.trim_end_matches('/').to_string();
                let jwks_url = args
                    .jwks_urls
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
                // Whoever can change the keys in transit can mint any token.
                if !jwks_url_is_safe(&jwks_url) {
                    bail!(
                        "--jwks-url {jwks_url}: the keys that verify tokens must come over \
                         https:// (plain http:// only from a loopback address)"
                    );
                }
                auth = auth.with_jwks(JwksIssuer {
                    jwks_url,
                    issuer,
                    audiences: args.audiences.clone(),
                });
            }
            Ok((
                Arc::new(auth),
                format!("local tokens and {}", args.issuers.join(", ")),
            ))
        }
    }
}

/// https://, or http:// to a loopback address (a local test issuer).
fn jwks_url_is_safe(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub async fn run(args: ServeArgs) -> Result<bool> {
    let addr = resolve_addr(&args.addr)?;
    if args.auth == AuthMode::None && !addr.ip().is_loopback() {
        bail!(
            "--auth none serves every image to anyone who can connect, so it is only allowed \
             on a loopback address (127.0.0.1, ::1), not {addr}; use --auth local and \
             `imgpipe token` instead"
        );
    }
    let mut config = args.common.config()?;
    let jobs = crate::workers(args.jobs);
    // As many computations as workers, even when a timed-out step's is still running.
    config.compute = pipeline::ComputeSlots::new(jobs);
    let data = args.common.data.dir.clone();
    let secret = secret::load_or_create(&data)?;
    let (auth, auth_text) = auth_source(&args, &secret)?;
    let metrics_auth = auth.clone();
    let max_body = config.limits.max_bytes.saturating_add(transfer::FORM_SLACK);
    // Before the pipeline exists, so that every step's metrics reach it.
    let metrics = observe::install_metrics()?;
    let pipeline = Arc::new(
        LocalPipeline::open(&data, config)
            .with_context(|| format!("opening data directory {}", data.display()))?,
    );
    for r in &pipeline.interrupted {
        tracing::warn!(image_id = %r.id, owner = %r.owner, "a stopped process left this job unfinished: recorded FAILED (Interrupted)");
    }
    let inbox_dir = data.join(inbox::DIR_NAME);
    if !args.no_inbox {
        std::fs::create_dir_all(&inbox_dir)
            .with_context(|| format!("creating {}", inbox_dir.display()))?;
    }

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let base_url = match &args.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => default_base_url(bound),
    };
    let presigner = Arc::new(
        LocalPresigner::new(&secret, base_url.clone())
            .with_max_upload_ttl(args.upload_ttl.map(Duration::from_secs)),
    );
    let capacity = usize::try_from(args.queue).unwrap_or(usize::MAX);
    let (queue, workers) = Queue::start(pipeline.clone(), capacity, jobs);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = tokio::task::JoinSet::new();
    background.spawn(inbox::recover(
        pipeline.clone(),
        queue.clone(),
        stop_rx.clone(),
    ));
    if !args.no_inbox {
        background.spawn(inbox::watch(
            pipeline.clone(),
            queue.clone(),
            inbox_dir,
            Duration::from_secs(1),
            args.inbox_owner.clone(),
            stop_rx.clone(),
        ));
    }

    let state = ApiState {
        metadata: pipeline.steps.metadata.clone(),
        uploads: pipeline.steps.uploads.clone(),
        renditions: pipeline.steps.renditions.clone(),
        presigner: presigner.clone(),
        auth,
        config: pipeline.steps.config.clone(),
        forms: Arc::new(api::FormThrottle::new(api::FormLimits {
            per_minute: args.forms_per_minute,
            open: args.max_open_forms,
        })),
        reprocessor: Arc::new(reprocess::LocalReprocessor::new(pipeline.clone(), jobs)),
        transforms: Arc::new(api::Transforms::new(
            pipeline::transform::Policy {
                widths: args.widths.clone().map(|w| w.0).unwrap_or_default(),
                strict: args.strict_widths,
            },
            Some(link_keys(&args, &secret)?),
            Some(base_url.clone()),
        )),
    };
    let ops = observe::ops(
        pipeline.store.clone(),
        pipeline.steps.metadata.clone(),
        metrics,
    );
    let app = api::router_with(state, ops)
        // The API's requests are small and quick; the upload and download routes have their
        // own limits, on the body's pace.
        .layer(axum::middleware::from_fn(guard::api_deadline))
        .merge(transfer::routes(transfer::TransferState {
            presigner,
            store: pipeline.store.clone(),
            queue: queue.clone(),
            metadata: pipeline.steps.metadata.clone(),
            max_body,
        }))
        .merge(web::routes(&base_url))
        // After every merge: it wraps the routes there are, and only those know their template.
        .route_layer(axum::middleware::from_fn(observe::track_http))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    // Without authentication, only requests addressed to this machine by a loopback name: a
    // web page the user opens cannot reach the server through a name that rebinds to it.
    let app = if args.auth == AuthMode::None {
        app.layer(axum::middleware::from_fn(guard::loopback_host_only))
    } else {
        app
    };
    // Beyond loopback, the operators' metrics are for admins only.
    let app = if addr.ip().is_loopback() {
        app
    } else {
        app.layer(axum::middleware::from_fn_with_state(
            metrics_auth,
            guard::metrics_for_admins,
        ))
    };
    let limits = http::Limits::for_this_process(
        args.max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    );

    outln!("imgpipe serve: listening on http://{bound} (auth: {auth_text})");
    if args.auth == AuthMode::None {
        eprintln!(
            "WARNING: imgpipe serve runs WITHOUT AUTHENTICATION (--auth none): anyone who can \
             reach {bound} is the admin and can read and delete every image."
        );
    }
    eprintln!(
        "imgpipe serve: data {}, {jobs} worker(s), queue {capacity}, at most {} connections, \
         web page {base_url}/",
        data.display(),
        limits.max_connections
    );

    let shutdown = {
        let stop_tx = stop_tx.clone();
        async move {
            wait_for_signal().await;
            eprintln!(
                "imgpipe serve: stopping: finishing requests and queued jobs (signal again to quit now)"
            );
            let _ = stop_tx.send(true);
            tokio::spawn(async {
                wait_for_signal().await;
                eprintln!("imgpipe serve: stopped without finishing");
                std::process::exit(130);
            });
        }
    };
    http::serve(listener, app, limits, shutdown).await;
    let _ = stop_tx.send(true);
    while background.join_next().await.is_some() {}
    let pending = queue.pending();
    drop(queue);
    if pending > 0 {
        eprintln!("imgpipe serve: {pending} job(s) to finish");
    }
    workers.drain().await;
    eprintln!("imgpipe serve: stopped");
    Ok(true)
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--widths`: one value holding the list (clap would take a `Vec` as repeated values).
#[derive(Debug, Clone)]
pub struct Widths(pub Vec<u32>);

fn parse_widths(text: &str) -> std::result::Result<Widths, String> {
    let widths = pipeline::transform::Policy::parse_widths(text)?;
    if widths.is_empty() {
        return Err("give at least one width, e.g. 320,640,1280".into());
    }
    Ok(Widths(widths))
}

/// The link keys of `--link-key`, or one derived from the server secret: as the transfer key
/// is, so a link signature never doubles as any other signature made with the secret.
fn link_keys(args: &ServeArgs, secret: &[u8]) -> Result<api::LinkKeys> {
    if args.link_keys.is_empty() {
        use hmac::{KeyInit, Mac};
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
            .map_err(|e| anyhow::anyhow!("server key: {e}"))?;
        m.update(b"imgpipe link signing key v1");
        use base64::Engine as _;
        let derived =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        return api::LinkKeys::new([("local".to_string(), derived.into_bytes())])
            .map_err(|e| anyhow::anyhow!(e));
    }
    api::LinkKeys::parse(&args.link_keys.join(",")).map_err(|e| anyhow::anyhow!("--link-key: {e}"))
}

fn parse_inbox_owner(text: &str) -> std::result::Result<String, String> {
    if !pipeline::keys::valid_segment(text) {
        return Err(format!(
            "`{text}` is not a user name: 1-128 of A-Z a-z 0-9 - _ ., not starting with a dot"
        ));
    }
    if text.eq_ignore_ascii_case(pipeline::keys::DROP_OWNER) {
        return Err(format!(
            "`{text}` is the owner of bucket drops; name a user, or leave the default `inbox`"
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_keys_come_over_tls_unless_from_loopback() {
        for ok in [
            "https://cognito-idp.eu-west-1.amazonaws.com/pool/.well-known/jwks.json",
            "http://127.0.0.1:5000/pool/.well-known/jwks.json",
            "http://localhost:5000/jwks.json",
            "http://[::1]:5000/jwks.json",
        ] {
            assert!(jwks_url_is_safe(ok), "{ok}");
        }
        for bad in [
            "http://issuer.example.com/jwks.json",
            "http://127.0.0.1.example.com/jwks.json",
            "ftp://127.0.0.1/jwks.json",
            "jwks.json",
        ] {
            assert!(!jwks_url_is_safe(bad), "{bad}");
        }
    }

    #[test]
    fn wildcard_addresses_become_loopback_urls() {
        assert_eq!(
            default_base_url("0.0.0.0:80".parse().unwrap()),
            "http://127.0.0.1:80"
        );
        assert_eq!(
            default_base_url("[::]:80".parse().unwrap()),
            "http://[::1]:80"
        );
        assert_eq!(
            default_base_url("192.0.2.1:8080".parse().unwrap()),
            "http://192.0.2.1:8080"
        );
    }
}
