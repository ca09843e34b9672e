//! Any bytes, split anywhere, through the streaming RDB verifier: the same verdict as verifying
//! them whole, and never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let whole = rdbvault::rdb::verify_bytes(data);
    let split = data
        .first()
        .map(|b| *b as usize % (data.len().max(1)))
        .unwrap_or(0);
    let mut v = rdbvault::rdb::Verifier::new();
    v.update(&data[..split]);
    v.update(&data[split..]);
    assert_eq!(v.finish(), whole);
});
