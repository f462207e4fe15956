//! The durable lease store on LMDB (heed).
//!
//! Layout: `DATA_DIR/meta` holds the schema version, the server DUID, the
//! shard count and the failover state; `DATA_DIR/shard-N` holds shard N's
//! leases. One environment per shard because LMDB has one writer per
//! environment: shared/notes/stack-spike.md measured two fsync'd writers at
//! 3.0–3.1k commits/s on one shared env against 3.9–4.5k on an env each
//! (batch 1), and 58k vs 146k with NO_SYNC — the shared writer lock
//! serializes shards, separate envs let them commit in parallel.
//!
//! A shard's commits go to its write-ahead journal (`runtime::journal`):
//! one appended frame and one `fdatasync`, so when `commit` returns Ok the
//! batch is on disk. Once the journal holds as many bytes as half the
//! table, the store merges it into the `leases` database in key order, a
//! bounded number of keys per LMDB transaction (`merge_begin` hands one
//! out as a `MergeJob`, which the shard runs on another thread while its
//! commits go on to the journal): each B-tree page is then written once for the
//! many changes that fall on it, instead of once per commit. The journal
//! position the table holds everything before is `journal-merged` in the
//! environment's `meta` database, written in the round's last transaction;
//! segments before it are removed after that. Reads (`get`, `scan`, `all`,
//! `tandem leases`) see the table with the unmerged journal laid over it.
//! The `meta` environment has no journal: its rare writes are LMDB commits
//! with LMDB's default durable sync.

use std::collections::BTreeMap;
use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError, WithoutTls};

use super::journal::{Journal, JournalError, JournalReader, Loc};
use crate::lease::codec::{decode_key, decode_lease, encode_key, encode_lease};
use crate::lease::store::{LeaseStore, SCHEMA_VERSION, StoreError, meta};
use crate::lease::{Lease, LeaseChange, LeaseKey};

/// Default map size per environment (virtual; the file grows as used):
/// 64 GiB, some 250 M leases. Address space costs nothing on 64-bit Linux,
/// and a table near its map's end merges its journal in ever smaller
/// rounds, each writing whole pages for few changes.
pub const DEFAULT_MAP_SIZE: usize = 64 << 30;

/// Merge the journal once it holds this many bytes, or half the table's,
/// whichever is more: the larger a round, the fewer times each table page
/// is written per change (perf/NOTES.md, "store").
pub const MERGE_MIN_BYTES: u64 = 64 << 20;
/// Keys merged per LMDB transaction: bounds how long one merge step holds
/// the next group commit back.
pub const MERGE_STEP_KEYS: usize = 2048;
/// The `meta` database key holding the journal position merged through.
const MERGED: &str = "journal-merged";

pub struct LmdbStore {
    dir: PathBuf,
    env: Env<WithoutTls>,
    leases: Database<Bytes, Bytes>,
    meta: Database<Bytes, Bytes>,
    journal: Option<Journaled>,
    /// Bytes this store made the kernel write (journal and table), from
    /// the writing thread's /proc/thread-self/io.
    written: u64,
    /// Keys per merge transaction (fewer after the map ran out of room).
    step_keys: usize,
    /// A `MergeJob` is out.
    merging: bool,
}

/// One merge transaction, run on another thread while the store's owner
/// goes on committing to the journal: the keys to write and a reader of
/// their records. Only the table (LMDB, one writer: this job) is written.
pub struct MergeJob {
    env: Env<WithoutTls>,
    leases: Database<Bytes, Bytes>,
    meta: Database<Bytes, Bytes>,
    dir: PathBuf,
    reader: JournalReader,
    keys: Vec<(LeaseKey, Loc)>,
    /// The round's last transaction: it records `until` as merged.
    finished: bool,
    until: u64,
}

/// What a `MergeJob` did, for `LmdbStore::merge_end`.
pub struct MergeDone {
    keys: Vec<(LeaseKey, Loc)>,
    finished: bool,
    until: u64,
    result: Result<(), StoreError>,
    written: u64,
}

impl MergeJob {
    pub fn run(self) -> MergeDone {
        let before = thread_write_bytes();
        let result = self.write();
        // The pages this step read stay in the page cache, not in our RSS.
        release_mapped_pages(&self.dir);
        let written = match (before, thread_write_bytes()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        MergeDone { keys: self.keys, finished: self.finished, until: self.until, result, written }
    }

    fn write(&self) -> Result<(), StoreError> {
        let mut w = self.env.write_txn().map_err(err)?;
        for (k, loc) in &self.keys {
            match self.reader.read_record(*loc).map_err(damaged)? {
                Some(record) => self.leases.put(&mut w, &encode_key(k), &record).map_err(err)?,
                None => {
                    self.leases.delete(&mut w, &encode_key(k)).map_err(err)?;
                }
            }
        }
        if self.finished {
            self.meta.put(&mut w, MERGED.as_bytes(), &self.until.to_be_bytes()).map_err(err)?;
        }
        w.commit().map_err(err)
    }
}

/// A shard store's journal and what of it the table does not hold yet.
struct Journaled {
    log: Journal,
    /// Every key with a journaled change not yet known merged: where its
    /// latest change is.
    overlay: BTreeMap<LeaseKey, Loc>,
    /// The table holds every change before this journal position.
    merged: u64,
    round: Option<Round>,
    min_bytes: u64,
    /// `min_bytes` alone decides (set by tests).
    fixed: bool,
    /// The table's map is full: a merge step failed for want of room.
    /// Commits are refused (store full) until a merge step succeeds, so
    /// the journal never holds more than the table can take.
    full: Option<String>,
}

/// A merge in progress: every overlay key, in order, up to `until`.
struct Round {
    until: u64,
    after: Option<LeaseKey>,
}

fn journal_err(e: JournalError) -> StoreError {
    match e {
        JournalError::Damaged(m) => damaged(m),
        JournalError::Full(m) => StoreError::Full(m),
        JournalError::Io(m) => StoreError::Other(m),
    }
}

/// Drop this process's page-table entries for an environment's data file
/// (madvise MADV_DONTNEED on its read-only shared mapping): the pages stay
/// in the page cache, but a table read once at start-up or by a merge does
/// not stay in the server's resident set. LMDB maps the file read-only
/// (no WRITEMAP) and writes with pwrite, so nothing is lost; a later read
/// faults the page back in from the cache.
fn release_mapped_pages(dir: &Path) {
    let Ok(file) = dir.join("data.mdb").canonicalize() else { return };
    let Ok(maps) = fs::read_to_string("/proc/self/maps") else { return };
    for line in maps.lines() {
        if !line.ends_with(&*file.to_string_lossy()) {
            continue;
        }
        let Some((range, _)) = line.split_once(' ') else { continue };
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
        // SAFETY: the range is a whole shared, file-backed mapping of this
        // process; MADV_DONTNEED on it only unmaps pages, their contents
        // stay in the file's page cache.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) };
    }
}

/// The calling thread's write_bytes (/proc/thread-self/io): what it made
/// the kernel write to storage, pages rounded.
fn thread_write_bytes() -> Option<u64> {
    let s = fs::read_to_string("/proc/thread-self/io").ok()?;
    s.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok())
}

