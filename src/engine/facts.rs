//! Plain data the engine decides on (`MessageFacts`, extracted by `mail`) and the
//! data the store keeps (`Record`). No I/O, no borrowing from the raw message:
//! these are small owned values; bodies and attachments travel separately
//! (`mail::Content`) and are stored as content-addressed blobs referenced by
//! [`BlobRef`].

use super::level::{Direction, Level};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// One address with its display name. `address` is trimmed and lowercased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mailbox {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Mailbox {
    pub fn new(address: &str, name: Option<&str>) -> Self {
        Mailbox {
            address: address.trim().to_ascii_lowercase(),
            name: name
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        }
    }

    /// The part after the last `@`, or "" when there is none.
    pub fn domain(&self) -> &str {
        domain_of(&self.address)
    }
}

/// The part after the last `@` of an address, or "" when there is none.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// The part before the last `@` of an address (the whole string when there is none).
pub fn local_part_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(l, _)| l).unwrap_or(address)
}

/// What the engine needs to know about one message, extracted from its headers
/// (and MIME structure, for the attachment count) by `mail::parse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageFacts {
    /// Message-ID without angle brackets. Derived from a content hash when the
    /// message has none (`message_id_derived` is then true).
    pub message_id: String,
    pub message_id_derived: bool,
    /// Unix seconds from the Date header, if it parsed.
    pub date: Option<i64>,
    pub from: Vec<Mailbox>,
    pub sender: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    /// SMTP envelope recipients (lowercased), when the message came through SMTP.
    /// Those not in to/cc/bcc are blind copies.
    pub envelope_recipients: Vec<String>,
    pub subject: Option<String>,
    /// Message-IDs without angle brackets.
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// Size of the raw message in bytes.
    pub size: u64,
    pub attachment_count: u32,
    /// Auto-Submitted other than `no`, Precedence bulk/list/junk, List-Id or List-Unsubscribe.
    pub automated: bool,
    /// The `X-Mailshare-Share` header, when present and valid.
    pub share_header: Option<Level>,
}

impl MessageFacts {
    /// Every participant address (from, sender, to, cc, bcc, envelope),
    /// deduplicated, in that order. Linear in the number of addresses.
    pub fn participants(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.from
            .iter()
            .chain(self.sender.iter())
            .chain(self.to.iter())
            .chain(self.cc.iter())
            .chain(self.bcc.iter())
            .map(|m| m.address.as_str())
            .chain(self.envelope_recipients.iter().map(String::as_str))
            .filter(|a| !a.is_empty() && seen.insert(*a))
            .collect()
    }

    /// Blind recipients: the bcc header plus envelope recipients that are in
    /// none of to/cc/bcc. Deduplicated, linear.
    pub fn blind_recipients(&self) -> Vec<Mailbox> {
        let mut seen: HashSet<&str> = self
            .to
            .iter()
            .chain(self.cc.iter())
            .map(|m| m.address.as_str())
            .collect();
        let mut out: Vec<Mailbox> = Vec::new();
        let mut bcc_seen = HashSet::new();
        for m in &self.bcc {
            if bcc_seen.insert(m.address.as_str()) {
                out.push(m.clone());
            }
        }
        seen.extend(bcc_seen);
        for r in &self.envelope_recipients {
            if !r.is_empty() && seen.insert(r.as_str()) {
                out.push(Mailbox::new(r, None));
            }
        }
        out
    }
}

/// The `full` part of a message as extracted by `mail`, borrowing from the
/// parsed message (no copies of bodies; decoded attachments are the parser's
/// own buffers). Handed to the store, which writes it only within the ceiling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content<'m> {
    pub text: Option<&'m str>,
    pub html: Option<&'m str>,
    pub attachments: Vec<AttachmentContent<'m>>,
}

/// One attachment's bytes (decoded) and description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentContent<'m> {
    pub name: Option<&'m str>,
    /// `type/subtype`, lowercase; `application/octet-stream` when unknown.
    pub content_type: String,
    pub bytes: &'m [u8],
}

/// A content-addressed blob: lowercase hex SHA-256 of the bytes, and their length.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    pub sha256: String,
    pub size: u64,
}

/// One stored attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAttachment {
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub blob: BlobRef,
}

/// The `full` part of a record: where the bodies and attachments are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContent {
    pub text: Option<BlobRef>,
    pub html: Option<BlobRef>,
    pub attachments: Vec<StoredAttachment>,
}

