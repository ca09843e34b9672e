//! The RDB file format, as far as rdbvault needs it: the `REDIS` + 4-digit header, the CRC64
//! trailer (RDB v5+), streaming verification in bounded memory, and a generator of valid RDB
//! files of any size for the simulator and the benchmarks.
//!
//! The CRC is Redis's CRC-64/Jones (`CRC-64/REDIS`), stored little-endian in the last 8
//! bytes; it covers every byte before it, the `0xFF` EOF opcode included. A zero trailer means the
//! server ran with `rdbchecksum no`: accepted, and reported as such.

pub mod contents;

use crc::{CRC_64_REDIS, Crc, Table};

/// A running RDB CRC64, computed by carry-less-multiply folding (PCLMULQDQ / PMULL) where the
/// CPU has it, with a table fallback: several times the speed of a table-sliced CRC
/// (`benches/hashing.rs` measures both), so the CRC costs a transfer less than the SHA-256 does.
/// `crc-fast` is what aws-smithy-checksums already uses for S3's checksums.
pub fn crc64() -> crc_fast::Digest {
    crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Redis)
}

/// The same CRC from a 16-way sliced table (the `crc` crate): the reference [`crc64`] is
/// tested against, and the benchmark's comparison.
pub static CRC64_TABLE: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// Length of `REDIS0011`.
pub const HEADER_LEN: usize = 9;
/// Length of the CRC64 trailer.
pub const TRAILER_LEN: usize = 8;
/// The EOF opcode before the trailer.
pub const OPCODE_EOF: u8 = 0xFF;
/// The first RDB version that has a CRC64 trailer.
pub const FIRST_VERSION_WITH_CHECKSUM: u16 = 5;

/// How the CRC64 trailer turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "value")]
pub enum Checksum {
    /// The trailer matches the CRC64 of the content.
    Verified(u64),
    /// The trailer is zero: the server had `rdbchecksum no`. Nothing to compare.
    Disabled,
    /// RDB versions before 5 carry no checksum.
    Absent,
}

/// What a verified RDB stream looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub size: u64,
    pub version: u16,
    pub checksum: Checksum,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not an RDB file: {size} bytes is shorter than the smallest possible RDB file")]
    TooShort { size: u64 },
    #[error("not an RDB file: the header is {found:?}, expected `REDIS` and a 4-digit version")]
    BadHeader { found: String },
    #[error(
        "RDB checksum mismatch: the trailer says {trailer:#018x}, the content hashes to {computed:#018x} (the copy is corrupt)"
    )]
    ChecksumMismatch { trailer: u64, computed: u64 },
    #[error("RDB file does not end with the EOF opcode 0xFF before its checksum (truncated?)")]
    MissingEof,
}

/// Parses `REDIS0011` into 11.
pub fn parse_header(header: &[u8]) -> Result<u16, Error> {
    let bad = || Error::BadHeader {
        found: String::from_utf8_lossy(&header[..header.len().min(HEADER_LEN)]).into_owned(),
    };
    if header.len() < HEADER_LEN || &header[..5] != b"REDIS" {
        return Err(bad());
    }
    let digits = &header[5..HEADER_LEN];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)
}

