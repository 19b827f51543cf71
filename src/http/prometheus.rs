//! `GET /metrics`: the process's metrics in the Prometheus text format.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets in seconds (feature fetches and other latencies: 100 µs to 1 s).
const BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// How often the recorder's histograms are folded in when nobody scrapes (bounds memory).
const UPKEEP: Duration = Duration::from_secs(5);

/// The one recorder elvon installed in this process.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Why [`Prometheus::install`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrometheusError {
    /// Another metrics recorder is the process's global recorder already.
    #[error("could not install the Prometheus recorder: {0}")]
    Install(String),
    /// The upkeep thread could not start.
    #[error("could not start the metrics upkeep thread: {0}")]
    Upkeep(#[from] std::io::Error),
}

/// The Prometheus recorder behind `GET /metrics` ([`HttpOptions::prometheus`](super::HttpOptions::prometheus)).
/// Cheap to clone.
#[derive(Clone)]
pub struct Prometheus {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus").finish_non_exhaustive()
    }
}

impl Prometheus {
    /// Installs a Prometheus recorder as the process's global [`metrics`] recorder, with
    /// histograms in buckets from 100 µs to 1 s, and a thread that folds histogram samples in
    /// every 5 s. Call it before loading the first config: per-slot handles registered earlier
    /// record nothing until the next load. Installing again returns the same recorder.
    ///
    /// # Errors
    /// [`PrometheusError::Install`] when another recorder is installed already.
    pub fn install() -> Result<Self, PrometheusError> {
        let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = installed.as_ref() {
            return Ok(Prometheus {
                handle: handle.clone(),
            });
        }
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .map_err(|e| PrometheusError::Install(e.to_string()))?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)
            .map_err(|e| PrometheusError::Install(e.to_string()))?;
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("elvon-metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            })?;
        *installed = Some(handle.clone());
        Ok(Prometheus { handle })
    }

    /// The metrics now, in the Prometheus text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        crate::metrics::publish();
        self.handle.run_upkeep();
        self.handle.render()
    }

    pub(super) fn response(&self) -> Response {
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            self.render(),
        )
            .into_response()
    }
}