fn err(e: heed::Error) -> StoreError {
    match e {
        heed::Error::Mdb(MdbError::MapFull) => StoreError::Full("LMDB map is full (raise --store-map-size)".into()),
        heed::Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
            StoreError::Full(format!("disk full: {io}"))
        }
        heed::Error::Mdb(MdbError::Corrupted) | heed::Error::Mdb(MdbError::Invalid) => {
            StoreError::Corrupt(e.to_string())
        }
        e => StoreError::Other(e.to_string()),
    }
}

/// The named databases every environment holds. (Stores written before
/// also had `bindings`, a by-client index nothing read: dropped at open.
/// The lease table rebuilds that index in memory at start-up.)
const DATABASES: [&str; 2] = ["leases", "meta"];

/// A damaged store: what is wrong, and what the operator can do. Never
/// served, never recreated empty behind the operator's back.
fn damaged(what: String) -> StoreError {
    StoreError::Corrupt(format!(
        "{what}. tandem will not serve from a damaged store: restore the data directory from a backup, \
         or move it away and start empty (in a failover pair, start with `tandem serve --resync-all` \
         so that every lease comes back from the partner)"
    ))
}

/// An existing data file holds at least LMDB's two header pages; a shorter
/// one (truncated to nothing, say) would be taken for a new environment and
/// silently start empty.
fn check_has_header(dir: &Path) -> Result<(), StoreError> {
    let file = dir.join("data.mdb");
    let have = fs::metadata(&file).map_err(|e| StoreError::Other(format!("{}: {e}", file.display())))?.len();
    if have < 2 * 4096 {
        return Err(damaged(format!("{}: truncated: {have} bytes, shorter than its two header pages", file.display())));
    }
    Ok(())
}

/// Refuse a data file shorter than the pages its last commit uses: reading
/// them through the map would kill the process with SIGBUS. LMDB reads the
/// header (last page, page size) with plain reads at open, so this check
/// runs before any page of the map is touched.
fn check_not_truncated(env: &Env<WithoutTls>, dir: &Path) -> Result<(), StoreError> {
    let file = dir.join("data.mdb");
    let have = fs::metadata(&file).map_err(|e| StoreError::Other(format!("{}: {e}", file.display())))?.len();
    let need = (env.info().last_page_number as u64 + 1) * u64::from(env.stat().page_size);
    if have < need {
        return Err(damaged(format!("{}: truncated: {have} bytes, its last commit needs {need}", file.display())));
    }
    Ok(())
}

