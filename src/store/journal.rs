//! Atomic multi-key writes on sled without `sled::Batch`.
//!
//! A capture changes several keys at once (record, indexes, refcounts,
//! counters, contacts) and must never be half there after a crash. sled's
//! own `apply_batch` gives that, but it pins the log by sealing and writing
//! its I/O buffer twice per batch (`pin_log`: a `pwrite` and a waited
//! `sync_file_range` each), whatever the group commit does: two forced
//! writes per capture were most of a capture's CPU.
//!
//! Instead, a change is an [`Ops`] list written in two steps, both plain
//! sled operations that ride in the current I/O buffer:
//! 1. the whole list, encoded, as one value under `j:<sequence BE>` (one
//!    insert is atomic);
//! 2. each operation.
//!
//! sled recovers a prefix of its log in order, so after a crash any
//! operation of step 2 that survived has its journal entry too; replaying
//! every entry left, in sequence order ([`replay`]), completes the change
//! that was cut short (the operations are absolute puts and removes, so
//! replaying ones already applied changes nothing). Once a flush covers a
//! change, its entry is removed ([`remove_entries`]); a removal lost in a
//! crash only means a replay of something already in place.

use super::keys;
use super::StoreError;
use ::sled::Db;

/// Puts and removes to apply together, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ops {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

const PUT: u8 = 1;
const REMOVE: u8 = 2;

impl Ops {
    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    /// `[kind u8][key len u32 BE][key]([value len u32 BE][value])` per op.
    fn encode(&self) -> Vec<u8> {
        let len: usize = self
            .ops
            .iter()
            .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        let mut out = Vec::with_capacity(len);
        for (k, v) in &self.ops {
            out.push(if v.is_some() { PUT } else { REMOVE });
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
        out
    }

    fn decode(mut b: &[u8]) -> Option<Ops> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = b.split_at_checked(n)?;
            *b = rest;
            Some(head)
        }
        fn chunk(b: &mut &[u8]) -> Option<Vec<u8>> {
            let n = u32::from_be_bytes(take(b, 4)?.try_into().ok()?) as usize;
            Some(take(b, n)?.to_vec())
        }
        let mut ops = Ops::default();
        while !b.is_empty() {
            let kind = take(&mut b, 1)?[0];
            let key = chunk(&mut b)?;
            let value = match kind {
                PUT => Some(chunk(&mut b)?),
                REMOVE => None,
                _ => return None,
            };
            ops.ops.push((key, value));
        }
        Some(ops)
    }

    fn apply(&self, db: &Db) -> Result<(), StoreError> {
        for (k, v) in &self.ops {
            match v {
                Some(v) => {
                    db.insert(k.as_slice(), v.as_slice())?;
                }
                None => {
                    db.remove(k.as_slice())?;
                }
            }
        }
        Ok(())
    }

    /// Write the change atomically as journal entry `seq` (see the module
    /// docs). A single operation is atomic by itself and needs no entry;
    /// returns whether an entry was written.
    pub(crate) fn write(&self, db: &Db, seq: u64) -> Result<bool, StoreError> {
        let journaled = self.ops.len() > 1;
        if journaled {
            db.insert(keys::journal(seq), self.encode())?;
        }
        self.apply(db)?;
        Ok(journaled)
    }
}

/// At open, before anything else writes: apply every journal entry left by
/// a crash, in order, then remove them. Returns how many there were.
pub(crate) fn replay(db: &Db) -> Result<usize, StoreError> {
    let mut entries = Vec::new();
    for entry in db.scan_prefix(keys::JOURNAL) {
        let (k, v) = entry?;
        let ops = Ops::decode(&v).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "journal entry {}",
                hex::encode(&k[keys::JOURNAL.len()..])
            ))
        })?;
        ops.apply(db)?;
        entries.push(k);
    }
    if entries.is_empty() {
        return Ok(0);
    }
    // The replayed state is durable before any entry goes.
    db.flush()?;
    for k in &entries {
        db.remove(k)?;
    }
    db.flush()?;
    Ok(entries.len())
}

