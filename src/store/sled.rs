//! [`SledStore`]: the embedded backend. sled holds records, indexes, contacts
//! and blob refcounts; bodies and attachments are blob files beside it.
//!
//! On-disk layout under the configured path:
//!
//! ```text
//! <path>/LOCK            held (File::try_lock) for the lifetime of the SledStore
//! <path>/db/             sled, flush_every_ms(None), capped cache; keys in `keys.rs`
//! <path>/blobs/ab/<sha256>   content-addressed blob files (see `blobs.rs`)
//! ```
//!
//! Ownership and concurrency: one `Mutex` (the write lock) serialises every
//! mutation: read the old record, plan contacts, merge, compute index and
//! refcount changes, write them through the journal (`journal.rs`: atomic
//! across a crash, without the two forced log writes a `sled::Batch` costs),
//! take a group-commit ticket. The caller then waits for the flush outside
//! the lock. Reads take no lock: a reader may see a change half applied, so
//! its operations are ordered for them (a record is in place before the
//! index entries that point to it). Blob files are written before the lock is
//! taken whenever the owner's level is `full`, so multi-megabyte writes do not
//! serialise captures.
//!
//! Durability: a blob file is fsynced, renamed and its directory fsynced
//! before the change that references it is written. A blob whose refcount
//! falls to zero is deleted by the flusher only after a flush made that drop
//! durable, and only if nothing referenced it again in the meantime (checked
//! under the write lock, which is also where a `0 → 1` reference re-checks the
//! file still exists). Files left unreferenced by a crash (pre-written for a
//! capture that never committed, or released but not yet deleted) and temp
//! files are removed by the sweep at open.

use super::blobs::{self, content_refs, is_sha256_hex, BlobDir, BlobFile};
use super::commit::{Entered, GroupCommit};
use super::journal::{self, Ops};
use super::keys::{self, check_id};
use super::{
    AccessRequest, BackupReport, BlobReader, CaptureInput, CaptureOutcome, Cursor, Durability,
    Prewritten, RequestRole, RequestStatus, Store, StoreError, StoreOptions, StoreStats,
    StoredContact, TimelinePage,
};
use crate::engine::facts::domain_of;
use crate::engine::policy::ContactKind;
use crate::engine::{
    self, ContactState, Content, Directory, Grant, Level, MessageFacts, NewContact, OwnerCopy,
    Policy, Record,
};
use ::sled::{Db, IVec};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        context,
        path,
        source,
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// The embedded store. Dropping it flushes what is pending, stops the
/// flusher and releases the `LOCK` file.
pub struct SledStore {
    inner: Arc<Inner>,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    db: Db,
    /// The journal entry's tree (`journal.rs`).
    journal: ::sled::Tree,
    blobs: BlobDir,
    commit: GroupCommit,
    write: Mutex<WriteState>,
    /// Blob files written for captures not yet committed: never deleted.
    inflight: Inflight,
    /// Held (locked) as long as this value lives.
    _lock: File,
}

/// Blob hashes with a count of the uncommitted captures that wrote them.
type Inflight = Arc<Mutex<HashMap<String, usize>>>;

fn lock_inflight(m: &Inflight) -> MutexGuard<'_, HashMap<String, usize>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers blob hashes as in flight until dropped.
#[derive(Debug)]
pub struct InflightGuard {
    map: Inflight,
    shas: Vec<String>,
}

impl InflightGuard {
    fn new(map: &Inflight) -> InflightGuard {
        InflightGuard {
            map: map.clone(),
            shas: Vec::new(),
        }
    }

    fn add(&mut self, sha: &str) {
        *lock_inflight(&self.map).entry(sha.to_string()).or_insert(0) += 1;
        self.shas.push(sha.to_string());
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut map = lock_inflight(&self.map);
        for sha in &self.shas {
            if let Some(n) = map.get_mut(sha) {
                *n -= 1;
                if *n == 0 {
                    map.remove(sha);
                }
            }
        }
    }
}

/// What only the holder of the write lock may touch.
#[derive(Default)]
struct WriteState {
    /// Blobs released (refcount fell to zero, or pre-written and never
    /// referenced), with the ticket of the write that released them: deleted
    /// once a flush covers that ticket, if still unreferenced then.
    pending_deletes: HashMap<String, u64>,
}

/// Counters kept in `meta:` keys, updated in the same batch as the change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    messages: u64,
    contacts: u64,
    blobs: u64,
    blob_bytes: u64,
}

impl Counters {
    const KEYS: [&'static [u8]; 4] = [
        keys::MESSAGES,
        keys::CONTACTS,
        keys::BLOBS,
        keys::BLOB_BYTES,
    ];

    fn load(db: &Db) -> Result<Counters, StoreError> {
        let mut v = [0u64; 4];
        for (slot, key) in v.iter_mut().zip(Self::KEYS) {
            if let Some(b) = db.get(key)? {
                *slot = keys::decode_u64(&b).ok_or_else(|| corrupt("counter"))?;
            }
        }
        Ok(Counters {
            messages: v[0],
            contacts: v[1],
            blobs: v[2],
            blob_bytes: v[3],
        })
    }

    fn values(&self) -> [u64; 4] {
        [self.messages, self.contacts, self.blobs, self.blob_bytes]
    }

    /// Stage the counters that differ from `before` (as loaded).
    fn stage(&self, before: &Counters, batch: &mut Ops) {
        let was = before.values();
        for ((value, key), old) in self.values().into_iter().zip(Self::KEYS).zip(was) {
            if value != old {
                batch.insert(key, &keys::encode_u64(value)[..]);
            }
        }
    }
}

/// `engine::Directory` over the database. The trait cannot fail, so a read
/// error answers `Tombstoned` (create nothing, link nothing) and is kept for
/// the caller to return.
struct DbDirectory<'a> {
    inner: &'a Inner,
    error: RefCell<Option<StoreError>>,
}

impl Directory for DbDirectory<'_> {
    fn contact_state(&self, id: &str) -> ContactState {
        match self.inner.contact_state(id) {
            Ok(s) => s,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                ContactState::Tombstoned
            }
        }
    }
}