impl LmdbStore {
    /// Open the environment in `dir`, creating it only where there is none
    /// yet. An existing one must hold all its databases and be whole.
    pub fn open(dir: &Path, map_size: usize) -> Result<LmdbStore, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::Other(format!("{}: {e}", dir.display())))?;
        let existed = dir.join("data.mdb").exists();
        if existed {
            check_has_header(dir)?;
        }
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(map_size).max_dbs(4);
        // SAFETY: the environment is opened once per process per path (the
        // data-dir lock prevents a second server), as heed requires.
        let env = unsafe { opts.open(dir) }.map_err(|e| StoreError::Other(format!("{}: {e}", dir.display())))?;
        check_not_truncated(&env, dir)?;
        // An environment whose first commit never happened (no named
        // database at all) is new; one missing some of them is damaged.
        if existed && env.stat().entries > 0 {
            let r = env.read_txn().map_err(err)?;
            for name in DATABASES {
                if env.open_database::<Bytes, Bytes>(&r, Some(name)).map_err(err)?.is_none() {
                    return Err(damaged(format!("{}: the {name} database is missing", dir.join("data.mdb").display())));
                }
            }
        }
        let mut w = env.write_txn().map_err(err)?;
        let leases = env.create_database(&mut w, Some("leases")).map_err(err)?;
        let meta = env.create_database(&mut w, Some("meta")).map_err(err)?;
        if let Some(old) = env.open_database::<Bytes, Bytes>(&w, Some("bindings")).map_err(err)? {
            // SAFETY: this handle is the only one on `bindings`, and it is gone after this.
            unsafe { old.remove(&mut w) }.map_err(err)?;
        }
        w.commit().map_err(err)?;
        Ok(LmdbStore { dir: dir.to_path_buf(), env, leases, meta, journal: None, written: 0, step_keys: MERGE_STEP_KEYS, merging: false })
    }

    /// Open a shard's environment with its journal, replaying what the
    /// table does not hold yet.
    pub fn open_shard(dir: &Path, map_size: usize) -> Result<LmdbStore, StoreError> {
        let mut s = LmdbStore::open(dir, map_size)?;
        s.attach_journal(dir, true)?;
        Ok(s)
    }

    fn attach_journal(&mut self, dir: &Path, writable: bool) -> Result<(), StoreError> {
        let merged = self
            .get_meta(MERGED)?
            .map(|v| v.as_slice().try_into().map(u64::from_be_bytes))
            .transpose()
            .map_err(|_| damaged(format!("{}: a damaged {MERGED} record", dir.join("data.mdb").display())))?
            .unwrap_or(0);
        // Every replayed change in journal order, then one bulk build (the
        // later change of a key wins): packed nodes, no insert per change.
        let mut replayed = Vec::new();
        let log = Journal::open(dir, merged, writable, |loc, c| replayed.push((c.key(), loc))).map_err(journal_err)?;
        let overlay: BTreeMap<LeaseKey, Loc> = replayed.into_iter().collect();
        self.journal = Some(Journaled { log, overlay, merged, round: None, min_bytes: MERGE_MIN_BYTES, fixed: false, full: None });
        Ok(())
    }

    /// Open an existing environment read-only (the `leases` command; works
    /// while a server has it open).
    pub fn open_read_only(dir: &Path) -> Result<LmdbStore, StoreError> {
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(DEFAULT_MAP_SIZE).max_dbs(4);
        // SAFETY: read-only flag; see `open`.
        unsafe { opts.flags(EnvFlags::READ_ONLY) };
        check_has_header(dir)?;
        let env = unsafe { opts.open(dir) }.map_err(|e| StoreError::Other(format!("{}: {e}", dir.display())))?;
        check_not_truncated(&env, dir)?;
        let r = env.read_txn().map_err(err)?;
        let open = |name| -> Result<Database<Bytes, Bytes>, StoreError> {
            env.open_database(&r, Some(name))
                .map_err(err)?
                .ok_or_else(|| damaged(format!("{}: the {name} database is missing", dir.join("data.mdb").display())))
        };
        let (leases, meta) = (open("leases")?, open("meta")?);
        r.commit().map_err(err)?;
        Ok(LmdbStore { dir: dir.to_path_buf(), env, leases, meta, journal: None, written: 0, step_keys: MERGE_STEP_KEYS, merging: false })
    }

    /// A shard's environment and journal, read-only, while a server may be
    /// writing both: a merge that completes between reading the merged
    /// position and opening the journal is read again.
    pub fn open_read_only_shard(dir: &Path) -> Result<LmdbStore, StoreError> {
        let mut s = LmdbStore::open_read_only(dir)?;
        let mut tries = 0;
        loop {
            match s.attach_journal(dir, false) {
                Err(_) if tries < 3 => tries += 1,
                r => return r.map(|()| s),
            }
        }
    }

    /// What `open_read_only_shard` gives another process (heed opens an
    /// environment once per process): the table, and the journal replayed
    /// read-only.
    #[cfg(test)]
    fn read_only_view(&self, dir: &Path) -> LmdbStore {
        let mut v = LmdbStore {
            dir: self.dir.clone(),
            env: self.env.clone(),
            leases: self.leases,
            meta: self.meta,
            journal: None,
            written: 0,
            step_keys: MERGE_STEP_KEYS,
            merging: false,
        };
        v.attach_journal(dir, false).unwrap();
        v
    }

    /// Bytes this store made the kernel write so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Bytes the journal holds on disk (0 without one).
    pub fn journal_bytes(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.log.disk_bytes())
    }

    /// Merge once the journal holds `bytes`, whatever the table's size
    /// (tests use small ones).
    pub fn set_merge_min_bytes(&mut self, bytes: u64) {
        if let Some(j) = &mut self.journal {
            j.min_bytes = bytes;
            j.fixed = true;
        }
    }

    /// Whether a merge round is running or due: the journal holds half the
    /// table's bytes (at least `MERGE_MIN_BYTES`), or a quarter of the room
    /// left in the map (so that a full map shows before the journal outgrows it).
    pub fn merge_wanted(&self) -> bool {
        let Some(j) = &self.journal else { return false };
        if j.round.is_some() {
            return true;
        }
        let unmerged = j.log.end() - j.merged;
        if j.fixed {
            return unmerged > 0 && unmerged >= j.min_bytes;
        }
        let info = self.env.info();
        let used = (info.last_page_number as u64 + 1) * u64::from(self.env.stat().page_size);
        let room = (info.map_size as u64).saturating_sub(used);
        unmerged > 0 && unmerged >= j.min_bytes.max(used / 2).min(room / 4)
    }

    /// One transaction of a merge round, here and now (tests; the shard
    /// runs `merge_begin`'s job on another thread while it commits): the
    /// next `max_keys` journaled keys into the table (a round starts if one
    /// is due). Where the map has no room for `max_keys`, fewer are tried
    /// before the store is called full.
    pub fn merge_step(&mut self, max_keys: usize) -> Result<(), StoreError> {
        self.step_keys = max_keys.max(1);
        loop {
            let Some(job) = self.merge_begin() else { return Ok(()) };
            let n = self.step_keys;
            self.merge_end(job.run())?;
            if self.step_keys >= n {
                return Ok(());
            }
        }
    }

    /// The next transaction of a merge round (a round starts if one is
    /// due), to run on any thread while commits go on; None when no merge
    /// is wanted or one is out. `merge_end` takes its outcome back.
    pub fn merge_begin(&mut self) -> Option<MergeJob> {
        if self.merging || !self.merge_wanted() {
            return None;
        }
        let max_keys = self.step_keys;
        let j = self.journal.as_mut()?;
        let round = j.round.get_or_insert(Round { until: j.log.end(), after: None });
        let lower = round.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let keys: Vec<(LeaseKey, Loc)> = j.overlay.range((lower, Bound::Unbounded)).take(max_keys).map(|(k, l)| (*k, *l)).collect();
        self.merging = true;
        Some(MergeJob {
            env: self.env.clone(),
            leases: self.leases,
            meta: self.meta,
            dir: self.dir.clone(),
            reader: j.log.reader(),
            finished: keys.len() < max_keys,
            keys,
            until: round.until,
        })
    }

    /// Take a merge transaction's outcome: the keys it wrote leave the
    /// overlay unless a commit changed them meanwhile (the table holds an
    /// older record then, and the overlay the newer); the round's last one
    /// removes the merged segments. A full map divides the step by 8 for
    /// the next try, and at one key calls the store full.
    pub fn merge_end(&mut self, done: MergeDone) -> Result<(), StoreError> {
        self.merging = false;
        self.written += done.written;
        let Some(j) = self.journal.as_mut() else { return Ok(()) };
        match done.result {
            Err(StoreError::Full(m)) => {
                if self.step_keys > 1 {
                    self.step_keys = (self.step_keys / 8).max(1);
                    return Ok(());
                }
                j.full = Some(m.clone());
                Err(StoreError::Full(m))
            }
            Err(e) => Err(e),
            Ok(()) => {
                j.full = None;
                for (k, loc) in &done.keys {
                    if j.overlay.get(k) == Some(loc) {
                        j.overlay.remove(k);
                    }
                }
                if done.finished {
                    j.merged = done.until;
                    j.log.drop_before(done.until);
                    j.round = None;
                    self.step_keys = MERGE_STEP_KEYS;
                } else if let Some(r) = &mut j.round {
                    r.after = done.keys.last().map(|(k, _)| *k);
                }
                Ok(())
            }
        }
    }

    fn count_written(&mut self, before: Option<u64>) {
        if let (Some(a), Some(b)) = (before, thread_write_bytes()) {
            self.written += b.saturating_sub(a);
        }
    }

    /// Up to `max` leases from `from` on, in key order: the table with the
    /// journal's unmerged changes laid over it.
    fn read_range(&self, from: Bound<&LeaseKey>, max: usize) -> Result<Vec<Lease>, StoreError> {
        let r = self.env.read_txn().map_err(err)?;
        let cap = if max == usize::MAX {
            // The whole store (start-up): sized once, not grown by doubling.
            self.leases.len(&r).map_err(err)? as usize + self.journal.as_ref().map_or(0, |j| j.overlay.len())
        } else {
            max.min(4096)
        };
        let k = match from {
            Bound::Included(k) | Bound::Excluded(k) => encode_key(k),
            Bound::Unbounded => [0u8; 18],
        };
        let range: (Bound<&[u8]>, Bound<&[u8]>) = match from {
            Bound::Included(_) => (Bound::Included(&k[..]), Bound::Unbounded),
            Bound::Excluded(_) => (Bound::Excluded(&k[..]), Bound::Unbounded),
            Bound::Unbounded => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut table = self.leases.range(&r, &range).map_err(err)?.peekable();
        let empty = BTreeMap::new();
        let j = self.journal.as_ref();
        let mut over = j.map_or(&empty, |j| &j.overlay).range((from, Bound::Unbounded)).peekable();
        let mut out = Vec::with_capacity(cap);
        while out.len() < max {
            let tk = match table.peek() {
                Some(Ok((k, _))) => Some(decode_key(k).map_err(StoreError::Corrupt)?),
                Some(Err(_)) => return Err(err(table.next().unwrap().unwrap_err())),
                None => None,
            };
            let ok = over.peek().map(|(k, _)| **k);
            match (tk, ok) {
                (None, None) => break,
                (Some(t), o) if o.is_none_or(|o| t < o) => {
                    let (_, v) = table.next().unwrap().map_err(err)?;
                    out.push(decode_lease(v).map_err(StoreError::Corrupt)?);
                }
                (t, Some(o)) => {
                    if t == Some(o) {
                        table.next();
                    }
                    let (_, loc) = over.next().unwrap();
                    let log = &j.expect("an overlay has a journal").log;
                    if let LeaseChange::Upsert(l) = log.read(*loc).map_err(damaged)? {
                        out.push(l);
                    }
                }
                (Some(_), None) => unreachable!("covered above"),
            }
        }
        Ok(out)
    }
}

