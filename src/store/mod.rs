//! The store: what capture keeps, behind one narrow, blocking [`Store`] trait.
//!
//! Ownership: the store owns persistence only. Every sharing decision is the
//! engine's: under its write lock the store calls the engine's contact planner
//! and `merge` ([`EngineRules`]), then writes exactly the record `merge`
//! returned, filling `content` (as blobs) only when the record's `stored`
//! level asks for it, and releasing blobs a lowered ceiling no longer
//! references. The store never raises what was stored: a raised override
//! shows only what is there.
//!
//! Durability: a mutating call returns only once its writes are durable
//! (group commit, see `commit`): an SMTP capture acknowledged with 250 is
//! never lost in a crash. Blob files are durable before any database entry
//! that references them. Reads see every write applied so far, durable or not.
//!
//! Async callers run these methods in `tokio::task::spawn_blocking`.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the trait, its types and errors |
//! | `sled.rs` | [`SledStore`]: the embedded backend, lock file, schema, indexes, refcounts |
//! | `commit.rs` | group commit: tickets, the flusher thread, shared flush errors |
//! | `journal.rs` | atomic multi-key changes (journal entries replayed after a crash) |
//! | `blobs.rs` | content-addressed blob files |
//! | `keys.rs` | key encoding (big-endian dates for ordered timelines), schema version |

mod blobs;
mod commit;
mod journal;
mod keys;
mod sled;

pub use self::blobs::{is_sha256_hex, sha256_hex};
pub use self::keys::SCHEMA_VERSION;
pub use self::sled::SledStore;

use crate::engine::policy::ContactKind;
use crate::engine::{
    ContactState, Content, Grant, Level, MessageFacts, NewContact, OwnerCopy, Policy, Record,
    StoredContent,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// One owner's capture of one message.
#[derive(Debug)]
pub struct CaptureInput<'a> {
    pub facts: &'a MessageFacts,
    /// The owner's copy as decided by `engine::decide`.
    pub copy: OwnerCopy,
    /// Bodies and attachments, when the capture path has them (a header-only
    /// IMAP fetch has none). Written only if the merged record's level is `full`.
    pub content: Option<&'a Content<'a>>,
    /// Unix seconds: dates a message without a Date header.
    pub now: i64,
    /// Whether the call waits for the capture to be durable.
    pub durability: Durability,
    /// The content's blob files, written ahead by [`Store::prewrite`] (used
    /// instead of writing them again, or released if the record keeps none).
    pub prewritten: Option<Prewritten>,
}

/// Blob files of a capture's content written ahead of the capture (see
/// [`Store::prewrite`]). While it lives, no cleanup deletes those files;
/// dropped without [`Store::capture`] or [`Store::release`], the files stay
/// until the sweep at the next open.
#[derive(Debug)]
pub struct Prewritten {
    pub(crate) content: StoredContent,
    pub(crate) guard: self::sled::InflightGuard,
}

/// When a capture call returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Once the capture is on disk (its group commit's flush completed): an
    /// SMTP client's 250 waits for this.
    #[default]
    Wait,
    /// Once the capture is applied (readable at once); the flusher makes it
    /// durable moments later, in a larger group. For captures a crash may
    /// lose because they are made again (an IMAP fetch: the next fetch of
    /// the message captures it anew), so that a burst of them costs a few
    /// flushes instead of one wait per message.
    Background,
}

/// What a capture did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureOutcome {
    /// The message's stable id (`engine::message_key`).
    pub id: String,
    /// The record's ceiling after this capture.
    pub ceiling: Level,
    /// The highest level whose fields the record now holds.
    pub stored: Level,
    /// No record existed for this Message-ID before.
    pub new_record: bool,
    /// Contacts auto-created by this capture.
    pub contacts_created: usize,
}

