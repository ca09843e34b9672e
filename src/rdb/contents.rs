//! What is inside an RDB file, read while it streams past: the aux fields that say which Redis
//! wrote it, when and with how much memory in use, and the number of keys in each database (and
//! how many of them carry an expiry). A restore drill checks a loaded copy against these counts.
//!
//! The reader is pushed bytes in whatever pieces the transfer receives them ([`Reader::update`])
//! and keeps only the token in hand: a length, a few fixed bytes, a short aux value. Values are
//! skipped by their announced lengths, never buffered, so a 50 GiB file costs what a 1 KiB one
//! does, and no length read from the file sizes an allocation.
//!
//! The layout follows Redis's `rdb.h`/`rdb.c` for RDB versions 1 to 12 (Redis 2.6 to 8): the
//! opcodes before the keys (`AUX`, `SELECTDB`, `RESIZEDB`, expiry, LRU/LFU, function libraries,
//! module aux data, cluster slot info), and for every value type the shape of its encoding:
//! plain and length-prefixed strings (integer-encoded and LZF-compressed ones included), the
//! old list/set/zset/hash layouts, the ziplist/listpack/intset blobs, quicklists, streams with
//! their consumer groups (three layouts), hashes with field expiry, and module values in their
//! self-describing form (read without the module). What the file names but this reader does not
//! know (a newer value type) ends the reading with an error that says where; the transfer's
//! verdict stands on the size and the CRC64, not on this.

use std::collections::BTreeMap;

/// The contents of one RDB file, as recorded in the manifest (`rdb:`) and the state DB.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Contents {
    /// The `redis-ver` aux field: the version of the server that wrote the file.
    pub redis_version: Option<String>,
    /// The `ctime` aux field: when the file was made, in seconds since the epoch.
    pub ctime: Option<i64>,
    /// The `used-mem` aux field: the server's memory in use when it saved, in bytes.
    pub used_mem: Option<u64>,
    /// Keys per database number, counted key by key.
    pub keys_per_db: BTreeMap<u64, u64>,
    /// Of those keys, the ones with an expiry: a server loading the copy later drops the ones
    /// whose time has passed, so a restore may hold fewer keys than the file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expires_per_db: BTreeMap<u64, u64>,
}

impl Contents {
    pub fn keys(&self) -> u64 {
        self.keys_per_db.values().sum()
    }

