//! Capture rules 1–5 of DESIGN §3: what one owner shares of one message, and
//! how owners' copies merge into one record.

use super::facts::{MessageFacts, OwnerCopy, Reason, Record};
use super::level::{Direction, Level};
use super::policy::Policy;

/// The outcome of capture rules 1–4 for one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is stored for this owner (rules 1–3, or not a user).
    Skip(Reason),
    /// Store this owner's copy (its level may still be `hidden`, e.g. activity
    /// off: the copy then only contributes its override to the restriction).
    Capture(OwnerCopy),
}

/// Apply capture rules 1–4 for one owner (a login or an address).
pub fn decide(
    _policy: &Policy,
    _facts: &MessageFacts,
    _owner: &str,
    _direction: Direction,
    _now: i64,
) -> Decision {
    Decision::Skip(Reason::NotAUser)
}

/// Merge one owner's copy into the record (rule 5). `existing` is the stored
/// record for the same Message-ID, if any; `contacts` the plan's links.
/// `now` dates a message without a Date header. The result holds no field
/// above its ceiling, and `stored` says which fields the caller must fill
/// (the engine never sees content: see `Record::stored`).
pub fn merge(
    existing: Option<Record>,
    _facts: &MessageFacts,
    _copy: OwnerCopy,
    _contacts: &[String],
    _now: i64,
    _content_available: bool,
) -> Record {
    existing.expect("stub")
}

#[allow(dead_code)]
fn _unused(_: Level) {}
