//! The signed HTTP client: one `reqwest::Client`, one call per action, retries, metrics.

use super::metrics::ApiMetrics;
use super::model::{
    Backup, BackupDownload, CreatedInstances, DbConfigCatalog, Envelope, Instance, Region, TaskRef,
};
use super::retry::RetryPolicy;
use super::sign::{self, Method, SigningInput};
use super::{Action, Error, ErrorKind, ParamType};
use crate::clock::SharedClock;
use crate::secret::Secret;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use url::Url;

/// The value of one action parameter: a string, or an integer where the API wants a JSON number,
/// or a secret (a password), which prints as `***` and is exposed only into the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Str(String),
    Int(i64),
    Secret(Secret),
}

impl ParamValue {
    fn as_query_string(&self) -> String {
        match self {
            ParamValue::Str(s) => s.clone(),
            ParamValue::Int(i) => i.to_string(),
            ParamValue::Secret(s) => s.expose().to_string(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Str(s) => serde_json::Value::String(s.clone()),
            ParamValue::Int(i) => serde_json::Value::from(*i),
            ParamValue::Secret(s) => serde_json::Value::String(s.expose().to_string()),
        }
    }
}

impl From<&str> for ParamValue {
    fn from(s: &str) -> Self {
        ParamValue::Str(s.to_string())
    }
}
impl From<String> for ParamValue {
    fn from(s: String) -> Self {
        ParamValue::Str(s)
    }
}
impl From<i64> for ParamValue {
    fn from(i: i64) -> Self {
        ParamValue::Int(i)
    }
}

/// Action parameters by name.
pub type Params = BTreeMap<String, ParamValue>;

/// Builds [`Params`] from pairs.
pub fn params<const N: usize>(pairs: [(&str, ParamValue); N]) -> Params {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The largest API answer read; DescribeDBInstances of thousands of instances is far below.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// A successful answer, before `Data` is given a type.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub data: serde_json::Value,
    pub task_id: Option<String>,
    /// The whole JSON document as the server sent it.
    pub raw: serde_json::Value,
}

/// Everything the client needs to know.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Scheme, host and port of the API, e.g. `https://cdsapi.capitalonline.net`.
    pub endpoint: Url,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// Per HTTP exchange.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// The CDS Redis API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `{endpoint}/redis/`.
    base: Url,
    config: std::sync::Arc<ClientConfig>,
    metrics: ApiMetrics,
    clock: SharedClock,
    rng: std::sync::Arc<Mutex<fastrand::Rng>>,
    describe_pacing: DescribePacing,
}

/// When an instance's last listing finished; locked across a listing.
type InstanceGate = std::sync::Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>;

/// Keeps `DescribeBackups` for one instance at most once per `spacing`, whoever asks: a job
/// polling, the retention run after it, reconcile. With many instances this is what keeps the
/// provider's load at one listing per instance per poll interval.
#[derive(Debug, Clone, Default)]
struct DescribePacing {
    spacing: Duration,
    /// Per instance: when its last listing finished.
    last: std::sync::Arc<Mutex<HashMap<String, InstanceGate>>>,
    /// Slots shared with other processes (replicas on one state DB), when there are any.
    shared: Option<std::sync::Arc<dyn ListingSlots>>,
}

/// Listing slots shared by every process that lists the same instances: the state DB's pacing
/// table, implemented above this module (the client does not know the store).
#[async_trait::async_trait]
pub trait ListingSlots: Send + Sync + std::fmt::Debug {
    /// Reserves the next slot for a `DescribeBackups` of `instance_uuid`, slots `spacing`
    /// apart, and returns how long to wait before making the call.
    ///
    /// # Errors
    /// The slots cannot be reached; the caller then paces on its own.
    async fn reserve(&self, instance_uuid: &str, spacing: Duration) -> anyhow::Result<Duration>;
}

/// The longest a shared slot makes a listing wait, in spacings: a queue longer than this means
/// something is off (a stuck row), and a listing made early is better than a job left waiting.
const MAX_SHARED_WAIT_SPACINGS: u32 = 4;

/// Appends the Redis product path to an endpoint unless it already ends with it.
pub fn redis_base_url(endpoint: &Url) -> Url {
    let mut base = endpoint.clone();
    let path = base.path().trim_end_matches('/').to_string();
    let path = if path.ends_with("/redis") {
        format!("{path}/")
    } else {
        format!("{path}/redis/")
    };
    base.set_path(&path);
    base.set_query(None);
    base
}

