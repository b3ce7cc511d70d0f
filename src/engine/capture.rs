//! Capture rules 1–5 of DESIGN §3: what one owner shares of one message
//! ([`decide`]), and how owners' copies merge into one record ([`merge`]).
//!
//! The level computation ([`owner_level`]) is shared with `read`, which
//! recomputes each owner's *current* level from the policy in force.

use super::facts::{Mailbox, MessageFacts, OwnerCopy, Reason, Record};
use super::level::{Direction, Level};
use super::policy::{domain_matches, ContactTarget, Policy, User, UserStatus};
use super::{message_key, thread_id};
use std::collections::HashSet;

/// The outcome of capture rules 1–4 for one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is stored for this owner (rules 1–3, or not a user).
    Skip(Reason),
    /// Store this owner's copy. Its level may be `hidden` (activity off,
    /// before share_since): the copy then only records the owner and any
    /// override, which still restricts the other owners' copies.
    Capture(OwnerCopy),
}

/// The external participants of a message, for the rules that look at them.
fn externals<'a>(policy: &Policy, participants: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    participants
        .filter(|a| !a.is_empty() && seen.insert(*a) && !policy.is_internal(a))
        .collect()
}

/// Rule 2: every external participant matches an org or owner exclude pattern.
fn all_excluded(policy: &Policy, user: &User, externals: &[&str]) -> bool {
    !externals.is_empty()
        && externals.iter().all(|a| {
            policy
                .organization
                .exclude
                .iter()
                .chain(user.exclude.iter())
                .any(|p| p.matches(a))
        })
}

/// True when `address` falls under the policy contact at `index` (listed,
/// in its domains, or a person of that organization).
pub(crate) fn contact_covers(policy: &Policy, index: usize, address: &str) -> bool {
    let c = &policy.contacts[index];
    let domain = super::facts::domain_of(address);
    c.addresses.iter().any(|a| a == address)
        || c.domains.iter().any(|d| domain_matches(domain, d))
        || policy
            .contact_for_address(address)
            .is_some_and(|p| p == index || policy.contacts[p].organization == Some(index))
}

/// Rule 4a: the owner's standing setting for these external participants.
fn standing_level(
    policy: &Policy,
    user: &User,
    externals: &[&str],
    direction: Direction,
) -> (Level, Reason) {
    let matched = user
        .contacts
        .iter()
        .filter(|s| {
            externals.iter().any(|a| match &s.target {
                ContactTarget::Address(x) => x == a,
                ContactTarget::Domain(d) => domain_matches(super::facts::domain_of(a), d),
                ContactTarget::Contact(i) => contact_covers(policy, *i, a),
            })
        })
        .map(|s| s.level)
        .min();
    if let Some(level) = matched {
        return (level, Reason::ContactSetting);
    }
    match policy.default_level(user, direction) {
        (level, true) => (level, Reason::UserDefault),
        (level, false) => (level, Reason::OrgDefault),
    }
}

/// True when the subject contains a confidential keyword as a whole word,
/// case-insensitively.
pub fn is_confidential(policy: &Policy, subject: Option<&str>) -> bool {
    let Some(subject) = subject else { return false };
    let subject = subject.to_lowercase();
    policy
        .organization
        .confidential_keywords
        .iter()
        .any(|k| contains_word(&subject, k))
}

