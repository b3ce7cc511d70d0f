//! Key encoding for the sled backend: one keyspace, ASCII prefixes, big-endian
//! numbers so that byte order is the order we iterate in.
//!
//! Everything lives in the default tree; a change to several keys is made
//! atomic across a crash by a journal entry (see the end of this table).
//! Layout:
//!
//! | key | value |
//! |---|---|
//! | `meta:schema` | schema version, ASCII decimal ([`SCHEMA_VERSION`]) |
//! | `meta:<counter>` | u64 BE: messages, contacts, blobs, blob bytes |
//! | `m:<message id>` | the [`Record`](crate::engine::Record), compact JSON |
//! | `t:<contact id>\0<inverted date BE>` + message id | empty: timeline, newest first |
//! | `h:<thread id>\0<date BE>` + message id | empty: thread, oldest first |
//! | `n:<inverted date BE>` + message id | empty: every visible record, newest first (search) |
//! | `c:<contact id>` | the [`StoredContact`](super::StoredContact), JSON |
//! | `x:<contact id>` | empty: tombstone of a deleted contact |
//! | `a:<address>` / `d:<domain>` | contact id owning the address / domain |
//! | `b:<sha256 hex>` | refcount u64 BE + blob size u64 BE |
//! | `q:<request id>` | an [`AccessRequest`](super::AccessRequest), JSON |
//! | `qo:<owner>\0<inverted created BE>` + request id | empty: requests to an owner, newest first |
//! | `qr:<requester>\0<inverted created BE>` + request id | empty: requests by a viewer, newest first |
//! | `qp:<message id>\0<requester>` | request id of the requester's pending request on a message |
//!
//! The tree `journal` holds one key, `j:last`: the last multi-key change (its
//! anchor's digest and its operations, see `journal.rs`).
//!
//! Dates are signed Unix seconds mapped to u64 by flipping the sign bit, so
//! that byte order is numeric order (and `!` of that is newest first). Ids are
//! rejected when they could break the framing (NUL, empty, overlong): an id
//! from a URL can never reach into another contact's key range.

use super::StoreError;

/// The on-disk schema this build reads and writes. Version 1 lacked the
/// `n:` index; opening a version 1 store builds it (see `sled::check_schema`).
/// Version 3 makes multi-key changes atomic through the `j:last` journal
/// entry, which a version 2 build would not replay after a crash: it must
/// refuse the store.
pub const SCHEMA_VERSION: u32 = 3;

pub(crate) const SCHEMA: &[u8] = b"meta:schema";
pub(crate) const MESSAGES: &[u8] = b"meta:messages";
pub(crate) const CONTACTS: &[u8] = b"meta:contacts";
pub(crate) const BLOBS: &[u8] = b"meta:blobs";
pub(crate) const BLOB_BYTES: &[u8] = b"meta:blob_bytes";

pub(crate) const RECORD: &[u8] = b"m:";
pub(crate) const TIMELINE: &[u8] = b"t:";
pub(crate) const THREAD: &[u8] = b"h:";
pub(crate) const CONTACT: &[u8] = b"c:";
pub(crate) const TOMBSTONE: &[u8] = b"x:";
pub(crate) const ADDRESS: &[u8] = b"a:";
pub(crate) const DOMAIN: &[u8] = b"d:";
pub(crate) const REFCOUNT: &[u8] = b"b:";
pub(crate) const RECENT: &[u8] = b"n:";
pub(crate) const REQUEST: &[u8] = b"q:";
pub(crate) const REQUESTS_TO_OWNER: &[u8] = b"qo:";
pub(crate) const REQUESTS_BY_VIEWER: &[u8] = b"qr:";
pub(crate) const PENDING_REQUEST: &[u8] = b"qp:";
/// The tree of the journal entry, and its one key.
pub(crate) const JOURNAL_TREE: &[u8] = b"journal";
pub(crate) const JOURNAL_LAST: &[u8] = b"j:last";

/// Longest id (message, thread, contact) or address accepted in a key.
pub(crate) const MAX_ID_LEN: usize = 512;

/// Reject ids that are empty, overlong or contain NUL (the key separator).
pub(crate) fn check_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.as_bytes().contains(&0) {
        return Err(StoreError::InvalidId);
    }
    Ok(())
}