impl Client {
    /// The clock the client signs with; the downloader measures deadlines with it too.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// # Errors
    /// Fails only if the TLS stack cannot be initialised.
    pub fn new(
        config: ClientConfig,
        metrics: ApiMetrics,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("rdbvault/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base: redis_base_url(&config.endpoint),
            config: std::sync::Arc::new(config),
            metrics,
            clock,
            rng: std::sync::Arc::new(Mutex::new(fastrand::Rng::new())),
            describe_pacing: DescribePacing::default(),
        })
    }

    /// At most one `DescribeBackups` per instance per `spacing` (the daemon passes
    /// `cds.poll_interval`); calls that come sooner wait.
    #[must_use]
    pub fn with_describe_spacing(mut self, spacing: Duration) -> Self {
        self.describe_pacing.spacing = spacing;
        self
    }

    /// Shares the `DescribeBackups` pacing with other processes through `slots`, so it holds
    /// fleet-wide: one listing per instance per spacing whichever replica makes it.
    #[must_use]
    pub fn with_shared_pacing(mut self, slots: std::sync::Arc<dyn ListingSlots>) -> Self {
        self.describe_pacing.shared = Some(slots);
        self
    }

    /// The endpoint with the product path, for messages (it holds no secret).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Checks the parameters against the action's documented list: every required one present,
    /// no unknown name (a typo must not silently drop a filter), integers where integers go.
    /// Every problem is named at once.
    ///
    /// # Errors
    /// An [`ErrorKind::Request`] error naming the culprits.
    pub fn validate(action: Action, params: &Params) -> Result<(), Error> {
        let mut problems = Vec::new();
        let mut unknown = false;
        for (name, value) in params {
            let Some(spec) = action.param(name) else {
                problems.push(action.unknown_param(name));
                unknown = true;
                continue;
            };
            if spec.ty == ParamType::Integer
                && let ParamValue::Str(s) = value
                && s.parse::<i64>().is_err()
            {
                problems.push(format!("parameter `{name}` must be an integer, got {s:?}"));
            }
        }
        let missing: Vec<_> = action
            .missing_required(|n| params.contains_key(n))
            .iter()
            .map(|p| format!("`{}`", p.name))
            .collect();
        match missing.len() {
            0 => {}
            1 => problems.push(format!("missing required parameter {}", missing[0])),
            _ => problems.push(format!(
                "missing required parameters {}",
                missing.join(", ")
            )),
        }
        if unknown && !action.params().is_empty() {
            problems.push(action.accepted());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::request(action, problems.join("; ")))
        }
    }

    /// One call with retries. Idempotent actions are retried on every retryable error; the two
    /// `Create*` actions only when the server certainly did not act, so a retry never makes a
    /// second backup or instance.
    ///
    /// # Errors
    /// The last attempt's error, with `attempts` set.
    pub async fn call(&self, action: Action, params: &Params) -> Result<ApiResponse, Error> {
        let Ok(result) = self
            .call_checked(action, params, || async {
                Ok::<(), std::convert::Infallible>(())
            })
            .await;
        result
    }

    /// [`Client::call`], asking `may_go` before every attempt (the first and each retry): once
    /// it says no, nothing more is sent and its reason comes back as the outer error. A
    /// deletion under a lease uses it, so a retry that comes due after the process was paused
    /// past its lease is not sent.
    ///
    /// # Errors
    /// Outer: `may_go` refused an attempt. Inner: the last attempt's error, as for `call`.
    pub async fn call_checked<E, Fut>(
        &self,
        action: Action,
        params: &Params,
        may_go: impl Fn() -> Fut,
    ) -> Result<Result<ApiResponse, Error>, E>
    where
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        if let Err(e) = Self::validate(action, params) {
            return Ok(Err(e));
        }
        let policy = self.config.retry;
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            may_go().await?;
            match self.send_once(action, params).await {
                Ok(resp) => return Ok(Ok(resp)),
                Err(mut err) => {
                    let may_retry = err.is_retryable()
                        && (action.is_idempotent() || err.certainly_not_applied());
                    let delay = policy.delay(
                        attempt,
                        &mut self.rng.lock().unwrap_or_else(|e| e.into_inner()),
                    );
                    if !may_retry
                        || attempt >= policy.max_attempts
                        || started.elapsed() + delay > policy.max_elapsed
                    {
                        err.attempts = attempt;
                        return Ok(Err(err));
                    }
                    tracing::warn!(
                        action = action.name(),
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        error = %err,
                        "CDS API call failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Exactly one signed HTTP exchange, counted in the metrics.
    async fn send_once(&self, action: Action, params: &Params) -> Result<ApiResponse, Error> {
        let method = action.method();
        let nonce = uuid::Uuid::new_v4().to_string();
        let query_params: BTreeMap<String, String> = match method {
            Method::Get => params
                .iter()
                .map(|(k, v)| (k.clone(), v.as_query_string()))
                .collect(),
            Method::Post => BTreeMap::new(),
        };
        let query = sign::signed_query(
            &SigningInput {
                method,
                action: action.name(),
                access_key_id: &self.config.access_key_id,
                secret: self.config.access_key_secret.expose(),
                timestamp: self.clock.now(),
                nonce: &nonce,
            },
            &query_params,
        );
        let mut url = self.base.clone();
        // Already encoded per RFC 3986; set_query keeps it byte for byte.
        url.set_query(Some(&query));

        let request = match method {
            Method::Get => self.http.get(url),
            Method::Post => {
                let body: serde_json::Map<String, serde_json::Value> = params
                    .iter()
                    .map(|(k, v)| {
                        let spec = action.param(k);
                        let value = match (spec.map(|s| s.ty), v) {
                            (Some(ParamType::Integer), ParamValue::Str(s)) => {
                                serde_json::Value::from(s.parse::<i64>().unwrap_or_default())
                            }
                            _ => v.to_json(),
                        };
                        (k.clone(), value)
                    })
                    .collect();
                self.http.post(url).json(&body)
            }
        };

        let started = Instant::now();
        let result = self.exchange(action, request).await;
        let code = match &result {
            Ok(_) => Envelope::SUCCESS.to_string(),
            Err(e) => e.metric_code(),
        };
        self.metrics
            .observe(action, &code, started.elapsed().as_secs_f64());
        tracing::debug!(
            action = action.name(),
            code,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "CDS API call"
        );
        result
    }

    async fn exchange(
        &self,
        action: Action,
        request: reqwest::RequestBuilder,
    ) -> Result<ApiResponse, Error> {
        let resp = request
            .send()
            .await
            .map_err(|e| Error::from_reqwest(action, e))?;
        let status = resp.status().as_u16();
        // A misbehaving server (or proxy) must not make us buffer without bound.
        let mut bytes = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            let chunk = chunk.map_err(|e| Error::from_reqwest(action, e))?;
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Error {
                    status: Some(status),
                    message: Some(format!(
                        "the answer is larger than {} MiB; not an API answer",
                        MAX_ANSWER_BYTES >> 20
                    )),
                    ..Error::new(action, ErrorKind::Decode)
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let raw: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                let snippet = body_snippet(&bytes);
                return Err(if (200..300).contains(&status) {
                    Error {
                        status: Some(status),
                        message: Some(format!("body starts with {snippet:?}")),
                        ..Error::new(action, ErrorKind::Decode).with_source(e)
                    }
                } else {
                    Error::api(action, status, None, Some(snippet))
                });
            }
        };
        if !raw.is_object() {
            // serde would read an array positionally as Code, Message, Data: refuse it.
            return Err(Error {
                status: Some(status),
                message: Some("the answer is JSON but not an object".into()),
                ..Error::new(action, ErrorKind::Decode)
            });
        }
        let envelope: Envelope = match serde_json::from_value(raw.clone()) {
            Ok(e) => e,
            Err(e) => {
                return Err(Error {
                    status: Some(status),
                    ..Error::new(action, ErrorKind::Decode).with_source(e)
                });
            }
        };
        if !envelope.is_success() || !(200..300).contains(&status) {
            let code = (!envelope.code.is_empty()).then(|| envelope.code.clone());
            return Err(Error::api(action, status, code, Some(envelope.message)));
        }
        Ok(ApiResponse {
            data: envelope.data,
            task_id: envelope.task_id,
            raw,
        })
    }

    async fn call_typed<T: DeserializeOwned>(
        &self,
        action: Action,
        params: &Params,
    ) -> Result<(T, Option<String>), Error> {
        let resp = self.call(action, params).await?;
        let data = match resp.data {
            // `Data` missing or null on a list action means an empty list.
            serde_json::Value::Null => serde_json::Value::Array(vec![]),
            other => other,
        };
        Ok((decode_data(action, data)?, resp.task_id))
    }

    pub async fn describe_regions(&self) -> Result<Vec<Region>, Error> {
        Ok(self
            .call_typed(Action::DescribeRegions, &Params::new())
            .await?
            .0)
    }

    pub async fn describe_available_db_config(
        &self,
        region_id: &str,
    ) -> Result<DbConfigCatalog, Error> {
        let p = params([("RegionId", region_id.into())]);
        let resp = self.call(Action::DescribeAvailableDbConfig, &p).await?;
        decode_data(Action::DescribeAvailableDbConfig, resp.data)
    }

    /// Creates instances. Billable: callers confirm first.
    pub async fn create_db_instance(
        &self,
        params: &Params,
    ) -> Result<(CreatedInstances, TaskRef), Error> {
        let resp = self.call(Action::CreateDbInstance, params).await?;
        let created = decode_data(Action::CreateDbInstance, resp.data)?;
        Ok((
            created,
            TaskRef {
                task_id: resp.task_id,
            },
        ))
    }

    /// Filters are ANDed by the server; an empty filter lists every instance of the account.
    pub async fn describe_db_instances(&self, filter: &Params) -> Result<Vec<Instance>, Error> {
        Ok(self
            .call_typed(Action::DescribeDbInstances, filter)
            .await?
            .0)
    }

    pub async fn delete_db_instance(&self, instance_uuid: &str) -> Result<TaskRef, Error> {
        let p = params([("InstanceUuid", instance_uuid.into())]);
        let resp = self.call(Action::DeleteDbInstance, &p).await?;
        Ok(TaskRef {
            task_id: resp.task_id,
        })
    }

    pub async fn describe_backups(&self, instance_uuid: &str) -> Result<Vec<Backup>, Error> {
        let p = params([("InstanceUuid", instance_uuid.into())]);
        let pacing = &self.describe_pacing;
        if pacing.spacing.is_zero() {
            return Ok(self.call_typed(Action::DescribeBackups, &p).await?.0);
        }
        let gate = pacing
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(instance_uuid.to_string())
            .or_default()
            .clone();
        // Held across the call: a second caller for the same instance waits for this answer
        // and then for the spacing, counted from when the answer arrived.
        let mut last_done = gate.lock().await;
        if let Some(done) = *last_done {
            tokio::time::sleep_until(done + pacing.spacing).await;
        }
        if let Some(shared) = &pacing.shared {
            match shared.reserve(instance_uuid, pacing.spacing).await {
                Ok(wait) => {
                    tokio::time::sleep(wait.min(pacing.spacing * MAX_SHARED_WAIT_SPACINGS)).await
                }
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "shared DescribeBackups pacing unavailable; pacing in this process only")
                }
            }
        }
        let result = self.call_typed(Action::DescribeBackups, &p).await;
        *last_done = Some(tokio::time::Instant::now());
        Ok(result?.0)
    }

    /// Asks for fresh download URLs. Call it right before each download: URLs expire.
    pub async fn download_backup(
        &self,
        instance_uuid: &str,
        backup_id: &str,
    ) -> Result<BackupDownload, Error> {
        let p = params([
            ("InstanceUuid", instance_uuid.into()),
            ("BackupId", backup_id.into()),
        ]);
        let resp = self.call(Action::DownloadBackup, &p).await?;
        decode_data(Action::DownloadBackup, resp.data)
    }

    /// Starts a backup. The answer carries only a task id; find the backup through
    /// `DescribeBackups` by the `desc` you gave.
    pub async fn create_backup(&self, instance_uuid: &str, desc: &str) -> Result<TaskRef, Error> {
        let p = params([
            ("InstanceUuid", instance_uuid.into()),
            ("Desc", desc.into()),
        ]);
        let resp = self.call(Action::CreateBackup, &p).await?;
        Ok(TaskRef {
            task_id: resp.task_id,
        })
    }

    pub async fn delete_backup(
        &self,
        instance_uuid: &str,
        backup_id: &str,
    ) -> Result<TaskRef, Error> {
        let p = delete_params(instance_uuid, backup_id);
        let resp = self.call(Action::DeleteBackup, &p).await?;
        Ok(TaskRef {
            task_id: resp.task_id,
        })
    }

    /// `DeleteBackup`, each attempt made only while `may_go` allows it ([`Client::call_checked`]).
    ///
    /// # Errors
    /// Outer: `may_go` refused. Inner: the API's answer.
    pub async fn delete_backup_checked<E, Fut>(
        &self,
        instance_uuid: &str,
        backup_id: &str,
        may_go: impl Fn() -> Fut,
    ) -> Result<Result<TaskRef, Error>, E>
    where
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        let p = delete_params(instance_uuid, backup_id);
        let result = self.call_checked(Action::DeleteBackup, &p, may_go).await?;
        Ok(result.map(|resp| TaskRef {
            task_id: resp.task_id,
        }))
    }
}