impl SledStore {
    /// Open (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process (or another `SledStore` in
    /// this one) has it open; [`StoreError::Schema`] when it was written by an
    /// incompatible version; I/O and database errors.
    pub fn open(path: &Path, options: StoreOptions) -> Result<SledStore, StoreError> {
        std::fs::create_dir_all(path).map_err(io_err("creating store directory", path))?;
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_err("locking", &lock_path)(e)),
        }

        let db = open_db(&path.join("db"), options.cache_capacity_bytes)?;
        check_schema(path, &db)?;
        // Complete the last change if a crash cut it short.
        let journal = journal::open(&db)?;
        journal::replay(&db, &journal)?;
        let blobs_dir = path.join("blobs");
        let blobs = BlobDir::open(blobs_dir.clone()).map_err(io_err("creating", &blobs_dir))?;

        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            db,
            journal,
            blobs,
            commit: GroupCommit::default(),
            write: Mutex::new(WriteState::default()),
            inflight: Inflight::default(),
            _lock: lock,
        });
        inner.sweep()?;

        let flusher_inner = inner.clone();
        let delay = options.max_batch_delay;
        let flusher = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || {
                let inner = flusher_inner;
                inner.commit.run_flusher(delay, |covered| {
                    inner.db.flush().map_err(|e| {
                        tracing::error!(error = %e, "store flush failed");
                        e.to_string()
                    })?;
                    inner.delete_released(covered);
                    Ok(())
                })
            })
            .map_err(io_err("starting the flusher thread for", path))?;
        Ok(SledStore {
            inner,
            flusher: Some(flusher),
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Flush, stop the flusher and release the lock, reporting a final
    /// flush error (dropping does the same silently).
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown();
        self.inner.db.flush()?;
        Ok(())
    }

    fn shutdown(&mut self) {
        self.inner.commit.shutdown();
        if let Some(h) = self.flusher.take() {
            if h.join().is_err() {
                tracing::error!("store flusher thread panicked");
            }
        }
    }

    /// Verify the store's invariants; returns the problems found (empty when
    /// consistent). Reads everything and hashes every blob: for tests,
    /// `mailshare check` and after a crash, not for a hot path.
    ///
    /// Checked: records decode under their key and hold no field above their
    /// ceiling; timeline and thread entries are exactly those the records
    /// imply; refcounts and counters match the records; every referenced blob
    /// file exists with the right hash and size; no unreferenced blob file is
    /// left (other than ones awaiting deletion); address and domain entries
    /// point to existing contacts.
    pub fn check_consistency(&self) -> Result<Vec<String>, StoreError> {
        self.inner.check_consistency()
    }
}

