//! A shard's write-ahead journal: append-only segment files in front of
//! the LMDB lease table (`runtime::store`).
//!
//! Why: an LMDB commit copies every touched B-tree page up to the root and
//! flushes twice (the data, then the meta page with O_DSYNC), so a group
//! commit of random leases writes ~4.7 KiB per lease. Here a commit is one
//! frame appended to a file and one `fdatasync`: the bytes of the records,
//! rounded to pages. The store merges the journal into LMDB in large,
//! key-ordered batches, where each B-tree page is written once for many
//! changes.
//!
//! Layout: `journal-<start>.log`, `<start>` the segment's first byte in the
//! journal's global position space (16 hex digits). A frame is
//! `len u32 | crc32c u32 | payload`, the CRC over the frame's global
//! position and the payload (a frame copied elsewhere does not validate).
//! The payload is a list of changes: `1 | len u16 | record` (upsert) or
//! `2 | len u16 | key` (removal). A frame never spans segments.
//!
//! Recovery: frames are read from the position the store merged through;
//! the first frame that does not validate in the last segment is the torn
//! tail of a commit that never returned (each commit syncs before the next
//! starts), and is cut off. One that does not validate in an earlier
//! segment is damage, and the store is refused.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::lease::codec::{decode_key, decode_lease, encode_key, encode_lease_into};
use crate::lease::{LeaseChange, LeaseKey};

/// A new segment is started once the current one reaches this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
const FRAME_HEADER: usize = 8;
const UPSERT: u8 = 1;
const DELETE: u8 = 2;
/// Larger than any frame a commit writes (a batch is bounded by the shard).
const MAX_FRAME: u32 = 1 << 30;

/// Where a change's bytes are: its global position and length, packed
/// into one word (positions below 2^48, changes below 64 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc(u64);

impl Loc {
    fn new(pos: u64, len: usize) -> Loc {
        Loc(pos << 16 | len as u64)
    }
    pub fn pos(self) -> u64 {
        self.0 >> 16
    }
    fn len(self) -> usize {
        (self.0 & 0xffff) as usize
    }
}

struct Segment {
    start: u64,
    /// Shared with readers on other threads (a merge in progress).
    file: Arc<File>,
    /// Bytes of whole frames in the file.
    len: u64,
    path: PathBuf,
}

pub struct Journal {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// The next frame's global position.
    end: u64,
    writable: bool,
    buf: Vec<u8>,
}

fn segment_name(start: u64) -> String {
    format!("journal-{start:016x}.log")
}