impl LeaseStore for LmdbStore {
    fn commit(&mut self, changes: &[LeaseChange]) -> Result<(), StoreError> {
        let before = thread_write_bytes();
        if let Some(j) = &mut self.journal {
            if let Some(m) = &j.full {
                return Err(StoreError::Full(format!("{m}; the journal is not merged until there is room (raise --store-map-size)")));
            }
            let overlay = &mut j.overlay;
            j.log.append(changes, |k, loc| {
                overlay.insert(*k, loc);
            })
            .map_err(journal_err)?;
            self.count_written(before);
            return Ok(());
        }
        // No journal (the meta environment): one B-tree put per change.
        let mut w = self.env.write_txn().map_err(err)?;
        for c in changes {
            let k = encode_key(&c.key());
            match c {
                LeaseChange::Upsert(l) => self.leases.put(&mut w, &k, &encode_lease(l)).map_err(err)?,
                LeaseChange::Delete(_) => {
                    self.leases.delete(&mut w, &k).map_err(err)?;
                }
            }
        }
        w.commit().map_err(err)?;
        self.count_written(before);
        Ok(())
    }

    fn get(&self, key: &LeaseKey) -> Result<Option<Lease>, StoreError> {
        if let Some(j) = &self.journal
            && let Some(loc) = j.overlay.get(key)
        {
            return Ok(j.log.read(*loc).map_err(damaged)?.upserted().cloned());
        }
        let r = self.env.read_txn().map_err(err)?;
        match self.leases.get(&r, &encode_key(key)).map_err(err)? {
            Some(v) => decode_lease(v).map(Some).map_err(StoreError::Corrupt),
            None => Ok(None),
        }
    }