/// Verifies an RDB stream fed in pieces of any size, in constant memory.
pub struct Verifier {
    header: [u8; HEADER_LEN],
    header_len: usize,
    digest: crc_fast::Digest,
    /// The most recent bytes not yet fed to the CRC: they may be the trailer.
    tail: [u8; TRAILER_LEN],
    tail_len: usize,
    /// The last byte fed to the CRC (the EOF opcode, once the stream is complete).
    last_fed: Option<u8>,
    total: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Self {
        Verifier {
            header: [0; HEADER_LEN],
            header_len: 0,
            digest: crc64(),
            tail: [0; TRAILER_LEN],
            tail_len: 0,
            last_fed: None,
            total: 0,
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn feed(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.digest.update(bytes);
            self.last_fed = Some(last);
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if self.header_len < HEADER_LEN {
            let n = (HEADER_LEN - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
        }
        self.total += data.len() as u64;
        if data.len() >= TRAILER_LEN {
            let tail = self.tail;
            self.feed(&tail[..self.tail_len]);
            let split = data.len() - TRAILER_LEN;
            self.feed(&data[..split]);
            self.tail.copy_from_slice(&data[split..]);
            self.tail_len = TRAILER_LEN;
        } else {
            let mut combined = [0u8; 2 * TRAILER_LEN];
            combined[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            combined[self.tail_len..self.tail_len + data.len()].copy_from_slice(data);
            let n = self.tail_len + data.len();
            let keep = n.min(TRAILER_LEN);
            self.feed(&combined[..n - keep]);
            self.tail[..keep].copy_from_slice(&combined[n - keep..n]);
            self.tail_len = keep;
        }
    }

    /// Checks the header, the EOF opcode and the CRC64 trailer.
    ///
    /// # Errors
    /// Names what is wrong: too short, bad header, checksum mismatch, missing EOF.
    pub fn finish(self) -> Result<Summary, Error> {
        if self.total < (HEADER_LEN + 1) as u64 {
            return Err(Error::TooShort { size: self.total });
        }
        let version = parse_header(&self.header[..self.header_len])?;
        if version < FIRST_VERSION_WITH_CHECKSUM {
            // No trailer: the whole file is content and must end with EOF.
            let last = self.tail[..self.tail_len].last().copied().or(self.last_fed);
            if last != Some(OPCODE_EOF) {
                return Err(Error::MissingEof);
            }
            return Ok(Summary {
                size: self.total,
                version,
                checksum: Checksum::Absent,
            });
        }
        if self.total < (HEADER_LEN + 1 + TRAILER_LEN) as u64 {
            return Err(Error::TooShort { size: self.total });
        }
        if self.last_fed != Some(OPCODE_EOF) {
            return Err(Error::MissingEof);
        }
        let trailer = u64::from_le_bytes(self.tail);
        let computed = self.digest.finalize();
        let checksum = if trailer == 0 {
            Checksum::Disabled
        } else if trailer == computed {
            Checksum::Verified(computed)
        } else {
            return Err(Error::ChecksumMismatch { trailer, computed });
        };
        Ok(Summary {
            size: self.total,
            version,
            checksum,
        })
    }
}

/// Verifies a whole in-memory RDB file.
pub fn verify_bytes(bytes: &[u8]) -> Result<Summary, Error> {
    let mut v = Verifier::new();
    v.update(bytes);
    v.finish()
}

/// The RDB version a Redis server of this version writes (`"5.0"` → 9, `"7.2"` → 11).
pub fn rdb_version_for_redis(redis_version: &str) -> u16 {
    let mut parts = redis_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    match (major, minor) {
        (0..=2, _) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5 | 6, _) => 9,
        (7, 0) => 10,
        _ => 11,
    }
}

/// Generates a valid RDB file of an exact size from a seed, by random access: any byte range can
/// be produced without producing what comes before it, so a 4 GiB payload costs no memory and
/// `Range` requests are cheap.
///
/// Layout: header, aux fields and `SELECTDB 0` + `RESIZEDB` (v7+), then string keys whose values
/// are pseudo-random bytes, then `0xFF` and the CRC64 trailer. Each entry is [`ENTRY_SIZE`]
/// bytes except the last, which absorbs the remainder.
#[derive(Debug, Clone)]
pub struct Generator {
    size: u64,
    seed: u64,
    version: u16,
    prefix: Vec<u8>,
    entries: u64,
    last_entry: u64,
}

/// Size of one generated key/value entry.
pub const ENTRY_SIZE: u64 = 64 * 1024;
/// type (1) + key length (1) + key (16) + value length (5).
const ENTRY_OVERHEAD: u64 = 23;
const KEY_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot generate an RDB file of {size} bytes: the smallest is {min} bytes, and sizes from {min} to {gap_end} bytes have no valid layout"
)]
pub struct SizeError {
    pub size: u64,
    pub min: u64,
    pub gap_end: u64,
}

impl Generator {
    /// # Errors
    /// When no valid RDB file has exactly `size` bytes (below about 80 bytes).
    pub fn new(size: u64, seed: u64, version: u16) -> Result<Self, SizeError> {
        let mut probe = Self::prefix(version, 0);
        let fixed = probe.len() as u64 + 1 + TRAILER_LEN as u64;
        let err = SizeError {
            size,
            min: fixed,
            gap_end: fixed + ENTRY_OVERHEAD - 1,
        };
        if size < fixed {
            return Err(err);
        }
        let body = size - fixed;
        let (entries, last_entry) = match (body / ENTRY_SIZE, body % ENTRY_SIZE) {
            (0, 0) => (0, 0),
            (0, r) if r < ENTRY_OVERHEAD => return Err(err),
            (0, r) => (1, r),
            (k, 0) => (k, ENTRY_SIZE),
            (k, r) if r < ENTRY_OVERHEAD => (k, ENTRY_SIZE + r),
            (k, r) => (k + 1, r),
        };
        probe = Self::prefix(version, entries);
        Ok(Generator {
            size,
            seed,
            version,
            prefix: probe,
            entries,
            last_entry,
        })
    }