/// `DeleteBackup`'s parameters.
fn delete_params(instance_uuid: &str, backup_id: &str) -> Params {
    params([
        ("InstanceUuid", instance_uuid.into()),
        ("BackupId", backup_id.into()),
    ])
}

/// Gives `Data` its type, or a decode error naming the action.
fn decode_data<T: DeserializeOwned>(action: Action, data: serde_json::Value) -> Result<T, Error> {
    serde_json::from_value(data).map_err(|e| Error {
        message: Some(format!("unexpected `Data`: {e}")),
        ..Error::new(action, ErrorKind::Decode)
    })
}

/// The first bytes of an unexpected body, for an error message (HTML error pages, proxies).
fn body_snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_gets_the_redis_path_once() {
        for (endpoint, want) in [
            (
                "https://cdsapi.capitalonline.net",
                "https://cdsapi.capitalonline.net/redis/",
            ),
            (
                "https://cdsapi.capitalonline.net/",
                "https://cdsapi.capitalonline.net/redis/",
            ),
            (
                "http://127.0.0.1:8080/redis",
                "http://127.0.0.1:8080/redis/",
            ),
            (
                "http://127.0.0.1:8080/redis/",
                "http://127.0.0.1:8080/redis/",
            ),
            ("http://proxy.local/cds", "http://proxy.local/cds/redis/"),
        ] {
            assert_eq!(redis_base_url(&endpoint.parse().unwrap()).as_str(), want);
        }
    }

    #[test]
    fn validation_names_the_culprit() {
        let err = Client::validate(
            Action::CreateBackup,
            &params([("InstanceUUID", "x".into())]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`InstanceUUID`"), "{err}");
        let err = Client::validate(
            Action::DownloadBackup,
            &params([("InstanceUuid", "x".into())]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("missing required parameter `BackupId`"),
            "{err}"
        );
        let err = Client::validate(
            Action::CreateDbInstance,
            &params([
                ("RegionId", "r".into()),
                ("VdcId", "v".into()),
                ("BasePipeId", "p".into()),
                ("InstanceName", "n".into()),
                ("PaasGoodsId", "twelve".into()),
                ("Password", "pw".into()),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`PaasGoodsId` must be an integer"),
            "{err}"
        );
        assert!(Client::validate(Action::DescribeDbInstances, &Params::new()).is_ok());
    }

    #[test]
    fn validation_names_every_problem_at_once_with_a_suggestion() {
        let err = Client::validate(
            Action::CreateDbInstance,
            &params([
                ("RegionId", "r".into()),
                ("InstanceNmae", "n".into()),
                ("Amount", "two".into()),
            ]),
        )
        .unwrap_err()
        .to_string();
        for want in [
            "unknown parameter `InstanceNmae` (did you mean `InstanceName`?)",
            "parameter `Amount` must be an integer",
            "missing required parameters `VdcId`, `BasePipeId`, `InstanceName`, `PaasGoodsId`, `Password`",
            "CreateDBInstance takes RegionId, VdcId",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn a_secret_parameter_prints_as_stars_and_travels_as_its_value() {
        let v = ParamValue::Secret(Secret::new("hunter2-pw"));
        assert!(!format!("{v:?}").contains("hunter2-pw"));
        assert_eq!(v.to_json(), serde_json::json!("hunter2-pw"));
        assert_eq!(v.as_query_string(), "hunter2-pw");
    }
}
