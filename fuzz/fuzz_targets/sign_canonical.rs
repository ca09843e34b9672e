//! Any parameters: canonicalisation and signing never panic, the canonical string holds only
//! unreserved characters and escapes, and the simulator's verifier accepts what the signer made.
#![no_main]
use std::collections::BTreeMap;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut params = BTreeMap::new();
    for (i, part) in text.split('\u{1}').enumerate().take(8) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if k.is_empty() || ["Signature"].contains(&k) {
            continue;
        }
        params.insert(format!("{k}{i}"), v.to_string());
    }
    let canonical = rdbvault::cds::sign::canonical_query(&params);
    assert!(
        canonical
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%=&".contains(&b))
    );
    let now = chrono::Utc::now();
    let query = rdbvault::cds::sign::signed_query(
        &rdbvault::cds::sign::SigningInput {
            method: rdbvault::cds::sign::Method::Get,
            action: "DescribeDBInstances",
            access_key_id: "ak",
            secret: "secret",
            timestamp: now,
            nonce: "n",
        },
        &params,
    );
    let mut nonces = rdbvault::sim::auth::NonceCache::default();
    let verified = rdbvault::sim::auth::verify(
        rdbvault::cds::sign::Method::Get,
        &query,
        "ak",
        "secret",
        now,
        &mut nonces,
    );
    assert!(verified.is_ok(), "{verified:?} for {query}");
});
