//! The sharing engine: pure, synchronous decisions about what is stored
//! (`capture`) and what each viewer sees (`read`), plus contact resolution
//! (`contacts`) and threading. No I/O, no clock (`now` is an argument), no
//! tokio, no sled: everything here is decided and tested without a socket.
//!
//! Invariants (property-tested in `tests`):
//! - a record never holds a field above its ceiling;
//! - a non-participant never sees more than the ceiling, the highest current
//!   owner level, or the message's restriction;
//! - the order in which owners' captures arrive does not change the record.

pub mod capture;
pub mod contacts;
pub mod facts;
pub mod level;
pub mod policy;
pub mod read;

pub use capture::{decide, is_confidential, merge, set_override, Decision};
pub use contacts::{plan_contacts, ContactPlan, ContactState, Directory, NewContact};
pub use facts::{
    AttachmentContent, BlobRef, Content, Grant, Mailbox, MessageFacts, OwnerCopy, Reason, Record,
    StoredAttachment, StoredContent,
};
pub use level::{Direction, Level};
pub use policy::Policy;
pub use read::{can_open_contact, visible, View, Viewer};

use sha2::{Digest, Sha256};

fn short_hash(tag: &str, key: &str, hex_len: usize) -> String {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let mut s = hex::encode(h.finalize());
    s.truncate(hex_len);
    s
}

/// The stable id of a stored message, from its Message-ID.
pub fn message_key(message_id: &str) -> String {
    short_hash("msg", message_id, 24)
}

/// The thread id: the hash of the thread's root, the first References entry,
/// else In-Reply-To, else the message's own id. Needs no lookup, so it is the
/// same whatever order the messages of a thread arrive in.
pub fn thread_id(facts: &MessageFacts) -> String {
    let root = facts
        .references
        .first()
        .or(facts.in_reply_to.first())
        .unwrap_or(&facts.message_id);
    short_hash("thread", root, 24)
}

/// The id of a contact declared in the policy, from its name.
pub fn policy_contact_id(name: &str) -> String {
    short_hash("contact", &name.trim().to_lowercase(), 16)
}

/// The id of an auto-created person contact, from its address.
pub fn person_contact_id(address: &str) -> String {
    short_hash("person", address, 16)
}

/// The id of an auto-created organization contact, from its domain.
pub fn org_contact_id(domain: &str) -> String {
    short_hash("org", domain, 16)
}

#[cfg(test)]
mod tests;
