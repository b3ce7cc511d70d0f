//! Helpers shared by the store's integration tests: a small policy, mail
//! builders, and local stand-ins for the engine's contact planner and merge
//! (the store is tested on its own; the engine's rules have their own tests).
//! The stand-ins follow the engine's documented contracts closely enough for
//! what the store relies on: `merge` never returns a field above the ceiling,
//! sets `stored`, and asks for content with `stored == Full` and no content.
#![allow(dead_code)]

use mailshare::engine::policy::{
    AutoCreate, ContactKind, ContactsMode, Defaults, Organization, User, UserStatus,
};
use mailshare::engine::{
    self, AttachmentContent, ContactPlan, ContactState, Content, Direction, Directory, Level,
    Mailbox, MessageFacts, NewContact, OwnerCopy, Policy, Reason, Record,
};
use mailshare::store::{CaptureInput, EngineRules, StoreOptions};
use std::collections::HashSet;
use std::time::Duration;

pub const ALICE: &str = "alice@acme.example";
pub const BOB: &str = "bob@acme.example";

fn user(address: &str) -> User {
    User {
        address: address.to_string(),
        aliases: vec![],
        logins: vec![],
        status: UserStatus::Active,
        activity: None,
        inbound: None,
        outbound: None,
        share_since: None,
        exclude: vec![],
        token_sha256: None,
        contacts: vec![],
    }
}

/// Acme with two users, auto-creating contacts from all mail.
pub fn policy() -> Policy {
    Policy::build(
        Organization {
            name: "Acme".into(),
            internal_domains: vec!["acme.example".into()],
            contacts: ContactsMode::Team,
            auto_create_contacts: AutoCreate::All,
            exclude: vec![],
            confidential_keywords: vec!["confidential".into()],
            impersonal_localparts: HashSet::new(),
            personal_domains: ["gmail.com".to_string()].into_iter().collect(),
        },
        Defaults::default(),
        vec![user(ALICE), user(BOB)],
        vec![],
        vec![],
    )
    .expect("test policy builds")
}

/// Options with the local rules and a small cache.
pub fn options() -> StoreOptions {
    StoreOptions {
        cache_capacity_bytes: 8 * 1024 * 1024,
        max_batch_delay: Duration::ZERO,
        rules: EngineRules {
            plan_contacts: test_plan_contacts,
            merge: test_merge,
        },
    }
}

/// Stand-in for `engine::plan_contacts`: every external from/to/cc address is
/// a person contact, its non-personal domain an organization; tombstoned ids
/// are neither linked nor created; automated mail creates nothing.
pub fn test_plan_contacts(
    policy: &Policy,
    facts: &MessageFacts,
    _direction: Direction,
    dir: &dyn Directory,
) -> ContactPlan {
    let mut plan = ContactPlan::default();
    let addrs = facts.from.iter().chain(&facts.to).chain(&facts.cc);
    for m in addrs {
        if policy.is_internal(&m.address) {
            continue;
        }
        let domain = m.domain().to_string();
        let org = (!policy.organization.personal_domains.contains(&domain))
            .then(|| engine::org_contact_id(&domain));
        let mut org_ok = None;
        if let Some(org_id) = &org {
            match dir.contact_state(org_id) {
                ContactState::Tombstoned => {}
                state => {
                    if state == ContactState::Absent
                        && !facts.automated
                        && !plan.create.iter().any(|c| &c.id == org_id)
                    {
                        plan.create.push(NewContact {
                            id: org_id.clone(),
                            kind: ContactKind::Organization,
                            name: domain.clone(),
                            addresses: vec![],
                            domains: vec![domain.clone()],
                            organization_id: None,
                        });
                    }
                    if state == ContactState::Present || !facts.automated {
                        plan.link.push(org_id.clone());
                        org_ok = Some(org_id.clone());
                    }
                }
            }
        }
        let id = engine::person_contact_id(&m.address);
        match dir.contact_state(&id) {
            ContactState::Tombstoned => {}
            ContactState::Present => plan.link.push(id),
            ContactState::Absent if !facts.automated => {
                if !plan.create.iter().any(|c| c.id == id) {
                    plan.create.push(NewContact {
                        id: id.clone(),
                        kind: ContactKind::Person,
                        name: m.name.clone().unwrap_or_else(|| m.address.clone()),
                        addresses: vec![m.address.clone()],
                        domains: vec![],
                        organization_id: org_ok.clone(),
                    });
                }
                plan.link.push(id);
            }
            ContactState::Absent => {}
        }
    }
    plan.link.sort();
    plan.link.dedup();
    plan
}