    /// One line: `redis 7.0.15, saved 2026-11-30 02:33:24 UTC, 1.0 MiB in use, keys db0=12
    /// db1=3 (2 with an expiry)`; the parts the file does not say are left out.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.redis_version {
            parts.push(format!("redis {v}"));
        }
        if let Some(t) = self
            .ctime
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        {
            parts.push(format!("saved {}", t.format("%Y-%m-%d %H:%M:%S UTC")));
        }
        if let Some(m) = self.used_mem {
            parts.push(format!("{:.1} MiB in use", m as f64 / (1024.0 * 1024.0)));
        }
        let expiring: u64 = self.expires_per_db.values().sum();
        parts.push(match expiring {
            0 => format!("keys {}", self.keys_text()),
            n => format!("keys {} ({n} with an expiry)", self.keys_text()),
        });
        parts.join(", ")
    }

    /// `db0=120 db3=4`, or `no keys`.
    pub fn keys_text(&self) -> String {
        if self.keys_per_db.is_empty() {
            return "no keys".into();
        }
        self.keys_per_db
            .iter()
            .map(|(db, n)| format!("db{db}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Aux values longer than this are skipped rather than kept (the ones read are short).
const AUX_CAP: u64 = 256;
/// The most distinct database numbers a file may name (Redis's default is 16).
const MAX_DATABASES: usize = 4096;
/// The longest token: a string header with an LZF block's two lengths (1 + 9 + 9 bytes).
const MAX_TOKEN: usize = 32;
/// The newest RDB version this reader knows.
pub const NEWEST_VERSION: u16 = 12;

/// One step of an encoding's shape.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `REDIS` and four digits.
    Header,
    /// An opcode or a value type (the top level, forever).
    Opcode,
    /// A length (6, 14, 32 or 64 bits).
    Len,
    /// A string: length-prefixed, integer-encoded or LZF-compressed; its bytes are skipped.
    Str,
    /// So many raw bytes (an expiry, a stream id, a binary double).
    Fixed(u8),
    /// A double as text with a one-byte length (253, 254, 255: NaN, +inf, -inf).
    Double,
    /// A length `n`, then the body `n` times.
    Each(&'static [Op]),
    /// A module value in its self-describing form: typed items until a zero opcode.
    ModuleValue,
    /// `SELECTDB`'s database number.
    SelectDb,
    /// An `AUX` field's name and value, kept when short.
    AuxKey,
    AuxValue,
}

use Op::*;

// The shape of each value type after its key (`rdbLoadObject`).
const PEL_ENTRY: &[Op] = &[Fixed(16), Fixed(8), Len];
const CONSUMER_PEL: &[Op] = &[Fixed(16)];
const CONSUMER_1: &[Op] = &[Str, Fixed(8), Each(CONSUMER_PEL)];
const CONSUMER_3: &[Op] = &[Str, Fixed(8), Fixed(8), Each(CONSUMER_PEL)];
const CGROUP_1: &[Op] = &[Str, Len, Len, Each(PEL_ENTRY), Each(CONSUMER_1)];
const CGROUP_2: &[Op] = &[Str, Len, Len, Len, Each(PEL_ENTRY), Each(CONSUMER_1)];
const CGROUP_3: &[Op] = &[Str, Len, Len, Len, Each(PEL_ENTRY), Each(CONSUMER_3)];
const LISTPACK_NODE: &[Op] = &[Str, Str];

/// Key and value of each value type Redis writes, by its type byte.
fn value_shape(kind: u8) -> Option<&'static [Op]> {
    Some(match kind {
        // A string; and every type stored as one blob: zipmap, ziplist, intset, listpack.
        0 | 9..=13 | 16 | 17 | 20 | 23 => &[Str, Str],
        // Linked list and set (old), quicklist of ziplists.
        1 | 2 | 14 => &[Str, Each(&[Str])],
        3 => &[Str, Each(&[Str, Double])],
        4 => &[Str, Each(&[Str, Str])],
        5 => &[Str, Each(&[Str, Fixed(8)])],
        7 => &[Str, Len, ModuleValue],
        // Quicklist 2: each node a container kind and a blob.
        18 => &[Str, Each(&[Len, Str])],
        15 => &[Str, Each(LISTPACK_NODE), Len, Len, Len, Each(CGROUP_1)],
        19 => &[
            Str,
            Each(LISTPACK_NODE),
            Len,
            Len,
            Len,
            Len,
            Len,
            Len,
            Len,
            Len,
            Each(CGROUP_2),
        ],
        21 => &[
            Str,
            Each(LISTPACK_NODE),
            Len,
            Len,
            Len,
            Len,
            Len,
            Len,
            Len,
            Len,
            Each(CGROUP_3),
        ],
        // Hash with field expiry: 7.4's release candidates, then with a minimum expiry first.
        22 => &[Str, Each(&[Len, Str, Str])],
        24 => &[Str, Fixed(8), Each(&[Len, Str, Str])],
        25 => &[Str, Fixed(8), Str],
        _ => return None,
    })
}

/// Where the reader is within one encoding.
#[derive(Debug)]
struct Frame {
    ops: &'static [Op],
    pc: usize,
    /// Passes of `ops` left, this one included.
    left: u64,
}

/// A string header, decoded.
enum StrHead {
    /// Raw bytes follow.
    Plain(u64),
    /// An integer of so many bytes follows (decoded when kept).
    Int(usize),
    /// An LZF block of `compressed` bytes follows.
    Lzf { compressed: u64 },
}

/// An aux value being kept as its bytes arrive.
#[derive(Debug)]
struct Capture {
    bytes: Vec<u8>,
    /// Kept whole (not skipped for being too long or compressed).
    kept: bool,
}

/// Reads an RDB file's contents from bytes pushed in order ([`Reader::update`]), then
/// [`Reader::finish`].
#[derive(Debug)]
pub struct Reader {
    stack: Vec<Frame>,
    /// The bytes of a token split across two pushes (at most [`MAX_TOKEN`]).
    pending: Vec<u8>,
    /// Bytes of the current string still to pass (or to keep, when `capture` is set).
    skip: u64,
    capture: Option<Capture>,
    /// Offset of the next byte not yet part of a finished token.
    offset: u64,
    db: u64,
    next_key_expires: bool,
    aux_key: Option<String>,
    contents: Contents,
    done: bool,
    failed: Option<String>,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            stack: vec![
                Frame {
                    ops: &[Opcode],
                    pc: 0,
                    left: u64::MAX,
                },
                Frame {
                    ops: &[Header],
                    pc: 0,
                    left: 1,
                },
            ],
            pending: Vec::with_capacity(MAX_TOKEN),
            skip: 0,
            capture: None,
            offset: 0,
            db: 0,
            next_key_expires: false,
            aux_key: None,
            contents: Contents::default(),
            done: false,
            failed: None,
        }
    }

    /// Reads the next bytes of the file. After the EOF opcode (the checksum trailer) or an
    /// error, bytes are ignored.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.done && self.failed.is_none() {
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                if let Some(c) = self.capture.as_mut()
                    && c.kept
                {
                    c.bytes.extend_from_slice(&data[..n]);
                }
                data = &data[n..];
                self.skip -= n as u64;
                self.offset += n as u64;
                if self.skip == 0 {
                    self.end_capture();
                }
                continue;
            }
            if self.pending.is_empty() {
                match self.token(data) {
                    Ok(Some(used)) => {
                        self.offset += used as u64;
                        data = &data[used..];
                    }
                    // Only part of a token: wait for the rest.
                    Ok(None) if data.len() < MAX_TOKEN => {
                        self.pending.extend_from_slice(data);
                        data = &[];
                    }
                    Ok(None) => self.fail(format!("no token fits in {MAX_TOKEN} bytes")),
                    Err(e) => self.fail(e),
                }
            } else {
                let held = self.pending.len();
                let take = (MAX_TOKEN - held).min(data.len());
                let mut joined = std::mem::take(&mut self.pending);
                joined.extend_from_slice(&data[..take]);
                match self.token(&joined) {
                    Ok(Some(used)) => {
                        self.offset += used as u64;
                        if used >= held {
                            data = &data[used - held..];
                            joined.clear();
                        } else {
                            // Ended within the held bytes: the rest of them come next.
                            joined.truncate(held);
                            joined.drain(..used);
                        }
                        self.pending = joined;
                    }
                    Ok(None) => {
                        self.pending = joined;
                        data = &data[take..];
                    }
                    Err(e) => self.fail(e),
                }
            }
        }
    }

    /// What the file holds, or why it could not be read to its end.
    ///
    /// # Errors
    /// The reading stopped at an error, or the bytes ended before the EOF opcode.
    pub fn finish(self) -> Result<Contents, String> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if !self.done {
            return Err(format!(
                "the file ends at byte {} inside its contents, before the EOF opcode",
                self.offset + self.pending.len() as u64
            ));
        }
        Ok(self.contents)
    }

    fn fail(&mut self, why: String) {
        self.failed = Some(format!(
            "RDB contents unreadable at byte {}: {why}",
            self.offset
        ));
    }

    /// Reads one token for the op in hand from the start of `input`: the bytes it took, or
    /// `None` when `input` holds only part of it.
    fn token(&mut self, input: &[u8]) -> Result<Option<usize>, String> {
        let Some(frame) = self.stack.last() else {
            return Err("nothing expected after the end of the contents".into());
        };
        let op = frame.ops[frame.pc];
        match op {
            Header => {
                let Some(head) = input.get(..super::HEADER_LEN) else {
                    return Ok(None);
                };
                let version = super::parse_header(head).map_err(|e| e.to_string())?;
                if version > NEWEST_VERSION {
                    return Err(format!(
                        "RDB version {version} is newer than this reader knows (1 to {NEWEST_VERSION})"
                    ));
                }
                self.advance();
                Ok(Some(super::HEADER_LEN))
            }
            Opcode => {
                let Some(&kind) = input.first() else {
                    return Ok(None);
                };
                self.opcode(kind)?;
                Ok(Some(1))
            }
            Len | SelectDb | Each(_) | ModuleValue => {
                let Some((value, used)) = read_len(input)? else {
                    return Ok(None);
                };
                self.length(op, value)?;
                Ok(Some(used))
            }
            Str | AuxKey | AuxValue => {
                let Some((head, used)) = read_str_head(input)? else {
                    return Ok(None);
                };
                let keep = matches!(op, AuxKey | AuxValue);
                match head {
                    StrHead::Plain(n) => {
                        self.begin_capture(keep, n <= AUX_CAP, Vec::new());
                        self.skip = n;
                    }
                    StrHead::Int(n) => {
                        let Some(bytes) = input.get(used..used + n) else {
                            return Ok(None);
                        };
                        let text = int_text(bytes).into_bytes();
                        self.begin_capture(keep, true, text);
                        self.advance_or_finish_capture();
                        return Ok(Some(used + n));
                    }
                    StrHead::Lzf { compressed } => {
                        // Compressed aux values are not kept (Redis compresses only strings
                        // longer than 20 bytes; the fields read here are shorter).
                        self.begin_capture(keep, false, Vec::new());
                        self.skip = compressed;
                    }
                }
                if self.skip == 0 {
                    self.advance_or_finish_capture();
                }
                Ok(Some(used))
            }
            Fixed(n) => {
                if input.len() < n as usize {
                    return Ok(None);
                }
                self.advance();
                Ok(Some(n as usize))
            }
            Double => {
                let Some(&len) = input.first() else {
                    return Ok(None);
                };
                match len {
                    // The text follows; the reader moves on once it has passed.
                    1..253 => self.skip = u64::from(len),
                    _ => self.advance(),
                }
                Ok(Some(1))
            }
        }
    }

    /// An opcode or value type at the top level.
    fn opcode(&mut self, kind: u8) -> Result<(), String> {
        let then: &'static [Op] = match kind {
            0xFF => {
                self.done = true;
                return Ok(());
            }
            0xFE => &[SelectDb],
            0xFD => {
                self.next_key_expires = true;
                &[Fixed(4)]
            }
            0xFC => {
                self.next_key_expires = true;
                &[Fixed(8)]
            }
            // RESIZEDB: hash table size hints; the keys are counted one by one instead.
            0xFB => &[Len, Len],
            0xFA => &[AuxKey, AuxValue],
            0xF9 => &[Fixed(1)],
            0xF8 => &[Len],
            // Module aux data: module id, "when" opcode and value, then the module's items.
            0xF7 => &[Len, Len, Len, ModuleValue],
            // A function library's code.
            0xF5 => &[Str],
            0xF6 => {
                return Err(
                    "function libraries of Redis 7.0's release candidates (opcode 0xF6) are not supported; \
                     a released Redis 7.0 or later writes them in the current form"
                        .into(),
                );
            }
            // Cluster slot info: slot, keys, expiring keys.
            0xF4 => &[Len, Len, Len],
            6 => {
                return Err(
                    "a module value in Redis 4.0's release-candidate form (type 6) cannot be read without its module".into(),
                );
            }
            _ => {
                let Some(shape) = value_shape(kind) else {
                    return Err(format!(
                        "unknown opcode or value type {kind} (a newer RDB format than this reader knows, or a damaged file)"
                    ));
                };
                self.count_key()?;
                shape
            }
        };
        self.stack.push(Frame {
            ops: then,
            pc: 0,
            left: 1,
        });
        Ok(())
    }

    fn count_key(&mut self) -> Result<(), String> {
        let c = &mut self.contents;
        if !c.keys_per_db.contains_key(&self.db) && c.keys_per_db.len() >= MAX_DATABASES {
            return Err(format!("keys in more than {MAX_DATABASES} databases"));
        }
        *c.keys_per_db.entry(self.db).or_default() += 1;
        if std::mem::take(&mut self.next_key_expires) {
            *c.expires_per_db.entry(self.db).or_default() += 1;
        }
        Ok(())
    }

    /// A length read for `op`.
    fn length(&mut self, op: Op, value: u64) -> Result<(), String> {
        match op {
            SelectDb => {
                self.db = value;
                self.advance();
            }
            Each(body) => {
                self.advance();
                if value > 0 {
                    self.stack.push(Frame {
                        ops: body,
                        pc: 0,
                        left: value,
                    });
                }
            }
            // One item of a module value (`RDB_MODULE_OPCODE_*`); the op stays until the
            // zero that ends the value.
            ModuleValue => {
                let item: &'static [Op] = match value {
                    0 => {
                        self.advance();
                        return Ok(());
                    }
                    1 | 2 => &[Len],
                    3 => &[Fixed(4)],
                    4 => &[Fixed(8)],
                    5 => &[Str],
                    other => {
                        return Err(format!("unknown module value item {other}"));
                    }
                };
                self.stack.push(Frame {
                    ops: item,
                    pc: 0,
                    left: 1,
                });
            }
            _ => self.advance(),
        }
        Ok(())
    }

    /// Moves past the op in hand; a finished frame is popped (its parent moved on when it was
    /// pushed).
    fn advance(&mut self) {
        let Some(top) = self.stack.last_mut() else {
            return;
        };
        top.pc += 1;
        if top.pc < top.ops.len() {
            return;
        }
        top.left -= 1;
        if top.left > 0 {
            top.pc = 0;
        } else {
            self.stack.pop();
        }
    }

    fn begin_capture(&mut self, keep: bool, fits: bool, bytes: Vec<u8>) {
        self.capture = keep.then_some(Capture { bytes, kept: fits });
    }

    /// A string ended: an aux name or value is recorded, and the reader moves on.
    fn end_capture(&mut self) {
        self.advance_or_finish_capture();
    }

    fn advance_or_finish_capture(&mut self) {
        let op = self.stack.last().map(|f| f.ops[f.pc]);
        if let Some(c) = self.capture.take() {
            let text = c
                .kept
                .then(|| String::from_utf8_lossy(&c.bytes).into_owned());
            match op {
                Some(AuxKey) => self.aux_key = text,
                Some(AuxValue) => {
                    if let (Some(key), Some(value)) = (self.aux_key.take(), text) {
                        self.aux(&key, value);
                    }
                }
                _ => {}
            }
        }
        self.advance();
    }

    fn aux(&mut self, key: &str, value: String) {
        let c = &mut self.contents;
        match key {
            "redis-ver" => c.redis_version = Some(value),
            "ctime" => c.ctime = value.parse().ok(),
            "used-mem" => c.used_mem = value.parse().ok(),
            _ => {}
        }
    }
}

