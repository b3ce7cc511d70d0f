//! Atomic multi-key writes on sled without `sled::Batch`.
//!
//! A capture changes several keys at once (record, indexes, refcounts,
//! counters, contacts) and must never be half there after a crash. sled's
//! own `apply_batch` gives that, but it pins the log by sealing and writing
//! its I/O buffer twice per batch (`pin_log`: a `pwrite` and a waited
//! `sync_file_range` each), whatever the group commit does: those two
//! forced writes were most of a capture's CPU.
//!
//! Instead a change is an [`Ops`] list written as plain sled operations,
//! which ride in the current I/O buffer until the group commit flushes:
//! 1. a journal entry describing the change, under [`keys::JOURNAL_LAST`]
//!    in a tree of its own ([`keys::JOURNAL_TREE`]: rewriting one small
//!    key in a page of its own costs sled little, where in the main tree
//!    each rewrite would copy a busy leaf);
//! 2. the change's *anchor*, when it has one (the message record it
//!    rewrites), always first;
//! 3. its other operations, in order.
//!
//! Why this is enough: sled recovers a prefix of its log (recovery stops at
//! the first torn message), and every change is written under the store's
//! write lock, one after the other. So after a crash every change is either
//! whole or not there at all, except possibly the last one, whose journal
//! entry is the one under `JOURNAL_LAST` (each entry overwrites the one
//! before). At open, [`replay`] completes that change: if its anchor is in
//! place (the stored value has the digest the entry recorded) or it has
//! none, its operations are applied again (absolute puts and removes: a
//! no-op where they already landed); if its anchor is not in place, nothing
//! after it landed either and there is nothing to do.
//!
//! The entry keeps only the anchor's digest, not its value, so a capture's
//! journal costs a few hundred bytes of log rather than a second copy of
//! the record.

use super::keys;
use super::StoreError;
use ::sled::{Db, Tree};
use sha2::{Digest, Sha256};

/// Puts and removes to apply together, in order, after the anchor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ops {
    anchor: Option<(Vec<u8>, Vec<u8>)>,
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

const PUT: u8 = 1;
const REMOVE: u8 = 2;
const ANCHOR: u8 = 3;

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

impl Ops {
    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    /// The put written first, ahead of every other operation (a change has
    /// one at most; a second call replaces the first).
    pub(crate) fn anchor(&mut self, key: impl AsRef<[u8]>, value: Vec<u8>) {
        self.anchor = Some((key.as_ref().to_vec(), value));
    }

    fn len(&self) -> usize {
        self.ops.len() + usize::from(self.anchor.is_some())
    }

    /// The journal entry: `[ANCHOR][key len u32 BE][key][sha256 of value]`
    /// when there is an anchor, then `[kind][key len][key]([value len][value])`
    /// per operation.
    fn encode(&self) -> Vec<u8> {
        let len: usize = self
            .ops
            .iter()
            .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        let mut out = Vec::with_capacity(len + 64);
        let chunk = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        if let Some((k, v)) = &self.anchor {
            out.push(ANCHOR);
            chunk(&mut out, k);
            out.extend_from_slice(&digest(v));
        }
        for (k, v) in &self.ops {
            out.push(if v.is_some() { PUT } else { REMOVE });
            chunk(&mut out, k);
            if let Some(v) = v {
                chunk(&mut out, v);
            }
        }
        out
    }

    /// The anchor's key and digest, and the operations, of a journal entry.
    fn decode(mut b: &[u8]) -> Option<Entry> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = b.split_at_checked(n)?;
            *b = rest;
            Some(head)
        }
        fn chunk(b: &mut &[u8]) -> Option<Vec<u8>> {
            let n = u32::from_be_bytes(take(b, 4)?.try_into().ok()?) as usize;
            Some(take(b, n)?.to_vec())
        }
        let mut entry = Entry::default();
        if b.first() == Some(&ANCHOR) {
            take(&mut b, 1)?;
            let key = chunk(&mut b)?;
            let sum: [u8; 32] = take(&mut b, 32)?.try_into().ok()?;
            entry.anchor = Some((key, sum));
        }
        while !b.is_empty() {
            let kind = take(&mut b, 1)?[0];
            let key = chunk(&mut b)?;
            let value = match kind {
                PUT => Some(chunk(&mut b)?),
                REMOVE => None,
                _ => return None,
            };
            entry.ops.push((key, value));
        }
        Some(entry)
    }

    /// Write the change (see the module docs). Even a change of one
    /// operation, atomic by itself, replaces the journal entry: replay must
    /// only ever apply the very last change, never an older one over it.
    pub(crate) fn write(&self, db: &Db, journal: &Tree) -> Result<(), StoreError> {
        if self.len() == 0 {
            return Ok(());
        }
        journal.insert(keys::JOURNAL_LAST, self.encode())?;
        if let Some((k, v)) = &self.anchor {
            db.insert(k.as_slice(), v.as_slice())?;
        }
        apply(db, &self.ops)
    }
}