    fn prefix(version: u16, keys: u64) -> Vec<u8> {
        let mut p = format!("REDIS{version:04}").into_bytes();
        if version >= 7 {
            for (k, v) in [
                ("redis-ver", "7.2.4"),
                ("redis-bits", "64"),
                ("rdbvault-sim", "1"),
            ] {
                p.push(0xFA);
                p.push(k.len() as u8);
                p.extend_from_slice(k.as_bytes());
                p.push(v.len() as u8);
                p.extend_from_slice(v.as_bytes());
            }
        }
        p.extend_from_slice(&[0xFE, 0x00]);
        if version >= 7 {
            // RESIZEDB with 32-bit lengths, so the prefix size does not depend on the key count.
            p.push(0xFB);
            p.push(0x80);
            p.extend_from_slice(&(keys.min(u32::MAX as u64) as u32).to_be_bytes());
            p.push(0x80);
            p.extend_from_slice(&0u32.to_be_bytes());
        }
        p
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn version(&self) -> u16 {
        self.version
    }

    fn entries_end(&self) -> u64 {
        self.prefix.len() as u64
            + if self.entries == 0 {
                0
            } else {
                (self.entries - 1) * ENTRY_SIZE + self.last_entry
            }
    }

    /// Fills `buf` with the file's bytes starting at `offset`, except the 8 trailer bytes, which
    /// need the CRC: use [`Generator::fill`] with it.
    fn fill_content(&self, mut offset: u64, mut buf: &mut [u8]) {
        let prefix_len = self.prefix.len() as u64;
        let entries_end = self.entries_end();
        while !buf.is_empty() {
            let n;
            if offset < prefix_len {
                let src = &self.prefix[offset as usize..];
                n = src.len().min(buf.len());
                buf[..n].copy_from_slice(&src[..n]);
            } else if offset < entries_end {
                let rel = offset - prefix_len;
                let index = (rel / ENTRY_SIZE).min(self.entries - 1);
                let within = rel - index * ENTRY_SIZE;
                let entry_size = if index == self.entries - 1 {
                    self.last_entry
                } else {
                    ENTRY_SIZE
                };
                n = ((entry_size - within) as usize).min(buf.len());
                self.fill_entry(index, entry_size, within, &mut buf[..n]);
            } else {
                // The EOF opcode (offset == entries_end); the trailer is handled by the caller.
                buf[0] = OPCODE_EOF;
                n = 1;
            }
            offset += n as u64;
            buf = &mut buf[n..];
        }
    }

    fn fill_entry(&self, index: u64, entry_size: u64, within: u64, out: &mut [u8]) {
        let mut pos = within;
        let mut i = 0;
        // The 23 header bytes: type, key, value length.
        if pos < ENTRY_OVERHEAD {
            let mut header = [0u8; ENTRY_OVERHEAD as usize];
            header[0] = 0x00;
            header[1] = KEY_LEN as u8;
            header[2..18].copy_from_slice(format!("key:{index:012}").as_bytes());
            header[18] = 0x80;
            header[19..].copy_from_slice(&((entry_size - ENTRY_OVERHEAD) as u32).to_be_bytes());
            let n = ((ENTRY_OVERHEAD - pos) as usize).min(out.len());
            out[..n].copy_from_slice(&header[pos as usize..pos as usize + n]);
            i = n;
            pos += n as u64;
        }
        // The value: a window of the shared pseudo-random pool, starting at an offset drawn
        // from (seed, entry). Copying from the pool is memcpy-fast, which matters because the
        // simulator serves gigabytes this way and hashes the whole file once for its CRC.
        let pool = value_pool();
        let key = self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let origin = (splitmix64(key) % VALUE_POOL_LEN as u64) as usize;
        while i < out.len() {
            let at = (origin + (pos - ENTRY_OVERHEAD) as usize) % VALUE_POOL_LEN;
            let n = (VALUE_POOL_LEN - at).min(out.len() - i);
            out[i..i + n].copy_from_slice(&pool[at..at + n]);
            i += n;
            pos += n as u64;
        }
    }

    /// The CRC64 of everything before the trailer. Reads the whole content once (a fraction of a second
    /// per GiB), in 1 MiB pieces.
    pub fn compute_crc(&self) -> u64 {
        let mut digest = crc64();
        let mut buf = vec![0u8; 1 << 20];
        let content = self.size - TRAILER_LEN as u64;
        let mut offset = 0;
        while offset < content {
            let n = ((content - offset) as usize).min(buf.len());
            self.fill_content(offset, &mut buf[..n]);
            digest.update(&buf[..n]);
            offset += n as u64;
        }
        digest.finalize()
    }

    /// Fills `buf` with the bytes at `offset`, trailer included (`crc` from
    /// [`Generator::compute_crc`]).
    pub fn fill(&self, offset: u64, buf: &mut [u8], crc: u64) {
        let content = self.size - TRAILER_LEN as u64;
        let end = offset + buf.len() as u64;
        assert!(end <= self.size, "read past the end of the generated file");
        let content_part = content.saturating_sub(offset).min(buf.len() as u64) as usize;
        self.fill_content(offset, &mut buf[..content_part]);
        let trailer = crc.to_le_bytes();
        for (i, b) in buf[content_part..].iter_mut().enumerate() {
            let pos = offset + (content_part + i) as u64 - content;
            *b = trailer[pos as usize];
        }
    }
}

/// Size of the pool generated values are copied from.
const VALUE_POOL_LEN: usize = 1 << 20;

/// 1 MiB of SplitMix64 output, made once per process.
fn value_pool() -> &'static [u8] {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        (0..VALUE_POOL_LEN as u64 / 8)
            .flat_map(|i| splitmix64(0x005E_ED0F_DA7A ^ i).to_le_bytes())
            .collect()
    })
}