fn io_err(path: &Path, e: io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// CRC-32C (Castagnoli), bytewise table.
fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82f6_3b78 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    crc = !crc;
    for b in data {
        crc = t[((crc ^ *b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn frame_crc(pos: u64, payload: &[u8]) -> u32 {
    crc32c(crc32c(0, &pos.to_be_bytes()), payload)
}

/// Why reading a journal stopped early.
#[derive(Debug)]
pub enum JournalError {
    /// Damage before the last segment's tail, or a gap: never served.
    Damaged(String),
    /// The disk is full.
    Full(String),
    Io(String),
}

impl Journal {
    /// Open the journal in `dir` and replay every change from `from` (the
    /// position the LMDB table holds everything before), in order, to
    /// `apply`. Read-write: segments wholly before `from` are removed and a
    /// torn tail is cut off. Read-only (`writable` false): nothing changes
    /// on disk, and a frame still being written ends the replay.
    pub fn open(
        dir: &Path,
        from: u64,
        writable: bool,
        mut apply: impl FnMut(Loc, LeaseChange),
    ) -> Result<Journal, JournalError> {
        let mut starts: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| JournalError::Io(io_err(dir, e)))?
            .flatten()
            .filter_map(|e| u64::from_str_radix(e.file_name().to_str()?.strip_prefix("journal-")?.strip_suffix(".log")?, 16).ok())
            .collect();
        starts.sort_unstable();
        let mut segments = Vec::new();
        for (i, start) in starts.iter().enumerate() {
            let path = dir.join(segment_name(*start));
            let next = starts.get(i + 1).copied();
            if next.is_some_and(|n| n <= from) {
                // Wholly merged (its successor starts at or before `from`).
                if writable {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&path)
                .map_err(|e| JournalError::Io(io_err(&path, e)))?;
            let len = file.metadata().map_err(|e| JournalError::Io(io_err(&path, e)))?.len();
            segments.push(Segment { start: *start, file: Arc::new(file), len, path });
        }
        let mut j = Journal { dir: dir.to_path_buf(), segments, end: from, writable, buf: Vec::new() };
        if let Some(first) = j.segments.first()
            && first.start > from
        {
            return Err(JournalError::Damaged(format!(
                "{}: the journal starts at {} but the lease table holds changes only up to {from}: a journal segment is missing",
                first.path.display(),
                first.start
            )));
        }
        let count = j.segments.len();
        // One buffer for every segment: fresh memory costs page faults.
        let mut data = Vec::new();
        for i in 0..count {
            let last = i + 1 == count;
            let (start, len) = (j.segments[i].start, j.segments[i].len);
            data.resize(len as usize, 0);
            j.segments[i].file.read_exact_at(&mut data, 0).map_err(|e| JournalError::Io(io_err(&j.segments[i].path, e)))?;
            let mut off = from.saturating_sub(start) as usize;
            let good_end = loop {
                match parse_frame(&data, off, start) {
                    Some((payload, next)) => {
                        replay_payload(payload, start + (off + FRAME_HEADER) as u64, &mut apply)
                            .map_err(|e| JournalError::Damaged(format!("{}: {e}", j.segments[i].path.display())))?;
                        off = next;
                    }
                    None => break off,
                }
            };
            if good_end < data.len() || (!last && j.segments[i + 1].start != start + good_end as u64) {
                if !last {
                    return Err(JournalError::Damaged(format!(
                        "{}: a damaged journal frame at offset {good_end} (the segment holds {} bytes, the next one starts at {})",
                        j.segments[i].path.display(),
                        data.len(),
                        j.segments[i + 1].start - start
                    )));
                }
                if writable {
                    // The torn tail of a commit that never returned.
                    let s = &mut j.segments[i];
                    s.file.set_len(good_end as u64).map_err(|e| JournalError::Io(io_err(&s.path, e)))?;
                    s.file.sync_data().map_err(|e| JournalError::Io(io_err(&s.path, e)))?;
                    s.len = good_end as u64;
                }
            }
            j.end = j.end.max(start + good_end as u64);
        }
        Ok(j)
    }

    /// The next frame's position: everything before it is committed.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Append one durable frame holding `changes`; `placed` learns where
    /// each change's bytes are. On error nothing of the frame counts (the
    /// file is cut back to where it was).
    pub fn append(&mut self, changes: &[LeaseChange], mut placed: impl FnMut(&LeaseKey, Loc)) -> Result<(), JournalError> {
        assert!(self.writable, "append on a read-only journal");
        if changes.is_empty() {
            // Nothing to make durable (and an empty frame would read as the end).
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&[0u8; FRAME_HEADER]);
        let mut locs = Vec::with_capacity(changes.len());
        for c in changes {
            // Kind, a length filled in below, then the body, in place.
            let at = buf.len();
            buf.extend_from_slice(&[0, 0, 0]);
            match c {
                LeaseChange::Upsert(l) => {
                    buf[at] = UPSERT;
                    encode_lease_into(l, &mut buf);
                }
                LeaseChange::Delete(k) => {
                    buf[at] = DELETE;
                    buf.extend_from_slice(&encode_key(k));
                }
            }
            let body = (buf.len() - at - 3) as u16;
            buf[at + 1..at + 3].copy_from_slice(&body.to_be_bytes());
            locs.push((at, buf.len() - at));
        }
        let payload_len = buf.len() - FRAME_HEADER;
        if self.segments.last().is_none_or(|s| s.len > 0 && s.len + buf.len() as u64 > SEGMENT_BYTES) {
            self.roll()?;
        }
        let pos = self.end;
        let crc = frame_crc(pos, &buf[FRAME_HEADER..]);
        buf[0..4].copy_from_slice(&(payload_len as u32).to_be_bytes());
        buf[4..8].copy_from_slice(&crc.to_be_bytes());
        let seg = self.segments.last_mut().expect("a segment after roll");
        let res = seg.file.write_all_at(&buf, seg.len).and_then(|()| seg.file.sync_data());
        if let Err(e) = res {
            let _ = seg.file.set_len(seg.len);
            let msg = io_err(&seg.path, e);
            self.buf = buf;
            return Err(if msg.contains("No space left") { JournalError::Full(msg) } else { JournalError::Io(msg) });
        }
        seg.len += buf.len() as u64;
        self.end += buf.len() as u64;
        for (c, (at, len)) in changes.iter().zip(locs) {
            placed(&c.key(), Loc::new(pos + at as u64, len));
        }
        self.buf = buf;
        Ok(())
    }

    /// Start a new segment at the current end; its directory entry is
    /// made durable before any frame in it counts as committed.
    fn roll(&mut self) -> Result<(), JournalError> {
        let path = self.dir.join(segment_name(self.end));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| JournalError::Io(io_err(&path, e)))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| JournalError::Io(io_err(&self.dir, e)))?;
        self.segments.push(Segment { start: self.end, file: Arc::new(file), len: 0, path });
        Ok(())
    }

    /// Read back the change at `loc`.
    pub fn read(&self, loc: Loc) -> Result<LeaseChange, String> {
        decode_change(&self.read_bytes(loc)?).map(|(c, _)| c)
    }

    /// The change at `loc` as stored: the encoded record of an upsert
    /// (what the LMDB table holds, so a merge writes it without decoding
    /// and encoding it again), or None for a removal.
    pub fn read_record(&self, loc: Loc) -> Result<Option<Vec<u8>>, String> {
        record_of(self.read_bytes(loc)?)
    }

    fn read_bytes(&self, loc: Loc) -> Result<Vec<u8>, String> {
        let pos = loc.pos();
        let i = self.segments.partition_point(|s| s.start <= pos);
        let seg = i.checked_sub(1).map(|i| &self.segments[i]).ok_or_else(|| format!("journal position {pos} is gone"))?;
        read_at(&seg.file, &seg.path, seg.start, loc)
    }

    /// A reader of everything written so far, for another thread: it reads
    /// while this journal goes on appending (frames before `end` never
    /// change, and no segment is removed while a reader of it is out:
    /// `drop_before` runs when its merge is done).
    pub fn reader(&self) -> JournalReader {
        JournalReader { segments: self.segments.iter().map(|s| (s.start, s.file.clone(), s.path.clone())).collect() }
    }

    /// Remove the segments that hold nothing at or after `pos` (merged
    /// into the table). The current segment always stays.
    pub fn drop_before(&mut self, pos: u64) {
        while self.segments.len() > 1 && self.segments[1].start <= pos {
            let s = self.segments.remove(0);
            if self.writable {
                let _ = fs::remove_file(&s.path);
            }
        }
    }

    /// Bytes the journal holds on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }
}

/// The payload of the frame at `off` of a segment starting at `start`, and
/// where the next frame begins; None where no valid frame is.
fn parse_frame(data: &[u8], off: usize, start: u64) -> Option<(&[u8], usize)> {
    let h = data.get(off..off + FRAME_HEADER)?;
    let len = u32::from_be_bytes(h[0..4].try_into().unwrap());
    let crc = u32::from_be_bytes(h[4..8].try_into().unwrap());
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let payload = data.get(off + FRAME_HEADER..off + FRAME_HEADER + len as usize)?;
    (frame_crc(start + off as u64, payload) == crc).then_some((payload, off + FRAME_HEADER + len as usize))
}

/// One change and its length.
fn decode_change(b: &[u8]) -> Result<(LeaseChange, usize), String> {
    if b.len() < 3 {
        return Err("journal change truncated".into());
    }
    let len = u16::from_be_bytes([b[1], b[2]]) as usize;
    let body = b.get(3..3 + len).ok_or("journal change truncated")?;
    let c = match b[0] {
        UPSERT => LeaseChange::Upsert(decode_lease(body)?),
        DELETE => LeaseChange::Delete(decode_key(body)?),
        t => return Err(format!("unknown journal change kind {t}")),
    };
    Ok((c, 3 + len))
}

fn replay_payload(mut p: &[u8], mut pos: u64, apply: &mut impl FnMut(Loc, LeaseChange)) -> Result<(), String> {
    while !p.is_empty() {
        let (c, n) = decode_change(p)?;
        apply(Loc::new(pos, n), c);
        p = &p[n..];
        pos += n as u64;
    }
    Ok(())
}

/// Reads a journal's changes from another thread (see `Journal::reader`).
pub struct JournalReader {
    segments: Vec<(u64, Arc<File>, PathBuf)>,
}

impl JournalReader {
    /// As `Journal::read_record`.
    pub fn read_record(&self, loc: Loc) -> Result<Option<Vec<u8>>, String> {
        let pos = loc.pos();
        let i = self.segments.partition_point(|s| s.0 <= pos);
        let (start, file, path) = i.checked_sub(1).map(|i| &self.segments[i]).ok_or_else(|| format!("journal position {pos} is gone"))?;
        record_of(read_at(file, path, *start, loc)?)
    }
}

fn read_at(file: &File, path: &Path, start: u64, loc: Loc) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; loc.len()];
    file.read_exact_at(&mut b, loc.pos() - start).map_err(|e| io_err(path, e))?;
    Ok(b)
}

fn record_of(mut b: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    let len = b.get(1..3).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize);
    if len != Some(b.len().saturating_sub(3)) {
        return Err("journal change truncated".into());
    }
    match b[0] {
        UPSERT => Ok(Some(b.split_off(3))),
        DELETE => Ok(None),
        t => Err(format!("unknown journal change kind {t}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::codec::tests_support::sample;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tandem-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn replayed(d: &Path, from: u64) -> Result<Vec<(Loc, LeaseChange)>, JournalError> {
        let mut v = Vec::new();
        Journal::open(d, from, false, |l, c| v.push((l, c)))?;
        Ok(v)
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn frames_replay_in_order_and_read_back_by_location() {
        let d = tmp("replay");
        let mut j = Journal::open(&d, 0, true, |_, _| panic!("empty")).unwrap();
        let mut locs = Vec::new();
        for i in 0..30u32 {
            let batch = vec![LeaseChange::Upsert(sample(i)), LeaseChange::Delete(sample(i + 100).key)];
            j.append(&batch, |k, l| locs.push((*k, l))).unwrap();
        }
        for (i, (k, l)) in locs.iter().enumerate() {
            assert_eq!(j.read(*l).unwrap().key(), *k);
            let raw = j.read_record(*l).unwrap();
            if i % 2 == 0 {
                assert_eq!(raw, Some(crate::lease::codec::encode_lease(&sample(i as u32 / 2))), "the record as LMDB holds it");
            } else {
                assert_eq!(raw, None, "a removal");
            }
        }
        let back = replayed(&d, 0).unwrap();
        assert_eq!(back.len(), 60);
        assert_eq!(back.iter().map(|(l, _)| *l).collect::<Vec<_>>(), locs.iter().map(|(_, l)| *l).collect::<Vec<_>>());
        assert_eq!(back[2].1, LeaseChange::Upsert(sample(1)));
        // From a frame boundary: only what follows.
        let mid = locs[40].1.pos() - FRAME_HEADER as u64;
        assert_eq!(replayed(&d, mid).unwrap().len(), 20);
        // An empty commit writes nothing.
        let end = j.end();
        j.append(&[], |_, _| panic!("nothing placed")).unwrap();
        assert_eq!(j.end(), end);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_before_it_is_refused() {
        let d = tmp("torn");
        let mut j = Journal::open(&d, 0, true, |_, _| {}).unwrap();
        for i in 0..5 {
            j.append(&[LeaseChange::Upsert(sample(i))], |_, _| {}).unwrap();
        }
        let end = j.end();
        drop(j);
        let f = d.join(segment_name(0));
        // A commit that never returned: half a frame.
        let mut bytes = fs::read(&f).unwrap();
        let whole = bytes.len();
        bytes.extend_from_within(..40);
        fs::write(&f, &bytes).unwrap();
        assert_eq!(replayed(&d, 0).unwrap().len(), 5, "read-only: the tail is ignored");
        let mut n = 0;
        let mut j = Journal::open(&d, 0, true, |_, _| n += 1).unwrap();
        assert_eq!((n, j.end()), (5, end));
        assert_eq!(fs::metadata(&f).unwrap().len() as usize, whole, "cut off");
        j.append(&[LeaseChange::Upsert(sample(9))], |_, _| {}).unwrap();
        drop(j);
        assert_eq!(replayed(&d, 0).unwrap().len(), 6);
        // A flipped byte in a segment that is not the last: refused.
        let mut j = Journal::open(&d, 0, true, |_, _| {}).unwrap();
        j.roll().unwrap();
        j.append(&[LeaseChange::Upsert(sample(10))], |_, _| {}).unwrap();
        drop(j);
        let mut bytes = fs::read(&f).unwrap();
        bytes[20] ^= 1;
        fs::write(&f, &bytes).unwrap();
        match Journal::open(&d, 0, true, |_, _| {}) {
            Err(JournalError::Damaged(m)) => assert!(m.contains("damaged journal frame"), "{m}"),
            other => panic!("expected damage, got {:?}", other.map(|j| j.end())),
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn merged_segments_are_dropped_and_a_missing_one_is_damage() {
        let d = tmp("segments");
        let mut j = Journal::open(&d, 0, true, |_, _| {}).unwrap();
        j.append(&[LeaseChange::Upsert(sample(1))], |_, _| {}).unwrap();
        j.roll().unwrap();
        let second = j.end();
        j.append(&[LeaseChange::Upsert(sample(2))], |_, _| {}).unwrap();
        j.roll().unwrap();
        j.append(&[LeaseChange::Upsert(sample(3))], |_, _| {}).unwrap();
        j.drop_before(second);
        assert!(!d.join(segment_name(0)).exists());
        assert_eq!(replayed(&d, second).unwrap().len(), 2);
        // The table says it holds only changes before 0, the first segment is gone.
        match replayed(&d, 0) {
            Err(JournalError::Damaged(m)) => assert!(m.contains("missing"), "{m}"),
            other => panic!("expected damage, got {:?}", other.map(|v| v.len())),
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