/// A length at the start of `input` and the bytes it took; `None`: more bytes needed.
fn read_len(input: &[u8]) -> Result<Option<(u64, usize)>, String> {
    match read_str_head(input)? {
        None => Ok(None),
        Some((StrHead::Plain(n), used)) => Ok(Some((n, used))),
        Some(_) => Err("an encoded string where a length belongs".into()),
    }
}

/// A string header (or a plain length) at the start of `input`.
fn read_str_head(input: &[u8]) -> Result<Option<(StrHead, usize)>, String> {
    let Some(&first) = input.first() else {
        return Ok(None);
    };
    let plain = |n: u64, used: usize| Ok(Some((StrHead::Plain(n), used)));
    match first >> 6 {
        0 => plain(u64::from(first & 0x3F), 1),
        1 => match input.get(1) {
            Some(&b) => plain((u64::from(first & 0x3F) << 8) | u64::from(b), 2),
            None => Ok(None),
        },
        2 => match first {
            0x80 => match input.get(1..5) {
                Some(b) => plain(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])), 5),
                None => Ok(None),
            },
            0x81 => match input.get(1..9) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    plain(u64::from_be_bytes(be), 9)
                }
                None => Ok(None),
            },
            other => Err(format!("invalid length byte {other:#04x}")),
        },
        _ => match first & 0x3F {
            0 => Ok(Some((StrHead::Int(1), 1))),
            1 => Ok(Some((StrHead::Int(2), 1))),
            2 => Ok(Some((StrHead::Int(4), 1))),
            3 => {
                let Some((compressed, a)) = read_len(&input[1..])? else {
                    return Ok(None);
                };
                let Some((_, b)) = read_len(&input[1 + a..])? else {
                    return Ok(None);
                };
                Ok(Some((StrHead::Lzf { compressed }, 1 + a + b)))
            }
            other => Err(format!("invalid string encoding {other}")),
        },
    }
}

