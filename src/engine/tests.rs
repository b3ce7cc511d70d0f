//! Named tests for every rule of DESIGN §3 (capture 1–5, read 1–6, contacts,
//! threads) and the property test over random policies and messages.

use super::policy::*;
use super::*;
use std::collections::HashSet;

// ---------------------------------------------------------------- fixtures

const NOW: i64 = 1_800_000_000;

fn user(address: &str) -> User {
    User {
        address: address.into(),
        aliases: vec![],
        logins: vec![address.split('@').next().unwrap().into()],
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

fn org() -> Organization {
    Organization {
        name: "Acme".into(),
        internal_domains: vec!["acme.example".into()],
        contacts: ContactsMode::Team,
        auto_create_contacts: AutoCreate::Sent,
        exclude: vec![Pattern::parse("*@bank.example").unwrap()],
        confidential_keywords: DEFAULT_CONFIDENTIAL_KEYWORDS
            .iter()
            .map(|k| k.to_lowercase())
            .collect(),
        impersonal_localparts: DEFAULT_IMPERSONAL_LOCALPARTS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        personal_domains: DEFAULT_PERSONAL_DOMAINS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

fn contact(name: &str, kind: ContactKind, domains: &[&str], addresses: &[&str]) -> PolicyContact {
    PolicyContact {
        id: policy_contact_id(name),
        name: name.into(),
        kind,
        domains: domains.iter().map(|s| s.to_string()).collect(),
        addresses: addresses.iter().map(|s| s.to_string()).collect(),
        primary_addresses: vec![],
        organization: None,
    }
}

/// alice, bob, carol at acme.example; Client A Ltd (org, client-a.example)
/// with Bob Stone (person) in it; defaults inbound subject, outbound full.
fn policy_with(
    f: impl FnOnce(&mut Organization, &mut Vec<User>, &mut Vec<PolicyContact>, &mut Vec<Bucket>),
) -> Policy {
    let mut o = org();
    let mut users = vec![
        user("alice@acme.example"),
        user("bob@acme.example"),
        user("carol@acme.example"),
    ];
    let mut client = contact(
        "Client A Ltd",
        ContactKind::Organization,
        &["client-a.example"],
        &["office@client-a.example", "bob@client-a.example"],
    );
    client.primary_addresses = vec!["office@client-a.example".into()];
    let mut stone = contact(
        "Bob Stone",
        ContactKind::Person,
        &[],
        &["bob@client-a.example", "bob.stone@gmail.com"],
    );
    stone.organization = Some(0);
    let mut contacts = vec![client, stone];
    let mut buckets = vec![];
    f(&mut o, &mut users, &mut contacts, &mut buckets);
    Policy::build(
        o,
        Defaults {
            activity: true,
            inbound: Level::Subject,
            outbound: Level::Full,
        },
        users,
        contacts,
        buckets,
    )
    .expect("test policy builds")
}

fn policy() -> Policy {
    policy_with(|_, _, _, _| {})
}

fn mb(a: &str) -> Mailbox {
    Mailbox::new(a, None)
}

fn msg(id: &str, from: &str, to: &[&str], subject: &str) -> MessageFacts {
    MessageFacts {
        message_id: id.into(),
        date: Some(NOW - 3600),
        from: vec![mb(from)],
        to: to.iter().map(|a| mb(a)).collect(),
        subject: Some(subject.into()),
        size: 1234,
        ..Default::default()
    }
}

fn copy_of(d: Decision) -> OwnerCopy {
    match d {
        Decision::Capture(c) => c,
        Decision::Skip(r) => panic!("expected a capture, got skip {r:?}"),
    }
}

fn level_of(p: &Policy, f: &MessageFacts, owner: &str, dir: Direction) -> Level {
    copy_of(decide(p, f, owner, dir, NOW)).level
}

/// Capture `f` for each (owner, direction) in turn, content available.
fn record(p: &Policy, f: &MessageFacts, owners: &[(&str, Direction)]) -> Record {
    let mut rec = None;
    for &(o, d) in owners {
        if let Decision::Capture(c) = decide(p, f, o, d, NOW) {
            rec = Some(merge(p, rec, f, c, &[], NOW, true));
        }
    }
    rec.expect("something was captured")
}

fn sees(p: &Policy, viewer: &str, r: &Record) -> Level {
    visible(p, &Viewer::new(viewer), r).level
}

const IN: Direction = Direction::Inbound;
const OUT: Direction = Direction::Outbound;

// ---------------------------------------------------------------- capture rules

#[test]
fn capture_rule1_internal_only_mail_is_not_captured() {
    let p = policy();
    let f = msg(
        "i1",
        "alice@acme.example",
        &["bob@acme.example", "x@sub.acme.example"],
        "Lunch",
    );
    assert_eq!(
        decide(&p, &f, "alice", OUT, NOW),
        Decision::Skip(Reason::InternalOnly)
    );
    // One external participant is enough to capture.
    let f = msg(
        "i2",
        "alice@acme.example",
        &["bob@acme.example", "x@client-a.example"],
        "Lunch",
    );
    assert!(matches!(
        decide(&p, &f, "alice", OUT, NOW),
        Decision::Capture(_)
    ));
}

#[test]
fn capture_rule2_mail_whose_every_external_participant_is_excluded_is_not_captured() {
    let p = policy_with(|_, users, _, _| {
        users[0].exclude = vec![Pattern::parse("family.example").unwrap()];
    });
    // Org-level pattern, including a subdomain.
    let f = msg(
        "e1",
        "alice@acme.example",
        &["teller@eu.bank.example"],
        "Loan",
    );
    assert_eq!(
        decide(&p, &f, "alice", OUT, NOW),
        Decision::Skip(Reason::Excluded)
    );
    // Owner-level pattern, and the mix of both.
    let f = msg(
        "e2",
        "mum@family.example",
        &["alice@acme.example", "x@bank.example"],
        "Hi",
    );
    assert_eq!(
        decide(&p, &f, "alice", IN, NOW),
        Decision::Skip(Reason::Excluded)
    );
    // Another owner's exclude list does not apply.
    let f = msg("e3", "mum@family.example", &["bob@acme.example"], "Hi");
    assert!(matches!(
        decide(&p, &f, "bob", IN, NOW),
        Decision::Capture(_)
    ));
    // One external participant not excluded: captured.
    let f = msg(
        "e4",
        "alice@acme.example",
        &["x@bank.example", "y@client-a.example"],
        "Loan",
    );
    assert!(matches!(
        decide(&p, &f, "alice", OUT, NOW),
        Decision::Capture(_)
    ));
}

#[test]
fn capture_rule3_removed_user_is_never_captured_again_and_old_copies_stay() {
    let f = msg(
        "r1",
        "alice@acme.example",
        &["bob@client-a.example"],
        "Offer",
    );
    let before = record(&policy(), &f, &[("alice", OUT)]);
    let p = policy_with(|_, users, _, _| users[0].status = UserStatus::Removed);
    let g = msg(
        "r2",
        "alice@acme.example",
        &["bob@client-a.example"],
        "Offer 2",
    );
    assert_eq!(
        decide(&p, &g, "alice", OUT, NOW),
        Decision::Skip(Reason::RemovedUser)
    );
    // What was captured before stays, shared as the removed owner's settings say.
    assert_eq!(sees(&p, "carol@acme.example", &before), Level::Full);
}

#[test]
fn capture_rule4a_contact_setting_then_user_default_then_org_default() {
    let p = policy_with(|_, users, _, _| {
        users[0].inbound = Some(Level::Full);
        users[0].contacts = vec![
            ContactSetting {
                target: ContactTarget::Address("bob@client-a.example".into()),
                level: Level::Hidden,
            },
            ContactSetting {
                target: ContactTarget::Domain("client-b.example".into()),
                level: Level::Metadata,
            },
            ContactSetting {
                target: ContactTarget::Contact(0),
                level: Level::Subject,
            },
        ];
    });
    let from = |a: &str| msg("a", a, &["alice@acme.example"], "Q3");
    // Address setting and contact (org) setting both match: the most restrictive wins.
    assert_eq!(
        level_of(&p, &from("bob@client-a.example"), "alice", IN),
        Level::Hidden
    );
    // Contact setting by organization (domain roll-up).
    assert_eq!(
        level_of(&p, &from("jo@client-a.example"), "alice", IN),
        Level::Subject
    );
    // Domain setting matches subdomains.
    assert_eq!(
        level_of(&p, &from("x@eu.client-b.example"), "alice", IN),
        Level::Metadata
    );
    // No setting matches: the user's inbound default.
    assert_eq!(
        level_of(&p, &from("x@other.example"), "alice", IN),
        Level::Full
    );
    // bob has no defaults: the org's, per direction.
    let f = msg("a", "x@other.example", &["bob@acme.example"], "Q3");
    assert_eq!(
        copy_of(decide(&p, &f, "bob", IN, NOW)).reason,
        Reason::OrgDefault
    );
    assert_eq!(level_of(&p, &f, "bob", IN), Level::Subject);
    let g = msg("b", "bob@acme.example", &["x@other.example"], "Q3");
    assert_eq!(level_of(&p, &g, "bob", OUT), Level::Full);
}

#[test]
fn capture_rule4b_confidential_keyword_caps_at_metadata_as_whole_word() {
    let p = policy();
    for s in [
        "CONFIDENTIAL: merger",
        "Re: private matter",
        "fw: (Privileged)",
    ] {
        let f = msg("c", "alice@acme.example", &["x@other.example"], s);
        let c = copy_of(decide(&p, &f, "alice", OUT, NOW));
        assert_eq!(
            (c.level, c.reason),
            (Level::Metadata, Reason::ConfidentialSubject),
            "{s}"
        );
    }
    for s in ["Privately held", "Personalised offer", "unconfidential"] {
        let f = msg("c", "alice@acme.example", &["x@other.example"], s);
        assert_eq!(level_of(&p, &f, "alice", OUT), Level::Full, "{s}");
    }
}

#[test]
fn capture_rule4c_override_header_replaces_a_and_b_and_inbound_only_lowers() {
    let p = policy();
    // Outbound: the sender's header replaces the confidential cap and the default.
    let mut f = msg(
        "o",
        "alice@acme.example",
        &["x@other.example"],
        "Confidential plan",
    );
    f.share_header = Some(Level::Full);
    let c = copy_of(decide(&p, &f, "alice", OUT, NOW));
    assert_eq!(
        (c.level, c.override_level),
        (Level::Full, Some(Level::Full))
    );
    f.share_header = Some(Level::Hidden);
    assert_eq!(level_of(&p, &f, "alice", OUT), Level::Hidden);
    // Inbound: from outside, it may lower (inbound default is subject)…
    let mut g = msg("i", "x@other.example", &["alice@acme.example"], "Hello");
    g.share_header = Some(Level::Metadata);
    let c = copy_of(decide(&p, &g, "alice", IN, NOW));
    assert_eq!(
        (c.level, c.reason),
        (Level::Metadata, Reason::InboundHeaderLowered)
    );
    // …but never raise.
    g.share_header = Some(Level::Full);
    let c = copy_of(decide(&p, &g, "alice", IN, NOW));
    assert_eq!((c.level, c.override_level), (Level::Subject, None));
}

#[test]
fn capture_rule4d_activity_off_or_before_share_since_hides() {
    let p = policy_with(|_, users, _, _| {
        users[0].activity = Some(false);
        users[1].share_since = Some(NOW - 60);
    });
    let mut f = msg("d", "alice@acme.example", &["x@other.example"], "Hi");
    f.share_header = Some(Level::Full); // even an override does not beat rule 4d
    let c = copy_of(decide(&p, &f, "alice", OUT, NOW));
    assert_eq!((c.level, c.reason), (Level::Hidden, Reason::ActivityOff));
    let g = msg("d", "bob@acme.example", &["x@other.example"], "Hi"); // dated NOW-3600
    let c = copy_of(decide(&p, &g, "bob", OUT, NOW));
    assert_eq!(
        (c.level, c.reason),
        (Level::Hidden, Reason::BeforeShareSince)
    );
    // Without a Date header the time of capture counts.
    let mut h = g.clone();
    h.date = None;
    assert_eq!(level_of(&p, &h, "bob", OUT), Level::Full);
}

#[test]
fn capture_rule5_owners_merge_into_one_record_with_the_highest_level() {
    let p = policy_with(|_, users, _, _| users[1].inbound = Some(Level::Metadata));
    let f = msg(
        "m",
        "x@other.example",
        &["alice@acme.example", "bob@acme.example"],
        "Deal",
    );
    let r = record(&p, &f, &[("bob", IN), ("alice", IN)]);
    assert_eq!(r.owners.len(), 2);
    assert_eq!(r.ceiling(), Level::Subject); // alice: org default subject > bob: metadata
    assert_eq!(r.subject.as_deref(), Some("Deal"));
}

#[test]
fn capture_rule5_an_owners_override_restricts_every_copy() {
    let p = policy();
    let f = msg(
        "m",
        "alice@acme.example",
        &["x@other.example", "bob@acme.example"],
        "Deal",
    );
    let mut hf = f.clone();
    hf.share_header = Some(Level::Metadata);
    // alice's client set the header; bob's copy (via IMAP) would share subject.
    let a = copy_of(decide(&p, &hf, "alice", OUT, NOW));
    let b = copy_of(decide(&p, &f, "bob", IN, NOW));
    let r = merge(&p, None, &f, b, &[], NOW, true);
    assert_eq!(r.stored, Level::Subject);
    let r = merge(&p, Some(r), &hf, a, &[], NOW, true);
    // A restriction arriving later lowers the ceiling and drops the fields above it.
    assert_eq!(
        (r.restriction(), r.ceiling(), r.stored),
        (Level::Metadata, Level::Metadata, Level::Metadata)
    );
    assert_eq!(r.subject, None);
    // A later capture cannot raise it back…
    let b2 = copy_of(decide(&p, &f, "bob", IN, NOW));
    let r = merge(&p, Some(r), &f, b2, &[], NOW, true);
    assert_eq!(r.ceiling(), Level::Metadata);
    // …only a later override by an owner can.
    let mut r2 = r.clone();
    assert!(set_override(
        &p,
        &mut r2,
        "alice@acme.example",
        Some(Level::Full)
    ));
    assert_eq!(r2.ceiling(), Level::Full);
    assert_eq!(
        r2.stored,
        Level::Metadata,
        "raising shows only what was stored"
    );
    assert!(
        !set_override(&p, &mut r2, "carol@acme.example", Some(Level::Full)),
        "not an owner"
    );
}

#[test]
fn capture_rule5_confidential_subject_restricts_when_no_owner_overrides() {
    let p = policy();
    let f = msg(
        "m",
        "x@other.example",
        &["alice@acme.example"],
        "Confidential: terms",
    );
    let r = record(&p, &f, &[("alice", IN)]);
    assert!(r.confidential);
    assert_eq!(r.restriction(), Level::Metadata);
    assert_eq!(
        r.subject, None,
        "a confidential subject is not stored at metadata"
    );
}

#[test]
fn capture_rule5_a_hidden_copy_stores_nothing() {
    let p = policy_with(|_, users, _, _| users[0].activity = Some(false));
    let f = msg("h", "alice@acme.example", &["x@other.example"], "Hi");
    let c = copy_of(decide(&p, &f, "alice", OUT, NOW));
    let r = merge(&p, None, &f, c, &[], NOW, true);
    assert!(r.is_void());
    // A hidden override is remembered, but without any metadata (not even the Message-ID).
    let mut hf = f.clone();
    hf.share_header = Some(Level::Hidden);
    let p = policy();
    let c = copy_of(decide(&p, &hf, "alice", OUT, NOW));
    let r = merge(&p, None, &hf, c, &[], NOW, true);
    assert!(!r.is_void());
    assert_eq!((r.ceiling(), r.stored), (Level::Hidden, Level::Hidden));
    assert!(r.message_id.is_empty() && r.from.is_none() && r.to.is_empty() && r.subject.is_none());
    // bob's later copy cannot raise it.
    let mut g = f.clone();
    g.to.push(mb("bob@acme.example"));
    let b = copy_of(decide(&p, &g, "bob", IN, NOW));
    let r = merge(&p, Some(r), &g, b, &[], NOW, true);
    assert_eq!(r.ceiling(), Level::Hidden);
    assert_eq!(sees(&p, "carol@acme.example", &r), Level::Hidden);
}

// ---------------------------------------------------------------- read rules

#[test]
fn read_rule1_removed_user_sees_nothing() {
    let f = msg("r", "x@other.example", &["bob@acme.example"], "Hello");
    let r = record(&policy(), &f, &[("bob", IN)]);
    let p = policy_with(|_, users, _, _| users[1].status = UserStatus::Removed);
    assert_eq!(
        sees(&p, "bob@acme.example", &r),
        Level::Hidden,
        "not even their own mail"
    );
    assert_eq!(
        sees(&p, "nobody@acme.example", &r),
        Level::Hidden,
        "unknown viewer"
    );
}

#[test]
fn read_rule2_participants_and_owners_see_at_the_ceiling_with_their_own_bcc() {
    let p = policy_with(|_, users, _, _| {
        users[0].outbound = Some(Level::Metadata);
        users[0].aliases = vec!["a.smith@acme.example".into()];
    });
    let mut f = msg("p", "alice@acme.example", &["x@other.example"], "Plan");
    f.bcc = vec![mb("carol@acme.example"), mb("spy@other.example")];
    f.envelope_recipients = vec!["x@other.example".into(), "a.smith@acme.example".into()];
    let r = record(&p, &f, &[("alice", OUT)]);
    // alice shares metadata, so a colleague sees metadata…
    assert_eq!(sees(&p, "bob@acme.example", &r), Level::Metadata);
    assert!(visible(&p, &Viewer::new("bob@acme.example"), &r)
        .bcc
        .is_empty());
    // …but the ceiling is what she stored: metadata. Owners see their mail at the ceiling.
    let v = visible(&p, &Viewer::new("alice@acme.example"), &r);
    assert!(v.participant);
    assert_eq!(
        v.bcc.len(),
        3,
        "the sender sees every blind recipient: {:?}",
        v.bcc
    );
    // A blind recipient sees their own address only.
    let v = visible(&p, &Viewer::new("carol@acme.example"), &r);
    assert!(v.participant);
    assert_eq!(v.bcc, vec!["carol@acme.example".to_string()]);
}

#[test]
fn read_rule2_participant_sees_ceiling_even_when_owner_sharing_is_now_off() {
    let f = msg(
        "p",
        "x@other.example",
        &["alice@acme.example", "bob@acme.example"],
        "Plan",
    );
    let r = record(&policy(), &f, &[("alice", IN)]);
    let p = policy_with(|_, users, _, _| users[0].activity = Some(false));
    assert_eq!(
        sees(&p, "bob@acme.example", &r),
        Level::Subject,
        "bob is a participant"
    );
    assert_eq!(
        sees(&p, "carol@acme.example", &r),
        Level::Hidden,
        "carol is not"
    );
}

#[test]
fn read_rule3_non_participants_see_the_current_owner_level_never_above_the_ceiling() {
    let f = msg("n", "x@other.example", &["alice@acme.example"], "Report");
    let r = record(&policy(), &f, &[("alice", IN)]);
    assert_eq!(r.ceiling(), Level::Subject);
    assert_eq!(sees(&policy(), "carol@acme.example", &r), Level::Subject);
    // Turning sharing down hides past events at once.
    let p = policy_with(|_, users, _, _| users[0].inbound = Some(Level::Metadata));
    assert_eq!(sees(&p, "carol@acme.example", &r), Level::Metadata);
    let p = policy_with(|_, users, _, _| users[0].activity = Some(false));
    assert_eq!(sees(&p, "carol@acme.example", &r), Level::Hidden);
    // Turning it up is not retroactive: never above the ceiling.
    let p = policy_with(|_, users, _, _| users[0].inbound = Some(Level::Full));
    assert_eq!(sees(&p, "carol@acme.example", &r), Level::Subject);
    // An exclude added later hides too.
    let p = policy_with(|o, _, _, _| o.exclude.push(Pattern::parse("other.example").unwrap()));
    assert_eq!(sees(&p, "carol@acme.example", &r), Level::Hidden);
}

#[test]
fn read_rule3_owners_whose_current_level_is_hidden_are_not_listed() {
    let f = msg(
        "n",
        "x@other.example",
        &["alice@acme.example", "bob@acme.example"],
        "Hi",
    );
    let r = record(&policy(), &f, &[("alice", IN), ("bob", IN)]);
    let p = policy_with(|_, users, _, _| users[1].activity = Some(false));
    let v = visible(&p, &Viewer::new("carol@acme.example"), &r);
    assert_eq!(v.owners, vec!["alice@acme.example".to_string()]);
    assert_eq!(v.level, Level::Subject);
}

#[test]
fn read_rule3_never_above_the_restriction() {
    let p = policy();
    let mut f = msg("n", "alice@acme.example", &["x@other.example"], "Hi");
    f.share_header = Some(Level::Subject);
    let r = record(&p, &f, &[("alice", OUT)]);
    assert_eq!(sees(&p, "carol@acme.example", &r), Level::Subject);
}

#[test]
fn read_rule4_buckets_mode_limits_timelines_to_members_who_view_conversations() {
    let p = policy_with(|o, _, _, buckets| {
        o.contacts = ContactsMode::Buckets;
        buckets.push(Bucket {
            name: "Key accounts".into(),
            owner: "alice@acme.example".into(),
            contacts: vec![0],
            members: vec![
                BucketMember {
                    user: "bob@acme.example".into(),
                    role: BucketRole::Viewer,
                    view_conversations: true,
                },
                BucketMember {
                    user: "carol@acme.example".into(),
                    role: BucketRole::Editor,
                    view_conversations: false,
                },
            ],
        });
    });
    let client = policy_contact_id("Client A Ltd");
    let stone = policy_contact_id("Bob Stone");
    for (who, can) in [("alice", true), ("bob", true), ("carol", false)] {
        let v = Viewer::new(&format!("{who}@acme.example"));
        assert_eq!(can_open_contact(&p, &v, &[&client]), can, "{who}");
        // A person of an organization in the bucket comes along with it.
        assert_eq!(can_open_contact(&p, &v, &[&stone, &client]), can, "{who}");
    }
    let f = msg(
        "b",
        "office@client-a.example",
        &["alice@acme.example"],
        "Hi",
    );
    let c = copy_of(decide(&p, &f, "alice", IN, NOW));
    let r = merge(&p, None, &f, c, std::slice::from_ref(&client), NOW, true);
    assert_eq!(sees(&p, "bob@acme.example", &r), Level::Subject);
    assert_eq!(sees(&p, "carol@acme.example", &r), Level::Hidden);
    // Team mode: everyone active opens every contact.
    assert!(can_open_contact(
        &policy(),
        &Viewer::new("carol@acme.example"),
        &[&client]
    ));
}

#[test]
fn read_rule5_grants_show_up_to_the_ceiling_and_only_what_is_stored() {
    let p = policy_with(|_, users, _, _| users[0].activity = Some(false));
    let f = msg(
        "g",
        "x@other.example",
        &["alice@acme.example", "bob@acme.example"],
        "Hi",
    );
    let r = record(&policy(), &f, &[("alice", IN)]);
    assert_eq!(sees(&p, "carol@acme.example", &r), Level::Hidden);
    let mut r2 = r.clone();
    r2.grants.push(Grant {
        viewer: "carol@acme.example".into(),
        level: Level::Full,
        by: "alice@acme.example".into(),
    });
    assert_eq!(
        sees(&p, "carol@acme.example", &r2),
        Level::Subject,
        "capped by the ceiling"
    );
    let mut r3 = r.clone();
    r3.truncate_to(Level::Metadata);
    r3.grants = r2.grants.clone();
    assert_eq!(
        sees(&p, "carol@acme.example", &r3),
        Level::Metadata,
        "only what is stored"
    );
}

#[test]
fn read_rule6_reading_as_a_user_is_never_above_that_user() {
    // An admin token reads as a user through the same Viewer: the engine has
    // no admin level to leak through.
    let f = msg("a", "x@other.example", &["alice@acme.example"], "Hi");
    let r = record(&policy(), &f, &[("alice", IN)]);
    let p = policy_with(|_, users, _, _| users[2].status = UserStatus::Removed);
    assert_eq!(sees(&p, "carol@acme.example", &r), Level::Hidden);
    assert_eq!(sees(&p, "admin", &r), Level::Hidden);
}

// ---------------------------------------------------------------- contacts and threads

struct Dir(Vec<(String, ContactState)>);
impl Directory for Dir {
    fn contact_state(&self, id: &str) -> ContactState {
        self.0
            .iter()
            .find(|(i, _)| i == id)
            .map_or(ContactState::Absent, |(_, s)| *s)
    }
}
fn empty() -> Dir {
    Dir(vec![])
}

#[test]
fn contacts_primary_owner_of_an_address_and_organization_roll_up() {
    let p = policy();
    let client = policy_contact_id("Client A Ltd");
    let stone = policy_contact_id("Bob Stone");
    let f = msg("c", "alice@acme.example", &["bob@client-a.example"], "Hi");
    let plan = plan_contacts(&p, &f, OUT, &empty());
    let mut want = vec![client.clone(), stone.clone()];
    want.sort();
    assert_eq!(
        plan.link, want,
        "bob@ goes to Bob Stone and rolls up to Client A"
    );
    let f = msg(
        "c",
        "alice@acme.example",
        &["office@client-a.example"],
        "Hi",
    );
    assert_eq!(
        plan_contacts(&p, &f, OUT, &empty()).link,
        vec![client.clone()]
    );
    // An unknown address at the organization's domain: a new person in that organization.
    let f = msg("c", "alice@acme.example", &["jo@client-a.example"], "Hi");
    let plan = plan_contacts(&p, &f, OUT, &empty());
    assert_eq!(plan.create.len(), 1);
    assert_eq!(
        plan.create[0].organization_id.as_deref(),
        Some(client.as_str())
    );
    assert!(plan.link.contains(&client));
}

#[test]
fn contacts_auto_creation_follows_sent_all_none() {
    let f_out = msg("c", "alice@acme.example", &["jo@newco.example"], "Hi");
    let f_in = msg("c", "jo@newco.example", &["alice@acme.example"], "Hi");
    let p = policy();
    let plan = plan_contacts(&p, &f_out, OUT, &empty());
    assert_eq!(plan.create.len(), 2, "person and organization: {plan:?}");
    assert!(
        plan_contacts(&p, &f_in, IN, &empty()).create.is_empty(),
        "sent: inbound creates nothing"
    );
    let p = policy_with(|o, _, _, _| o.auto_create_contacts = AutoCreate::All);
    assert_eq!(plan_contacts(&p, &f_in, IN, &empty()).create.len(), 2);
    let p = policy_with(|o, _, _, _| o.auto_create_contacts = AutoCreate::None);
    assert!(plan_contacts(&p, &f_out, OUT, &empty()).create.is_empty());
}

#[test]
fn contacts_impersonal_addresses_and_personal_providers() {
    let p = policy();
    let f = msg(
        "c",
        "alice@acme.example",
        &["noreply+x@newco.example", "sam@gmail.com"],
        "Hi",
    );
    let plan = plan_contacts(&p, &f, OUT, &empty());
    let kinds: Vec<_> = plan
        .create
        .iter()
        .map(|c| (c.kind, c.name.as_str()))
        .collect();
    assert!(kinds.contains(&(ContactKind::Organization, "newco.example")));
    assert!(kinds.contains(&(ContactKind::Person, "sam@gmail.com")));
    assert!(
        !kinds.iter().any(|(_, n)| n.starts_with("noreply")),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&(ContactKind::Organization, "gmail.com")),
        "{kinds:?}"
    );
}

#[test]
fn contacts_tombstones_are_not_recreated_nor_linked() {
    let p = policy();
    let f = msg(
        "c",
        "alice@acme.example",
        &["jo@newco.example", "bob@client-a.example"],
        "Hi",
    );
    let dir = Dir(vec![
        (
            person_contact_id("jo@newco.example"),
            ContactState::Tombstoned,
        ),
        (policy_contact_id("Bob Stone"), ContactState::Tombstoned),
    ]);
    let plan = plan_contacts(&p, &f, OUT, &dir);
    assert_eq!(plan.create.len(), 1, "only the organization: {plan:?}");
    assert!(!plan.link.contains(&person_contact_id("jo@newco.example")));
    assert!(!plan.link.contains(&policy_contact_id("Bob Stone")));
    assert!(plan.link.contains(&policy_contact_id("Client A Ltd")));
}

#[test]
fn contacts_bcc_never_creates_nor_links() {
    let p = policy();
    let mut f = msg("c", "alice@acme.example", &["bob@acme.example"], "Hi");
    f.bcc = vec![mb("jo@newco.example")];
    f.envelope_recipients = vec!["sam@other.example".into()];
    let plan = plan_contacts(&p, &f, OUT, &empty());
    assert_eq!(plan, ContactPlan::default());
}

#[test]
fn contacts_automated_mail_links_existing_contacts_only() {
    let p = policy_with(|o, _, _, _| o.auto_create_contacts = AutoCreate::All);
    let mut f = msg(
        "c",
        "news@newco.example",
        &["alice@acme.example", "x@client-a.example"],
        "Hi",
    );
    f.automated = true;
    let dir = Dir(vec![(
        org_contact_id("newco.example"),
        ContactState::Present,
    )]);
    let plan = plan_contacts(&p, &f, IN, &dir);
    assert!(plan.create.is_empty());
    assert!(plan.link.contains(&org_contact_id("newco.example")));
    assert!(plan.link.contains(&policy_contact_id("Client A Ltd")));
}

#[test]
fn threads_follow_references_and_in_reply_to() {
    let root = msg("root@x", "a@x.example", &["alice@acme.example"], "Q");
    let mut reply = msg("r1@x", "alice@acme.example", &["a@x.example"], "Re: Q");
    reply.in_reply_to = vec!["root@x".into()];
    let mut reply2 = msg("r2@x", "a@x.example", &["alice@acme.example"], "Re: Q");
    reply2.in_reply_to = vec!["r1@x".into()];
    reply2.references = vec!["root@x".into(), "r1@x".into()];
    assert_eq!(thread_id(&root), thread_id(&reply));
    assert_eq!(thread_id(&root), thread_id(&reply2));
    assert_ne!(
        thread_id(&root),
        thread_id(&msg("other@x", "a@x.example", &[], "Q"))
    );
}

// ---------------------------------------------------------------- properties

mod props {
    use super::*;
    use proptest::prelude::*;

    const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
    const ADDRS: [&str; 8] = [
        "alice@acme.example",
        "bob@acme.example",
        "carol@acme.example",
        "dave@acme.example",
        "bob@client-a.example",
        "x@other.example",
        "y@bank.example",
        "z@gmail.com",
    ];

    fn level() -> impl Strategy<Value = Level> {
        prop::sample::select(Level::ALL.to_vec())
    }

    #[derive(Debug, Clone)]
    struct UserSpec {
        removed: bool,
        activity: Option<bool>,
        inbound: Option<Level>,
        outbound: Option<Level>,
        since: Option<i64>,
        setting: Option<(usize, Level)>,
    }

    fn user_spec() -> impl Strategy<Value = UserSpec> {
        (
            prop::bool::weighted(0.2),
            prop::option::of(any::<bool>()),
            prop::option::of(level()),
            prop::option::of(level()),
            prop::option::of(prop::sample::select(vec![NOW - 7200, NOW - 60])),
            prop::option::of((4usize..8, level())),
        )
            .prop_map(
                |(removed, activity, inbound, outbound, since, setting)| UserSpec {
                    removed,
                    activity,
                    inbound,
                    outbound,
                    since,
                    setting,
                },
            )
    }

    fn build(specs: &[UserSpec], buckets_mode: bool, defaults: (Level, Level)) -> Policy {
        let mut p = policy_with(|o, users, _, buckets| {
            users.push(user("dave@acme.example"));
            for (u, s) in users.iter_mut().zip(specs) {
                if s.removed {
                    u.status = UserStatus::Removed;
                }
                u.activity = s.activity;
                u.inbound = s.inbound;
                u.outbound = s.outbound;
                u.share_since = s.since;
                if let Some((a, l)) = s.setting {
                    u.contacts.push(ContactSetting {
                        target: ContactTarget::Address(ADDRS[a].into()),
                        level: l,
                    });
                }
            }
            if buckets_mode {
                o.contacts = ContactsMode::Buckets;
                buckets.push(Bucket {
                    name: "b".into(),
                    owner: "alice@acme.example".into(),
                    contacts: vec![0],
                    members: vec![BucketMember {
                        user: "bob@acme.example".into(),
                        role: BucketRole::Viewer,
                        view_conversations: true,
                    }],
                });
            }
        });
        p.defaults.inbound = defaults.0;
        p.defaults.outbound = defaults.1;
        p
    }

    #[derive(Debug, Clone)]
    struct MsgSpec {
        from: usize,
        to: Vec<usize>,
        bcc: Vec<usize>,
        confidential: bool,
        header: Option<Level>,
        dated: bool,
    }

    fn msg_spec() -> impl Strategy<Value = MsgSpec> {
        (
            0usize..8,
            prop::collection::vec(0usize..8, 1..4),
            prop::collection::vec(0usize..8, 0..2),
            any::<bool>(),
            prop::option::of(level()),
            any::<bool>(),
        )
            .prop_map(|(from, to, bcc, confidential, header, dated)| MsgSpec {
                from,
                to,
                bcc,
                confidential,
                header,
                dated,
            })
    }

    fn facts(m: &MsgSpec) -> MessageFacts {
        let mut f = msg(
            "prop@x",
            ADDRS[m.from],
            &m.to.iter().map(|&i| ADDRS[i]).collect::<Vec<_>>(),
            if m.confidential {
                "Private: deal"
            } else {
                "Deal"
            },
        );
        f.bcc = m.bcc.iter().map(|&i| mb(ADDRS[i])).collect();
        f.share_header = m.header;
        if !m.dated {
            f.date = None;
        }
        f
    }

    /// Owners: the users among the participants, with their direction.
    fn owners(f: &MessageFacts) -> Vec<(&'static str, Direction)> {
        let parts = f.participants();
        USERS
            .iter()
            .zip(ADDRS)
            .filter(|(_, a)| parts.contains(a))
            .map(|(u, a)| {
                let out = f.from.iter().any(|m| m.address == a);
                (*u, if out { OUT } else { IN })
            })
            .collect()
    }

    fn capture_all(p: &Policy, f: &MessageFacts, order: &[(&str, Direction)]) -> Option<Record> {
        let mut rec: Option<Record> = None;
        for &(o, d) in order {
            if let Decision::Capture(c) = decide(p, f, o, d, NOW) {
                rec = Some(merge(
                    p,
                    rec,
                    f,
                    c,
                    &[policy_contact_id("Client A Ltd")],
                    NOW,
                    true,
                ));
            }
        }
        rec
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

        #[test]
        fn privacy_invariants_hold(
            capture_specs in prop::collection::vec(user_spec(), 4),
            read_specs in prop::collection::vec(user_spec(), 4),
            m in msg_spec(),
            buckets_mode in any::<bool>(),
            defaults in (level(), level()),
            defaults_now in (level(), level()),
            seed in any::<u64>(),
        ) {
            let cap = build(&capture_specs, buckets_mode, defaults);
            let now = build(&read_specs, buckets_mode, defaults_now);
            let f = facts(&m);
            let order = owners(&f);
            let Some(rec) = capture_all(&cap, &f, &order) else { return Ok(()) };

            // Capture never stores a field above the ceiling.
            let ceiling = rec.ceiling();
            prop_assert!(rec.stored <= ceiling);
            prop_assert!(rec.subject.is_none() || rec.stored >= Level::Subject);
            prop_assert!(rec.content.is_none() || rec.stored == Level::Full);
            if rec.stored == Level::Hidden {
                prop_assert!(rec.message_id.is_empty() && rec.from.is_none() && rec.to.is_empty());
            }

            // Order of arrival does not change the record.
            let mut shuffled = order.clone();
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut reversed = order.clone();
            reversed.reverse();
            let (a, b) = (capture_all(&cap, &f, &shuffled), capture_all(&cap, &f, &reversed));
            prop_assert_eq!(a.as_ref(), Some(&rec));
            prop_assert_eq!(b.as_ref(), Some(&rec));

            for (u, spec) in USERS.iter().zip(&read_specs) {
                let viewer = Viewer::new(&format!("{u}@acme.example"));
                let v = visible(&now, &viewer, &rec);
                prop_assert!(v.level <= ceiling);
                prop_assert!(v.level <= rec.stored);
                if spec.removed {
                    prop_assert_eq!(v.level, Level::Hidden, "a removed user sees nothing");
                }
                let participant = rec.participants().any(|a| a == viewer.user)
                    || rec.owners.iter().any(|o| o.user == viewer.user);
                if !participant {
                    let highest = rec.owners.iter()
                        .map(|o| super::super::capture::current_level(&now, &rec, o).0)
                        .max().unwrap_or(Level::Hidden);
                    prop_assert!(v.level <= highest, "{:?} > current owners {:?}", v.level, highest);
                    prop_assert!(v.level <= rec.restriction());
                    prop_assert!(v.bcc.is_empty(), "bcc shown to a non-participant");
                }
            }
        }
    }

    #[test]
    fn hashes_are_distinct_for_distinct_inputs() {
        let ids: HashSet<String> = (0..1000).map(|i| message_key(&format!("m{i}@x"))).collect();
        assert_eq!(ids.len(), 1000);
    }
}