impl Inner {
    /// One newest-first page of an index under `prefix`, from `start`, with
    /// the cursor of the next page when there is more.
    fn page(
        &self,
        prefix: &[u8],
        start: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<TimelinePage, StoreError> {
        let mut page = self.records_after(prefix, start, true, limit.saturating_add(1))?;
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|(d, r)| Cursor::new(*d, &r.id))
        } else {
            None
        };
        Ok((page.into_iter().map(|(_, r)| r).collect(), next))
    }

    /// See [`Store::backup`]. Holds the write lock while it copies the
    /// database and links the blobs, so the copy is one consistent state.
    fn backup(&self, dest: &Path) -> Result<BackupReport, StoreError> {
        if dest.exists()
            && std::fs::read_dir(dest)
                .map_err(io_err("reading", dest))?
                .next()
                .is_some()
        {
            return Err(StoreError::Io {
                context: "backing up into (it must be new or empty)",
                path: dest.to_path_buf(),
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            });
        }
        std::fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
        let _ws = self.lock_write();
        let copy = ::sled::Config::new()
            .path(dest.join("db"))
            .flush_every_ms(None)
            .open()?;
        let mut report = BackupReport::default();
        let mut batch = ::sled::Batch::default();
        let mut pending = 0usize;
        for kv in self.db.iter() {
            let (k, v) = kv?;
            if k.starts_with(keys::RECORD) {
                report.messages += 1;
            }
            if let Some(sha) = k.strip_prefix(keys::REFCOUNT) {
                let sha = std::str::from_utf8(sha).unwrap_or("");
                if is_sha256_hex(sha) {
                    let from = self.blobs.path(sha);
                    let to = dest.join("blobs").join(&sha[..2]).join(sha);
                    std::fs::create_dir_all(to.parent().unwrap_or(dest))
                        .map_err(io_err("creating", dest))?;
                    // Blob files are immutable: a hard link is a copy.
                    if std::fs::hard_link(&from, &to).is_err() {
                        std::fs::copy(&from, &to).map_err(io_err("copying blob", &from))?;
                    }
                    report.blobs += 1;
                }
            }
            batch.insert(k, v);
            pending += 1;
            if pending == 10_000 {
                copy.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        copy.apply_batch(batch)?;
        copy.flush()?;
        report.bytes = copy.size_on_disk()?;
        drop(copy);
        blobs::sync_dir(dest).map_err(io_err("syncing", dest))?;
        Ok(report)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.shutdown();
        if let Err(e) = self.inner.db.flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

/// How long [`open_db`] waits for sled's own file lock.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Open the sled database, waiting a bounded time for sled's file lock.
///
/// Our `LOCK` file is already held, so the only holder sled's lock can have
/// is a `Db` of this process that was just dropped: sled releases its lock
/// from background I/O threads that may outlive the drop by a few
/// milliseconds (reopening at once fails with `WouldBlock`).
fn open_db(path: &Path, cache_capacity_bytes: u64) -> Result<Db, StoreError> {
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        match ::sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(None)
            .open()
        {
            Err(::sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

fn check_schema(path: &Path, db: &Db) -> Result<(), StoreError> {
    let supported = keys::SCHEMA_VERSION;
    match db.get(keys::SCHEMA)? {
        Some(v) if v.as_ref() == supported.to_string().as_bytes() => Ok(()),
        Some(v) if v.as_ref() == b"1" => migrate_v1(db),
        // Version 3 only adds the journal, which a version 2 store has none of.
        Some(v) if v.as_ref() == b"2" => {
            db.insert(keys::SCHEMA, supported.to_string().as_bytes())?;
            db.flush()?;
            tracing::info!("store upgraded from schema 2 to 3");
            Ok(())
        }
        Some(v) => Err(StoreError::Schema {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(&v).into_owned(),
            supported,
        }),
        None if db.is_empty() => {
            db.insert(keys::SCHEMA, supported.to_string().as_bytes())?;
            db.flush()?;
            Ok(())
        }
        None => Err(StoreError::Schema {
            path: path.to_path_buf(),
            found: "none".into(),
            supported,
        }),
    }
}

/// Version 1 → 2: build the `n:` (all records, newest first) index, then
/// record the new version, in one batch.
fn migrate_v1(db: &Db) -> Result<(), StoreError> {
    let mut batch = ::sled::Batch::default();
    let mut indexed = 0usize;
    for entry in db.scan_prefix(keys::RECORD) {
        let (k, v) = entry?;
        let id = String::from_utf8_lossy(&k[keys::RECORD.len()..]).into_owned();
        let r = decode_record(&id, &v)?;
        if r.ceiling() > Level::Hidden {
            batch.insert(keys::recent(r.date, &r.id), &[][..]);
            indexed += 1;
        }
    }
    batch.insert(keys::SCHEMA, keys::SCHEMA_VERSION.to_string().as_bytes());
    db.apply_batch(batch)?;
    db.flush()?;
    tracing::info!(records = indexed, "store upgraded from schema 1 to 2");
    Ok(())
}

/// Rule 4c applied to a stored copy: the override replaces the owner's
/// standing level, except where rule 4d made the copy hidden (activity off,
/// before `share_since`), which no override lifts.
/// Hold a record to its ceiling (the engine promises this; the store does not
/// write a field above it even if that promise were broken).
fn clamp_to_ceiling(record: &mut Record) {
    let ceiling = record.ceiling();
    if record.stored > ceiling
        || (ceiling < Level::Full && record.content.is_some())
        || (ceiling < Level::Subject && record.subject.is_some())
    {
        record.truncate_to(ceiling);
    }
}

impl Inner {
    fn lock_write(&self) -> MutexGuard<'_, WriteState> {
        // A panic under the lock happens before the batch is applied (the
        // batch is the only write), so the state behind a poisoned lock is
        // still consistent.
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, id: &str) -> Result<Option<Record>, StoreError> {
        if check_id(id).is_err() {
            return Ok(None);
        }
        self.db
            .get(keys::record(id))?
            .map(|v| decode_record(id, &v))
            .transpose()
    }

    fn contact_state(&self, id: &str) -> Result<ContactState, StoreError> {
        if check_id(id).is_err() {
            return Ok(ContactState::Absent);
        }
        Ok(if self.db.contains_key(keys::tombstone(id))? {
            ContactState::Tombstoned
        } else if self.db.contains_key(keys::contact(id))? {
            ContactState::Present
        } else {
            ContactState::Absent
        })
    }

    fn stored_contact(&self, id: &str) -> Result<Option<StoredContact>, StoreError> {
        if check_id(id).is_err() {
            return Ok(None);
        }
        self.db
            .get(keys::contact(id))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| corrupt(format_args!("contact {id}: {e}")))
            })
            .transpose()
    }

    fn refcount(&self, sha256: &str) -> Result<Option<(u64, u64)>, StoreError> {
        self.db
            .get(keys::refcount(sha256))?
            .map(|v| keys::decode_refcount(&v).ok_or_else(|| corrupt(format!("refcount {sha256}"))))
            .transpose()
    }

    /// Whether a capture by `copy` will probably keep content, so its blobs
    /// are worth writing before the write lock is taken. A wrong guess costs
    /// either a write under the lock or a file released after the flush.
    fn content_likely_kept(&self, id: &str, copy: &OwnerCopy) -> Result<bool, StoreError> {
        if copy.level != Level::Full || copy.override_level.is_some_and(|l| l < Level::Full) {
            return Ok(false);
        }
        Ok(match self.record(id)? {
            None => true,
            Some(r) => {
                r.content.is_none()
                    && (r.restriction() == Level::Full
                        || r.owners.iter().any(|o| o.user == copy.user))
            }
        })
    }

    /// Index keys a record implies: one timeline entry per linked contact
    /// that is not tombstoned, one thread entry, one `recent` entry; none for
    /// a hidden record.
    fn index_keys(&self, r: &Record) -> Result<BTreeSet<Vec<u8>>, StoreError> {
        let mut out = BTreeSet::new();
        if r.ceiling() == Level::Hidden {
            return Ok(out);
        }
        for c in &r.contacts {
            if check_id(c).is_ok() && !self.db.contains_key(keys::tombstone(c))? {
                out.insert(keys::timeline(c, r.date, &r.id));
            }
        }
        if check_id(&r.thread_id).is_ok() {
            out.insert(keys::thread(&r.thread_id, r.date, &r.id));
        }
        out.insert(keys::recent(r.date, &r.id));
        Ok(out)
    }

    /// Stage the change from `old` to `new`: index entries, refcounts (with
    /// counters) and the record itself. Blobs whose refcount falls to zero are
    /// pushed to `released`.
    fn stage_record(
        &self,
        batch: &mut Ops,
        counters: &mut Counters,
        old: Option<&Record>,
        new: &Record,
        content: Option<&Content<'_>>,
        released: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let old_keys = match old {
            Some(r) => self.index_keys(r)?,
            None => BTreeSet::new(),
        };
        let new_keys = self.index_keys(new)?;
        // The record is the change's anchor, written before everything else
        // (see `journal.rs`). Readers take no lock and may see a change half
        // applied: an index entry is never written before its record, and
        // one that no longer applies points, for a moment, to the record as
        // it is now, which every reader judges afresh.
        let json = serde_json::to_vec(new).map_err(corrupt)?;
        batch.anchor(keys::record(&new.id), json);
        for k in old_keys.difference(&new_keys) {
            batch.remove(k.as_slice());
        }
        for k in new_keys.difference(&old_keys) {
            batch.insert(k.as_slice(), &[][..]);
        }

        let mut delta: BTreeMap<&str, (i64, u64)> = BTreeMap::new();
        fn refs(r: Option<&Record>) -> impl Iterator<Item = &engine::BlobRef> {
            r.and_then(|r| r.content.as_ref())
                .into_iter()
                .flat_map(content_refs)
        }
        for b in refs(old) {
            delta.entry(&b.sha256).or_insert((0, b.size)).0 -= 1;
        }
        for b in refs(Some(new)) {
            delta.entry(&b.sha256).or_insert((0, b.size)).0 += 1;
        }
        let mut rewritten = false;
        for (sha, (d, size)) in delta {
            if d == 0 {
                continue;
            }
            if !is_sha256_hex(sha) {
                return Err(corrupt(format!("blob reference {sha:?}")));
            }
            let (count, known_size) = self.refcount(sha)?.unwrap_or((0, size));
            let next = count as i64 + d;
            if next <= 0 {
                if next < 0 {
                    tracing::warn!(blob = sha, count, delta = d, "blob refcount underflow");
                }
                batch.remove(keys::refcount(sha));
                if count > 0 {
                    counters.blobs = counters.blobs.saturating_sub(1);
                    counters.blob_bytes = counters.blob_bytes.saturating_sub(known_size);
                }
                released.push(sha.to_string());
            } else {
                batch.insert(
                    keys::refcount(sha),
                    &keys::encode_refcount(next as u64, size)[..],
                );
                if count == 0 {
                    counters.blobs += 1;
                    counters.blob_bytes += size;
                    // A release may have deleted the file between our write
                    // (outside the lock) and now: write it again.
                    if !self.blobs.exists(sha) {
                        if let (Some(c), false) = (content, rewritten) {
                            blobs::put_content(&self.blobs, c, &mut |_| {})
                                .map_err(io_err("writing blobs in", &self.path))?;
                            rewritten = true;
                        }
                        if !self.blobs.exists(sha) {
                            return Err(corrupt(format!("blob {sha} is missing")));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Stage the contacts a plan creates; returns how many were new.
    fn stage_contacts(
        &self,
        batch: &mut Ops,
        counters: &mut Counters,
        create: Vec<NewContact>,
    ) -> Result<usize, StoreError> {
        let mut made: HashSet<String> = HashSet::new();
        let mut claimed: HashSet<Vec<u8>> = HashSet::new();
        for nc in create {
            if check_id(&nc.id).is_err() {
                tracing::warn!(id = nc.id, "contact plan with an invalid id ignored");
                continue;
            }
            if made.contains(&nc.id) || self.contact_state(&nc.id)? != ContactState::Absent {
                continue;
            }
            let mut index: Vec<Vec<u8>> = nc
                .addresses
                .iter()
                .filter(|a| check_id(a).is_ok())
                .map(|a| keys::address(a))
                .collect();
            if nc.kind == ContactKind::Organization {
                index.extend(
                    nc.domains
                        .iter()
                        .filter(|d| check_id(d).is_ok())
                        .map(|d| keys::domain(d)),
                );
            }
            for k in index {
                // First contact to claim an address or domain keeps it.
                if !claimed.contains(&k) && !self.db.contains_key(&k)? {
                    batch.insert(k.as_slice(), nc.id.as_bytes());
                    claimed.insert(k);
                }
            }
            let id = nc.id.clone();
            let json = serde_json::to_vec(&StoredContact::from(nc)).map_err(corrupt)?;
            batch.insert(keys::contact(&id), json);
            counters.contacts += 1;
            made.insert(id);
        }
        Ok(made.len())
    }

    /// Apply a staged batch, take a ticket (through `entered`, when the
    /// writer entered the group commit) and register released blobs. Call
    /// with the write lock held; when `wait`, wait for the ticket after
    /// releasing the lock.
    fn commit_batch(
        &self,
        ws: &mut WriteState,
        batch: Ops,
        released: Vec<String>,
        entered: Option<Entered<'_>>,
        wait: bool,
    ) -> Result<u64, StoreError> {
        batch.write(&self.db, &self.journal)?;
        let ticket = match entered {
            Some(e) => e.issue(wait),
            None => self.commit.issue(wait),
        };
        for sha in released {
            ws.pending_deletes.insert(sha, ticket);
        }
        Ok(ticket)
    }

    /// Called by the flusher after a flush covering `covered`: delete the
    /// files released by those writes that are still unreferenced.
    fn delete_released(&self, covered: u64) {
        let mut ws = self.lock_write();
        let due: Vec<String> = ws
            .pending_deletes
            .iter()
            .filter(|(_, &t)| t <= covered)
            .map(|(s, _)| s.clone())
            .collect();
        // Held across the checks and the removals: a capture registers a
        // hash here before it writes (or finds) the file.
        let inflight = lock_inflight(&self.inflight);
        for sha in due {
            if inflight.contains_key(&sha) {
                // A capture not yet committed wrote it: ask again later.
                continue;
            }
            ws.pending_deletes.remove(&sha);
            match self.refcount(&sha) {
                Ok(None) => {
                    if let Err(e) = self.blobs.remove(&sha) {
                        tracing::warn!(blob = sha, error = %e, "could not delete released blob");
                    }
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(blob = sha, error = %e, "refcount unreadable"),
            }
        }
    }

    /// At open (the lock is ours, nothing runs yet): remove temp files and
    /// blob files nothing references.
    fn sweep(&self) -> Result<(), StoreError> {
        let root = self.path.join("blobs");
        let files = self.blobs.files().map_err(io_err("listing", &root))?;
        let (mut blobs, mut strays) = (0usize, 0usize);
        for f in files {
            match f {
                BlobFile::Blob { sha256, path } => {
                    if self.refcount(&sha256)?.is_none() {
                        std::fs::remove_file(&path).map_err(io_err("removing", &path))?;
                        blobs += 1;
                    }
                }
                BlobFile::Stray(path) => {
                    let is_tmp = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(".tmp."));
                    if is_tmp {
                        std::fs::remove_file(&path).map_err(io_err("removing", &path))?;
                        strays += 1;
                    } else {
                        tracing::warn!(path = %path.display(), "unexpected file in blob directory");
                    }
                }
            }
        }
        if blobs + strays > 0 {
            tracing::info!(
                unreferenced = blobs,
                temp_files = strays,
                "removed leftover blob files"
            );
        }
        Ok(())
    }

    /// Read-modify-write one record under the write lock, then wait for
    /// durability. `change` edits the record in place.
    fn update_record(
        &self,
        id: &str,
        change: impl FnOnce(&mut Record) -> Result<(), StoreError>,
    ) -> Result<Record, StoreError> {
        check_id(id)?;
        let mut ws = self.lock_write();
        let old = self
            .record(id)?
            .ok_or_else(|| StoreError::NoSuchMessage { id: id.to_string() })?;
        let mut new = old.clone();
        change(&mut new)?;
        clamp_to_ceiling(&mut new);
        if new == old {
            return Ok(new);
        }
        let mut batch = Ops::default();
        let loaded = Counters::load(&self.db)?;
        let mut counters = loaded;
        let mut released = Vec::new();
        self.stage_record(
            &mut batch,
            &mut counters,
            Some(&old),
            &new,
            None,
            &mut released,
        )?;
        counters.stage(&loaded, &mut batch);
        let ticket = self.commit_batch(&mut ws, batch, released, None, true)?;
        drop(ws);
        self.commit.wait(ticket)?;
        Ok(new)
    }

    /// See [`Store::prewrite`].
    fn prewrite(
        &self,
        facts: &MessageFacts,
        copy: &OwnerCopy,
        content: &Content<'_>,
    ) -> Result<Option<Prewritten>, StoreError> {
        let id = engine::message_key(&facts.message_id);
        if !self.content_likely_kept(&id, copy)? {
            return Ok(None);
        }
        let mut guard = InflightGuard::new(&self.inflight);
        match blobs::put_content(&self.blobs, content, &mut |sha| guard.add(sha)) {
            Ok(content) => Ok(Some(Prewritten { content, guard })),
            Err(e) => {
                // Files written before the failure: deleted after a flush.
                self.release_blobs(guard.shas.clone());
                Err(io_err("writing blobs in", &self.path)(e))
            }
        }
    }

    /// See [`Store::release`].
    fn release(&self, prewritten: Prewritten) {
        let shas = content_refs(&prewritten.content)
            .map(|b| b.sha256.clone())
            .collect();
        self.release_blobs(shas);
    }

    /// Queue blob files for deletion after the next flush (if unreferenced).
    fn release_blobs(&self, shas: Vec<String>) {
        if shas.is_empty() {
            return;
        }
        let entered = self.commit.enter();
        let mut ws = self.lock_write();
        if let Err(e) = self.commit_batch(&mut ws, Ops::default(), shas, Some(entered), false) {
            tracing::warn!(error = %e, "could not queue released blobs; the next open sweeps them");
        }
    }

    fn capture(
        &self,
        policy: &Policy,
        input: CaptureInput<'_>,
    ) -> Result<CaptureOutcome, StoreError> {
        let CaptureInput {
            facts,
            copy,
            content,
            now,
            durability,
            prewritten,
        } = input;
        let id = engine::message_key(&facts.message_id);

        // Multi-megabyte writes happen here, outside the write lock (or
        // happened already). `_inflight` keeps the files until the commit.
        let (mut prewritten, _inflight) = match (prewritten, content) {
            (Some(p), _) => (Some(p.content), Some(p.guard)),
            (None, Some(c)) => match self.prewrite(facts, &copy, c)? {
                Some(p) => (Some(p.content), Some(p.guard)),
                None => (None, None),
            },
            (None, None) => (None, None),
        };

        // From here to the ticket is short: the next flush waits for it.
        let entered = self.commit.enter();
        let mut ws = self.lock_write();
        let existing = self.record(&id)?;
        let directory = DbDirectory {
            inner: self,
            error: RefCell::new(None),
        };
        let plan = engine::plan_contacts(policy, facts, copy.direction, &directory);
        if let Some(e) = directory.error.into_inner() {
            return Err(e);
        }

        let mut record = engine::merge(
            policy,
            existing.clone(),
            facts,
            copy,
            &plan.link,
            now,
            content.is_some(),
        );
        if record.is_void() {
            // Nobody shares anything and nobody restricts: keep nothing, not
            // even the Message-ID (a void copy never empties an existing record).
            if let Some(sc) = &prewritten {
                let released = content_refs(sc).map(|b| b.sha256.clone()).collect();
                self.commit_batch(&mut ws, Ops::default(), released, Some(entered), false)?;
            }
            drop(ws);
            return Ok(CaptureOutcome {
                id,
                ceiling: Level::Hidden,
                stored: Level::Hidden,
                new_record: false,
                contacts_created: 0,
            });
        }

        let mut batch = Ops::default();
        let loaded = Counters::load(&self.db)?;
        let mut counters = loaded;
        // A hidden record is on no timeline: it creates no contacts either.
        let contacts_created = if record.stored > Level::Hidden {
            self.stage_contacts(&mut batch, &mut counters, plan.create)?
        } else {
            0
        };
        if record.id != id {
            return Err(corrupt(format_args!(
                "merge returned record {} for message {id}",
                record.id
            )));
        }
        clamp_to_ceiling(&mut record);
        if record.stored == Level::Full && record.content.is_none() {
            record.content = match (prewritten.take(), content) {
                (Some(sc), _) => Some(sc),
                // Under the write lock: no deletion can come between.
                (None, Some(c)) => Some(
                    blobs::put_content(&self.blobs, c, &mut |_| {})
                        .map_err(io_err("writing blobs in", &self.path))?,
                ),
                // Nothing to fill it with: store less, never pretend.
                (None, None) => {
                    record.stored = Level::Subject;
                    None
                }
            };
        }

        if existing.is_none() {
            counters.messages += 1;
        }
        let mut released = Vec::new();
        self.stage_record(
            &mut batch,
            &mut counters,
            existing.as_ref(),
            &record,
            content,
            &mut released,
        )?;
        // Written ahead but not used: release (deleted after the flush if
        // nothing references them by then).
        if let Some(sc) = &prewritten {
            released.extend(content_refs(sc).map(|b| b.sha256.clone()));
        }
        counters.stage(&loaded, &mut batch);
        let wait = durability == Durability::Wait;
        let ticket = self.commit_batch(&mut ws, batch, released, Some(entered), wait)?;
        drop(ws);
        if wait {
            self.commit.wait(ticket)?;
        }
        Ok(CaptureOutcome {
            id,
            ceiling: record.ceiling(),
            stored: record.stored,
            new_record: existing.is_none(),
            contacts_created,
        })
    }

    fn delete_contact(&self, id: &str) -> Result<bool, StoreError> {
        check_id(id)?;
        let mut ws = self.lock_write();
        if self.contact_state(id)? == ContactState::Tombstoned {
            return Ok(false);
        }
        let mut batch = Ops::default();
        let loaded = Counters::load(&self.db)?;
        let mut counters = loaded;
        batch.insert(keys::tombstone(id), &[][..]);
        if let Some(c) = self.stored_contact(id)? {
            batch.remove(keys::contact(id));
            counters.contacts = counters.contacts.saturating_sub(1);
            let index = c
                .addresses
                .iter()
                .map(|a| keys::address(a))
                .chain(c.domains.iter().map(|d| keys::domain(d)));
            for k in index {
                if self
                    .db
                    .get(&k)?
                    .is_some_and(|v| v.as_ref() == id.as_bytes())
                {
                    batch.remove(k);
                }
            }
        }
        for entry in self.db.scan_prefix(keys::timeline_prefix(id)) {
            let (k, _) = entry?;
            batch.remove(k);
        }
        counters.stage(&loaded, &mut batch);
        let ticket = self.commit_batch(&mut ws, batch, Vec::new(), None, true)?;
        drop(ws);
        self.commit.wait(ticket)?;
        Ok(true)
    }

    /// Records for index entries under `prefix`, in key order, skipping
    /// hidden ones (a record may turn hidden while we iterate).
    fn records_after(
        &self,
        prefix: &[u8],
        start: Bound<Vec<u8>>,
        inverted: bool,
        limit: usize,
    ) -> Result<Vec<(i64, Record)>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for entry in self.db.range((start, Bound::Unbounded)) {
            let (k, _) = entry?;
            if !k.starts_with(prefix) {
                break;
            }
            let (date, mid) = keys::split_entry(&k[prefix.len()..], inverted)
                .ok_or_else(|| corrupt("index key"))?;
            let Some(r) = self.record(mid)? else {
                return Err(corrupt(format_args!(
                    "index entry for missing message {mid}"
                )));
            };
            if r.ceiling() > Level::Hidden {
                out.push((date, r));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn access_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        if check_id(id).is_err() {
            return Ok(None);
        }
        self.db
            .get(keys::request(id))?
            .map(|v| {
                serde_json::from_slice(&v)
                    .map_err(|e| corrupt(format_args!("access request {id}: {e}")))
            })
            .transpose()
    }

    fn create_access_request(&self, req: &AccessRequest) -> Result<(), StoreError> {
        check_id(&req.id)?;
        check_id(&req.message)?;
        check_id(&req.requester)?;
        for o in &req.owners {
            check_id(o)?;
        }
        let mut ws = self.lock_write();
        let pending = keys::pending_request(&req.message, &req.requester);
        if let Some(existing) = self.db.get(&pending)? {
            return Err(StoreError::DuplicateRequest {
                existing: String::from_utf8_lossy(&existing).into_owned(),
            });
        }
        if self.db.contains_key(keys::request(&req.id))? {
            return Err(StoreError::InvalidId);
        }
        let mut batch = Ops::default();
        let json = serde_json::to_vec(req).map_err(corrupt)?;
        batch.insert(keys::request(&req.id), json);
        batch.insert(
            keys::request_index(
                keys::REQUESTS_BY_VIEWER,
                &req.requester,
                req.created,
                &req.id,
            ),
            &[][..],
        );
        for o in &req.owners {
            batch.insert(
                keys::request_index(keys::REQUESTS_TO_OWNER, o, req.created, &req.id),
                &[][..],
            );
        }
        if req.status == RequestStatus::Pending {
            batch.insert(pending, req.id.as_bytes());
        }
        let ticket = self.commit_batch(&mut ws, batch, Vec::new(), None, true)?;
        drop(ws);
        self.commit.wait(ticket)
    }

    fn access_requests(
        &self,
        user: &str,
        role: RequestRole,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let mut out = Vec::new();
        if check_id(user).is_err() {
            return Ok(out);
        }
        let table = match role {
            RequestRole::Owner => keys::REQUESTS_TO_OWNER,
            RequestRole::Requester => keys::REQUESTS_BY_VIEWER,
        };
        let prefix = keys::request_index_prefix(table, user);
        for entry in self.db.scan_prefix(&prefix) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = entry?;
            let (_, id) = keys::split_entry(&k[prefix.len()..], true)
                .ok_or_else(|| corrupt("request index key"))?;
            match self.access_request(id)? {
                Some(r) => out.push(r),
                None => {
                    return Err(corrupt(format_args!(
                        "index entry for missing request {id}"
                    )))
                }
            }
        }
        Ok(out)
    }

    fn decide_access_request(
        &self,
        id: &str,
        decider: &str,
        approve: bool,
        now: i64,
    ) -> Result<AccessRequest, StoreError> {
        check_id(id)?;
        let mut ws = self.lock_write();
        let mut req = self
            .access_request(id)?
            .ok_or_else(|| StoreError::NoSuchRequest { id: id.to_string() })?;
        if req.status != RequestStatus::Pending {
            return Err(StoreError::AlreadyDecided { id: id.to_string() });
        }
        let old = self
            .record(&req.message)?
            .ok_or_else(|| StoreError::NoSuchMessage {
                id: req.message.clone(),
            })?;
        if !old.owners.iter().any(|o| o.user == decider) {
            return Err(StoreError::NotOwner {
                id: req.message.clone(),
                user: decider.to_string(),
            });
        }
        let mut batch = Ops::default();
        let mut released = Vec::new();
        if approve {
            let level = req.level.min(old.ceiling());
            let mut new = old.clone();
            // A hidden record keeps only its owners' choices (no grants).
            if new.ceiling() > Level::Hidden {
                new.grants.retain(|g| g.viewer != req.requester);
                new.grants.push(Grant {
                    viewer: req.requester.clone(),
                    level,
                    by: decider.to_string(),
                });
            }
            clamp_to_ceiling(&mut new);
            if new != old {
                let loaded = Counters::load(&self.db)?;
                let mut counters = loaded;
                self.stage_record(
                    &mut batch,
                    &mut counters,
                    Some(&old),
                    &new,
                    None,
                    &mut released,
                )?;
                counters.stage(&loaded, &mut batch);
            }
            req.status = RequestStatus::Approved;
            req.granted = Some(level);
        } else {
            req.status = RequestStatus::Denied;
        }
        req.decided_by = Some(decider.to_string());
        req.decided_at = Some(now);
        batch.remove(keys::pending_request(&req.message, &req.requester));
        batch.insert(
            keys::request(&req.id),
            serde_json::to_vec(&req).map_err(corrupt)?,
        );
        let ticket = self.commit_batch(&mut ws, batch, released, None, true)?;
        drop(ws);
        self.commit.wait(ticket)?;
        Ok(req)
    }

    fn check_consistency(&self) -> Result<Vec<String>, StoreError> {
        let ws = self.lock_write();
        let mut problems = Vec::new();
        let mut expected_index: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut actual_index: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut expected_refs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut actual_refs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut contacts: BTreeSet<String> = BTreeSet::new();
        let mut tombstones: BTreeSet<String> = BTreeSet::new();
        let mut owners_of_index: Vec<(Vec<u8>, String)> = Vec::new();
        let mut messages = 0u64;
        for entry in self.db.iter() {
            let (k, v) = entry?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let rest = |p: &[u8]| String::from_utf8_lossy(&k[p.len()..]).into_owned();
            if k.starts_with(keys::RECORD) {
                messages += 1;
                let id = rest(keys::RECORD);
                let r = match decode_record(&id, &v) {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push(e.to_string());
                        continue;
                    }
                };
                if r.id != id {
                    problems.push(format!("record under {id} has id {}", r.id));
                }
                let ceiling = r.ceiling();
                if r.stored > ceiling
                    || (ceiling < Level::Full && r.content.is_some())
                    || (ceiling < Level::Subject && r.subject.is_some())
                    || (ceiling == Level::Hidden && !r.contacts.is_empty())
                {
                    problems.push(format!("record {id} holds fields above its ceiling"));
                }
                if r.stored < Level::Full && r.content.is_some() {
                    problems.push(format!("record {id} has content below level full"));
                }
                expected_index.extend(self.index_keys(&r)?);
                for b in r.content.iter().flat_map(content_refs) {
                    let e = expected_refs.entry(b.sha256.clone()).or_insert((0, b.size));
                    e.0 += 1;
                    if e.1 != b.size {
                        problems.push(format!("blob {} referenced with two sizes", b.sha256));
                    }
                }
            } else if k.starts_with(keys::TIMELINE)
                || k.starts_with(keys::THREAD)
                || k.starts_with(keys::RECENT)
            {
                actual_index.insert(k.to_vec());
            } else if k.starts_with(keys::REFCOUNT) {
                match keys::decode_refcount(&v) {
                    Some(rc) => {
                        actual_refs.insert(rest(keys::REFCOUNT), rc);
                    }
                    None => problems.push(format!("bad refcount {key}")),
                }
            } else if k.starts_with(keys::CONTACT) {
                let id = rest(keys::CONTACT);
                if let Err(e) = serde_json::from_slice::<StoredContact>(&v) {
                    problems.push(format!("contact {id}: {e}"));
                }
                contacts.insert(id);
            } else if k.starts_with(keys::TOMBSTONE) {
                tombstones.insert(rest(keys::TOMBSTONE));
            } else if k.starts_with(keys::ADDRESS) || k.starts_with(keys::DOMAIN) {
                owners_of_index.push((k.to_vec(), String::from_utf8_lossy(&v).into_owned()));
            }
        }
        for k in expected_index.difference(&actual_index) {
            problems.push(format!(
                "missing index entry {:?}",
                String::from_utf8_lossy(k)
            ));
        }
        for k in actual_index.difference(&expected_index) {
            problems.push(format!(
                "stray index entry {:?}",
                String::from_utf8_lossy(k)
            ));
        }
        if expected_refs != actual_refs {
            problems.push(format!(
                "refcounts differ from records: expected {expected_refs:?}, stored {actual_refs:?}"
            ));
        }
        for (sha, &(_, size)) in &expected_refs {
            let blob = engine::BlobRef {
                sha256: sha.clone(),
                size,
            };
            match self.blobs.verify(&blob) {
                Ok(true) => {}
                Ok(false) => problems.push(format!("blob {sha} missing or wrong")),
                Err(e) => problems.push(format!("blob {sha}: {e}")),
            }
        }
        let root = self.path.join("blobs");
        for f in self.blobs.files().map_err(io_err("listing", &root))? {
            match f {
                BlobFile::Blob { sha256, .. } => {
                    if !expected_refs.contains_key(&sha256)
                        && !ws.pending_deletes.contains_key(&sha256)
                    {
                        problems.push(format!("unreferenced blob file {sha256}"));
                    }
                }
                BlobFile::Stray(p) => problems.push(format!("stray file {}", p.display())),
            }
        }
        for c in contacts.intersection(&tombstones) {
            problems.push(format!("contact {c} is both present and tombstoned"));
        }
        for (k, id) in owners_of_index {
            if !contacts.contains(&id) {
                problems.push(format!(
                    "{} points to missing contact {id}",
                    String::from_utf8_lossy(&k)
                ));
            }
        }
        let counters = Counters::load(&self.db)?;
        let actual = Counters {
            messages,
            contacts: contacts.len() as u64,
            blobs: actual_refs.len() as u64,
            blob_bytes: actual_refs.values().map(|&(_, s)| s).sum(),
        };
        if counters != actual {
            problems.push(format!(
                "counters {counters:?} differ from contents {actual:?}"
            ));
        }
        Ok(problems)
    }
}

fn decode_record(id: &str, v: &IVec) -> Result<Record, StoreError> {
    serde_json::from_slice(v).map_err(|e| corrupt(format_args!("message {id}: {e}")))
}

impl Store for SledStore {
    fn capture(
        &self,
        policy: &Policy,
        input: CaptureInput<'_>,
    ) -> Result<CaptureOutcome, StoreError> {
        self.inner.capture(policy, input)
    }

    fn prewrite(
        &self,
        facts: &MessageFacts,
        copy: &OwnerCopy,
        content: &Content<'_>,
    ) -> Result<Option<Prewritten>, StoreError> {
        self.inner.prewrite(facts, copy, content)
    }

    fn release(&self, prewritten: Prewritten) {
        self.inner.release(prewritten)
    }

    fn message(&self, id: &str) -> Result<Option<Record>, StoreError> {
        self.inner.record(id)
    }

    fn timeline(
        &self,
        contact_id: &str,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<TimelinePage, StoreError> {
        if check_id(contact_id).is_err() {
            return Ok((Vec::new(), None));
        }
        let prefix = keys::timeline_prefix(contact_id);
        let start = match before {
            Some(c) => {
                check_id(c.id())?;
                Bound::Excluded(keys::timeline(contact_id, c.date(), c.id()))
            }
            None => Bound::Included(prefix.clone()),
        };
        self.inner.page(&prefix, start, limit)
    }

    fn recent(&self, before: Option<&Cursor>, limit: usize) -> Result<TimelinePage, StoreError> {
        let prefix = keys::RECENT.to_vec();
        let start = match before {
            Some(c) => {
                check_id(c.id())?;
                Bound::Excluded(keys::recent(c.date(), c.id()))
            }
            None => Bound::Included(prefix.clone()),
        };
        self.inner.page(&prefix, start, limit)
    }

    fn thread(&self, thread_id: &str) -> Result<Vec<Record>, StoreError> {
        if check_id(thread_id).is_err() {
            return Ok(Vec::new());
        }
        let prefix = keys::thread_prefix(thread_id);
        let start = Bound::Included(prefix.clone());
        Ok(self
            .inner
            .records_after(&prefix, start, false, usize::MAX)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    fn contact(&self, id: &str) -> Result<Option<StoredContact>, StoreError> {
        self.inner.stored_contact(id)
    }

    fn contacts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredContact>, StoreError> {
        let start = match after {
            Some(a) => Bound::Excluded(keys::contact(a)),
            None => Bound::Included(keys::CONTACT.to_vec()),
        };
        let mut out = Vec::new();
        for entry in self.inner.db.range((start, Bound::Unbounded)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            if !k.starts_with(keys::CONTACT) {
                break;
            }
            out.push(
                serde_json::from_slice(&v).map_err(|e| corrupt(format_args!("contact: {e}")))?,
            );
        }
        Ok(out)
    }

    fn contact_for_address(&self, address: &str) -> Result<Option<StoredContact>, StoreError> {
        let address = address.trim().to_ascii_lowercase();
        let domain = domain_of(&address).to_string();
        for key in [keys::address(&address), keys::domain(&domain)] {
            if let Some(id) = self.inner.db.get(&key)? {
                let id = std::str::from_utf8(&id).map_err(corrupt)?;
                if let Some(c) = self.inner.stored_contact(id)? {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    fn delete_contact(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_contact(id)
    }

    fn contact_state(&self, id: &str) -> Result<ContactState, StoreError> {
        self.inner.contact_state(id)
    }

    fn set_override(
        &self,
        policy: &Policy,
        id: &str,
        owner: &str,
        level: Level,
    ) -> Result<Record, StoreError> {
        let owner = owner.trim().to_ascii_lowercase();
        self.inner.update_record(id, |r| {
            if engine::set_override(policy, r, &owner, Some(level)) {
                Ok(())
            } else {
                Err(StoreError::NotOwner {
                    id: id.to_string(),
                    user: owner.clone(),
                })
            }
        })
    }

    fn add_grant(&self, id: &str, grant: Grant) -> Result<Record, StoreError> {
        self.inner.update_record(id, |r| {
            // A hidden record keeps only its owners' choices (no grants).
            if r.ceiling() > Level::Hidden {
                r.grants.retain(|g| g.viewer != grant.viewer);
                r.grants.push(grant);
            }
            Ok(())
        })
    }

    fn create_access_request(&self, request: &AccessRequest) -> Result<(), StoreError> {
        self.inner.create_access_request(request)
    }

    fn access_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        self.inner.access_request(id)
    }

    fn access_requests(
        &self,
        user: &str,
        role: RequestRole,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        self.inner.access_requests(user, role, limit)
    }

    fn decide_access_request(
        &self,
        id: &str,
        decider: &str,
        approve: bool,
        now: i64,
    ) -> Result<AccessRequest, StoreError> {
        self.inner.decide_access_request(id, decider, approve, now)
    }

    fn open_blob(&self, sha256: &str) -> Result<Option<BlobReader>, StoreError> {
        if !is_sha256_hex(sha256) {
            return Ok(None);
        }
        let path = self.inner.blobs.path(sha256);
        Ok(self
            .inner
            .blobs
            .open_file(sha256)
            .map_err(io_err("opening", &path))?
            .map(|f| Box::new(f) as BlobReader))
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let c = Counters::load(&self.inner.db)?;
        Ok(StoreStats {
            messages: c.messages,
            contacts: c.contacts,
            blobs: c.blobs,
            blob_bytes: c.blob_bytes,
            bytes_on_disk: self.inner.db.size_on_disk()? + c.blob_bytes,
            flushes: self.inner.commit.flushes(),
            commits: self.inner.commit.commits(),
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.inner.commit.issue(true);
        self.inner.commit.wait(ticket)
    }

    fn backup(&self, dest: &Path) -> Result<BackupReport, StoreError> {
        self.inner.backup(dest)
    }
}