/// Stand-in for `engine::merge` (rule 5): owners merged (one copy per user,
/// the newest wins), ceiling = max owner level capped by the restriction,
/// fields rebuilt from the facts and truncated to the ceiling; `stored` is
/// `Full` only when content is present or available.
pub fn test_merge(
    existing: Option<Record>,
    facts: &MessageFacts,
    copy: OwnerCopy,
    contacts: &[String],
    now: i64,
    content_available: bool,
) -> Record {
    let (mut owners, mut links, grants, content, date) = match existing {
        Some(r) => (r.owners, r.contacts, r.grants, r.content, r.date),
        None => (vec![], vec![], vec![], None, facts.date.unwrap_or(now)),
    };
    owners.retain(|o| o.user != copy.user);
    owners.push(copy.clone());
    owners.sort_by(|a, b| a.user.cmp(&b.user));
    links.extend(contacts.iter().cloned());
    links.sort();
    links.dedup();
    let mut r = Record {
        id: engine::message_key(&facts.message_id),
        message_id: facts.message_id.clone(),
        thread_id: engine::thread_id(facts),
        date,
        direction: owners
            .first()
            .map(|o| o.direction)
            .unwrap_or(copy.direction),
        from: facts.from.first().cloned(),
        sender: facts.sender.clone(),
        to: facts.to.clone(),
        cc: facts.cc.clone(),
        bcc: facts.blind_recipients(),
        size: facts.size,
        attachment_count: facts.attachment_count,
        automated: facts.automated,
        confidential: facts
            .subject
            .as_deref()
            .is_some_and(|s| s.to_lowercase().contains("confidential")),
        in_reply_to: facts.in_reply_to.clone(),
        references: facts.references.clone(),
        owners,
        grants,
        contacts: links,
        stored: Level::Full,
        subject: facts.subject.clone(),
        content,
    };
    let ceiling = r.ceiling();
    if ceiling == Level::Full && r.content.is_none() && !content_available {
        r.stored = Level::Subject;
    }
    r.truncate_to(ceiling);
    r
}

/// An owner's copy at a level.
pub fn copy(user: &str, direction: Direction, level: Level) -> OwnerCopy {
    OwnerCopy {
        user: user.to_string(),
        direction,
        level,
        reason: Reason::UserDefault,
        override_level: None,
    }
}

/// A copy carrying a per-message override (the restriction).
pub fn override_copy(user: &str, direction: Direction, level: Level) -> OwnerCopy {
    OwnerCopy {
        override_level: Some(level),
        reason: Reason::Override,
        ..copy(user, direction, level)
    }
}

/// A message with owned bodies that [`Mail::content`] borrows from.
#[derive(Clone, Debug)]
pub struct Mail {
    pub facts: MessageFacts,
    pub text: String,
    pub attachments: Vec<(String, Vec<u8>)>,
}

impl Mail {
    /// From alice to `to`, dated `date`.
    pub fn new(message_id: &str, date: i64, to: &str, subject: &str) -> Mail {
        Mail {
            facts: MessageFacts {
                message_id: message_id.to_string(),
                date: Some(date),
                from: vec![Mailbox::new(ALICE, Some("Alice"))],
                to: vec![Mailbox::new(to, None)],
                subject: Some(subject.to_string()),
                size: 1000,
                ..MessageFacts::default()
            },
            text: format!("body of {message_id}"),
            attachments: vec![],
        }
    }

    pub fn attach(mut self, name: &str, bytes: Vec<u8>) -> Mail {
        self.facts.attachment_count += 1;
        self.attachments.push((name.to_string(), bytes));
        self
    }

    pub fn reply_to(mut self, parent: &MessageFacts) -> Mail {
        let mut refs = parent.references.clone();
        refs.push(parent.message_id.clone());
        self.facts.in_reply_to = vec![parent.message_id.clone()];
        self.facts.references = refs;
        self
    }

    pub fn content(&self) -> Content<'_> {
        Content {
            text: Some(&self.text),
            html: None,
            attachments: self
                .attachments
                .iter()
                .map(|(n, b)| AttachmentContent {
                    name: Some(n),
                    content_type: "application/octet-stream".into(),
                    bytes: b,
                })
                .collect(),
        }
    }

    pub fn id(&self) -> String {
        engine::message_key(&self.facts.message_id)
    }

    /// A capture of this mail by `copy`, with content.
    pub fn input<'a>(&'a self, content: &'a Content<'a>, copy: OwnerCopy) -> CaptureInput<'a> {
        CaptureInput {
            facts: &self.facts,
            copy,
            content: Some(content),
            now: 1_800_000_000,
        }
    }
}

/// Every blob file (by name) under `<store>/blobs`.
pub fn blob_files(store_dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(store_dir.join("blobs")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}