fn contains_word(haystack: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let mut start = 0;
    while let Some(pos) = haystack[start..].find(word) {
        let at = start + pos;
        let end = at + word.len();
        let before = haystack[..at].chars().next_back();
        let after = haystack[end..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        if boundary(before) && boundary(after) {
            return true;
        }
        start = at + haystack[at..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// Everything rule 4 looks at, for one owner and one message.
pub(crate) struct LevelInputs<'a> {
    pub externals: &'a [&'a str],
    pub direction: Direction,
    /// The message date (Date header, else time of capture).
    pub date: i64,
    pub confidential: bool,
    pub override_level: Option<Level>,
}

/// Rule 4 for one owner: standing setting (a), confidential cap (b),
/// per-message override (c), activity and share_since (d). Used at capture
/// and, with the current policy, at read.
pub(crate) fn owner_level(policy: &Policy, user: &User, i: &LevelInputs<'_>) -> (Level, Reason) {
    let (mut level, mut reason) = match i.override_level {
        Some(o) => (o, Reason::Override),
        None => {
            let (l, r) = standing_level(policy, user, i.externals, i.direction);
            if i.confidential && l > Level::Metadata {
                (Level::Metadata, Reason::ConfidentialSubject)
            } else {
                (l, r)
            }
        }
    };
    if !policy.activity(user) {
        (level, reason) = (Level::Hidden, Reason::ActivityOff);
    } else if user.share_since.is_some_and(|since| i.date < since) {
        (level, reason) = (Level::Hidden, Reason::BeforeShareSince);
    }
    (level, reason)
}

/// Apply capture rules 1–4 for one owner (a login or an address) and one
/// message. `now` (Unix seconds) dates a message without a Date header.
pub fn decide(
    policy: &Policy,
    facts: &MessageFacts,
    owner: &str,
    direction: Direction,
    now: i64,
) -> Decision {
    let Some(user) = policy.find_user(owner) else {
        return Decision::Skip(Reason::NotAUser);
    };
    let participants = facts.participants();
    let externals = externals(policy, participants.iter().copied());
    if externals.is_empty() {
        return Decision::Skip(Reason::InternalOnly);
    }
    if all_excluded(policy, user, &externals) {
        return Decision::Skip(Reason::Excluded);
    }
    if user.status == UserStatus::Removed {
        return Decision::Skip(Reason::RemovedUser);
    }
    let confidential = is_confidential(policy, facts.subject.as_deref());
    let mut inputs = LevelInputs {
        externals: &externals,
        direction,
        date: facts.date.unwrap_or(now),
        confidential,
        override_level: None,
    };
    // Rule 4c: the sender's own header is an override; on inbound mail it
    // comes from outside and counts only when it lowers the level.
    let (standing, _) = owner_level(policy, user, &inputs);
    let (override_level, header_reason) = match (facts.share_header, direction) {
        (Some(h), Direction::Outbound) => (Some(h), Reason::Override),
        (Some(h), Direction::Inbound) if h < standing => (Some(h), Reason::InboundHeaderLowered),
        _ => (None, Reason::Override),
    };
    inputs.override_level = override_level;
    let (level, mut reason) = owner_level(policy, user, &inputs);
    if reason == Reason::Override {
        reason = header_reason;
    }
    Decision::Capture(OwnerCopy {
        user: user.address.clone(),
        direction,
        level,
        reason,
        override_level,
    })
}

fn union_mailboxes(into: &mut Vec<Mailbox>, more: impl IntoIterator<Item = Mailbox>) {
    let mut seen: HashSet<String> = into.iter().map(|m| m.address.clone()).collect();
    for m in more {
        if seen.insert(m.address.clone()) {
            into.push(m);
        }
    }
    into.sort_by(|a, b| a.address.cmp(&b.address).then(a.name.cmp(&b.name)));
}

/// Merge one owner's copy into the record for the same Message-ID (rule 5).
///
/// `existing` is the stored record, if any; `contacts` the timelines the
/// message links to (from `plan_contacts`); `now` dates a message without a
/// Date header; `content_available` says whether the caller holds the
/// message's bodies (a header-only capture does not).
///
/// The result holds no field above its ceiling. `stored` is the highest level
/// whose fields are present: when it is `Full` and `content` is `None`, the
/// caller fills `content` from the message it holds. The merge is
/// commutative: owners' copies arriving in any order give the same record.
pub fn merge(
    policy: &Policy,
    existing: Option<Record>,
    facts: &MessageFacts,
    copy: OwnerCopy,
    contacts: &[String],
    now: i64,
    content_available: bool,
) -> Record {
    let date = facts.date.unwrap_or(now);
    let mut rec = existing.unwrap_or_else(|| Record {
        id: message_key(&facts.message_id),
        message_id: facts.message_id.clone(),
        thread_id: thread_id(facts),
        date,
        direction: copy.direction,
        from: None,
        sender: None,
        to: Vec::new(),
        cc: Vec::new(),
        bcc: Vec::new(),
        size: 0,
        attachment_count: 0,
        automated: false,
        confidential: false,
        in_reply_to: Vec::new(),
        references: Vec::new(),
        owners: Vec::new(),
        grants: Vec::new(),
        contacts: Vec::new(),
        stored: Level::Hidden,
        subject: None,
        content: None,
    });

    // Metadata: fill what is missing, combine what differs between copies
    // (one copy may know the envelope's blind recipients, another not).
    if rec.message_id.is_empty() {
        // A hidden shell (see `Record::truncate_to`): metadata comes back.
        rec.message_id = facts.message_id.clone();
        rec.thread_id = thread_id(facts);
        rec.date = date;
    }
    rec.date = rec.date.min(date);
    if rec.from.is_none() {
        rec.from = facts.from.first().cloned();
    }
    if rec.sender.is_none() {
        rec.sender = facts.sender.clone();
    }
    if rec.to.is_empty() {
        rec.to = facts.to.clone();
    }
    if rec.cc.is_empty() {
        rec.cc = facts.cc.clone();
    }
    union_mailboxes(&mut rec.bcc, facts.blind_recipients());
    if rec.in_reply_to.is_empty() {
        rec.in_reply_to = facts.in_reply_to.clone();
    }
    if rec.references.is_empty() {
        rec.references = facts.references.clone();
    }
    rec.size = rec.size.max(facts.size);
    rec.attachment_count = rec.attachment_count.max(facts.attachment_count);
    rec.automated |= facts.automated;
    rec.confidential |= is_confidential(policy, facts.subject.as_deref());
    for c in contacts {
        if !rec.contacts.contains(c) {
            rec.contacts.push(c.clone());
        }
    }
    rec.contacts.sort();

    // Owners: one copy per user; the same owner seen twice keeps the higher
    // level and the lower override (both commutative). A hidden copy with no
    // override shares nothing and restricts nothing: it is not recorded.
    let void = copy.level == Level::Hidden && copy.override_level.is_none();
    match rec.owners.iter_mut().find(|o| o.user == copy.user) {
        _ if void => {}
        Some(o) => {
            if copy.level > o.level {
                o.level = copy.level;
                o.reason = copy.reason;
            }
            o.direction = o.direction.max(copy.direction);
            o.override_level = match (o.override_level, copy.override_level) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        None => rec.owners.push(copy),
    }
    rec.owners.sort_by(|a, b| a.user.cmp(&b.user));
    rec.direction = rec
        .owners
        .iter()
        .map(|o| o.direction)
        .max()
        .unwrap_or(Direction::Inbound);

    // The facts in hand carry the subject; bodies only when the caller has them.
    let available = if content_available || rec.content.is_some() {
        Level::Full
    } else {
        Level::Subject
    };
    settle(&mut rec, available, facts.subject.as_deref());
    rec
}

/// Bring the stored fields in line with the ceiling: drop what is above it,
/// fill the subject when the ceiling allows it. Content is filled by the
/// caller (see `merge`).
/// `available` is the highest level whose fields the caller can supply.
pub(crate) fn settle(rec: &mut Record, available: Level, subject: Option<&str>) {
    let target = rec.ceiling().min(available);
    if target < Level::Full {
        rec.content = None;
    }
    rec.truncate_to(target);
    if target >= Level::Subject && rec.subject.is_none() {
        rec.subject = subject.map(str::to_string);
    }
    rec.stored = target;
}

/// Set (or clear, with `None`) one owner's per-message override, as the
/// API's share action does (rule 4c / read rule 5). Lowering drops the stored
/// fields above the new ceiling; raising shows only what is stored until a
/// later capture fills in the rest. Returns false when `owner` is not an
/// owner of the record.
pub fn set_override(policy: &Policy, rec: &mut Record, owner: &str, level: Option<Level>) -> bool {
    let Some(i) = rec.owners.iter().position(|o| o.user == owner) else {
        return false;
    };
    rec.owners[i].override_level = level;
    let (l, r) = current_level(policy, rec, &rec.owners[i]);
    rec.owners[i].level = l;
    rec.owners[i].reason = r;
    // Nothing new is in hand: at most what is stored already.
    let stored = rec.stored;
    settle(rec, stored, None);
    true
}

/// An owner's level for a stored record under the policy in force now (read
/// rule 3): rule 4 recomputed from the record's fields. An owner no longer in
/// the policy counts as hidden (fail closed); a removed owner's copies stay
/// as their settings say.
pub(crate) fn current_level(policy: &Policy, rec: &Record, copy: &OwnerCopy) -> (Level, Reason) {
    let Some(user) = policy.user_by_address(&copy.user) else {
        return (Level::Hidden, Reason::NotAUser);
    };
    let externals = externals(policy, rec.participants());
    if externals.is_empty() {
        return (Level::Hidden, Reason::InternalOnly);
    }
    if all_excluded(policy, user, &externals) {
        return (Level::Hidden, Reason::Excluded);
    }
    owner_level(
        policy,
        user,
        &LevelInputs {
            externals: &externals,
            direction: copy.direction,
            date: rec.date,
            confidential: rec.confidential,
            override_level: copy.override_level,
        },
    )
}
