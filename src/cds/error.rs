//! The one error type of the CDS client, and its retry classification.

use super::Action;
use std::fmt;

/// What went wrong, coarsely; the fields of [`Error`] carry the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No connection could be made; the server never saw the request.
    Connect,
    /// The request may have reached the server, but no complete answer came back.
    Transport,
    /// No answer within the configured timeout.
    Timeout,
    /// The server answered with an error (non-2xx status or `Code != "Success"`).
    Api,
    /// The server answered 2xx but the body was not the JSON we expect.
    Decode,
    /// The caller's request was invalid before it was sent (missing or malformed parameter).
    Request,
}

/// An error from one CDS API call: which action, the HTTP status, the API `Code` and `Message`.
///
/// The message never contains the access key secret or a request URL (reqwest errors carry the
/// URL with the signed query; we strip it).
#[derive(Debug)]
pub struct Error {
    pub action: Action,
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// How many attempts were made before giving up (1 = no retry).
    pub attempts: u32,
    pub(crate) source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(action: Action, kind: ErrorKind) -> Self {
        Error {
            action,
            kind,
            status: None,
            code: None,
            message: None,
            attempts: 1,
            source: None,
        }
    }

    pub(crate) fn api(
        action: Action,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    ) -> Self {
        Error {
            status: Some(status),
            code,
            message,
            ..Error::new(action, ErrorKind::Api)
        }
    }

    pub(crate) fn request(action: Action, message: impl Into<String>) -> Self {
        Error {
            message: Some(message.into()),
            ..Error::new(action, ErrorKind::Request)
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn from_reqwest(action: Action, err: reqwest::Error) -> Self {
        let kind = if err.is_timeout() {
            ErrorKind::Timeout
        } else if err.is_connect() {
            ErrorKind::Connect
        } else {
            ErrorKind::Transport
        };
        let status = err.status().map(|s| s.as_u16());
        Error {
            status,
            // The URL holds the signed query; never let it reach a log line.
            ..Error::new(action, kind).with_source(err.without_url())
        }
    }

    /// The API `Code` if the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// True when the provider says the instance or backup does not exist (`ResourceNotFound`):
    /// for a delete, the goal is reached.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some("ResourceNotFound")
    }

    /// True when the provider refused the credentials (wrong key id or secret, or a key without
    /// the permission): a configuration problem, not an outage.
    pub fn is_credentials(&self) -> bool {
        self.kind == ErrorKind::Api
            && (matches!(
                self.code(),
                Some("SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied")
            ) || matches!(self.status, Some(401 | 403)))
    }

    /// The label value for `rdbvault_api_requests_total{code}`: the API `Code` if it is a known
    /// one, else the HTTP status, else `timeout`, `request` or `transport`; anything else is
    /// `other` (see [`metric_code_label`]).
    pub fn metric_code(&self) -> String {
        match (&self.code, self.status) {
            (Some(code), _) if !code.is_empty() => metric_code_label(code),
            (_, Some(status)) => metric_code_label(&status.to_string()),
            _ => match self.kind {
                ErrorKind::Timeout => "timeout".into(),
                ErrorKind::Request => "request".into(),
                _ => "transport".into(),
            },
        }
    }

    /// True when the same call may succeed if sent again: transport errors, timeouts, 5xx or
    /// `InternalError`, and 409 `ResourceInUse`. Other 4xx, decode errors and invalid requests are
    /// final.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ErrorKind::Connect | ErrorKind::Transport | ErrorKind::Timeout => true,
            ErrorKind::Api => {
                let status = self.status.unwrap_or(0);
                status >= 500
                    || status == 409
                    || matches!(self.code(), Some("InternalError" | "ResourceInUse"))
            }
            ErrorKind::Decode | ErrorKind::Request => false,
        }
    }

    /// True when the server certainly did not act on the request, so even a non-idempotent call
    /// (`CreateBackup`) can be sent again without making a duplicate: the connection was refused,
    /// or the server rejected the call as conflicting (409 `ResourceInUse`).
    pub fn certainly_not_applied(&self) -> bool {
        match self.kind {
            ErrorKind::Connect | ErrorKind::Request => true,
            ErrorKind::Api => self.status == Some(409) || self.code() == Some("ResourceInUse"),
            _ => false,
        }
    }
}