/// An integer-encoded string's text (little-endian, signed, 1, 2 or 4 bytes).
fn int_text(bytes: &[u8]) -> String {
    match *bytes {
        [a] => i8::from_le_bytes([a]).to_string(),
        [a, b] => i16::from_le_bytes([a, b]).to_string(),
        [a, b, c, d] => i32::from_le_bytes([a, b, c, d]).to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length in the shortest form Redis writes.
    fn len(n: u64) -> Vec<u8> {
        match n {
            0..64 => vec![n as u8],
            64..16384 => vec![0x40 | (n >> 8) as u8, n as u8],
            _ if n <= u64::from(u32::MAX) => {
                let mut v = vec![0x80];
                v.extend_from_slice(&(n as u32).to_be_bytes());
                v
            }
            _ => {
                let mut v = vec![0x81];
                v.extend_from_slice(&n.to_be_bytes());
                v
            }
        }
    }

    fn s(bytes: &[u8]) -> Vec<u8> {
        let mut v = len(bytes.len() as u64);
        v.extend_from_slice(bytes);
        v
    }

    fn file(version: u16, body: &[Vec<u8>]) -> Vec<u8> {
        let mut f = format!("REDIS{version:04}").into_bytes();
        for part in body {
            f.extend_from_slice(part);
        }
        f.push(0xFF);
        f.extend_from_slice(&[0; 8]);
        f
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn read_in_pieces(bytes: &[u8], piece: usize) -> Result<Contents, String> {
        let mut r = Reader::new();
        for chunk in bytes.chunks(piece) {
            r.update(chunk);
        }
        r.finish()
    }

    /// One key of every value type, each in the layout `rdb.c` reads (database 0: 29 keys, two
    /// with an expiry).
    fn value_keys() -> Vec<u8> {
        [simple_keys(), stream_and_field_expiry_keys()].concat()
    }

    /// Strings, the old collection layouts, module values, blobs and quicklists (21 keys).
    fn simple_keys() -> Vec<u8> {
        let ms = [1u8; 8];
        let lzf = cat(&[&[0xC3], &len(4), &len(30), &[1, 2, 3, 4]]);
        let module_items = module_items();
        [
            // String keys: plain, integer-encoded, LZF, 14- and 32-bit lengths; expiring.
            cat(&[&[0xFC], &ms, &[0], &s(b"k-string"), &s(b"v")]),
            cat(&[&[0xFD], &[1, 2, 3, 4], &[0], &s(b"k-int"), &[0xC1, 1, 2]]),
            cat(&[&[0], &s(b"k-lzf"), &lzf]),
            cat(&[&[0], &s(b"k-300"), &s(&[b'y'; 300])]),
            cat(&[&[0], &s(b"k-70000"), &len(70_000), &vec![b'z'; 70_000]]),
            cat(&[&[0xF9, 5], &[1], &s(b"k-list"), &len(2), &s(b"a"), &s(b"b")]),
            cat(&[&[0xF8], &len(99), &[2], &s(b"k-set"), &len(1), &s(b"m")]),
            cat(&[
                &[3],
                &s(b"k-zset"),
                &len(3),
                &s(b"a"),
                &[3],
                b"1.5",
                &s(b"b"),
                &[253],
                &s(b"c"),
                &[255],
            ]),
            cat(&[&[4], &s(b"k-hash"), &len(1), &s(b"f"), &s(b"v")]),
            cat(&[&[5], &s(b"k-zset2"), &len(1), &s(b"a"), &ms]),
            cat(&[&[7], &s(b"k-module"), &len(0x1234_5678_9ABC), &module_items]),
            cat(&[&[9], &s(b"k-zipmap"), &s(b"blob")]),
            cat(&[&[10], &s(b"k-ziplist"), &s(b"blob")]),
            cat(&[&[11], &s(b"k-intset"), &s(b"blob")]),
            cat(&[&[12], &s(b"k-zset-zl"), &s(b"blob")]),
            cat(&[&[13], &s(b"k-hash-zl"), &s(b"blob")]),
            cat(&[&[14], &s(b"k-quicklist"), &len(2), &s(b"zl1"), &s(b"zl2")]),
            cat(&[&[16], &s(b"k-hash-lp"), &s(b"blob")]),
            cat(&[&[17], &s(b"k-zset-lp"), &s(b"blob")]),
            cat(&[
                &[18],
                &s(b"k-quicklist2"),
                &len(2),
                &len(2),
                &s(b"lp"),
                &len(1),
                &s(b"plain"),
            ]),
            cat(&[&[20], &s(b"k-set-lp"), &s(b"blob")]),
        ]
        .concat()
    }

    /// Streams in their three layouts, hashes with field expiry, an empty list (8 keys).
    fn stream_and_field_expiry_keys() -> Vec<u8> {
        let id16 = [7u8; 16];
        let ms = [1u8; 8];
        let stream_head = cat(&[&len(1), &s(&id16), &s(b"listpack-bytes")]);
        let pel = cat(&[&len(1), &id16, &ms, &len(1)]);
        let consumer_pel = cat(&[&len(1), &id16]);
        [
            cat(&[
                &[15],
                &s(b"k-stream1"),
                &stream_head,
                &len(1),
                &len(5),
                &len(0),
                &len(1),
                &s(b"g"),
                &len(5),
                &len(0),
                &pel,
                &len(1),
                &s(b"c"),
                &ms,
                &consumer_pel,
            ]),
            cat(&[
                &[19],
                &s(b"k-stream2"),
                &stream_head,
                &len(1),
                &len(5),
                &len(0),
                &len(1),
                &len(0),
                &len(0),
                &len(0),
                &len(1),
                &len(1),
                &s(b"g"),
                &len(5),
                &len(0),
                &len(1),
                &pel,
                &len(1),
                &s(b"c"),
                &ms,
                &consumer_pel,
            ]),
            cat(&[
                &[21],
                &s(b"k-stream3"),
                &stream_head,
                &len(1),
                &len(5),
                &len(0),
                &len(1),
                &len(0),
                &len(0),
                &len(0),
                &len(1),
                &len(2),
                &s(b"g1"),
                &len(5),
                &len(0),
                &len(1),
                &pel,
                &len(1),
                &s(b"c"),
                &ms,
                &ms,
                &consumer_pel,
                &s(b"g2"),
                &len(0),
                &len(0),
                &len(0),
                &len(0),
                &len(0),
            ]),
            cat(&[&[22], &s(b"k-hfe-rc"), &len(1), &len(0), &s(b"f"), &s(b"v")]),
            cat(&[&[23], &s(b"k-hfe-lp-rc"), &s(b"blob")]),
            cat(&[
                &[24],
                &s(b"k-hfe"),
                &ms,
                &len(2),
                &len(0),
                &s(b"f"),
                &s(b"v"),
                &len(9),
                &s(b"g"),
                &s(b"w"),
            ]),
            cat(&[&[25], &s(b"k-hfe-lp"), &ms, &s(b"blob")]),
            // An empty list: no body at all.
            cat(&[&[1], &s(b"k-empty"), &len(0)]),
        ]
        .concat()
    }

    /// A module value's self-describing items, ended by its zero opcode.
    fn module_items() -> Vec<u8> {
        cat(&[
            &len(2),
            &len(5),
            &len(1),
            &len(3),
            &len(5),
            &s(b"opaque"),
            &len(4),
            &[1u8; 8],
            &len(3),
            &[0, 0, 128, 63],
            &len(0),
        ])
    }

    /// Every opcode and value type of RDB 12, each in the layout `rdb.c` reads.
    fn every_shape() -> Vec<u8> {
        let module_items = module_items();
        file(
            12,
            &[
                cat(&[&[0xFA], &s(b"redis-ver"), &s(b"7.4.1")]),
                cat(&[&[0xFA], &s(b"redis-bits"), &[0xC0, 64]]),
                cat(&[
                    &[0xFA],
                    &s(b"ctime"),
                    &[0xC2],
                    &1_764_460_800i32.to_le_bytes(),
                ]),
                cat(&[
                    &[0xFA],
                    &s(b"used-mem"),
                    &[0xC2],
                    &1_048_576i32.to_le_bytes(),
                ]),
                cat(&[&[0xFA], &s(b"aof-base"), &[0xC0, 0]]),
                cat(&[&[0xFA], &s(b"long-aux"), &s(&[b'x'; 300])]),
                cat(&[
                    &[0xF7],
                    &len(0xABCD_EF01_2345),
                    &len(2),
                    &len(2),
                    &module_items,
                ]),
                cat(&[
                    &[0xF5],
                    &s(b"#!lua name=lib\nredis.register_function('f', function() return 1 end)"),
                ]),
                vec![0xFE, 0],
                cat(&[&[0xFB], &len(20), &len(2)]),
                cat(&[&[0xF4], &len(1234), &len(20), &len(2)]),
                value_keys(),
                vec![0xFE, 3],
                cat(&[&[0], &s(b"k-db3"), &s(b"v")]),
            ],
        )
    }

    #[test]
    fn every_opcode_and_value_type_is_read_whatever_the_pieces() {
        let bytes = every_shape();
        let whole = read_in_pieces(&bytes, bytes.len()).unwrap();
        assert_eq!(whole.redis_version.as_deref(), Some("7.4.1"));
        assert_eq!(whole.ctime, Some(1_764_460_800));
        assert_eq!(whole.used_mem, Some(1_048_576));
        assert_eq!(whole.keys_per_db, BTreeMap::from([(0, 29), (3, 1)]));
        assert_eq!(whole.expires_per_db, BTreeMap::from([(0, 2)]));
        assert_eq!(whole.keys(), 30);
        assert_eq!(whole.keys_text(), "db0=29 db3=1");
        for piece in (1..=40).chain([4093]) {
            assert_eq!(
                read_in_pieces(&bytes, piece).as_ref(),
                Ok(&whole),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn every_early_end_and_every_flipped_type_byte_is_an_error_never_a_panic() {
        let bytes = every_shape();
        // Cut before the EOF opcode (everywhere in the first 3,000 bytes, where the opcodes
        // and small values are, then in steps through the long strings): an error naming it.
        let cuts = (0..3000).chain((3000..bytes.len() - 9).step_by(997));
        for cut in cuts {
            let err = read_in_pieces(&bytes[..cut], 4093).unwrap_err();
            assert!(err.contains("byte"), "cut {cut}: {err}");
        }
        // Any single byte changed: read to an answer or an error, never a panic or a hang.
        for at in 0..3000 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5A;
            let _ = read_in_pieces(&damaged, 4093);
        }
    }

    #[test]
    fn what_this_reader_does_not_know_is_named() {
        let unknown = file(12, &[vec![0xFE, 0], cat(&[&[26], &s(b"k"), &s(b"v")])]);
        let err = read_in_pieces(&unknown, 5).unwrap_err();
        assert!(err.contains("unknown opcode or value type 26"), "{err}");
        assert!(err.contains("at byte 11"), "{err}");
        let newer = file(13, &[]);
        let err = read_in_pieces(&newer, 64).unwrap_err();
        assert!(err.contains("RDB version 13 is newer"), "{err}");
        let rc_functions = file(10, &[cat(&[&[0xF6], &s(b"x")])]);
        assert!(
            read_in_pieces(&rc_functions, 64)
                .unwrap_err()
                .contains("0xF6")
        );
        let not_rdb = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        assert!(read_in_pieces(&not_rdb, 3).unwrap_err().contains("header"));
        let bad_module_item = file(10, &[cat(&[&[7], &s(b"k"), &len(1), &len(9)])]);
        assert!(
            read_in_pieces(&bad_module_item, 64)
                .unwrap_err()
                .contains("module value item 9")
        );
    }

    #[test]
    fn lengths_from_the_file_never_size_memory() {
        // A string that claims 2^64-1 bytes, then 1 MiB of data: skipped as it comes, nothing kept.
        let mut r = Reader::new();
        r.update(&cat(&[
            b"REDIS0011",
            &[0xFE, 0, 0],
            &s(b"k"),
            &len(u64::MAX),
        ]));
        r.update(&vec![0u8; 1 << 20]);
        assert!(r.pending.len() <= MAX_TOKEN);
        assert!(r.capture.is_none());
        assert_eq!(r.skip, u64::MAX - (1 << 20));
        assert!(r.finish().unwrap_err().contains("before the EOF opcode"));
        // An aux value claiming 4 GiB is not kept either.
        let mut r = Reader::new();
        r.update(&cat(&[
            b"REDIS0011",
            &[0xFA],
            &s(b"redis-ver"),
            &len(u64::from(u32::MAX)),
        ]));
        r.update(&vec![b'7'; 1 << 16]);
        assert!(
            r.capture
                .as_ref()
                .is_some_and(|c| !c.kept && c.bytes.is_empty())
        );
        // Keys spread over more databases than any server has.
        let many: Vec<Vec<u8>> = (0..5000u64)
            .map(|db| cat(&[&[0xFE], &len(db), &[0], &s(b"k"), &s(b"v")]))
            .collect();
        let err = read_in_pieces(&file(10, &many), 1 << 16).unwrap_err();
        assert!(err.contains("more than 4096 databases"), "{err}");
    }

    #[test]
    fn an_rdb6_file_without_aux_fields_counts_its_keys() {
        let old = file(
            6,
            &[
                vec![0xFE, 0],
                cat(&[&[0], &s(b"a"), &s(b"1")]),
                cat(&[&[0xFC], &[0; 8], &[0], &s(b"b"), &s(b"2")]),
            ],
        );
        let c = read_in_pieces(&old, 3).unwrap();
        assert_eq!(c.redis_version, None);
        assert_eq!(c.keys_per_db, BTreeMap::from([(0, 2)]));
        assert_eq!(c.expires_per_db, BTreeMap::from([(0, 1)]));
    }
}