fn cat(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.extend_from_slice(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// Signed seconds → u64 with the same order.
pub(crate) fn ordered_date(date: i64) -> u64 {
    (date as u64) ^ (1 << 63)
}

/// Inverse of [`ordered_date`].
pub(crate) fn date_from_ordered(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

pub(crate) fn record(id: &str) -> Vec<u8> {
    cat(RECORD, &[id.as_bytes()])
}

pub(crate) fn contact(id: &str) -> Vec<u8> {
    cat(CONTACT, &[id.as_bytes()])
}

pub(crate) fn tombstone(id: &str) -> Vec<u8> {
    cat(TOMBSTONE, &[id.as_bytes()])
}

pub(crate) fn address(addr: &str) -> Vec<u8> {
    cat(ADDRESS, &[addr.as_bytes()])
}

pub(crate) fn domain(d: &str) -> Vec<u8> {
    cat(DOMAIN, &[d.as_bytes()])
}

pub(crate) fn refcount(sha256: &str) -> Vec<u8> {
    cat(REFCOUNT, &[sha256.as_bytes()])
}

/// `t:<contact>\0`: every timeline entry of one contact starts with this.
pub(crate) fn timeline_prefix(contact_id: &str) -> Vec<u8> {
    cat(TIMELINE, &[contact_id.as_bytes(), &[0]])
}

/// One timeline entry; iterating the prefix forward gives newest first.
pub(crate) fn timeline(contact_id: &str, date: i64, message_id: &str) -> Vec<u8> {
    let inv = !ordered_date(date);
    cat(
        TIMELINE,
        &[
            contact_id.as_bytes(),
            &[0],
            &inv.to_be_bytes(),
            message_id.as_bytes(),
        ],
    )
}

/// `h:<thread>\0`.
pub(crate) fn thread_prefix(thread_id: &str) -> Vec<u8> {
    cat(THREAD, &[thread_id.as_bytes(), &[0]])
}

/// One thread entry; iterating the prefix forward gives oldest first.
pub(crate) fn thread(thread_id: &str, date: i64, message_id: &str) -> Vec<u8> {
    cat(
        THREAD,
        &[
            thread_id.as_bytes(),
            &[0],
            &ordered_date(date).to_be_bytes(),
            message_id.as_bytes(),
        ],
    )
}

/// One entry of the all-messages index; iterating `RECENT` forward gives
/// newest first.
pub(crate) fn recent(date: i64, message_id: &str) -> Vec<u8> {
    let inv = !ordered_date(date);
    cat(RECENT, &[&inv.to_be_bytes(), message_id.as_bytes()])
}

pub(crate) fn request(id: &str) -> Vec<u8> {
    cat(REQUEST, &[id.as_bytes()])
}

/// `qo:<user>\0` or `qr:<user>\0`: one user's request index.
pub(crate) fn request_index_prefix(table: &[u8], user: &str) -> Vec<u8> {
    cat(table, &[user.as_bytes(), &[0]])
}

/// One entry of a request index, newest first.
pub(crate) fn request_index(table: &[u8], user: &str, created: i64, request_id: &str) -> Vec<u8> {
    let inv = !ordered_date(created);
    cat(
        table,
        &[
            user.as_bytes(),
            &[0],
            &inv.to_be_bytes(),
            request_id.as_bytes(),
        ],
    )
}

/// The requester's pending request on a message (one at a time).
pub(crate) fn pending_request(message_id: &str, requester: &str) -> Vec<u8> {
    cat(
        PENDING_REQUEST,
        &[message_id.as_bytes(), &[0], requester.as_bytes()],
    )
}

/// Split the part of an index key after its prefix into (date, message id).
/// `inverted` for timeline keys.
pub(crate) fn split_entry(rest: &[u8], inverted: bool) -> Option<(i64, &str)> {
    if rest.len() <= 8 {
        return None;
    }
    let (d, id) = rest.split_at(8);
    let mut v = u64::from_be_bytes(d.try_into().ok()?);
    if inverted {
        v = !v;
    }
    Some((date_from_ordered(v), std::str::from_utf8(id).ok()?))
}

pub(crate) fn encode_u64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn decode_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Refcount value: (references, blob size).
pub(crate) fn encode_refcount(count: u64, size: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&count.to_be_bytes());
    v[8..].copy_from_slice(&size.to_be_bytes());
    v
}

pub(crate) fn decode_refcount(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != 16 {
        return None;
    }
    Some((decode_u64(&b[..8])?, decode_u64(&b[8..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_order_as_bytes_including_negative() {
        let dates = [i64::MIN, -5, -1, 0, 1, 1_700_000_000, i64::MAX];
        for w in dates.windows(2) {
            assert!(ordered_date(w[0]).to_be_bytes() < ordered_date(w[1]).to_be_bytes());
            assert_eq!(date_from_ordered(ordered_date(w[0])), w[0]);
        }
    }

    #[test]
    fn timeline_keys_sort_newest_first_and_split_back() {
        let a = timeline("c1", 100, "aaa");
        let b = timeline("c1", 200, "aaa");
        assert!(b < a);
        let p = timeline_prefix("c1");
        assert!(a.starts_with(&p));
        assert!(!timeline("c10", 100, "x").starts_with(&p));
        assert_eq!(split_entry(&a[p.len()..], true), Some((100, "aaa")));
        let t = thread("th", -3, "m");
        assert_eq!(
            split_entry(&t[thread_prefix("th").len()..], false),
            Some((-3, "m"))
        );
    }

    #[test]
    fn ids_that_could_break_framing_are_rejected() {
        assert!(check_id("abc").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\0b").is_err());
        assert!(check_id(&"x".repeat(MAX_ID_LEN + 1)).is_err());
    }
}
