//! Read rules 1–6 of DESIGN §3: the level one viewer sees of one record, and
//! which contacts' timelines a viewer may open.

use super::capture::current_level;
use super::facts::Record;
use super::level::Level;
use super::policy::{ContactsMode, Policy, User, UserStatus};

/// Who is reading: a user's primary address. An admin token reads `as` a
/// user and so is a `Viewer` too (rule 6: never above that user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub user: String,
}

impl Viewer {
    pub fn new(user: &str) -> Self {
        Viewer {
            user: user.trim().to_ascii_lowercase(),
        }
    }
}

/// What one viewer may see of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// Never above the record's ceiling nor above what is stored.
    pub level: Level,
    /// Owners listed to this viewer: those whose current level is not hidden,
    /// plus the viewer when an owner.
    pub owners: Vec<String>,
    /// Blind recipients this viewer may see: all of them for the sender, the
    /// viewer's own addresses for a blind recipient, none for others.
    pub bcc: Vec<String>,
    /// The viewer is a participant or an owner (rule 2).
    pub participant: bool,
}

impl View {
    fn hidden() -> Self {
        View {
            level: Level::Hidden,
            owners: Vec::new(),
            bcc: Vec::new(),
            participant: false,
        }
    }
}

/// The active user behind a viewer, or `None` (unknown or removed: rule 1).
pub fn active_user<'p>(policy: &'p Policy, viewer: &Viewer) -> Option<&'p User> {
    policy
        .user_by_address(&viewer.user)
        .filter(|u| u.status == UserStatus::Active)
}

/// The view `viewer` gets of `record` under the current policy.
pub fn visible(policy: &Policy, viewer: &Viewer, record: &Record) -> View {
    // Rule 1: a removed (or unknown) user sees nothing.
    let Some(user) = active_user(policy, viewer) else {
        return View::hidden();
    };
    let ceiling = record.ceiling().min(record.stored);
    if ceiling == Level::Hidden {
        return View::hidden();
    }
    let own = |a: &str| user.has_address(a);
    let is_owner = record.owners.iter().any(|o| o.user == user.address);
    let is_sender = record
        .from
        .iter()
        .chain(record.sender.iter())
        .any(|m| own(&m.address))
        || record
            .owners
            .iter()
            .any(|o| o.user == user.address && o.direction == super::Direction::Outbound);
    let participant = is_owner || record.participants().any(own);

    let current: Vec<(&str, Level)> = record
        .owners
        .iter()
        .map(|o| (o.user.as_str(), current_level(policy, record, o).0))
        .collect();
    let owners: Vec<String> = current
        .iter()
        .filter(|(u, l)| *l > Level::Hidden || *u == user.address)
        .map(|(u, _)| u.to_string())
        .collect();

    if participant {
        // Rule 2: one's own mail, at the ceiling, with one's own blind copies.
        let bcc = record
            .bcc
            .iter()
            .filter(|m| is_sender || own(&m.address))
            .map(|m| m.address.clone())
            .collect();
        return View {
            level: ceiling,
            owners,
            bcc,
            participant: true,
        };
    }

    // Rule 3: min(ceiling, highest current owner level); the ceiling already
    // carries the restriction.
    let shared = current
        .iter()
        .map(|&(_, l)| l)
        .max()
        .unwrap_or(Level::Hidden);
    // Rule 4: in buckets mode the message must be on a timeline the viewer may open.
    let reachable = policy.organization.contacts == ContactsMode::Team
        || record
            .contacts
            .iter()
            .any(|c| can_open_contact(policy, viewer, &[c.as_str()]));
    let mut level = if reachable {
        ceiling.min(shared)
    } else {
        Level::Hidden
    };
    // Rule 5: a grant to this viewer, never above the ceiling.
    if let Some(g) = record
        .grants
        .iter()
        .filter(|g| g.viewer == user.address)
        .map(|g| g.level)
        .max()
    {
        level = level.max(g.min(ceiling));
    }
    if level == Level::Hidden {
        return View::hidden();
    }
    View {
        level,
        owners,
        bcc: Vec::new(),
        participant: false,
    }
}

/// Whether the viewer may open the timeline of a contact known by any of
/// `ids` (a contact's own id and, for a person, its organization's: an
/// organization in a bucket brings its people along). Read rule 4.
pub fn can_open_contact(policy: &Policy, viewer: &Viewer, ids: &[&str]) -> bool {
    let Some(user) = active_user(policy, viewer) else {
        return false;
    };
    match policy.organization.contacts {
        ContactsMode::Team => true,
        ContactsMode::Buckets => policy.buckets.iter().any(|b| {
            let allowed = b.owner == user.address
                || b.members
                    .iter()
                    .any(|m| m.user == user.address && m.view_conversations);
            allowed
                && b.contacts
                    .iter()
                    .any(|&i| ids.contains(&policy.contacts[i].id.as_str()))
        }),
    }
}
