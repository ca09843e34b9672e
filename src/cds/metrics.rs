//! The CDS client's own metrics (`rdbvault_api_requests_total`, `rdbvault_api_request_duration_seconds`)
//! and the time of the last successful call, registered in the caller's registry. They live
//! with the client so the provider stays one seam: [`crate::metrics`] bundles them with the
//! rest.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Buckets for API calls: 5 ms to 2 min.
const API_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// The handles of the CDS client's two metrics, cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    /// Unix ms of the last successful API call (0: none yet), for `/readyz`.
    pub last_success_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl ApiMetrics {
    /// Registers only the API metrics (for a client used outside the daemon).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "rdbvault_api_requests_total",
                "CDS API calls by action and result code (a documented API Code, HTTP status, timeout, request, transport, or other)",
            ),
            &["action", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "rdbvault_api_request_duration_seconds",
                "Duration of one CDS API HTTP exchange",
            )
            .buckets(API_BUCKETS.to_vec()),
            &["action"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(ApiMetrics {
            requests,
            duration,
            last_success_ms: Default::default(),
        })
    }

    /// Counts one API exchange. `action` is typed, so its label is one of the nine actions;
    /// `code` goes through [`super::error::metric_code_label`], so its label set is fixed
    /// whatever the provider sends.
    pub fn observe(&self, action: super::Action, code: &str, seconds: f64) {
        let action = action.name();
        let code = super::error::metric_code_label(code);
        let code = code.as_str();
        if code == "Success" {
            self.last_success_ms.store(
                crate::clock::wall_now().timestamp_millis(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.requests.with_label_values(&[action, code]).inc();
        self.duration.with_label_values(&[action]).observe(seconds);
    }
}