/// An auto-created contact as stored (policy contacts live in the policy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContact {
    pub id: String,
    /// `"person"` or `"organization"` in JSON.
    #[serde(with = "kind_serde")]
    pub kind: ContactKind,
    pub name: String,
    pub addresses: Vec<String>,
    pub domains: Vec<String>,
    /// The organization contact a person belongs to.
    pub organization_id: Option<String>,
}

impl From<NewContact> for StoredContact {
    fn from(c: NewContact) -> Self {
        StoredContact {
            id: c.id,
            kind: c.kind,
            name: c.name,
            addresses: c.addresses,
            domains: c.domains,
            organization_id: c.organization_id,
        }
    }
}

mod kind_serde {
    use crate::engine::policy::ContactKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(k: &ContactKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ContactKind, D::Error> {
        match String::deserialize(d)?.as_str() {
            "person" => Ok(ContactKind::Person),
            "organization" => Ok(ContactKind::Organization),
            other => Err(serde::de::Error::custom(format!(
                "unknown contact kind {other:?}"
            ))),
        }
    }
}

/// A position in a timeline: the last entry of the previous page. Opaque to
/// callers; [`Display`](fmt::Display) gives a URL-safe string and
/// [`FromStr`] parses it back (garbage is [`StoreError::BadCursor`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    date: i64,
    id: String,
}

impl Cursor {
    pub(crate) fn new(date: i64, id: &str) -> Cursor {
        Cursor {
            date,
            id: id.to_string(),
        }
    }

    pub(crate) fn date(&self) -> i64 {
        self.date
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The URL-safe form (lowercase hex only).
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// Parse [`encode`](Self::encode)'s output.
    ///
    /// # Errors
    /// [`StoreError::BadCursor`] for anything else.
    pub fn decode(s: &str) -> Result<Cursor, StoreError> {
        s.parse()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{}", keys::ordered_date(self.date), self.id)
    }
}

impl FromStr for Cursor {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_lower = |t: &str| t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if s.len() <= 16 || s.len() > 16 + 64 || !s.is_ascii() || !hex_lower(s) {
            return Err(StoreError::BadCursor);
        }
        let (d, id) = s.split_at(16);
        let v = u64::from_str_radix(d, 16).map_err(|_| StoreError::BadCursor)?;
        Ok(Cursor::new(keys::date_from_ordered(v), id))
    }
}

/// Where an access request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
        }
    }
}

/// A viewer's request for more of a message than they see (read rule 5).
/// Its owners (as of the request) see it and approve or deny it; approval
/// adds a [`Grant`] in the same durable write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// Random, lowercase hex; chosen by the caller.
    pub id: String,
    /// The message's id (`engine::message_key`).
    pub message: String,
    /// The asking viewer's primary address.
    pub requester: String,
    /// The message's owners when the request was made: whom it is listed to.
    pub owners: Vec<String>,
    /// The level asked for.
    pub level: Level,
    /// A short note from the requester to the owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub status: RequestStatus,
    /// Unix seconds.
    pub created: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    /// On approval: the level granted (the request's level, capped by the ceiling then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<Level>,
}

/// Which side of access requests to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestRole {
    /// Requests listed to this user as an owner.
    Owner,
    /// Requests this user made.
    Requester,
}

/// Counts for `/metrics` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Records (one per Message-ID, hidden ones included).
    pub messages: u64,
    /// Auto-created contacts (tombstoned ones excluded).
    pub contacts: u64,
    /// Distinct blob files referenced.
    pub blobs: u64,
    /// Their total size.
    pub blob_bytes: u64,
    /// Database files plus blobs.
    pub bytes_on_disk: u64,
    /// Flushes run since open (group commit: far fewer than `commits` under load).
    pub flushes: u64,
    /// Durable write operations (captures, overrides, grants, deletions) since open.
    pub commits: u64,
}

/// A reader over one blob's bytes.
pub type BlobReader = Box<dyn Read + Send>;

/// What a backup copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    pub messages: u64,
    pub blobs: u64,
    /// Size of the copied database on disk (blobs are hard links or copies).
    pub bytes: u64,
}