/// The API codes that get a metric label of their own: `Success`, the error codes in the
/// provider's reference (`docs/cds-api.md` §2.2), and the authentication codes this client
/// gives a hint for and the simulator sends (the provider documents none for auth).
pub const KNOWN_CODES: &[&str] = &[
    "Success",
    "ArgMissing",
    "InvalidParameter",
    "BadArgs",
    "UnsupportedOperation",
    "ResourceNotFound",
    "ResourceInUse",
    "InternalError",
    "CreateOrderExcept",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AccessDenied",
    "RequestExpired",
    "SignatureNonceUsed",
];

/// Maps a result code onto the fixed label set of `rdbvault_api_requests_total{code}`: a
/// [`KNOWN_CODES`] entry, an HTTP status (three digits, 100-599), `timeout`, `request` or
/// `transport` stay as they are; anything else is `other`. The provider's answer is untrusted:
/// an arbitrary `Code` as a label would grow the metric without bound.
pub fn metric_code_label(code: &str) -> String {
    let is_status = code.len() == 3
        && code.bytes().all(|b| b.is_ascii_digit())
        && code.parse::<u16>().is_ok_and(|n| (100..=599).contains(&n));
    if is_status
        || KNOWN_CODES.contains(&code)
        || matches!(code, "timeout" | "request" | "transport")
    {
        code.to_string()
    } else {
        "other".into()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CDS API {} failed", self.action)?;
        match self.kind {
            ErrorKind::Connect => write!(f, ": could not connect to the API endpoint")?,
            ErrorKind::Transport => write!(f, ": connection broken before a complete answer")?,
            ErrorKind::Timeout => write!(f, ": no answer within the timeout (cds.timeout)")?,
            ErrorKind::Decode => write!(f, ": the answer is not the JSON the API documents")?,
            ErrorKind::Request => write!(f, ": invalid request")?,
            ErrorKind::Api => {}
        }
        if let Some(status) = self.status {
            write!(f, ": HTTP {status}")?;
        }
        if let Some(code) = &self.code {
            write!(f, ", Code {code}")?;
        }
        if let Some(msg) = self.message.as_deref().filter(|m| !m.is_empty()) {
            write!(f, ": {msg}")?;
        }
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        if let Some(hint) = self.hint() {
            write!(f, ". {hint}")?;
        }
        Ok(())
    }
}

