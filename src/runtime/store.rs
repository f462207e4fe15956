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
//! Every commit uses LMDB's default durable sync: when `commit` returns Ok
//! the batch is on disk.

use std::fs;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError, WithoutTls};

use crate::lease::codec::{decode_lease, encode_key, encode_lease};
use crate::lease::store::{LeaseStore, SCHEMA_VERSION, StoreError, meta};
use crate::lease::{Lease, LeaseChange, LeaseKey};

/// Default map size per environment (virtual; the file grows as used).
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;

pub struct LmdbStore {
    env: Env<WithoutTls>,
    leases: Database<Bytes, Bytes>,
    meta: Database<Bytes, Bytes>,
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
        Ok(LmdbStore { env, leases, meta })
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
        Ok(LmdbStore { env, leases, meta })
    }

    /// A second handle on the same environment, for reading while the
    /// writer commits (LMDB readers never block the writer).
    pub fn reader(&self) -> LmdbStore {
        LmdbStore { env: self.env.clone(), leases: self.leases, meta: self.meta }
    }
}

impl LeaseStore for LmdbStore {
    fn commit(&mut self, changes: &[LeaseChange]) -> Result<(), StoreError> {
        // One B-tree per change: the record under its key, nothing else.
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
        w.commit().map_err(err)
    }

    fn get(&self, key: &LeaseKey) -> Result<Option<Lease>, StoreError> {
        let r = self.env.read_txn().map_err(err)?;
        match self.leases.get(&r, &encode_key(key)).map_err(err)? {
            Some(v) => decode_lease(v).map(Some).map_err(StoreError::Corrupt),
            None => Ok(None),
        }
    }

    fn scan(&self, from: std::ops::Bound<&LeaseKey>, max: usize) -> Result<Vec<Lease>, StoreError> {
        use std::ops::Bound;
        let r = self.env.read_txn().map_err(err)?;
        let k = match from {
            Bound::Included(k) | Bound::Excluded(k) => encode_key(k),
            Bound::Unbounded => [0u8; 18],
        };
        let range: (Bound<&[u8]>, Bound<&[u8]>) = match from {
            Bound::Included(_) => (Bound::Included(&k[..]), Bound::Unbounded),
            Bound::Excluded(_) => (Bound::Excluded(&k[..]), Bound::Unbounded),
            Bound::Unbounded => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut out = Vec::with_capacity(max.min(4096));
        for item in self.leases.range(&r, &range).map_err(err)?.take(max) {
            let (_, v) = item.map_err(err)?;
            out.push(decode_lease(v).map_err(StoreError::Corrupt)?);
        }
        Ok(out)
    }

    fn all(&self) -> Result<Vec<Lease>, StoreError> {
        let r = self.env.read_txn().map_err(err)?;
        let mut out = Vec::new();
        for item in self.leases.iter(&r).map_err(err)? {
            let (_, v) = item.map_err(err)?;
            out.push(decode_lease(v).map_err(StoreError::Corrupt)?);
        }
        Ok(out)
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
            (0..shards).map(|i| LmdbStore::open(&shard_dir(data_dir, i), map_size)).collect::<Result<_, _>>()?;
        let extra: Vec<usize> = existing_shards(data_dir).into_iter().filter(|i| *i >= shards).collect();
        let mut per_shard: Vec<Vec<Lease>> = vec![Vec::new(); shards];
        if previous == Some(shards) && extra.is_empty() {
            for (i, s) in stores.iter().enumerate() {
                per_shard[i] = s.all()?;
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
                read.push(LmdbStore::open(&shard_dir(data_dir, *i), map_size)?.all()?);
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
            read.push(LmdbStore::open_read_only(&shard_dir(data_dir, i))?.all()?);
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

    #[test]
    fn lmdb_store_conforms_to_the_model() {
        let d = tmp("conf");
        conformance::run(&mut LmdbStore::open(&d, 1 << 24).unwrap());
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
