//! Read rules 1–6 of DESIGN §3: the level one viewer sees of one record.

use super::facts::{Reason, Record};
use super::level::Level;
use super::policy::Policy;

/// Who is reading: a user's primary address. Admin tokens read `as` a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub user: String,
}

/// The level shown and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub level: Level,
    /// Owners listed to this viewer (those whose current level is not hidden;
    /// all owners for a participant).
    pub owners: Vec<String>,
    /// Blind recipients this viewer may see.
    pub bcc: Vec<String>,
}

/// The level `viewer` sees of `record` under the current policy.
pub fn visible(_policy: &Policy, _viewer: &Viewer, _record: &Record) -> View {
    View {
        level: Level::Hidden,
        owners: vec![],
        bcc: vec![],
    }
}

/// Whether the viewer may open a contact's timeline (read rule 4).
pub fn can_open_contact(_policy: &Policy, _viewer: &Viewer, _contact_id: &str) -> bool {
    false
}

#[allow(dead_code)]
fn _unused(_: Reason) {}