/// A timeline page: records newest first, and the cursor of the next page.
pub type TimelinePage = (Vec<Record>, Option<Cursor>);

/// Tuning for [`SledStore::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Cap on sled's page cache, in bytes. Default 64 MiB: bodies live in
    /// blob files, so the database holds only metadata and indexes.
    pub cache_capacity_bytes: u64,
    /// How long the flusher lingers after the first unflushed write before
    /// flushing, to gather more writers into the batch. Default zero: while
    /// one flush runs the next batch gathers by itself, so lingering only
    /// adds latency unless writers arrive in sparse bursts (then 1–2 ms).
    pub max_batch_delay: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 64 * 1024 * 1024,
            max_batch_delay: Duration::ZERO,
        }
    }
}

/// Everything a store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store's `LOCK` file.
    #[error("store {} is in use by another mailshare process (is `mailshare serve` running?)", path.display())]
    Locked { path: PathBuf },
    /// The store was written by an incompatible version.
    #[error("store {}: unsupported schema version {found:?} (this build reads version {supported})", path.display())]
    Schema {
        path: PathBuf,
        found: String,
        supported: u32,
    },
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database backend failed.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored bytes did not decode.
    #[error("corrupt store entry: {0}")]
    Corrupt(String),
    /// A cursor that this store did not produce.
    #[error("invalid cursor")]
    BadCursor,
    /// An id that cannot name anything (empty, overlong, NUL).
    #[error("invalid id")]
    InvalidId,
    #[error("no message {id}")]
    NoSuchMessage { id: String },
    #[error("{user} is not an owner of message {id}")]
    NotOwner { id: String, user: String },
    /// The group-commit flush covering this write failed; the write may or
    /// may not survive a crash.
    #[error("flush failed: {message}")]
    Flush { message: String },
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
    #[error("no access request {id}")]
    NoSuchRequest { id: String },
    /// The access request was already approved or denied.
    #[error("access request {id} was already decided")]
    AlreadyDecided { id: String },
    /// The requester already has a pending request on this message.
    #[error("a pending access request {existing} exists for this message")]
    DuplicateRequest { existing: String },
}

/// A narrow, blocking store. Every mutating method returns only when its
/// writes are durable.
pub trait Store: Send + Sync {
    /// Capture one owner's copy of a message (DESIGN §3 capture rule 5 and
    /// contacts): plan and create contacts, merge, write content within the
    /// ceiling, update timelines, threads and blob refcounts.
    fn capture(
        &self,
        policy: &Policy,
        input: CaptureInput<'_>,
    ) -> Result<CaptureOutcome, StoreError>;

    /// Write the blob files `content` would need if the capture of `facts`
    /// for `copy` keeps it, before the capture is decided (an SMTP relay
    /// does this while the upstream server considers the message). `None`:
    /// the capture would keep no content. Nothing refers to the files until
    /// the capture; hand the result to [`Store::capture`] or
    /// [`Store::release`].
    fn prewrite(
        &self,
        facts: &MessageFacts,
        copy: &OwnerCopy,
        content: &Content<'_>,
    ) -> Result<Option<Prewritten>, StoreError>;

    /// The capture a [`Prewritten`] was for will not happen: its files are
    /// deleted after the next flush unless something refers to them.
    fn release(&self, prewritten: Prewritten);

    /// One record by id, hidden ones included (the reader applies `engine::visible`).
    fn message(&self, id: &str) -> Result<Option<Record>, StoreError>;

    /// Every record that is not hidden, newest first, `limit` after
    /// `before`: the scan order of search. Cursors are those of `timeline`.
    fn recent(&self, before: Option<&Cursor>, limit: usize) -> Result<TimelinePage, StoreError>;

    /// A contact's timeline, newest first, `limit` records after `before`
    /// (a cursor from a previous page). The cursor is `None` on the last page.
    fn timeline(
        &self,
        contact_id: &str,
        before: Option<&Cursor>,
        limit: usize,
    ) -> Result<TimelinePage, StoreError>;

