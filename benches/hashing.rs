//! Hashing throughput on the transfer path, against a plain memory copy of the same bytes
//! measured in the same run: SHA-256, the RDB CRC64 (carry-less-multiply folding as used, and a
//! 16-way sliced table and a bytewise table for comparison) and both together as the transfer's
//! checker computes them.
//!
//! `cargo bench --bench hashing` prints each throughput and, at the end, the ratio of each to the
//! memory copy.

use criterion::{Criterion, Throughput, criterion_group};
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHUNK: usize = 256 << 10;

/// 64 MiB under `cargo bench`; 1 MiB when `cargo test` runs this target once as a smoke test.
fn size() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        64 << 20
    } else {
        1 << 20
    }
}

fn payload() -> Vec<u8> {
    let g = rdbvault::rdb::Generator::new(size() as u64, 7, 11).expect("valid size");
    let mut buf = vec![0u8; size()];
    g.fill(0, &mut buf, g.compute_crc());
    buf
}

fn memcpy(data: &[u8], out: &mut [u8]) {
    for (src, dst) in data.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        dst.copy_from_slice(src);
    }
    black_box(&out);
}

fn sha256(data: &[u8]) {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for c in data.chunks(CHUNK) {
        h.update(c);
    }
    black_box(h.finalize());
}

fn crc_folded(data: &[u8]) {
    let mut d = rdbvault::rdb::crc64();
    for c in data.chunks(CHUNK) {
        d.update(c);
    }
    black_box(d.finalize());
}

fn crc_sliced(data: &[u8]) {
    let mut d = rdbvault::rdb::CRC64_TABLE.digest();
    for c in data.chunks(CHUNK) {
        d.update(c);
    }
    black_box(d.finalize());
}

static CRC_BYTEWISE: crc::Crc<u64, crc::Table<1>> =
    crc::Crc::<u64, crc::Table<1>>::new(&crc::CRC_64_REDIS);

fn crc_bytewise(data: &[u8]) {
    let mut d = CRC_BYTEWISE.digest();
    for c in data.chunks(CHUNK) {
        d.update(c);
    }
    black_box(d.finalize());
}

fn checker(data: &[u8]) {
    let mut c = rdbvault::transfer::Checker::new();
    for chunk in data.chunks(CHUNK) {
        c.update(chunk);
    }
    black_box(
        c.finish(Some(data.len() as u64))
            .expect("the payload is a valid RDB file"),
    );
}

fn bench(c: &mut Criterion) {
    let data = payload();
    let mut out = vec![0u8; size()];
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(size() as u64));
    g.sample_size(10);
    g.bench_function("memcpy (reference)", |b| b.iter(|| memcpy(&data, &mut out)));
    g.bench_function("sha256", |b| b.iter(|| sha256(&data)));
    g.bench_function("crc64 folded (used)", |b| b.iter(|| crc_folded(&data)));
    g.bench_function("crc64 table-sliced x16", |b| b.iter(|| crc_sliced(&data)));
    g.bench_function("crc64 bytewise", |b| b.iter(|| crc_bytewise(&data)));
    g.bench_function("sha256 + crc64 (transfer checker)", |b| {
        b.iter(|| checker(&data))
    });
    g.finish();
}

/// Best of `runs` timings of `f`, in bytes per second.
fn best_rate(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    size() as f64 / best.as_secs_f64()
}

/// The ratios against the memory copy, measured in the same run.
fn ratios() {
    let data = payload();
    let mut out = vec![0u8; size()];
    let runs = if std::env::args().any(|a| a == "--bench") {
        5
    } else {
        1
    };
    let base = best_rate(runs, || memcpy(&data, &mut out));
    println!(
        "\nthroughput against a memory copy of the same {} MiB ({:.2} GiB/s):",
        size() >> 20,
        base / (1u64 << 30) as f64
    );
    for (name, f) in [
        ("sha256", sha256 as fn(&[u8])),
        ("crc64 folded (used)", crc_folded),
        ("crc64 table-sliced x16", crc_sliced),
        ("crc64 bytewise", crc_bytewise),
        ("sha256 + crc64 (transfer checker)", checker),
    ] {
        let rate = best_rate(runs, || f(&data));
        println!(
            "  {name:<36} {:>6.2} GiB/s  {:>5.2}x the memory copy",
            rate / (1u64 << 30) as f64,
            rate / base
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