/// SplitMix64: a fast, well-mixed hash of a counter.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(size: u64, seed: u64, version: u16) -> Vec<u8> {
        let g = Generator::new(size, seed, version).unwrap();
        let crc = g.compute_crc();
        let mut buf = vec![0u8; size as usize];
        g.fill(0, &mut buf, crc);
        buf
    }

    #[test]
    fn folded_crc64_equals_the_table_reference_for_any_split() {
        let mut rng = fastrand::Rng::with_seed(64);
        for _ in 0..200 {
            let len = rng.usize(0..20_000);
            let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let mut d = crc64();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len().min(3000));
                d.update(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(d.finalize(), CRC64_TABLE.checksum(&data), "length {len}");
        }
    }

    #[test]
    fn crc64_matches_the_redis_check_value() {
        // From Redis's own crc64 self-test.
        assert_eq!(CRC64_TABLE.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
        let mut d = crc64();
        d.update(b"123456789");
        assert_eq!(d.finalize(), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn generated_files_have_exact_size_and_verify() {
        let min = Generator::new(0, 0, 11).unwrap_err().min;
        let sizes = [
            min,
            min + ENTRY_OVERHEAD,
            min + 100,
            1000,
            ENTRY_SIZE,
            ENTRY_SIZE + 1,
            ENTRY_SIZE + 10,
            3 * ENTRY_SIZE + 5,
            1 << 20,
        ];
        for version in [6, 9, 10, 11] {
            for &size in &sizes {
                let bytes = generate(size, 42, version);
                assert_eq!(bytes.len() as u64, size);
                let s = verify_bytes(&bytes).unwrap_or_else(|e| panic!("v{version} {size}: {e}"));
                assert_eq!(s.size, size);
                assert_eq!(s.version, version);
            }
        }
    }

    #[test]
    fn sizes_without_a_layout_are_refused() {
        let min = Generator::new(0, 0, 11).unwrap_err().min;
        assert!(Generator::new(min - 1, 0, 11).is_err());
        assert!(Generator::new(min + 1, 0, 11).is_err());
        assert!(Generator::new(min + ENTRY_OVERHEAD - 1, 0, 11).is_err());
    }

    #[test]
    fn random_access_equals_sequential() {
        let size = 2 * ENTRY_SIZE + 777;
        let g = Generator::new(size, 7, 11).unwrap();
        let crc = g.compute_crc();
        let whole = generate(size, 7, 11);
        for (offset, len) in [
            (0, 9),
            (5, 100),
            (ENTRY_SIZE - 3, 50),
            (size - 20, 20),
            (size - 8, 8),
            (100, 70000),
        ] {
            let mut part = vec![0u8; len as usize];
            g.fill(offset, &mut part, crc);
            assert_eq!(
                &part[..],
                &whole[offset as usize..(offset + len) as usize],
                "at {offset}+{len}"
            );
        }
    }

    #[test]
    fn different_seeds_give_different_content() {
        assert_ne!(generate(10_000, 1, 11), generate(10_000, 2, 11));
    }

    #[test]
    fn verifier_accepts_any_split() {
        let bytes = generate(5000, 3, 11);
        for piece in [1, 3, 7, 8, 9, 100, 4999] {
            let mut v = Verifier::new();
            for chunk in bytes.chunks(piece) {
                v.update(chunk);
            }
            assert!(
                matches!(v.finish().unwrap().checksum, Checksum::Verified(_)),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn verifier_catches_corruption_truncation_and_bad_headers() {
        let bytes = generate(5000, 3, 11);
        let mut flipped = bytes.clone();
        flipped[2500] ^= 0x01;
        assert!(matches!(
            verify_bytes(&flipped),
            Err(Error::ChecksumMismatch { .. })
        ));
        assert!(verify_bytes(&bytes[..4000]).is_err());
        let mut header = bytes.clone();
        header[0] = b'X';
        assert!(matches!(
            verify_bytes(&header),
            Err(Error::BadHeader { .. })
        ));
        assert!(matches!(
            verify_bytes(b"REDIS"),
            Err(Error::TooShort { .. })
        ));
        let mut letters = bytes.clone();
        letters[7] = b'a';
        assert!(matches!(
            verify_bytes(&letters),
            Err(Error::BadHeader { .. })
        ));
    }

    #[test]
    fn zero_trailer_means_checksum_disabled() {
        let mut bytes = generate(5000, 3, 11);
        let n = bytes.len();
        bytes[n - 8..].fill(0);
        assert_eq!(verify_bytes(&bytes).unwrap().checksum, Checksum::Disabled);
    }

    #[test]
    fn redis_versions_map_to_rdb_versions() {
        assert_eq!(rdb_version_for_redis("2.8.19"), 6);
        assert_eq!(rdb_version_for_redis("4.0"), 8);
        assert_eq!(rdb_version_for_redis("5.0"), 9);
        assert_eq!(rdb_version_for_redis("7.0.15"), 10);
        assert_eq!(rdb_version_for_redis("7.2"), 11);
    }
}
