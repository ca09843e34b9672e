//! The Capital Online (CDS) Redis API: request signing, the nine actions, typed answers, errors.
//!
//! - [`sign`]: pure signing (pinned by the published vectors).
//! - [`action`]: the action table (method, parameters, destructive or not).
//! - [`model`]: typed responses, tolerant of the API's documented quirks.
//! - [`client`]: the HTTP client with retries and metrics.
//! - [`error`]: the one error type and its retry classification.

pub mod action;
pub mod client;
pub mod error;
pub mod metrics;
pub mod model;
pub mod retry;
pub mod sign;

pub use action::{Action, ParamSpec, ParamType};
pub use client::{ApiResponse, Client, ClientConfig, ListingSlots, ParamValue, Params, params};
pub use error::{Error, ErrorKind};
pub use retry::RetryPolicy;

/// The provider's API regions and their documented hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRegion {
    /// 中国大陆
    Mainland,
    /// 亚太地区
    Asia,
    /// 欧美地区
    Us,
}

impl ApiRegion {
    pub fn endpoint(self) -> &'static str {
        match self {
            ApiRegion::Mainland => "https://cdsapi.capitalonline.net",
            ApiRegion::Asia => "https://cdsapi-asia.capitalonline.net",
            ApiRegion::Us => "https://cdsapi-us.capitalonline.net",
        }
    }
}

/// The `Desc` prefix that marks backups rdbvault created: `rdbvault:<job id>`.
pub const DESC_TOKEN_PREFIX: &str = "rdbvault:";
