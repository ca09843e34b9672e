//! The RDB verifier against dumps written by a real redis-server, and the generator against
//! the real `redis-check-rdb`.

use crate::support::{have_tool, repo_root};
use rdbvault::rdb::{self, Checksum, Generator};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("tests/fixtures").join(name)).unwrap()
}

#[test]
fn real_redis_dumps_verify() {
    let bytes = fixture("redis-7.0-small.rdb");
    let s = rdb::verify_bytes(&bytes).unwrap();
    assert_eq!(s.version, 10, "redis 7.0 writes RDB v10");
    assert!(matches!(s.checksum, Checksum::Verified(_)));
    // Fed in odd-sized pieces, as a network stream would be.
    let mut v = rdb::Verifier::new();
    for chunk in bytes.chunks(4093) {
        v.update(chunk);
    }
    assert_eq!(v.finish().unwrap(), s);
}

#[test]
fn a_dump_made_with_rdbchecksum_off_is_accepted_as_such() {
    let s = rdb::verify_bytes(&fixture("redis-7.0-nochecksum.rdb")).unwrap();
    assert_eq!(s.checksum, Checksum::Disabled);
}

#[test]
fn damaged_real_dumps_are_refused() {
    let bytes = fixture("redis-7.0-small.rdb");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 0x20;
    assert!(matches!(
        rdb::verify_bytes(&flipped),
        Err(rdb::Error::ChecksumMismatch { .. })
    ));
    assert!(rdb::verify_bytes(&bytes[..bytes.len() - 1]).is_err());
    assert!(rdb::verify_bytes(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn generated_payloads_pass_the_real_redis_check_rdb() {
    if !have_tool("redis-check-rdb") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // redis-check-rdb 7.0 reads RDB versions up to 10.
    for (version, size) in [(6u16, 70_000u64), (9, 1 << 20), (10, 300_001)] {
        let g = Generator::new(size, 99, version).unwrap();
        let crc = g.compute_crc();
        let mut buf = vec![0u8; size as usize];
        g.fill(0, &mut buf, crc);
        let path = dir.path().join(format!("v{version}.rdb"));
        std::fs::write(&path, &buf).unwrap();
        let out = std::process::Command::new("redis-check-rdb")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("RDB looks OK"), "v{version}: {text}");
        // And a corrupted copy is caught by the real tool too.
        buf[size as usize / 2] ^= 1;
        std::fs::write(&path, &buf).unwrap();
        let out = std::process::Command::new("redis-check-rdb")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("RDB looks OK"),
            "corrupt v{version} passed"
        );
    }
}