    fn scan(&self, from: Bound<&LeaseKey>, max: usize) -> Result<Vec<Lease>, StoreError> {
        self.read_range(from, max)
    }

    fn all(&self) -> Result<Vec<Lease>, StoreError> {
        self.read_range(Bound::Unbounded, usize::MAX)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.env.read_txn().map_err(err)?;
        Ok(self.meta.get(&r, name.as_bytes()).map_err(err)?.map(<[u8]>::to_vec))
    }

    fn put_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut w = self.env.write_txn().map_err(err)?;
        self.meta.put(&mut w, name.as_bytes(), value).map_err(err)?;
        w.commit().map_err(err)
    }
}

/// The whole store of one server: metadata plus one environment per shard.
pub struct StoreSet {
    pub meta: LmdbStore,
    pub shards: Vec<LmdbStore>,
}

fn shard_dir(data_dir: &Path, i: usize) -> PathBuf {
    data_dir.join(format!("shard-{i}"))
}

/// The shard directories present in a data directory.
fn existing_shards(data_dir: &Path) -> Vec<usize> {
    let mut v: Vec<usize> = fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("shard-")?.parse().ok())
        .collect();
    v.sort();
    v
}


impl StoreSet {
    /// Open the store for `shards` shards, checking the schema and moving
    /// leases between shard environments if the shard count changed (each
    /// to the shard `place` names: see `failover::router::home_of`).
    /// Returns the store and each shard's leases.
    pub fn open(
        data_dir: &Path,
        shards: usize,
        map_size: usize,
        place: impl Fn(&Lease) -> usize,
    ) -> Result<(StoreSet, Vec<Vec<Lease>>), StoreError> {
        // A store that was written has its meta and every shard it
        // recorded: one of them gone is damage, not a fresh start.
        let present = existing_shards(data_dir);
        let has_data = |dir: &Path| dir.join("data.mdb").exists();
        if !has_data(&data_dir.join("meta")) && present.iter().any(|i| has_data(&shard_dir(data_dir, *i))) {
            return Err(damaged(format!("{}: the shard stores are there but meta/data.mdb is missing", data_dir.display())));
        }
        let mut meta_store = LmdbStore::open(&data_dir.join("meta"), map_size)?;
        match meta_store.get_meta(meta::SCHEMA)? {
            None => meta_store.put_meta(meta::SCHEMA, &SCHEMA_VERSION.to_be_bytes())?,
            Some(v) if v == SCHEMA_VERSION.to_be_bytes() => {}
            // Version 1: its `bindings` index is dropped as each environment
            // opens and its records are read as they are (`lease::codec`).
            Some(v) if v == 1u32.to_be_bytes() => meta_store.put_meta(meta::SCHEMA, &SCHEMA_VERSION.to_be_bytes())?,
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "{}: store schema version {:?} is not {SCHEMA_VERSION}; this tandem cannot use it",
                    data_dir.display(),
                    u32::from_be_bytes(v.as_slice().try_into().unwrap_or([0xff; 4]))
                )));
            }
        }
        let previous = meta_store
            .get_meta(meta::SHARDS)?
            .and_then(|v| v.as_slice().try_into().ok().map(u32::from_be_bytes))
            .map(|n| n as usize);
        for i in 0..previous.unwrap_or(0) {
            if !has_data(&shard_dir(data_dir, i)) {
                return Err(damaged(format!("{}: missing (the store was written with {} shards)", shard_dir(data_dir, i).join("data.mdb").display(), previous.unwrap_or(0))));
            }
        }
        let mut stores: Vec<LmdbStore> =
            (0..shards).map(|i| LmdbStore::open_shard(&shard_dir(data_dir, i), map_size)).collect::<Result<_, _>>()?;
        let extra: Vec<usize> = existing_shards(data_dir).into_iter().filter(|i| *i >= shards).collect();
        let mut per_shard: Vec<Vec<Lease>> = vec![Vec::new(); shards];
        if previous == Some(shards) && extra.is_empty() {
            for (i, s) in stores.iter().enumerate() {
                per_shard[i] = s.all()?;
                release_mapped_pages(&s.dir);
            }
        } else {
            // Re-shard without a window where a crash loses a lease: first
            // every record is written at its new home (copies, nothing
            // removed), then each environment drops what is not at home.
            // A crash in between leaves copies, which the next start (this
            // path again: the shard count is recorded only at the end)
            // merges, newest first.
            let mut read = Vec::new();
            for s in &stores {
                read.push(s.all()?);
            }
            for i in &extra {
                read.push(LmdbStore::open_shard(&shard_dir(data_dir, *i), map_size)?.all()?);
            }
            let mut buckets: Vec<Vec<Lease>> = vec![Vec::new(); shards];
            for l in crate::shard::merge_stores(read) {
                buckets[place(&l).min(shards - 1)].push(l);
            }
            for (i, b) in buckets.iter().enumerate() {
                stores[i].commit(&b.iter().cloned().map(LeaseChange::Upsert).collect::<Vec<_>>())?;
            }
            for (i, b) in buckets.into_iter().enumerate() {
                let home: std::collections::HashSet<LeaseKey> = b.iter().map(|l| l.key).collect();
                let away: Vec<LeaseChange> =
                    stores[i].all()?.into_iter().filter(|l| !home.contains(&l.key)).map(|l| LeaseChange::Delete(l.key)).collect();
                stores[i].commit(&away)?;
                per_shard[i] = b;
            }
            meta_store.put_meta(meta::SHARDS, &(shards as u32).to_be_bytes())?;
            for i in extra {
                let _ = fs::remove_dir_all(shard_dir(data_dir, i));
            }
        }
        Ok((StoreSet { meta: meta_store, shards: stores }, per_shard))
    }

    /// Every lease in a data directory, read-only (for `tandem leases`).
    pub fn read_all(data_dir: &Path) -> Result<Vec<Lease>, StoreError> {
        if !data_dir.join("meta").exists() {
            return Err(StoreError::Other(format!("{}: no tandem store here", data_dir.display())));
        }
        let mut read = Vec::new();
        for i in existing_shards(data_dir) {
            read.push(LmdbStore::open_read_only_shard(&shard_dir(data_dir, i))?.all()?);
        }
        Ok(crate::shard::merge_stores(read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::store::conformance;
    use crate::pool::hash::shard_of;

    fn by_client(n: usize) -> impl Fn(&Lease) -> usize {
        move |l: &Lease| shard_of(l.binding.duid.as_bytes(), n as u32) as usize
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tandem-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// A stream of pseudo-random numbers: `rnd(n)` is in `0..n`.
    fn xorshift(mut x: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    /// 1 to `max` changes to `keys` sample leases: a quarter removals, the
    /// rest upserts stamped with `step`.
    fn random_batch(rnd: &mut impl FnMut(u64) -> u64, max: u64, keys: u64, step: u64) -> Vec<LeaseChange> {
        (0..1 + rnd(max))
            .map(|_| {
                let mut l = crate::lease::codec::tests_support::sample(rnd(keys) as u32);
                if rnd(4) == 0 {
                    LeaseChange::Delete(l.key)
                } else {
                    l.cltt = step;
                    LeaseChange::Upsert(l)
                }
            })
            .collect()
    }

    /// A shard store that merges once its journal holds 4 KiB.
    fn merging_shard(d: &Path) -> LmdbStore {
        let mut s = LmdbStore::open_shard(d, 1 << 26).unwrap();
        s.set_merge_min_bytes(4096);
        s
    }

    #[test]
    fn lmdb_store_conforms_to_the_model() {
        let d = tmp("conf");
        conformance::run(&mut LmdbStore::open(&d, 1 << 24).unwrap());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_journaled_store_conforms_to_the_model() {
        let d = tmp("conf-journal");
        conformance::run(&mut LmdbStore::open_shard(&d, 1 << 24).unwrap());
        fs::remove_dir_all(&d).unwrap();
    }

    /// A shard's way of merging: a merge transaction is handed out, commits
    /// (some to its keys) go on while it runs on another thread, and its
    /// outcome comes back later, or never (a crash before or after the
    /// transaction committed). Every view is the model throughout.
    #[test]
    fn merges_running_beside_commits_read_as_the_model() {
        let d = tmp("journal-concurrent");
        let mut model = crate::lease::store::MemoryStore::new();
        let mut s = merging_shard(&d);
        let mut rnd = xorshift(0x2545_f491_4f6c_dd1d);
        let mut out: Option<std::thread::JoinHandle<MergeDone>> = None;
        let (mut ended, mut overtaken) = (0, 0);
        for step in 0..800 {
            let batch = random_batch(&mut rnd, 30, 200, step);
            s.commit(&batch).unwrap();
            model.commit(&batch).unwrap();
            if out.is_none() && rnd(2) == 0 {
                s.step_keys = 1 + rnd(40) as usize;
                if let Some(job) = s.merge_begin() {
                    assert!(s.merge_begin().is_none(), "one merge transaction at a time");
                    out = Some(std::thread::spawn(move || job.run()));
                }
            } else if out.is_some() && rnd(3) == 0 {
                let done = out.take().unwrap().join().unwrap();
                overtaken += done.keys.iter().filter(|(k, l)| s.journal.as_ref().unwrap().overlay.get(k).is_some_and(|o| o != l)).count();
                s.merge_end(done).unwrap();
                ended += 1;
            }
            if rnd(60) == 0 {
                // A crash: the transaction out committed, or was handed out
                // and never ran; its end never came.
                match out.take() {
                    Some(h) => drop(h.join().unwrap()),
                    None => drop(s.merge_begin()),
                }
                drop(s);
                s = merging_shard(&d);
            }
            let k = crate::lease::codec::tests_support::sample(rnd(200) as u32).key;
            assert_eq!(s.get(&k).unwrap(), model.get(&k).unwrap(), "get at {step}");
            if step % 50 == 0 {
                assert_eq!(s.all().unwrap(), model.all().unwrap(), "all at {step}");
                assert_eq!(s.read_only_view(&d).all().unwrap(), model.all().unwrap(), "read-only view at {step}");
            }
        }
        if let Some(h) = out.take() {
            s.merge_end(h.join().unwrap()).unwrap();
        }
        assert!(ended > 50 && overtaken > 0, "{ended} merge transactions ended, {overtaken} keys changed while merging");
        s.set_merge_min_bytes(1);
        while s.merge_wanted() {
            s.merge_step(64).unwrap();
        }
        assert_eq!(s.all().unwrap(), model.all().unwrap());
        drop(s);
        let s = LmdbStore::open_shard(&d, 1 << 26).unwrap();
        assert_eq!(s.all().unwrap(), model.all().unwrap());
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    /// Random upserts and removals against the model, with merge steps of
    /// a few keys between commits, reopening (a crash at any point between
    /// two calls) and reading read-only alongside: every view is the model.
    #[test]
    fn journal_and_merges_always_read_as_the_model() {
        let d = tmp("journal-model");
        let mut model = crate::lease::store::MemoryStore::new();
        let mut s = merging_shard(&d);
        let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut merges = 0;
        for step in 0..600 {
            let batch = random_batch(&mut rnd, 40, 300, step);
            s.commit(&batch).unwrap();
            model.commit(&batch).unwrap();
            while s.merge_wanted() && rnd(3) != 0 {
                s.merge_step(1 + rnd(50) as usize).unwrap();
                merges += 1;
            }
            if rnd(50) == 0 {
                drop(s);
                s = merging_shard(&d);
            }
            if step % 97 == 0 {
                assert_eq!(s.read_only_view(&d).all().unwrap(), model.all().unwrap(), "read-only view at {step}");
            }
            let k = crate::lease::codec::tests_support::sample(rnd(300) as u32).key;
            assert_eq!(s.get(&k).unwrap(), model.get(&k).unwrap());
            let from = crate::lease::codec::tests_support::sample(rnd(300) as u32).key;
            assert_eq!(s.scan(Bound::Excluded(&from), 7).unwrap(), model.scan(Bound::Excluded(&from), 7).unwrap());
        }
        assert_eq!(s.all().unwrap(), model.all().unwrap());
        assert!(merges > 50, "merges ran: {merges}");
        // Merged through the end: nothing is replayed at the next open.
        s.set_merge_min_bytes(0);
        while s.merge_wanted() {
            s.merge_step(64).unwrap();
        }
        assert!(s.journal.as_ref().unwrap().overlay.is_empty());
        drop(s);
        let s = LmdbStore::open_shard(&d, 1 << 26).unwrap();
        assert!(s.journal.as_ref().unwrap().overlay.is_empty(), "nothing replayed");
        assert_eq!(s.all().unwrap(), model.all().unwrap());
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_full_table_refuses_commits_and_loses_nothing_committed() {
        let d = tmp("journal-full");
        let mut s = LmdbStore::open_shard(&d, 256 << 10).unwrap();
        let mut committed = Vec::new();
        let mut full = false;
        'fill: for b in 0..2000u32 {
            let batch: Vec<LeaseChange> =
                (0..20).map(|i| LeaseChange::Upsert(crate::lease::codec::tests_support::sample(b * 20 + i))).collect();
            match s.commit(&batch) {
                Ok(()) => committed.extend(batch),
                Err(StoreError::Full(_)) => {
                    full = true;
                    break 'fill;
                }
                Err(e) => panic!("{e}"),
            }
            while s.merge_wanted() {
                match s.merge_step(MERGE_STEP_KEYS) {
                    Ok(()) => {}
                    Err(StoreError::Full(_)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(full, "the map filled");
        assert!(!committed.is_empty());
        drop(s);
        // With a larger map, everything committed is there and merges.
        let mut s = LmdbStore::open_shard(&d, 1 << 26).unwrap();
        let want: Vec<Lease> = {
            let mut m = crate::lease::store::MemoryStore::new();
            m.commit(&committed).unwrap();
            m.all().unwrap()
        };
        assert_eq!(s.all().unwrap(), want);
        s.set_merge_min_bytes(0);
        while s.merge_wanted() {
            s.merge_step(MERGE_STEP_KEYS).unwrap();
        }
        s.commit(&[LeaseChange::Delete(want[0].key)]).unwrap();
        assert_eq!(s.all().unwrap().len(), want.len() - 1);
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn data_survives_reopen_and_resharding() {
        let d = tmp("reshard");
        let (mut set, loaded) = StoreSet::open(&d, 3, 1 << 24, by_client(3)).unwrap();
        assert!(loaded.iter().all(Vec::is_empty));
        let leases: Vec<Lease> = (0..50).map(crate::lease::codec::tests_support::sample).collect();
        for l in &leases {
            let s = shard_of(l.binding.duid.as_bytes(), 3) as usize;
            set.shards[s].commit(&[LeaseChange::Upsert(l.clone())]).unwrap();
        }
        set.meta.put_meta(meta::SERVER_DUID, b"duid").unwrap();
        drop(set);
        let (set, loaded) = StoreSet::open(&d, 2, 1 << 24, by_client(2)).unwrap();
        assert_eq!(loaded.iter().map(Vec::len).sum::<usize>(), 50);
        for (i, ls) in loaded.iter().enumerate() {
            assert!(ls.iter().all(|l| shard_of(l.binding.duid.as_bytes(), 2) as usize == i));
        }
        assert_eq!(set.meta.get_meta(meta::SERVER_DUID).unwrap(), Some(b"duid".to_vec()));
        assert!(!d.join("shard-2").exists());
        drop(set);
        let all = StoreSet::read_all(&d).unwrap();
        assert_eq!(all.len(), 50);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unknown_schema_is_refused() {
        let d = tmp("schema");
        let mut m = LmdbStore::open(&d.join("meta"), 1 << 20).unwrap();
        m.put_meta(meta::SCHEMA, &99u32.to_be_bytes()).unwrap();
        drop(m);
        let e = StoreSet::open(&d, 1, 1 << 20, by_client(1)).err().unwrap();
        assert!(e.to_string().contains("schema version"), "{e}");
        // Version 1 is migrated.
        let mut m = LmdbStore::open(&d.join("meta"), 1 << 20).unwrap();
        m.put_meta(meta::SCHEMA, &1u32.to_be_bytes()).unwrap();
        drop(m);
        let (set, _) = StoreSet::open(&d, 1, 1 << 20, by_client(1)).unwrap();
        assert_eq!(set.meta.get_meta(meta::SCHEMA).unwrap(), Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
        drop(set);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_full_map_is_reported_as_full_and_nothing_is_written() {
        let d = tmp("full");
        let mut s = LmdbStore::open(&d, 64 << 10).unwrap();
        let batch: Vec<LeaseChange> =
            (0..5000).map(|i| LeaseChange::Upsert(crate::lease::codec::tests_support::sample(i))).collect();
        match s.commit(&batch) {
            Err(StoreError::Full(_)) => {}
            other => panic!("expected Full, got {other:?}"),
        }
        assert!(s.all().unwrap().is_empty(), "a failed batch leaves nothing behind");
        s.commit(&batch[..5]).unwrap();
        assert_eq!(s.all().unwrap().len(), 5);
        fs::remove_dir_all(&d).unwrap();
    }

    /// A store with leases in 2 shards, closed again.
    fn written_store(name: &str) -> PathBuf {
        let d = tmp(name);
        let (mut set, _) = StoreSet::open(&d, 2, 1 << 24, by_client(2)).unwrap();
        let leases: Vec<Lease> = (0..400).map(crate::lease::codec::tests_support::sample).collect();
        for l in &leases {
            let s = shard_of(l.binding.duid.as_bytes(), 2) as usize;
            set.shards[s].commit(&[LeaseChange::Upsert(l.clone())]).unwrap();
        }
        d
    }

    fn refused(d: &Path, what: &str) {
        let e = StoreSet::open(d, 2, 1 << 24, by_client(2)).err().expect("a damaged store was opened");
        let m = e.to_string();
        assert!(matches!(e, StoreError::Corrupt(_)) && m.contains(what) && m.contains("--resync-all"), "{m}");
        // Nothing was recreated: refused again, the same way.
        assert!(StoreSet::open(d, 2, 1 << 24, by_client(2)).is_err());
    }

    #[test]
    fn a_truncated_data_file_is_refused_not_a_sigbus() {
        let d = written_store("truncated");
        let f = d.join("shard-0/data.mdb");
        let len = fs::metadata(&f).unwrap().len();
        fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len / 2).unwrap();
        refused(&d, "shard-0/data.mdb: truncated");
        assert!(matches!(StoreSet::read_all(&d), Err(StoreError::Corrupt(_))), "tandem leases too");
        // Truncated to nothing would look like a new environment.
        fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(0).unwrap();
        refused(&d, "truncated: 0 bytes");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_deleted_database_or_shard_or_meta_is_refused_not_recreated_empty() {
        let d = written_store("deleted-db");
        {
            let s = LmdbStore::open(&d.join("shard-1"), 1 << 24).unwrap();
            let mut w = s.env.write_txn().unwrap();
            // SAFETY: no other handle on this database is in use.
            unsafe { s.leases.remove(&mut w) }.unwrap();
            w.commit().unwrap();
        }
        refused(&d, "the leases database is missing");
        assert!(matches!(StoreSet::read_all(&d), Err(StoreError::Corrupt(_))));
        fs::remove_dir_all(&d).unwrap();

        let d = written_store("deleted-shard");
        fs::remove_dir_all(d.join("shard-1")).unwrap();
        refused(&d, "shard-1/data.mdb: missing");
        fs::remove_dir_all(&d).unwrap();

        let d = written_store("deleted-meta");
        fs::remove_dir_all(d.join("meta")).unwrap();
        refused(&d, "meta/data.mdb is missing");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_store_with_the_old_bindings_index_opens_and_drops_it() {
        let d = tmp("old-bindings");
        let l = crate::lease::codec::tests_support::sample(2);
        {
            fs::create_dir_all(&d).unwrap();
            let mut opts = EnvOpenOptions::new().read_txn_without_tls();
            opts.map_size(1 << 24).max_dbs(4);
            // SAFETY: the only handle on this path in the test.
            let env = unsafe { opts.open(&d) }.unwrap();
            let mut w = env.write_txn().unwrap();
            let leases: Database<Bytes, Bytes> = env.create_database(&mut w, Some("leases")).unwrap();
            let bindings: Database<Bytes, Bytes> = env.create_database(&mut w, Some("bindings")).unwrap();
            let _: Database<Bytes, Bytes> = env.create_database(&mut w, Some("meta")).unwrap();
            leases.put(&mut w, &encode_key(&l.key), &encode_lease(&l)).unwrap();
            bindings.put(&mut w, b"old index entry", &[]).unwrap();
            w.commit().unwrap();
        }
        let s = LmdbStore::open(&d, 1 << 24).unwrap();
        assert_eq!(s.all().unwrap(), vec![l]);
        let r = s.env.read_txn().unwrap();
        assert!(s.env.open_database::<Bytes, Bytes>(&r, Some("bindings")).unwrap().is_none());
        drop(r);
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_reshard_interrupted_after_the_copies_loses_nothing() {
        // The state a crash between the two phases leaves: every record at
        // its new home for 3 shards and still at its old home for 2, the
        // recorded shard count still 2.
        let d = written_store("reshard-crash");
        let all = StoreSet::read_all(&d).unwrap();
        assert_eq!(all.len(), 400);
        for i in 0..3 {
            let mut s = LmdbStore::open(&shard_dir(&d, i), 1 << 24).unwrap();
            let home: Vec<LeaseChange> =
                all.iter().filter(|l| shard_of(l.binding.duid.as_bytes(), 3) as usize == i).cloned().map(LeaseChange::Upsert).collect();
            s.commit(&home).unwrap();
        }
        let (set, loaded) = StoreSet::open(&d, 3, 1 << 24, by_client(3)).unwrap();
        assert_eq!(loaded.iter().map(Vec::len).sum::<usize>(), 400);
        for (i, ls) in loaded.iter().enumerate() {
            assert!(ls.iter().all(|l| shard_of(l.binding.duid.as_bytes(), 3) as usize == i));
            assert_eq!(set.shards[i].all().unwrap().len(), ls.len(), "shard {i} holds only its own records");
        }
        drop(set);
        fs::remove_dir_all(&d).unwrap();
    }
}
