//! The pktvault HTTP API.
//!
//! One warp filter takes every request; [`routes`] matches it against the
//! route table, checks credentials, and calls the handler. Every response that
//! is not a pcap is JSON, errors included. The routes are described by the
//! OpenAPI document served at `/api/v1/openapi.json`.

pub mod auth;
pub mod error;
mod extraction;
pub mod jobs;
mod live;
mod openapi;
mod params;
pub mod routes;
pub mod stores;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use warp::Filter;

use crate::auth::Authenticator;
use crate::jobs::{JobLimits, Jobs};
use crate::live::LiveCounters;
use crate::stores::Stores;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Files holding `[[user]]` and `[[token]]` tables.
    pub credential_files: Vec<PathBuf>,
    pub job_limits: JobLimits,
}

/// State shared by every request handler.
pub struct AppState {
    pub data_dir: PathBuf,
    pub auth: Authenticator,
    pub jobs: Arc<Jobs>,
    pub stores: Arc<Stores>,
    pub live: Arc<LiveCounters>,
    pub started: Instant,
    /// Whether the server listens on a loopback address. Elsewhere, credentials
    /// are required even when every user has been removed while it runs.
    pub loopback: bool,
}

/// Binds `address` with `TCP_NODELAY`, which Linux passes on to every
/// accepted connection. Without it, the last chunk of a streamed response
/// waits for the client's delayed acknowledgement, so each extraction on a
/// reused connection ends about 40 ms late (46 ms measured on loopback).
fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// A server bound to its address, not yet serving.
pub struct BoundServer {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
}

impl BoundServer {
    /// Opens the jobs database, checks that the address may be served, and
    /// binds it. Must run inside a tokio runtime.
    pub async fn bind(config: ServerConfig) -> Result<BoundServer, String> {
        if !config.data_dir.is_dir() {
            return Err(format!(
                "data directory {} does not exist; record or import into it first, or give the right --data-dir",
                config.data_dir.display()
            ));
        }
        let auth = Authenticator::new(config.credential_files.clone());
        let has_users = auth.reload()?;
        if !has_users && !config.listen.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {} while no user exists: anyone on the network could download the recorded packets. \
                 Add a user with 'pktvault user add NAME --data-dir {}', or listen on a loopback address such as 127.0.0.1:3000",
                config.listen,
                config.data_dir.display()
            ));
        }
        if !has_users {
            tracing::warn!(
                "no user exists, so the API serves requests without credentials; it listens on loopback only"
            );
        }
        let stores = Arc::new(Stores::new(&config.data_dir));
        let jobs = Jobs::open(&config.data_dir, stores.clone(), config.job_limits)?;
        let listener = listen(config.listen).map_err(|err| {
            format!("cannot listen on {}: {err}; choose another address with --listen", config.listen)
        })?;
        let state = Arc::new(AppState {
            loopback: config.listen.ip().is_loopback(),
            data_dir: config.data_dir,
            auth,
            jobs,
            stores,
            live: Arc::new(LiveCounters::default()),
            started: Instant::now(),
        });
        Ok(BoundServer { listener, state })
    }

    /// Returns the address actually bound, which differs from the configured one for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Returns the counters of live extractions, which stay valid after
    /// [`BoundServer::serve`] took the server.
    pub fn live_counters(&self) -> Arc<LiveCounters> {
        Arc::clone(&self.state.live)
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let state = self.state;
        tokio::spawn(Arc::clone(&state.jobs).run_scheduler());

        let filter = warp::any()
            .map(move || Arc::clone(&state))
            .and(warp::method())
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::stream())
            .then(routes::handle);
        warp::serve(filter).incoming(self.listener).graceful(shutdown).run().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).expect("listen on loopback");
        let address = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(address).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(accepted.nodelay().unwrap(), "the accepted connection waits to fill segments (Nagle)");
        drop(client);
    }
}
