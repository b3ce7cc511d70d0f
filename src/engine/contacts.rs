//! Contact resolution: which timelines a message belongs to, and which
//! contacts it creates (DESIGN §3 "Contacts").

use super::facts::MessageFacts;
use super::level::Direction;
use super::policy::{ContactKind, Policy};

/// What the store knows of an auto-created contact id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactState {
    Absent,
    Present,
    /// Deleted: never re-created by later mail.
    Tombstoned,
}

/// The store's side of contact resolution (the engine never touches the store).
pub trait Directory {
    fn contact_state(&self, id: &str) -> ContactState;
}

/// A contact to create in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewContact {
    pub id: String,
    pub kind: ContactKind,
    pub name: String,
    pub addresses: Vec<String>,
    pub domains: Vec<String>,
    pub organization_id: Option<String>,
}

/// Timelines to link the message to, and contacts to create first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactPlan {
    /// Contact ids, deduplicated, sorted.
    pub link: Vec<String>,
    pub create: Vec<NewContact>,
}

/// Resolve the message's external participants (never bcc) to contacts.
pub fn plan_contacts(
    _policy: &Policy,
    _facts: &MessageFacts,
    _direction: Direction,
    _directory: &dyn Directory,
) -> ContactPlan {
    ContactPlan::default()
}
