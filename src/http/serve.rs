//! Serving with graceful shutdown: stop accepting, drain in-flight requests, flush the log.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use crate::engine::Engine;
use crate::sink::FlushError;

use super::HttpOptions;

/// Why [`serve`] ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Accepting or serving connections failed.
    #[error("serving HTTP failed: {0}")]
    Io(#[from] std::io::Error),
    /// Connections were still open when the drain timeout passed; they were left to finish
    /// on the runtime and the sink was flushed without waiting for them.
    #[error("connections were still open {0:?} after shutdown began")]
    DrainTimeout(Duration),
    /// The decision sink did not flush after the drain (see [`Engine::flush`]).
    #[error("flushing the decision log after shutdown failed: {0}")]
    Flush(#[from] FlushError),
    /// The flush task could not run (the runtime is shutting down).
    #[error("the flush task did not run: {0}")]
    FlushTask(String),
}

/// Serves [`router(engine, options)`](super::router) on `listener` until `shutdown`
/// completes, then shuts down gracefully: stops accepting connections, lets every in-flight
/// request finish (at most [`HttpOptions::drain_timeout`]) and flushes the engine's decision
/// sink (at most [`HttpOptions::flush_timeout`]), so every decision answered is in the
/// decision log when this returns `Ok`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = elvon::Engine::default();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let stop = async { let _ = tokio::signal::ctrl_c().await; };
/// elvon::http::serve(listener, engine, elvon::http::HttpOptions::default(), stop).await?;
/// # Ok(()) }
/// # let _ = run;
/// ```
///
/// # Errors
/// [`ServeError`]: the listener failed, the drain or the flush did not finish in time. The
/// flush is attempted whatever the drain did.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    engine: Engine,
    options: HttpOptions,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let drain = options.drain_timeout;
    let flush = options.flush_timeout;
    let app = super::router(engine.clone(), options);
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = began_tx.send(());
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let mut server = std::pin::pin!(server.into_future());
    // Serve until the signal; from then on, the drain has a deadline.
    let served = tokio::select! {
        r = &mut server => Some(r),
        _ = began_rx => None,
    };
    let drained = match served {
        Some(r) => r.map_err(ServeError::Io),
        None => match tokio::time::timeout(drain, &mut server).await {
            Ok(r) => r.map_err(ServeError::Io),
            Err(_) => Err(ServeError::DrainTimeout(drain)),
        },
    };
    let flushed = tokio::task::spawn_blocking(move || engine.flush(flush))
        .await
        .map_err(|e| ServeError::FlushTask(e.to_string()))
        .and_then(|r| r.map_err(ServeError::Flush));
    drained.and(flushed)
}
