//! Accepting connections for `imgpipe serve`, so that no client can hold the server: a cap on
//! open connections sized from the open-files limit, a deadline for a request's headers
//! (which is also how long an idle keep-alive connection stays open), a deadline for every
//! write to a client that stops reading, and a graceful shutdown that lets requests under way
//! finish. (axum::serve gives hyper no timer, so hyper's header timeout never fires there.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

/// The connection-level limits; [`Limits::for_this_process`] gives the defaults.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// From a connection's first byte, or the end of its previous response, to the end of a
    /// request's headers.
    pub header_timeout: Duration,
    /// How long one write may wait on a client that does not read.
    pub write_timeout: Duration,
}

/// Descriptors kept for everything but connections: the database, the store's files, the
/// inbox, the workers' temporary files.
const RESERVED_FDS: u64 = 32;
/// An upload holds its connection and a temporary file.
const FDS_PER_CONNECTION: u64 = 2;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// After a failed accept (out of descriptors, most likely), before the next try: a tight
/// loop would only spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

impl Limits {
    /// `requested` connections (default 1024), lowered to what the open-files limit allows
    /// once it is raised to its hard maximum: running out of descriptors would refuse the
    /// next connection, `/health`'s included, in a way no client is told about.
    pub fn for_this_process(requested: Option<usize>) -> Limits {
        let fds = raise_open_files_limit();
        let fit = fds.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION;
        let fit = usize::try_from(fit).unwrap_or(usize::MAX).max(4);
        Limits {
            max_connections: requested.unwrap_or(DEFAULT_MAX_CONNECTIONS).min(fit),
            header_timeout: HEADER_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// Sets the soft open-files limit to the hard one and returns it (1024, a common default,
/// when it cannot be read).
fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// the open connections to finish the requests they are in (idle ones close at once).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let place = tokio::select! {
            place = places.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small responses go out at once rather than waiting for more to send.
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let connection = http.serve_connection(io, TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
