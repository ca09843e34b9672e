//! Signature verification exactly as `docs/cds-api.md` §1.4 describes it.
//!
//! Simulator policy where the API is silent (marked as such in the README): timestamps more than
//! 15 minutes from the simulator's clock are rejected (`RequestExpired`, 400), a nonce seen in
//! the last 30 minutes (twice that skew: the whole span of timestamps still accepted) is
//! rejected (`SignatureNonceUsed`, 400), an unknown key id gives `InvalidAccessKeyId` (403) and a
//! wrong signature `SignatureDoesNotMatch` (403).

use crate::cds::sign::{self, API_VERSION, Method, SIGNATURE_METHOD, SIGNATURE_VERSION};
use chrono::{DateTime, NaiveDateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use subtle::ConstantTimeEq;

/// Allowed distance between the request's `Timestamp` and the simulator's clock.
pub const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(15);

/// Why a request was refused: HTTP status, API code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: std::borrow::Cow<'static, str>,
    pub message: String,
}

fn reject(status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        code: code.into(),
        message: message.into(),
    }
}

/// Form-decodes a raw query string: `+` is a space, `%XX` a byte; duplicate names collapse to the
/// first value (the official Python sample sends every GET parameter twice).
pub fn decode_query(raw: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Remembers nonces per access key for twice the skew window (a request is accepted from 15
/// minutes early to 15 minutes late, so its replay could come 30 minutes apart), so a replay is
/// caught and memory stays bounded.
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: HashMap<(String, String), DateTime<Utc>>,
}

impl NonceCache {
    /// Records the nonce; false if it was already used inside the window.
    fn check_and_insert(&mut self, key_id: &str, nonce: &str, now: DateTime<Utc>) -> bool {
        if self.seen.len() > 10_000 {
            self.seen.retain(|_, at| now - *at <= MAX_SKEW * 2);
        }
        let key = (key_id.to_string(), nonce.to_string());
        match self.seen.get(&key) {
            Some(at) if now - *at <= MAX_SKEW * 2 => false,
            _ => {
                self.seen.insert(key, now);
                true
            }
        }
    }
}

/// Checks one request's query. Returns the decoded parameters (without `Signature`).
///
/// # Errors
/// A [`Rejection`] naming what is wrong.
pub fn verify(
    method: Method,
    raw_query: &str,
    access_key_id: &str,
    secret: &str,
    now: DateTime<Utc>,
    nonces: &mut NonceCache,
) -> Result<BTreeMap<String, String>, Rejection> {
    let mut params = decode_query(raw_query);
    let signature = params.remove("Signature");
    for required in [
        "AccessKeyId",
        "Action",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Version",
    ] {
        if params.get(required).is_none_or(|v| v.is_empty()) {
            return Err(reject(
                400,
                "ArgMissing",
                format!("missing common parameter {required}"),
            ));
        }
    }
    let Some(signature) = signature.filter(|s| !s.is_empty()) else {
        return Err(reject(
            400,
            "ArgMissing",
            "missing common parameter Signature",
        ));
    };
    for (name, want) in [
        ("SignatureMethod", SIGNATURE_METHOD),
        ("SignatureVersion", SIGNATURE_VERSION),
        ("Version", API_VERSION),
    ] {
        if params[name] != want {
            return Err(reject(
                400,
                "InvalidParameter",
                format!("{name} must be {want}, got {}", params[name]),
            ));
        }
    }
    if params["AccessKeyId"] != access_key_id {
        return Err(reject(
            403,
            "InvalidAccessKeyId",
            "the AccessKeyId is not known",
        ));
    }
    let ts = NaiveDateTime::parse_from_str(&params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        .map_err(|_| {
            reject(
                400,
                "InvalidParameter",
                "Timestamp must be yyyy-MM-ddTHH:mm:ssZ (UTC)",
            )
        })?
        .and_utc();
    if (now - ts).abs() > MAX_SKEW {
        return Err(reject(
            400,
            "RequestExpired",
            format!(
                "Timestamp {} is more than 15 minutes away from server time {}",
                params["Timestamp"],
                sign::format_timestamp(now)
            ),
        ));
    }
    let expected = sign::signature(method, &params, secret);
    if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
        return Err(reject(
            403,
            "SignatureDoesNotMatch",
            "the signature does not match; check the secret and the signing method",
        ));
    }
    // Only a correctly signed request consumes its nonce: a forger cannot burn someone's nonces.
    if !nonces.check_and_insert(&params["AccessKeyId"], &params["SignatureNonce"], now) {
        return Err(reject(
            400,
            "SignatureNonceUsed",
            "this SignatureNonce was already used; send a fresh one with every request",
        ));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const V1: &str = "AccessKeyId=testak&Action=DescribeBackups&InstanceUuid=5d74bb81-0473-464d-b15b-0ae418619248&SignatureMethod=HMAC-SHA1&SignatureNonce=11111111-2222-4333-8444-555555555555&SignatureVersion=1.0&Timestamp=2026-01-02T03%3A04%3A05Z&Version=2019-08-08&Signature=fxIiaPkHlFAZ7SWK2AjuscpFB7U%3D";
    /// V3 as the official Python sample puts it on the wire: unsorted, `+` for space.
    const V3_PYTHON: &str = "Action=DescribeDBInstances&AccessKeyId=testak&SignatureMethod=HMAC-SHA1&SignatureNonce=bbbbbbbb-cccc-4ddd-8eee-ffffffffffff&SignatureVersion=1.0&Timestamp=2026-01-02T03%3A04%3A05Z&Version=2019-08-08&InstanceName=my+redis%2A~%2F%E6%B5%8B%E8%AF%95&Signature=HmGY06%2FChKLFubkp%2FuU0R4OL1kA%3D";

    fn check(
        q: &str,
        now: &str,
        nonces: &mut NonceCache,
    ) -> Result<BTreeMap<String, String>, Rejection> {
        verify(Method::Get, q, "testak", "testsecret", at(now), nonces)
    }

    #[test]
    fn accepts_the_vectors_in_both_wire_forms() {
        let mut n = NonceCache::default();
        let p = check(V1, "2026-01-02T03:10:00Z", &mut n).unwrap();
        assert_eq!(p["InstanceUuid"], "5d74bb81-0473-464d-b15b-0ae418619248");
        let p = check(V3_PYTHON, "2026-01-02T03:04:05Z", &mut n).unwrap();
        assert_eq!(p["InstanceName"], "my redis*~/测试");
    }

    #[test]
    fn duplicate_keys_collapse_to_the_first() {
        let mut n = NonceCache::default();
        let doubled = format!("{V1}&InstanceUuid=5d74bb81-0473-464d-b15b-0ae418619248");
        assert!(check(&doubled, "2026-01-02T03:04:05Z", &mut n).is_ok());
    }

    #[test]
    fn rejects_secret_with_ampersand_stale_timestamp_replay_and_wrong_key() {
        let mut n = NonceCache::default();
        let amp = V1.replace(
            "fxIiaPkHlFAZ7SWK2AjuscpFB7U%3D",
            "U%2BL8EdjhOF%2Bygy5MTopW%2FBkNpmk%3D",
        );
        assert_eq!(
            check(&amp, "2026-01-02T03:04:05Z", &mut n)
                .unwrap_err()
                .code,
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            check(V1, "2026-01-02T03:20:00Z", &mut n).unwrap_err().code,
            "RequestExpired"
        );
        assert_eq!(
            check(V1, "2026-01-02T02:49:00Z", &mut n).unwrap_err().code,
            "RequestExpired"
        );
        assert!(check(V1, "2026-01-02T03:04:05Z", &mut n).is_ok());
        assert_eq!(
            check(V1, "2026-01-02T03:04:06Z", &mut n).unwrap_err().code,
            "SignatureNonceUsed"
        );
        let other = V1.replace("AccessKeyId=testak", "AccessKeyId=other");
        assert_eq!(
            check(&other, "2026-01-02T03:04:05Z", &mut n)
                .unwrap_err()
                .code,
            "InvalidAccessKeyId"
        );
        let unsigned = V1.split("&Signature=").next().unwrap();
        assert_eq!(
            check(unsigned, "2026-01-02T03:04:05Z", &mut n)
                .unwrap_err()
                .code,
            "ArgMissing"
        );
    }

    #[test]
    fn post_is_signed_as_post() {
        // V2 is a POST; verifying it as GET must fail.
        let v2 = "AccessKeyId=testak&Action=CreateBackup&SignatureMethod=HMAC-SHA1&SignatureNonce=66666666-7777-4888-9999-aaaaaaaaaaaa&SignatureVersion=1.0&Timestamp=2026-01-02T03%3A04%3A05Z&Version=2019-08-08&Signature=zplEm0BFmGvd%2Fk3bxC8Da%2FwQ%2FzY%3D";
        let mut n = NonceCache::default();
        assert!(
            verify(
                Method::Get,
                v2,
                "testak",
                "testsecret",
                at("2026-01-02T03:04:05Z"),
                &mut n
            )
            .is_err()
        );
        assert!(
            verify(
                Method::Post,
                v2,
                "testak",
                "testsecret",
                at("2026-01-02T03:04:05Z"),
                &mut n
            )
            .is_ok()
        );
    }
}
