//! Helpers shared by the store's integration tests: a small policy and mail
//! builders. The store runs the real engine (`plan_contacts`, `merge`).
#![allow(dead_code)]

use mailshare::engine::policy::{
    AutoCreate, ContactsMode, Defaults, Organization, User, UserStatus,
};
use mailshare::engine::{
    self, AttachmentContent, Content, Direction, Level, Mailbox, MessageFacts, OwnerCopy, Policy,
    Reason,
};
use mailshare::store::{CaptureInput, StoreOptions};
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

/// Options with a small cache.
pub fn options() -> StoreOptions {
    StoreOptions {
        cache_capacity_bytes: 8 * 1024 * 1024,
        max_batch_delay: Duration::ZERO,
    }
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
            durability: Default::default(),
            prewritten: None,
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
