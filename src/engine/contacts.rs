//! Contact resolution: which timelines a message belongs to, and which
//! contacts it creates (DESIGN §3 "Contacts").

use super::facts::{domain_of, local_part_of, MessageFacts};
use super::level::Direction;
use super::policy::{AutoCreate, ContactKind, Policy};
use super::{org_contact_id, person_contact_id};
use std::collections::HashSet;

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

/// True when the local part (before any `+tag`) is impersonal (noreply, support, …).
pub fn is_impersonal(policy: &Policy, address: &str) -> bool {
    let local = local_part_of(address);
    let local = local.split_once('+').map_or(local, |(l, _)| l);
    policy.organization.impersonal_localparts.contains(local)
}

/// True when the domain (or a parent domain) is a personal mail provider.
pub fn is_personal_domain(policy: &Policy, domain: &str) -> bool {
    let mut d = domain;
    loop {
        if policy.organization.personal_domains.contains(d) {
            return true;
        }
        match d.split_once('.') {
            Some((_, rest)) if rest.contains('.') => d = rest,
            _ => return false,
        }
    }
}

/// How many header addresses of one message are resolved to contacts: a
/// message to thousands of recipients (a mass mailing, or abuse) links and
/// creates contacts for the first ones only, bounding the timeline entries
/// and contacts one message can add.
pub const MAX_ADDRESSES_PER_MESSAGE: usize = 200;

/// Resolve the message's external participants to contacts' timelines, and
/// plan the contacts auto-creation adds (DESIGN §3 "Contacts").
///
/// Bcc and envelope-only recipients never link nor create; excluded and
/// internal addresses are skipped; automated mail links to existing contacts
/// only; tombstoned contacts are neither linked nor re-created.
pub fn plan_contacts(
    policy: &Policy,
    facts: &MessageFacts,
    direction: Direction,
    directory: &dyn Directory,
) -> ContactPlan {
    let may_create = !facts.automated
        && match policy.organization.auto_create_contacts {
            AutoCreate::Sent => direction == Direction::Outbound,
            AutoCreate::All => true,
            AutoCreate::None => false,
        };
    let mut plan = ContactPlan::default();
    let visible = facts
        .from
        .iter()
        .chain(facts.sender.iter())
        .chain(facts.to.iter())
        .chain(facts.cc.iter());
    let mut seen: HashSet<&str> = HashSet::new();
    for m in visible.take(MAX_ADDRESSES_PER_MESSAGE) {
        let addr = m.address.as_str();
        let domain = domain_of(addr);
        if domain.is_empty()
            || local_part_of(addr).is_empty()
            || !seen.insert(addr)
            || policy.is_internal(addr)
            || policy.organization.exclude.iter().any(|p| p.matches(addr))
        {
            continue;
        }
        let alive = |id: &str| directory.contact_state(id) != ContactState::Tombstoned;

        // A contact of the policy owns the address: its timeline, rolled up
        // to its organization (explicit, else by domain).
        if let Some(i) = policy.contact_for_address(addr) {
            let c = &policy.contacts[i];
            plan.link(&c.id, alive(&c.id));
            let org = c.organization.or_else(|| {
                (c.kind == ContactKind::Person)
                    .then(|| policy.org_for_domain(domain))
                    .flatten()
            });
            if let Some(o) = org.filter(|&o| o != i) {
                let id = &policy.contacts[o].id;
                plan.link(id, alive(id));
            }
            continue;
        }

        // The organization: the policy's owner of the domain, else an
        // auto-created one (never for personal providers).
        let org_id = match policy.org_for_domain(domain) {
            Some(o) => Some(policy.contacts[o].id.clone()).filter(|id| alive(id)),
            None if is_personal_domain(policy, domain) => None,
            None => {
                let id = org_contact_id(domain);
                match directory.contact_state(&id) {
                    ContactState::Present => Some(id),
                    ContactState::Tombstoned => None,
                    ContactState::Absent if may_create => {
                        plan.create_once(NewContact {
                            id: id.clone(),
                            kind: ContactKind::Organization,
                            name: domain.to_string(),
                            addresses: Vec::new(),
                            domains: vec![domain.to_string()],
                            organization_id: None,
                        });
                        Some(id)
                    }
                    ContactState::Absent => None,
                }
            }
        };

        // The person: existing, or created unless impersonal.
        let pid = person_contact_id(addr);
        match directory.contact_state(&pid) {
            ContactState::Present => plan.link(&pid, true),
            ContactState::Tombstoned => {}
            ContactState::Absent if may_create && !is_impersonal(policy, addr) => {
                plan.create_once(NewContact {
                    id: pid.clone(),
                    kind: ContactKind::Person,
                    name: m.name.clone().unwrap_or_else(|| addr.to_string()),
                    addresses: vec![addr.to_string()],
                    domains: Vec::new(),
                    organization_id: org_id.clone(),
                });
                plan.link(&pid, true);
            }
            ContactState::Absent => {}
        }
        if let Some(id) = org_id {
            plan.link(&id, true);
        }
    }
    plan.link.sort();
    plan.link.dedup();
    plan.create.sort_by(|a, b| a.id.cmp(&b.id));
    plan.create.dedup_by(|a, b| a.id == b.id);
    plan
}

impl ContactPlan {
    /// Deduplicated once at the end of `plan_contacts`.
    fn link(&mut self, id: &str, alive: bool) {
        if alive {
            self.link.push(id.to_string());
        }
    }

    /// Deduplicated once at the end of `plan_contacts`.
    fn create_once(&mut self, c: NewContact) {
        self.create.push(c);
    }
}
