//! Request signing for the CDS OpenAPI (`SignatureVersion` 1.0, HMAC-SHA1).
//!
//! Pure functions only: no clock, no randomness, no I/O. The caller injects the timestamp and the
//! nonce, so the four published vectors in `cds-sign-vectors.json` pin the whole algorithm.
//!
//! The recipe (see `docs/cds-api.md` §1.1–§1.3):
//! 1. take every *query* parameter except `Signature` (for POST that is only the common ones: the
//!    JSON body is not signed);
//! 2. sort by name (bytewise), percent-encode name and value with RFC 3986 (`%20` for space,
//!    upper-case hex, only `A-Z a-z 0-9 - _ . ~` left bare), join as `k=v&k=v`;
//! 3. `StringToSign = METHOD & %2F & encode(canonical)`;
//! 4. `Signature = base64(HMAC-SHA1(key = bare secret, StringToSign))`. Not `secret&`: that line
//!    in old docs contradicts every official implementation.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;
use std::collections::BTreeMap;

/// The characters RFC 3986 leaves unreserved; everything else is percent-encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `SignatureMethod` value; the only one the CDS docs list.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
/// `SignatureVersion` value.
pub const SIGNATURE_VERSION: &str = "1.0";
/// API `Version` value.
pub const API_VERSION: &str = "2019-08-08";

/// HTTP method of a signed call; it is the first element of the string to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Percent-encodes one name or value the way the canonical query string needs it.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// Builds the canonical query string from the parameters to sign (`Signature` must not be in them).
///
/// A `BTreeMap<String, _>` iterates in bytewise order of the names, which is the order the spec
/// asks for (`IP` < `InstanceName` < `InstanceUuid`).
pub fn canonical_query(params: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (name, value) in params {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&percent_encode(name));
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

/// `METHOD&%2F&encode(canonical)`.
pub fn string_to_sign(method: Method, params: &BTreeMap<String, String>) -> String {
    format!(
        "{}&%2F&{}",
        method.as_str(),
        percent_encode(&canonical_query(params))
    )
}

/// Base64 HMAC-SHA1 of `string_to_sign` keyed with the bare secret's UTF-8 bytes.
pub fn signature(method: Method, params: &BTreeMap<String, String>, secret: &str) -> String {
    // cannot fail: HMAC accepts keys of any length.
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign(method, params).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Formats a timestamp the way the API wants it: `yyyy-MM-ddTHH:mm:ssZ`, UTC.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Everything a signed call needs besides the action parameters.
#[derive(Debug, Clone, Copy)]
pub struct SigningInput<'a> {
    pub method: Method,
    pub action: &'a str,
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub timestamp: DateTime<Utc>,
    pub nonce: &'a str,
}

/// Produces the complete query string of a signed call: the common parameters, the given signed
/// action parameters (GET) and `Signature`, every name and value RFC 3986-encoded.
///
/// For POST pass no action parameters: they travel in the unsigned JSON body.
pub fn signed_query(input: &SigningInput<'_>, action_params: &BTreeMap<String, String>) -> String {
    let mut params = action_params.clone();
    params.insert("Action".into(), input.action.into());
    params.insert("AccessKeyId".into(), input.access_key_id.into());
    params.insert("SignatureMethod".into(), SIGNATURE_METHOD.into());
    params.insert("SignatureVersion".into(), SIGNATURE_VERSION.into());
    params.insert("SignatureNonce".into(), input.nonce.into());
    params.insert("Timestamp".into(), format_timestamp(input.timestamp));
    params.insert("Version".into(), API_VERSION.into());
    let sig = signature(input.method, &params, input.secret);
    format!(
        "{}&Signature={}",
        canonical_query(&params),
        percent_encode(&sig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vector {
        title: String,
        method: String,
        params: BTreeMap<String, String>,
        canonical: String,
        string_to_sign: String,
        signature: String,
        final_query_rfc3986: String,
        #[serde(rename = "NEGATIVE_signature_with_key_secret_amp")]
        negative: String,
    }

    /// The published vectors, copied from `shared/cds-sign-vectors.json` so the test suite does not
    /// depend on a file outside the repository.
    const VECTORS: &str = include_str!("../../tests/fixtures/cds-sign-vectors.json");

    fn vectors() -> Vec<Vector> {
        serde_json::from_str(VECTORS).unwrap()
    }

    fn method(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "POST" => Method::Post,
            other => panic!("unexpected method {other}"),
        }
    }

    #[test]
    fn all_published_vectors_match() {
        let vs = vectors();
        assert_eq!(vs.len(), 4);
        for v in vs {
            let m = method(&v.method);
            assert_eq!(canonical_query(&v.params), v.canonical, "{}", v.title);
            assert_eq!(
                string_to_sign(m, &v.params),
                v.string_to_sign,
                "{}",
                v.title
            );
            assert_eq!(
                signature(m, &v.params, "testsecret"),
                v.signature,
                "{}",
                v.title
            );
        }
    }

    #[test]
    fn secret_with_ampersand_gives_the_documented_wrong_signature() {
        for v in vectors() {
            let m = method(&v.method);
            let wrong = signature(m, &v.params, "testsecret&");
            assert_eq!(wrong, v.negative, "{}", v.title);
            assert_ne!(wrong, v.signature, "{}", v.title);
        }
    }

    #[test]
    fn signed_query_reproduces_the_final_query_of_each_vector() {
        for v in vectors() {
            let mut action_params = v.params.clone();
            for common in [
                "Action",
                "AccessKeyId",
                "SignatureMethod",
                "SignatureVersion",
                "SignatureNonce",
                "Timestamp",
                "Version",
            ] {
                action_params.remove(common);
            }
            let ts = DateTime::parse_from_rfc3339(&v.params["Timestamp"])
                .unwrap()
                .with_timezone(&Utc);
            let q = signed_query(
                &SigningInput {
                    method: method(&v.method),
                    action: &v.params["Action"],
                    access_key_id: &v.params["AccessKeyId"],
                    secret: "testsecret",
                    timestamp: ts,
                    nonce: &v.params["SignatureNonce"],
                },
                &action_params,
            );
            assert_eq!(q, v.final_query_rfc3986, "{}", v.title);
        }
    }

    #[test]
    fn encoding_follows_rfc3986() {
        let cases = [
            (" ", "%20"),
            ("*", "%2A"),
            ("~", "~"),
            ("/", "%2F"),
            ("+", "%2B"),
            ("=", "%3D"),
            (":", "%3A"),
            ("-_.", "-_."),
            ("测试", "%E6%B5%8B%E8%AF%95"),
            ("AZaz09", "AZaz09"),
            ("\"", "%22"),
            ("%", "%25"),
        ];
        for (input, want) in cases {
            assert_eq!(percent_encode(input), want, "encoding {input:?}");
        }
    }

    #[test]
    fn names_sort_bytewise_so_upper_case_comes_first() {
        let params: BTreeMap<String, String> =
            [("InstanceUuid", "b"), ("IP", "a"), ("InstanceName", "c")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(
            canonical_query(&params),
            "IP=a&InstanceName=c&InstanceUuid=b"
        );
    }

    #[test]
    fn timestamp_format_is_second_precision_utc() {
        let ts = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.999+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_timestamp(ts), "2026-01-02T03:04:05Z");
    }
}