/// Why the engine decided what it decided (logged by callers, printed by ingest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The owner is not a user listed in the policy.
    NotAUser,
    /// Every participant is in the internal domains.
    InternalOnly,
    /// Every external participant matches an exclude pattern.
    Excluded,
    /// The owner's status is `removed`.
    RemovedUser,
    /// The owner's activity sharing is off.
    ActivityOff,
    /// The message is dated before the owner's `share_since`.
    BeforeShareSince,
    /// A per-message override (API, or the sender's X-Mailshare-Share header).
    Override,
    /// An inbound X-Mailshare-Share header that lowered the level.
    InboundHeaderLowered,
    /// The subject has a confidential keyword.
    ConfidentialSubject,
    /// The owner's setting for one of the contacts.
    ContactSetting,
    /// The owner's default for the direction.
    UserDefault,
    /// The organisation's default for the direction.
    OrgDefault,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAUser => "not-a-user",
            Reason::InternalOnly => "internal-only",
            Reason::Excluded => "excluded",
            Reason::RemovedUser => "removed-user",
            Reason::ActivityOff => "activity-off",
            Reason::BeforeShareSince => "before-share-since",
            Reason::Override => "override",
            Reason::InboundHeaderLowered => "inbound-header-lowered",
            Reason::ConfidentialSubject => "confidential-subject",
            Reason::ContactSetting => "contact-setting",
            Reason::UserDefault => "user-default",
            Reason::OrgDefault => "org-default",
        }
    }
}

/// One owner's copy of a message: through whose session it passed, and what
/// that owner shares of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerCopy {
    /// The owner's primary address (lowercase).
    pub user: String,
    pub direction: Direction,
    /// The owner's level at capture time (rule 4).
    pub level: Level,
    pub reason: Reason,
    /// A per-message override set by this owner (rule 4c). Part of the
    /// message's restriction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_level: Option<Level>,
}

/// A per-message grant to a named viewer (share with viewers, approved access request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub viewer: String,
    pub level: Level,
    pub by: String,
}

/// One stored message: one per Message-ID, owners merged. Fields above
/// `stored` are absent; `stored` never exceeds `ceiling()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Stable id (see `engine::message_key`), used in URLs.
    pub id: String,
    pub message_id: String,
    pub thread_id: String,
    /// Unix seconds: the Date header, else the time of first capture.
    pub date: i64,
    pub direction: Direction,
    pub from: Option<Mailbox>,
    pub sender: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    /// Blind recipients (bcc header and envelope-only recipients). Shown only
    /// to participants (see `engine::read`).
    pub bcc: Vec<Mailbox>,
    pub size: u64,
    pub attachment_count: u32,
    pub automated: bool,
    /// The subject had a confidential keyword at capture (kept even when the
    /// subject itself is not stored, because it caps the ceiling).
    pub confidential: bool,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub owners: Vec<OwnerCopy>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Contact ids whose timelines list this message.
    pub contacts: Vec<String>,
    /// The highest level whose fields are present in this record.
    pub stored: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<StoredContent>,
}

impl Record {
    /// The message's restriction: the lowest override set by any owner, or,
    /// where none set one, `metadata` for a confidential subject (rule 5).
    pub fn restriction(&self) -> Level {
        match self.owners.iter().filter_map(|o| o.override_level).min() {
            Some(l) => l,
            None if self.confidential => Level::Metadata,
            None => Level::Full,
        }
    }

    /// The ceiling: the highest owner level, capped by the restriction.
    pub fn ceiling(&self) -> Level {
        let best = self
            .owners
            .iter()
            .map(|o| o.level)
            .max()
            .unwrap_or(Level::Hidden);
        best.min(self.restriction())
    }

    /// True when no owner shares anything and none restricts: nothing of the
    /// message may be kept (the store deletes or skips such a record).
    pub fn is_void(&self) -> bool {
        self.owners.is_empty()
    }

    /// All participant addresses (including blind recipients).
    pub fn participants(&self) -> impl Iterator<Item = &str> {
        self.from
            .iter()
            .chain(self.sender.iter())
            .chain(self.to.iter())
            .chain(self.cc.iter())
            .chain(self.bcc.iter())
            .map(|m| m.address.as_str())
    }

    /// Drop every field above `level` (data minimisation when a ceiling falls).
    pub fn truncate_to(&mut self, level: Level) {
        if level < Level::Full {
            self.content = None;
        }
        if level < Level::Subject {
            self.subject = None;
        }
        if level == Level::Hidden {
            // Only the hashed key and the owners' choices (the restriction)
            // remain: not even the Message-ID is metadata we may keep.
            self.message_id.clear();
            self.thread_id.clear();
            self.date = 0;
            self.from = None;
            self.sender = None;
            self.to.clear();
            self.cc.clear();
            self.bcc.clear();
            self.size = 0;
            self.attachment_count = 0;
            self.in_reply_to.clear();
            self.references.clear();
            self.contacts.clear();
            self.grants.clear();
        }
        self.stored = self.stored.min(level);
    }
}
