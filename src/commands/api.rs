//! `api ACTION [KEY=VALUE ...]`: one signed CDS API call, printed as JSON.

use crate::cds::{self, Action, Client, ParamValue, Params};
use crate::config;
use crate::failure::Failure;
use crate::metrics::ApiMetrics;

/// `api`: validates the action and parameters before sending; a mutating action needs `--yes`.
pub async fn api(
    cds_cfg: &config::CdsConfig,
    action: &str,
    raw_params: &[String],
    yes: bool,
) -> Result<(), Failure> {
    let action: Action = action
        .parse()
        .map_err(|e: cds::action::UnknownAction| Failure::Usage(e.to_string()))?;
    let mut params = Params::new();
    for kv in raw_params {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Failure::Usage(format!(
                "`{kv}` is not KEY=VALUE; e.g. InstanceUuid=5d74bb81-0473-464d-b15b-0ae418619248"
            )));
        };
        let value = match action.param(k).map(|p| p.ty) {
            Some(cds::ParamType::Integer) => match v.parse::<i64>() {
                Ok(i) => ParamValue::Int(i),
                Err(_) => {
                    return Err(Failure::Usage(format!(
                        "{action}: `{k}` must be an integer, got {v:?}"
                    )));
                }
            },
            _ => ParamValue::Str(v.to_string()),
        };
        params.insert(k.to_string(), value);
    }
    Client::validate(action, &params).map_err(|e| Failure::Usage(e.to_string()))?;
    if action.is_destructive() && !yes {
        return Err(Failure::Usage(format!(
            "{action} changes or deletes resources at the provider; add --yes to confirm"
        )));
    }
    let registry = prometheus::Registry::new();
    let metrics = ApiMetrics::register(&registry)?;
    let client = crate::services::cds_client(cds_cfg, metrics)?;
    let resp = client.call(action, &params).await?;
    println!(
        "{}",
        // cannot fail: a serde_json::Value always serialises.
        serde_json::to_string_pretty(&resp.raw).expect("JSON values serialise")
    );
    Ok(())
}