/// Remove journal entries whose changes a flush has made durable.
pub(crate) fn remove_entries(
    db: &Db,
    seqs: impl IntoIterator<Item = u64>,
) -> Result<(), StoreError> {
    for seq in seqs {
        db.remove(keys::journal(seq))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = ::sled::Config::new()
            .path(dir.path().join("db"))
            .flush_every_ms(None)
            .open()
            .unwrap();
        (dir, db)
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let mut ops = Ops::default();
        ops.insert(b"m:a", b"{\"x\":1}");
        ops.remove(b"t:gone");
        ops.insert(b"empty", b"");
        assert_eq!(Ops::decode(&ops.encode()), Some(ops.clone()));
        assert_eq!(Ops::decode(b""), Some(Ops::default()));
        let enc = ops.encode();
        for cut in 1..enc.len() {
            // Every truncation is either a shorter valid list or refused,
            // never a panic.
            if let Some(d) = Ops::decode(&enc[..cut]) {
                assert!(d.ops.len() < ops.ops.len());
            }
        }
        assert_eq!(Ops::decode(&[9, 0, 0, 0, 0]), None);
        assert_eq!(Ops::decode(&[PUT, 0, 0, 0, 9, b'k']), None);
    }

    #[test]
    fn a_change_cut_short_is_completed_by_replay() {
        let (_dir, db) = db();
        db.insert(b"t:old", b"").unwrap();
        let mut ops = Ops::default();
        ops.insert(b"m:1", b"record");
        ops.remove(b"t:old");
        ops.insert(b"t:new", b"");
        // As after a crash between the journal entry and the operations:
        // the entry and only the first operation made it.
        db.insert(keys::journal(7), ops.encode()).unwrap();
        db.insert(b"m:1", b"record").unwrap();
        assert_eq!(replay(&db).unwrap(), 1);
        assert_eq!(db.get(b"m:1").unwrap().as_deref(), Some(&b"record"[..]));
        assert!(db.get(b"t:old").unwrap().is_none());
        assert!(db.get(b"t:new").unwrap().is_some());
        assert_eq!(db.scan_prefix(keys::JOURNAL).count(), 0, "entries removed");
        assert_eq!(replay(&db).unwrap(), 0);
    }

    #[test]
    fn replay_applies_entries_in_order() {
        let (_dir, db) = db();
        let mut first = Ops::default();
        first.insert(b"k", b"1");
        first.insert(b"other", b"x");
        let mut second = Ops::default();
        second.insert(b"k", b"2");
        second.remove(b"other");
        // Both entries left (their removal was lost): the later one wins.
        first.write(&db, 1).unwrap();
        second.write(&db, 2).unwrap();
        assert_eq!(replay(&db).unwrap(), 2);
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(db.get(b"other").unwrap().is_none());
    }

    #[test]
    fn single_operations_need_no_entry_and_entries_go_once_flushed() {
        let (_dir, db) = db();
        let mut one = Ops::default();
        one.insert(b"k", b"v");
        assert!(!one.write(&db, 1).unwrap());
        let mut two = Ops::default();
        two.insert(b"a", b"1");
        two.insert(b"b", b"2");
        assert!(two.write(&db, 2).unwrap());
        assert_eq!(db.scan_prefix(keys::JOURNAL).count(), 1);
        remove_entries(&db, [2]).unwrap();
        assert_eq!(db.scan_prefix(keys::JOURNAL).count(), 0);
    }

    #[test]
    fn a_corrupt_entry_fails_the_open_loudly() {
        let (_dir, db) = db();
        db.insert(keys::journal(1), &[0xff, 1, 2][..]).unwrap();
        assert!(matches!(replay(&db), Err(StoreError::Corrupt(_))));
    }
}