    /// A thread's records, oldest first.
    fn thread(&self, thread_id: &str) -> Result<Vec<Record>, StoreError>;

    /// An auto-created contact (absent when tombstoned).
    fn contact(&self, id: &str) -> Result<Option<StoredContact>, StoreError>;

    /// Auto-created contacts ordered by id, strictly after `after`.
    fn contacts(&self, after: Option<&str>, limit: usize)
        -> Result<Vec<StoredContact>, StoreError>;

    /// The auto-created contact owning an address (its person, else the
    /// organization of its domain).
    fn contact_for_address(&self, address: &str) -> Result<Option<StoredContact>, StoreError>;

    /// Tombstone a contact id (auto-created or a policy contact's): it leaves
    /// the listing and its timeline, and later mail never re-creates it.
    /// Returns false when it was already tombstoned.
    fn delete_contact(&self, id: &str) -> Result<bool, StoreError>;

    fn contact_state(&self, id: &str) -> Result<ContactState, StoreError>;

    /// An owner's per-message override (capture rule 4c). Lowering the
    /// ceiling drops the fields above it and releases their blobs; raising it
    /// shows only what is stored.
    /// Applies `engine::set_override` under the write lock; `NotOwner` when
    /// `owner` is not one of the record's owners.
    fn set_override(
        &self,
        policy: &Policy,
        id: &str,
        owner: &str,
        level: Level,
    ) -> Result<Record, StoreError>;

    /// Add (or replace, per viewer) a grant on a message.
    fn add_grant(&self, id: &str, grant: Grant) -> Result<Record, StoreError>;

    /// Record a new access request, listed to each of `request.owners` and to
    /// its requester. `DuplicateRequest` when the requester already has a
    /// pending request on the message; `InvalidId` for unusable ids.
    fn create_access_request(&self, request: &AccessRequest) -> Result<(), StoreError>;

    /// One access request by id.
    fn access_request(&self, id: &str) -> Result<Option<AccessRequest>, StoreError>;

    /// A user's requests on one side, newest first, at most `limit`.
    fn access_requests(
        &self,
        user: &str,
        role: RequestRole,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, StoreError>;

    /// Approve or deny a pending request as `decider`, who must be a current
    /// owner of the message (`NotOwner` otherwise). Approval grants the
    /// requester the requested level capped by the record's ceiling, in the
    /// same durable write. `AlreadyDecided` when it is not pending.
    fn decide_access_request(
        &self,
        id: &str,
        decider: &str,
        approve: bool,
        now: i64,
    ) -> Result<AccessRequest, StoreError>;

    /// A reader over a blob's bytes; `None` when there is no such blob.
    fn open_blob(&self, sha256: &str) -> Result<Option<BlobReader>, StoreError>;

    /// A blob's bytes; `None` when there is no such blob.
    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(mut r) = self.open_blob(sha256)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|source| StoreError::Io {
            context: "reading blob",
            path: PathBuf::from(sha256),
            source,
        })?;
        Ok(Some(out))
    }

    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Wait until every write applied so far is durable.
    /// Write a consistent copy of the whole store into `dest` (new or
    /// empty), while the store stays open: captures wait during the copy.
    /// The copy is itself a store directory: restore by pointing `[store]
    /// path` at it (or moving it into place) while mailshare is stopped.
    fn backup(&self, dest: &Path) -> Result<BackupReport, StoreError>;

    fn flush(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor::new(-42, "0123abcd");
        let s = c.encode();
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(Cursor::decode(&s).unwrap(), c);
        for bad in [
            "",
            "zz",
            "0123456789abcdef",
            "0123456789abcdeg1",
            "0123456789ABCDEF1",
            "💥💥💥💥💥💥💥💥💥",
        ] {
            assert!(
                matches!(Cursor::decode(bad), Err(StoreError::BadCursor)),
                "{bad}"
            );
        }
    }
}