/// A decoded journal entry.
#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    anchor: Option<(Vec<u8>, [u8; 32])>,
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn apply(db: &Db, ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), StoreError> {
    for (k, v) in ops {
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

/// The journal's tree in `db`.
pub(crate) fn open(db: &Db) -> Result<Tree, StoreError> {
    Ok(db.open_tree(keys::JOURNAL_TREE)?)
}

/// At open, before anything else writes: complete the last change if a
/// crash cut it short (see the module docs). Returns whether its operations
/// were applied again (also after a clean stop, where that changes nothing).
pub(crate) fn replay(db: &Db, journal: &Tree) -> Result<bool, StoreError> {
    let Some(raw) = journal.get(keys::JOURNAL_LAST)? else {
        return Ok(false);
    };
    let entry =
        Ops::decode(&raw).ok_or_else(|| StoreError::Corrupt("the store's journal entry".into()))?;
    if let Some((key, sum)) = &entry.anchor {
        let in_place = db.get(key)?.is_some_and(|v| digest(&v) == *sum);
        if !in_place {
            // The change never got past its journal entry.
            return Ok(false);
        }
    }
    apply(db, &entry.ops)?;
    db.flush()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = ::sled::Config::new()
            .path(dir.path().join("db"))
            .flush_every_ms(None)
            .open()
            .unwrap();
        let journal = open(&db).unwrap();
        (dir, db, journal)
    }

    fn change() -> Ops {
        let mut ops = Ops::default();
        ops.remove(b"t:old");
        ops.insert(b"t:new", b"");
        ops.insert(b"meta:messages", 7u64.to_be_bytes());
        ops.anchor(b"m:1", b"{\"record\":2}".to_vec());
        ops
    }

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let ops = change();
        let entry = Ops::decode(&ops.encode()).unwrap();
        assert_eq!(entry.ops, ops.ops);
        assert_eq!(
            entry.anchor,
            Some((b"m:1".to_vec(), digest(b"{\"record\":2}")))
        );
        // The record's value is not in the entry, only its digest.
        assert!(!ops
            .encode()
            .windows(b"record".len())
            .any(|w| w == b"record"));
        let enc = ops.encode();
        for cut in 1..enc.len() {
            // Every truncation is a shorter entry or refused, never a panic.
            if let Some(e) = Ops::decode(&enc[..cut]) {
                assert!(e.ops.len() < ops.ops.len());
            }
        }
        assert_eq!(Ops::decode(&[9, 0, 0, 0, 0]), None);
        assert_eq!(Ops::decode(&[PUT, 0, 0, 0, 9, b'k']), None);
    }

    /// The store as a crash may leave it: the change's journal entry and its
    /// first `landed` writes (anchor first, then the operations).
    fn crashed_after(landed: usize) -> (tempfile::TempDir, Db, Tree) {
        let (dir, db, journal) = db();
        db.insert(b"m:1", b"{\"record\":1}").unwrap();
        db.insert(b"t:old", b"").unwrap();
        db.insert(b"meta:messages", 6u64.to_be_bytes().as_slice())
            .unwrap();
        let ops = change();
        journal.insert(keys::JOURNAL_LAST, ops.encode()).unwrap();
        if landed > 0 {
            db.insert(b"m:1", b"{\"record\":2}").unwrap();
        }
        apply(&db, &ops.ops[..landed.saturating_sub(1)]).unwrap();
        (dir, db, journal)
    }

    #[test]
    fn a_change_cut_short_after_its_anchor_is_completed() {
        for landed in 1..=4 {
            let (_dir, db, journal) = crashed_after(landed);
            assert!(replay(&db, &journal).unwrap(), "landed {landed}");
            assert_eq!(
                db.get(b"m:1").unwrap().as_deref(),
                Some(&b"{\"record\":2}"[..])
            );
            assert!(db.get(b"t:old").unwrap().is_none());
            assert!(db.get(b"t:new").unwrap().is_some());
            assert_eq!(
                db.get(b"meta:messages").unwrap().as_deref(),
                Some(&7u64.to_be_bytes()[..])
            );
        }
    }

    #[test]
    fn a_change_cut_short_before_its_anchor_is_not_there_at_all() {
        let (_dir, db, journal) = crashed_after(0);
        assert!(!replay(&db, &journal).unwrap());
        assert_eq!(
            db.get(b"m:1").unwrap().as_deref(),
            Some(&b"{\"record\":1}"[..])
        );
        assert!(db.get(b"t:old").unwrap().is_some());
        assert!(db.get(b"t:new").unwrap().is_none());
    }

    #[test]
    fn each_change_overwrites_the_entry_even_a_single_write() {
        let (_dir, db, journal) = db();
        Ops::default().write(&db, &journal).unwrap();
        assert!(journal.get(keys::JOURNAL_LAST).unwrap().is_none());
        change().write(&db, &journal).unwrap();
        // A later single write to a key the change also wrote: replaying
        // the change must not undo it.
        let mut one = Ops::default();
        one.insert(b"meta:messages", 8u64.to_be_bytes());
        one.write(&db, &journal).unwrap();
        assert!(replay(&db, &journal).unwrap());
        assert_eq!(
            db.get(b"meta:messages").unwrap().as_deref(),
            Some(&8u64.to_be_bytes()[..])
        );
        let mut later = Ops::default();
        later.insert(b"a", b"1");
        later.insert(b"b", b"2");
        later.write(&db, &journal).unwrap();
        let entry = Ops::decode(&journal.get(keys::JOURNAL_LAST).unwrap().unwrap()).unwrap();
        assert_eq!(entry.ops, later.ops);
        // Replaying the last, complete change changes nothing.
        assert!(replay(&db, &journal).unwrap());
        assert_eq!(db.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(
            db.get(b"m:1").unwrap().as_deref(),
            Some(&b"{\"record\":2}"[..])
        );
    }

    #[test]
    fn a_corrupt_entry_fails_the_open_loudly() {
        let (_dir, db, journal) = db();
        journal
            .insert(keys::JOURNAL_LAST, &[0xff, 1, 2][..])
            .unwrap();
        assert!(matches!(replay(&db, &journal), Err(StoreError::Corrupt(_))));
    }
}