impl Error {
    /// What the user can do about it, for the errors whose fix is known.
    fn hint(&self) -> Option<&'static str> {
        match (self.kind, self.code(), self.status) {
            (ErrorKind::Connect, ..) => {
                Some("Check cds.endpoint / cds.region and that this host can reach it")
            }
            (_, Some("SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied"), _)
            | (_, _, Some(401 | 403)) => Some(
                "Check the access key id and secret (CDS_ACCESS_KEY_ID / CDS_ACCESS_KEY_SECRET or cds.*_file)",
            ),
            (_, Some("RequestExpired"), _) => {
                Some("The request timestamp was rejected: check this host's clock (NTP)")
            }
            _ => None,
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> Error {
        Error::api(
            Action::DescribeBackups,
            status,
            Some(code.into()),
            Some("msg".into()),
        )
    }

    #[test]
    fn classification_table() {
        let cases: Vec<(Error, bool, &str)> = vec![
            (
                Error::new(Action::CreateBackup, ErrorKind::Connect),
                true,
                "connect",
            ),
            (
                Error::new(Action::CreateBackup, ErrorKind::Transport),
                true,
                "transport",
            ),
            (
                Error::new(Action::CreateBackup, ErrorKind::Timeout),
                true,
                "timeout",
            ),
            (api(500, "InternalError"), true, "500 InternalError"),
            (api(500, "CreateOrderExcept"), true, "500 CreateOrderExcept"),
            (api(502, ""), true, "502 from a proxy"),
            (api(503, "ServiceUnavailable"), true, "503"),
            (api(409, "ResourceInUse"), true, "409 ResourceInUse"),
            (
                api(200, "InternalError"),
                true,
                "InternalError in a 200 envelope",
            ),
            (
                api(200, "ResourceInUse"),
                true,
                "ResourceInUse in a 200 envelope",
            ),
            (api(400, "ArgMissing"), false, "400 ArgMissing"),
            (api(400, "InvalidParameter"), false, "400 InvalidParameter"),
            (api(400, "BadArgs"), false, "400 BadArgs"),
            (
                api(400, "UnsupportedOperation"),
                false,
                "400 UnsupportedOperation",
            ),
            (api(404, "ResourceNotFound"), false, "404"),
            (api(403, "SignatureDoesNotMatch"), false, "403 signature"),
            (api(400, "RequestExpired"), false, "stale timestamp"),
            (api(200, "BadArgs"), false, "BadArgs in a 200 envelope"),
            (
                Error::new(Action::DescribeBackups, ErrorKind::Decode),
                false,
                "decode",
            ),
            (
                Error::request(Action::DescribeBackups, "missing"),
                false,
                "request",
            ),
        ];
        for (err, want, what) in cases {
            assert_eq!(err.is_retryable(), want, "{what}: {err}");
        }
    }

    #[test]
    fn only_refused_or_conflicting_calls_are_certainly_not_applied() {
        assert!(Error::new(Action::CreateBackup, ErrorKind::Connect).certainly_not_applied());
        assert!(api(409, "ResourceInUse").certainly_not_applied());
        assert!(!api(500, "InternalError").certainly_not_applied());
        assert!(!Error::new(Action::CreateBackup, ErrorKind::Timeout).certainly_not_applied());
        assert!(!Error::new(Action::CreateBackup, ErrorKind::Transport).certainly_not_applied());
    }

    #[test]
    fn display_names_action_status_code_and_message() {
        let e = api(409, "ResourceInUse");
        assert_eq!(
            e.to_string(),
            "CDS API DescribeBackups failed: HTTP 409, Code ResourceInUse: msg"
        );
        let e = api(403, "SignatureDoesNotMatch");
        assert!(e.to_string().contains("CDS_ACCESS_KEY_SECRET"), "{e}");
    }

    #[test]
    fn metric_code_prefers_api_code_then_status_then_transport() {
        assert_eq!(api(409, "ResourceInUse").metric_code(), "ResourceInUse");
        assert_eq!(api(502, "").metric_code(), "502");
        assert_eq!(
            Error::new(Action::CreateBackup, ErrorKind::Connect).metric_code(),
            "transport"
        );
    }

    #[test]
    fn metric_codes_are_a_fixed_set() {
        for known in KNOWN_CODES {
            assert_eq!(metric_code_label(known), *known);
        }
        for status in ["100", "404", "502", "599"] {
            assert_eq!(metric_code_label(status), status);
        }
        for odd in [
            "999", "099", "0404", "40", "+404", "", "success", "Hostile1", "错误", "other",
        ] {
            assert_eq!(metric_code_label(odd), "other", "{odd:?}");
        }
        assert_eq!(api(400, "WhoKnows").metric_code(), "other");
        assert_eq!(api(999, "").metric_code(), "other");
    }

    #[test]
    fn only_resource_not_found_means_gone() {
        assert!(api(404, "ResourceNotFound").is_not_found());
        assert!(api(200, "ResourceNotFound").is_not_found());
        assert!(
            !api(404, "").is_not_found(),
            "a bare 404 may be a wrong endpoint"
        );
        assert!(!api(409, "ResourceInUse").is_not_found());
    }
}
