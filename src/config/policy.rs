//! `policy.toml` → [`engine::Policy`](crate::engine::Policy).
//!
//! This module owns the policy file format (DESIGN §4): the raw serde
//! structs, the checks that turn an admin's mistakes into positioned
//! [`Diagnostic`]s, and the normalisation the engine relies on (addresses,
//! domains and logins lowercased; contact names matched case-insensitively;
//! built-in lists filled in). The engine never sees an unchecked policy:
//! [`Policy::build`] is only called once the file is free of errors, so a bad
//! edit can never produce a more open policy than the admin wrote (on SIGHUP
//! the old policy keeps running instead).
//!
//! Every semantic error is reported, each at the offending value; a TOML
//! syntax, type or unknown-key error stops the check of the file.

use super::{parse_sha256_hex, Report};
use crate::diag::Diagnostic;
use crate::engine::facts::domain_of;
use crate::engine::policy::{
    domain_matches, AutoCreate, Bucket, BucketMember, BucketRole, ContactKind, ContactSetting,
    ContactTarget, ContactsMode, Defaults, Organization, Pattern, PolicyContact, User, UserStatus,
    DEFAULT_CONFIDENTIAL_KEYWORDS, DEFAULT_IMPERSONAL_LOCALPARTS, DEFAULT_PERSONAL_DOMAINS,
};
use crate::engine::{policy_contact_id, Level, Policy};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use toml::value::{Datetime, Offset};
use toml::Spanned;

/// Read and compile a policy file (at start, by `mailshare check`, and on
/// SIGHUP reload).
///
/// # Errors
///
/// Every problem found, in file order; an unreadable file is one diagnostic
/// without a position.
pub fn load_policy(path: &Path) -> Result<Policy, Vec<Diagnostic>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_policy(path, &text),
        Err(e) => Err(vec![Diagnostic::whole_file(
            path,
            format!("cannot read policy file: {e}"),
        )]),
    }
}

/// Compile the text of a policy file; `path` names it in diagnostics.
///
/// # Errors
///
/// Every problem found, in file order.
pub fn parse_policy(path: &Path, text: &str) -> Result<Policy, Vec<Diagnostic>> {
    let mut report = Report::new(path, text);
    let raw: RawPolicy = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => return Err(vec![report.src.toml_error(&e)]),
    };
    let compiled = compile(&mut report, &raw);
    let mut diags = report.finish();
    if !diags.is_empty() {
        return Err(diags);
    }
    let (organization, defaults, users, contacts, buckets) = compiled;
    Policy::build(organization, defaults, users, contacts, buckets).map_err(|e| {
        // Everything `build` rejects is checked above with a position; keep
        // failing closed should the two ever drift apart.
        diags.push(Diagnostic::at_offset(path, text, 0, e.0));
        diags
    })
}

/// What `share_since` says when it is not a date-time with an offset.
pub const SHARE_SINCE_HINT: &str = "share_since needs a UTC offset, e.g. 2026-11-01T00:00:00Z";

/// Days since 1970-01-01 of a proleptic Gregorian date (negative before it).
/// `month` is 1–12, `day` 1–31; valid for any year an `i64` can hold
/// without overflow in the arithmetic (far beyond ±1,000,000).
///
/// Howard Hinnant's `days_from_civil`: years counted from March so the leap
/// day falls at the end, 400-year eras of 146,097 days.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400; // [0, 399]
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Unix seconds of a `share_since` value: a TOML offset date-time, a TOML
/// local date (midnight UTC), or a string holding an RFC 3339 date-time with
/// an offset. Fractions of a second are dropped.
///
/// # Errors
///
/// A message naming what is wrong (a local date-time without an offset, a
/// time alone, another type, an unparsable string).
pub fn share_since_seconds(value: &toml::Value) -> Result<i64, String> {
    let dt = match value {
        toml::Value::Datetime(dt) => *dt,
        toml::Value::String(s) => match s.trim().parse::<Datetime>() {
            Ok(dt) if dt.date.is_some() && dt.time.is_some() && dt.offset.is_some() => dt,
            _ => {
                return Err(format!(
                    "invalid share_since {s:?}: {SHARE_SINCE_HINT} (RFC 3339)"
                ))
            }
        },
        other => {
            return Err(format!(
                "invalid share_since: found a {}; {SHARE_SINCE_HINT}",
                other.type_str()
            ))
        }
    };
    match (dt.date, dt.time, dt.offset) {
        (Some(date), None, None) => Ok(days_from_civil(
            i64::from(date.year),
            u32::from(date.month),
            u32::from(date.day),
        ) * 86_400),
        (Some(date), Some(time), Some(offset)) => {
            let days = days_from_civil(
                i64::from(date.year),
                u32::from(date.month),
                u32::from(date.day),
            );
            let offset_minutes = match offset {
                Offset::Z => 0,
                Offset::Custom { minutes } => i64::from(minutes),
            };
            Ok(days * 86_400
                + i64::from(time.hour) * 3600
                + i64::from(time.minute) * 60
                + i64::from(time.second)
                - offset_minutes * 60)
        }
        _ => Err(format!("invalid share_since {dt}: {SHARE_SINCE_HINT}")),
    }
}

// ---------------------------------------------------------------------------
// Raw file structure: mirrors DESIGN §4 key for key. These doc comments are
// the reference for every key of policy.toml (config/policy.toml shows them
// in use).

/// The whole file. Only `[organization]` is required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    organization: Option<Spanned<RawOrganization>>,
    defaults: Option<RawDefaults>,
    /// `[[users]]`: the only people whose mail is captured.
    #[serde(default)]
    users: Vec<Spanned<RawUser>>,
    /// `[[contacts]]`: declared external persons and organizations.
    #[serde(default)]
    contacts: Vec<Spanned<RawContact>>,
    /// `[[buckets]]`: groups of contacts with members and roles.
    #[serde(default)]
    buckets: Vec<Spanned<RawBucket>>,
}

/// `[organization]`: firm-wide settings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrganization {
    /// `name`: display name of the firm; default empty.
    name: Option<String>,
    /// `internal_domains`: required, at least one. The firm's own domains
    /// (subdomains included): mail among them only is never captured, every
    /// user address must be in one, no contact address may be.
    #[serde(default)]
    internal_domains: Vec<Spanned<String>>,
    /// `contacts`: who may open contact timelines. `team` (default): every
    /// active user; `buckets`: members of a bucket holding the contact with
    /// `view_conversations`, and its owner.
    contacts: Option<Spanned<String>>,
    /// `auto_create_contacts`: which captured mail creates contacts. `sent`
    /// (default): participants of mail users send; `all`: of any captured
    /// mail; `none`: only the declared `[[contacts]]`.
    auto_create_contacts: Option<Spanned<String>>,
    /// `exclude`: patterns never captured for anyone (`*@domain`,
    /// `local@domain`, `domain`; a domain matches its subdomains). Default none.
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    /// `confidential_keywords`: a subject containing one (whole word, any
    /// case) caps the message at `metadata`. Absent: Confidential, Private,
    /// Personal, Privileged; a given list replaces them.
    confidential_keywords: Option<Vec<Spanned<String>>>,
    /// `impersonal_localparts`: local parts (noreply, support, …) that never
    /// become person contacts. Absent: the built-in list; a given list
    /// replaces it.
    impersonal_localparts: Option<Vec<Spanned<String>>>,
    /// `personal_domains`: mail providers (gmail.com, …) that never become
    /// organizations. Absent: the built-in list; a given list replaces it.
    personal_domains: Option<Vec<Spanned<String>>>,
}

/// `[defaults]`: what users share unless they set their own; missing keys
/// take `Defaults::default()` (activity on, metadata both ways).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    /// `activity`: share anything at all; default true.
    activity: Option<bool>,
    /// `inbound`: level of mail users receive; default `metadata`.
    inbound: Option<Spanned<String>>,
    /// `outbound`: level of mail users send; default `metadata`.
    outbound: Option<Spanned<String>>,
}

/// `[[users]]`: one firm member.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    /// `address`: required; the primary address, in an internal domain,
    /// unique among all users' addresses and aliases.
    address: Spanned<String>,
    /// `aliases`: other addresses of the same person (same rules); default none.
    #[serde(default)]
    aliases: Vec<Spanned<String>>,
    /// `logins`: names seen in SMTP AUTH / IMAP LOGIN that identify this
    /// user as owner (any of the user's addresses also works); unique across
    /// users, never another user's address. Default none.
    #[serde(default)]
    logins: Vec<Spanned<String>>,
    /// `status`: `active` (default) or `removed` (never captured again,
    /// no API access; what was captured stays).
    status: Option<Spanned<String>>,
    /// `activity`: false hides everything this user shares; default: `[defaults]`.
    activity: Option<bool>,
    /// `inbound`: this user's level for mail received; default: `[defaults]`.
    inbound: Option<Spanned<String>>,
    /// `outbound`: this user's level for mail sent; default: `[defaults]`.
    outbound: Option<Spanned<String>>,
    /// `share_since`: mail dated before this instant is hidden. A TOML
    /// offset date-time, a TOML date (midnight UTC) or an RFC 3339 string
    /// with an offset. Default: no limit.
    share_since: Option<Spanned<toml::Value>>,
    /// `exclude`: this user's own never-captured patterns; default none.
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    /// `token_sha256`: hex SHA-256 of the user's API token (64 hex digits);
    /// default: no API access. Unique across users.
    token_sha256: Option<Spanned<String>>,
    /// `[[users.contacts]]`: per-contact settings; default none.
    #[serde(default)]
    contacts: Vec<Spanned<RawUserContact>>,
}

/// `[[users.contacts]]`: the user's standing setting for one contact, which
/// wins over the user's inbound/outbound levels (the most restrictive when
/// several match a message).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUserContact {
    /// `contact`: required; a `[[contacts]]` name (any case) if one matches,
    /// else an address (it has an `@`; `*@domain` means the domain), else a
    /// domain (with a dot).
    contact: Spanned<String>,
    /// `level`: required; hidden, metadata, subject or full.
    level: Spanned<String>,
}

/// `[[contacts]]`: a declared external person or organization.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContact {
    /// `name`: required, unique (case-insensitive); the contact's stable id
    /// derives from it, so renaming makes a new contact.
    name: Spanned<String>,
    /// `kind`: required; `organization` or `person`.
    kind: Spanned<String>,
    /// `domains`: organizations only; each claimed by at most one
    /// organization, never internal. Default none.
    #[serde(default)]
    domains: Vec<Spanned<String>>,
    /// `addresses`: external addresses of this contact; default none.
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    /// `primary_addresses`: addresses (from `addresses`) whose timeline is
    /// this contact's even when another contact lists them too. Default none.
    #[serde(default)]
    primary_addresses: Vec<Spanned<String>>,
    /// `organization`: persons only; the name of the organization contact
    /// whose timeline this person's messages roll up to. Default none.
    organization: Option<Spanned<String>>,
}

/// `[[buckets]]`: a group of contacts, with members allowed to see or edit it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucket {
    /// `name`: required, unique (case-insensitive).
    name: Spanned<String>,
    /// `owner`: required; a user's address (primary or alias).
    owner: Spanned<String>,
    /// `contacts`: names of `[[contacts]]`; default none.
    #[serde(default)]
    contacts: Vec<Spanned<String>>,
    /// `members`: inline tables `{ user, role, view_conversations }`; each
    /// user at most once. Default none.
    #[serde(default)]
    members: Vec<Spanned<RawMember>>,
}

/// One entry of a bucket's `members`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    /// `user`: required; a user's address (primary or alias).
    user: Spanned<String>,
    /// `role`: what the member may do to the bucket through the API:
    /// `viewer` (default), `editor`, `manager` or `owner`.
    role: Option<Spanned<String>>,
    /// `view_conversations`: may open the bucket's contacts' timelines (in
    /// `contacts = "buckets"` mode). Default false: membership alone opens
    /// nothing.
    view_conversations: Option<bool>,
}

// ---------------------------------------------------------------------------
// Compilation.

type Compiled = (
    Organization,
    Defaults,
    Vec<User>,
    Vec<PolicyContact>,
    Vec<Bucket>,
);

fn compile(r: &mut Report, raw: &RawPolicy) -> Compiled {
    let organization = compile_organization(r, raw.organization.as_ref());
    let defaults = compile_defaults(r, raw.defaults.as_ref());
    let contacts = compile_contacts(r, &raw.contacts, &organization);
    let users = compile_users(r, &raw.users, &organization, &contacts);
    let buckets = compile_buckets(r, &raw.buckets, &users, &contacts);
    (organization, defaults, users, contacts, buckets)
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// A plain address `local@domain` (no wildcard), lowercase.
fn is_address(s: &str) -> bool {
    matches!(Pattern::parse(s), Some(Pattern::Address(_)))
}

/// A domain name (no `@`, no wildcard, no empty labels), lowercase.
fn is_domain(s: &str) -> bool {
    !s.contains('@') && matches!(Pattern::parse(s), Some(Pattern::Domain(_)))
}

fn level(r: &mut Report, v: &Spanned<String>) -> Option<Level> {
    match v.get_ref().parse::<Level>() {
        Ok(l) => Some(l),
        Err(e) => {
            r.error(v.span(), e.to_string());
            None
        }
    }
}

/// Parse one of a fixed set of lowercase words.
fn choice<T: Copy>(
    r: &mut Report,
    v: &Spanned<String>,
    key: &str,
    options: &[(&str, T)],
) -> Option<T> {
    let s = v.get_ref().trim();
    if let Some((_, t)) = options
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
    {
        return Some(*t);
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let expected = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    };
    r.error(
        v.span(),
        format!("invalid {key} {:?}: expected {expected}", v.get_ref()),
    );
    None
}

fn patterns(r: &mut Report, list: &[Spanned<String>]) -> Vec<Pattern> {
    list.iter()
        .filter_map(|p| {
            let parsed = Pattern::parse(p.get_ref());
            if parsed.is_none() {
                r.error(
                    p.span(),
                    format!(
                        "invalid exclude pattern {:?}: expected *@domain, local@domain or domain",
                        p.get_ref()
                    ),
                );
            }
            parsed
        })
        .collect()
}

fn in_internal(org: &Organization, domain: &str) -> bool {
    org.internal_domains
        .iter()
        .any(|d| domain_matches(domain, d))
}

fn compile_organization(r: &mut Report, raw: Option<&Spanned<RawOrganization>>) -> Organization {
    let mut org = Organization {
        name: String::new(),
        internal_domains: Vec::new(),
        contacts: ContactsMode::Team,
        auto_create_contacts: AutoCreate::Sent,
        exclude: Vec::new(),
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
    };
    let Some(spanned) = raw else {
        r.error(
            0..0,
            "missing [organization] section: internal_domains is required",
        );
        return org;
    };
    let o = spanned.get_ref();
    org.name = o.name.as_deref().unwrap_or("").trim().to_string();

    if o.internal_domains.is_empty() {
        r.error(
            spanned.span(),
            "[organization] internal_domains must list at least one domain",
        );
    }
    for d in &o.internal_domains {
        let n = norm(d.get_ref());
        if is_domain(&n) {
            org.internal_domains.push(n);
        } else {
            r.error(
                d.span(),
                format!("invalid internal domain {:?}", d.get_ref()),
            );
        }
    }
    if let Some(v) = &o.contacts {
        if let Some(m) = choice(
            r,
            v,
            "contacts mode",
            &[
                ("team", ContactsMode::Team),
                ("buckets", ContactsMode::Buckets),
            ],
        ) {
            org.contacts = m;
        }
    }
    if let Some(v) = &o.auto_create_contacts {
        if let Some(a) = choice(
            r,
            v,
            "auto_create_contacts",
            &[
                ("sent", AutoCreate::Sent),
                ("all", AutoCreate::All),
                ("none", AutoCreate::None),
            ],
        ) {
            org.auto_create_contacts = a;
        }
    }
    org.exclude = patterns(r, &o.exclude);
    if let Some(list) = &o.confidential_keywords {
        org.confidential_keywords = Vec::new();
        for k in list {
            let t = k.get_ref().trim();
            if t.is_empty() {
                r.error(k.span(), "confidential keyword must not be empty");
            } else {
                org.confidential_keywords.push(t.to_lowercase());
            }
        }
    }
    if let Some(list) = &o.impersonal_localparts {
        org.impersonal_localparts = HashSet::new();
        for l in list {
            let n = norm(l.get_ref());
            if n.is_empty() || n.contains('@') || n.chars().any(char::is_whitespace) {
                r.error(
                    l.span(),
                    format!(
                        "invalid impersonal local part {:?}: expected the part before @, e.g. noreply",
                        l.get_ref()
                    ),
                );
            } else {
                org.impersonal_localparts.insert(n);
            }
        }
    }
    if let Some(list) = &o.personal_domains {
        org.personal_domains = HashSet::new();
        for d in list {
            let n = norm(d.get_ref());
            if is_domain(&n) {
                org.personal_domains.insert(n);
            } else {
                r.error(
                    d.span(),
                    format!("invalid personal domain {:?}", d.get_ref()),
                );
            }
        }
    }
    org
}

fn compile_defaults(r: &mut Report, raw: Option<&RawDefaults>) -> Defaults {
    let mut d = Defaults::default();
    let Some(raw) = raw else { return d };
    if let Some(a) = raw.activity {
        d.activity = a;
    }
    if let Some(l) = raw.inbound.as_ref().and_then(|v| level(r, v)) {
        d.inbound = l;
    }
    if let Some(l) = raw.outbound.as_ref().and_then(|v| level(r, v)) {
        d.outbound = l;
    }
    d
}

fn compile_contacts(
    r: &mut Report,
    raw: &[Spanned<RawContact>],
    org: &Organization,
) -> Vec<PolicyContact> {
    // Names first: persons may name an organization declared after them.
    let mut by_name: HashMap<String, (usize, Range<usize>)> = HashMap::new();
    let mut kinds = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        let c = c.get_ref();
        let name = c.name.get_ref().trim();
        if name.is_empty() {
            r.error(c.name.span(), "contact name must not be empty");
        } else if let Some((_, first)) = by_name.get(&name.to_lowercase()) {
            let line = r.line_of(first);
            r.error(
                c.name.span(),
                format!("duplicate contact name {name:?} (first at line {line}; names are case-insensitive)"),
            );
        } else {
            by_name.insert(name.to_lowercase(), (i, c.name.span()));
        }
        kinds.push(choice(
            r,
            &c.kind,
            "contact kind",
            &[
                ("organization", ContactKind::Organization),
                ("person", ContactKind::Person),
            ],
        ));
    }

    let mut domain_owner: HashMap<String, Range<usize>> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (c, kind) in raw.iter().zip(&kinds) {
        let c = c.get_ref();
        let name = c.name.get_ref().trim().to_string();
        // With an invalid kind (already reported) the checks that depend on
        // the kind are skipped rather than guessed.
        let known = *kind;
        let kind = kind.unwrap_or(ContactKind::Person);

        let mut domains = Vec::new();
        for d in &c.domains {
            let n = norm(d.get_ref());
            if !is_domain(&n) {
                r.error(d.span(), format!("invalid domain {:?}", d.get_ref()));
                continue;
            }
            if known == Some(ContactKind::Person) {
                r.error(
                    d.span(),
                    format!("only an organization owns domains; {name:?} is a person"),
                );
            } else if in_internal(org, &n) {
                r.error(
                    d.span(),
                    format!("domain {n} is internal: contacts are external"),
                );
            } else if let Some(first) = domain_owner.get(&n) {
                let line = r.line_of(first);
                r.error(
                    d.span(),
                    format!("domain {n} is already claimed by another organization (line {line})"),
                );
            } else {
                domain_owner.insert(n.clone(), d.span());
            }
            domains.push(n);
        }

        let mut addresses = Vec::new();
        for a in &c.addresses {
            let n = norm(a.get_ref());
            if !is_address(&n) {
                r.error(a.span(), format!("invalid address {:?}", a.get_ref()));
                continue;
            }
            if in_internal(org, domain_of(&n)) {
                r.error(
                    a.span(),
                    format!("contact address {n} is in an internal domain: contacts are external"),
                );
            }
            if !addresses.contains(&n) {
                addresses.push(n);
            }
        }

        let mut primary_addresses = Vec::new();
        for p in &c.primary_addresses {
            let n = norm(p.get_ref());
            if !addresses.contains(&n) {
                r.error(
                    p.span(),
                    format!("primary address {n} is not in this contact's addresses"),
                );
            } else {
                primary_addresses.push(n);
            }
        }

        let mut organization = None;
        if let Some(o) = &c.organization {
            let key = o.get_ref().trim().to_lowercase();
            if known == Some(ContactKind::Organization) {
                r.error(
                    o.span(),
                    format!(
                        "only a person belongs to an organization; {name:?} is an organization"
                    ),
                );
            } else if known.is_some() {
                match by_name.get(&key) {
                    Some(&(i, _)) if kinds[i] == Some(ContactKind::Organization) => {
                        organization = Some(i)
                    }
                    // Its kind is invalid, which is reported there.
                    Some(&(i, _)) if kinds[i].is_none() => {}
                    Some(_) => r.error(
                        o.span(),
                        format!("contact {:?} is not an organization", o.get_ref()),
                    ),
                    None => r.error(o.span(), format!("unknown organization {:?}", o.get_ref())),
                }
            }
        }

        out.push(PolicyContact {
            id: policy_contact_id(&name),
            name,
            kind,
            domains,
            addresses,
            primary_addresses,
            organization,
        });
    }
    out
}

fn compile_users(
    r: &mut Report,
    raw: &[Spanned<RawUser>],
    org: &Organization,
    contacts: &[PolicyContact],
) -> Vec<User> {
    let contact_by_name: HashMap<String, usize> = contacts
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.to_lowercase(), i))
        .collect();
    // Every user address and alias, to find duplicates and logins that are
    // someone else's address.
    let mut address_owner: HashMap<String, (usize, Range<usize>)> = HashMap::new();
    let mut login_owner: HashMap<String, Range<usize>> = HashMap::new();
    let mut token_owner: HashMap<[u8; 32], Range<usize>> = HashMap::new();
    let mut users = Vec::with_capacity(raw.len());

    for (ui, u) in raw.iter().enumerate() {
        let u = u.get_ref();
        let mut addresses = Vec::new();
        for (i, a) in std::iter::once(&u.address).chain(&u.aliases).enumerate() {
            let what = if i == 0 { "user address" } else { "alias" };
            let n = norm(a.get_ref());
            // Without internal domains (reported at [organization]) every
            // address would be outside them: not reported again here.
            if !is_address(&n) {
                r.error(a.span(), format!("invalid {what} {:?}", a.get_ref()));
            } else if !org.internal_domains.is_empty() && !in_internal(org, domain_of(&n)) {
                r.error(
                    a.span(),
                    format!(
                        "{what} {n} is outside the internal domains ({})",
                        org.internal_domains.join(", ")
                    ),
                );
            }
            if let Some((_, first)) = address_owner.get(&n) {
                let line = r.line_of(first);
                r.error(
                    a.span(),
                    format!("duplicate user address {n} (first at line {line})"),
                );
            } else {
                address_owner.insert(n.clone(), (ui, a.span()));
            }
            addresses.push(n);
        }
        let address = addresses.remove(0);

        let mut logins = Vec::new();
        for l in &u.logins {
            let n = norm(l.get_ref());
            if n.is_empty() || n.chars().any(char::is_whitespace) {
                r.error(l.span(), format!("invalid login {:?}", l.get_ref()));
            } else if let Some(first) = login_owner.get(&n) {
                let line = r.line_of(first);
                r.error(
                    l.span(),
                    format!("duplicate login {n} (first at line {line})"),
                );
            } else {
                login_owner.insert(n.clone(), l.span());
            }
            logins.push(n);
        }

        let status = u
            .status
            .as_ref()
            .and_then(|s| {
                choice(
                    r,
                    s,
                    "status",
                    &[
                        ("active", UserStatus::Active),
                        ("removed", UserStatus::Removed),
                    ],
                )
            })
            .unwrap_or(UserStatus::Active);
        let inbound = u.inbound.as_ref().and_then(|v| level(r, v));
        let outbound = u.outbound.as_ref().and_then(|v| level(r, v));
        let share_since =
            u.share_since
                .as_ref()
                .and_then(|v| match share_since_seconds(v.get_ref()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        r.error(v.span(), e);
                        None
                    }
                });
        let exclude = patterns(r, &u.exclude);

        let token_sha256 = u.token_sha256.as_ref().and_then(|t| {
            let Some(h) = parse_sha256_hex(t.get_ref().trim()) else {
                r.error(
                    t.span(),
                    "token_sha256 is not a SHA-256 hash: expected 64 hex digits",
                );
                return None;
            };
            if let Some(first) = token_owner.get(&h) {
                let line = r.line_of(first);
                r.error(
                    t.span(),
                    format!("token_sha256 is already another user's token (line {line})"),
                );
            } else {
                token_owner.insert(h, t.span());
            }
            Some(h)
        });

        let mut settings = Vec::new();
        for s in &u.contacts {
            let s = s.get_ref();
            let level = level(r, &s.level);
            let target = contact_target(r, &s.contact, &contact_by_name);
            if let (Some(target), Some(level)) = (target, level) {
                settings.push(ContactSetting { target, level });
            }
        }

        users.push(User {
            address,
            aliases: addresses,
            logins,
            status,
            activity: u.activity,
            inbound,
            outbound,
            share_since,
            exclude,
            token_sha256,
            contacts: settings,
        });
    }

    // A login that is another user's address would make that address log in
    // as the wrong person (logins are looked up before addresses).
    for (ui, u) in raw.iter().enumerate() {
        for l in &u.get_ref().logins {
            let n = norm(l.get_ref());
            if let Some((owner, _)) = address_owner.get(&n) {
                if *owner != ui {
                    r.error(
                        l.span(),
                        format!("login {n} is the address of user {}", users[*owner].address),
                    );
                }
            }
        }
    }
    users
}

/// A user's per-contact setting names a policy contact (by name, any case),
/// else an address (it has an `@`), else a domain.
fn contact_target(
    r: &mut Report,
    v: &Spanned<String>,
    contact_by_name: &HashMap<String, usize>,
) -> Option<ContactTarget> {
    let s = v.get_ref().trim();
    if let Some(&i) = contact_by_name.get(&s.to_lowercase()) {
        return Some(ContactTarget::Contact(i));
    }
    let n = s.to_ascii_lowercase();
    if n.contains('@') {
        match Pattern::parse(&n) {
            Some(Pattern::Address(a)) => return Some(ContactTarget::Address(a)),
            Some(Pattern::Domain(d)) => return Some(ContactTarget::Domain(d)),
            None => {}
        }
    } else if is_domain(&n) && n.contains('.') {
        return Some(ContactTarget::Domain(n));
    }
    r.error(
        v.span(),
        format!("unknown contact {s:?}: not a contact name, an address or a domain"),
    );
    None
}

fn compile_buckets(
    r: &mut Report,
    raw: &[Spanned<RawBucket>],
    users: &[User],
    contacts: &[PolicyContact],
) -> Vec<Bucket> {
    let user_by_address: HashMap<&str, &User> = users
        .iter()
        .flat_map(|u| u.addresses().map(move |a| (a, u)))
        .collect();
    let resolve_user = |r: &mut Report, v: &Spanned<String>, what: &str| {
        let n = norm(v.get_ref());
        match user_by_address.get(n.as_str()) {
            Some(u) => Some(u.address.clone()),
            None => {
                r.error(
                    v.span(),
                    format!("bucket {what} {:?} is not a user's address", v.get_ref()),
                );
                None
            }
        }
    };
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for b in raw {
        let b = b.get_ref();
        let name = b.name.get_ref().trim().to_string();
        if name.is_empty() {
            r.error(b.name.span(), "bucket name must not be empty");
        } else if let Some(first) = names.get(&name.to_lowercase()) {
            let line = r.line_of(first);
            r.error(
                b.name.span(),
                format!("duplicate bucket name {name:?} (first at line {line})"),
            );
        } else {
            names.insert(name.to_lowercase(), b.name.span());
        }

        let owner = resolve_user(r, &b.owner, "owner").unwrap_or_default();

        let mut bucket_contacts = Vec::new();
        for c in &b.contacts {
            let key = c.get_ref().trim().to_lowercase();
            match contacts.iter().position(|pc| pc.name.to_lowercase() == key) {
                Some(i) if bucket_contacts.contains(&i) => r.error(
                    c.span(),
                    format!("contact {:?} is listed twice in this bucket", c.get_ref()),
                ),
                Some(i) => bucket_contacts.push(i),
                None => r.error(
                    c.span(),
                    format!(
                        "unknown contact {:?}: buckets name contacts declared in [[contacts]]",
                        c.get_ref()
                    ),
                ),
            }
        }

        let mut members: Vec<BucketMember> = Vec::new();
        for m in &b.members {
            let m = m.get_ref();
            let user = resolve_user(r, &m.user, "member");
            let role = match &m.role {
                Some(v) => choice(
                    r,
                    v,
                    "bucket role",
                    &[
                        ("viewer", BucketRole::Viewer),
                        ("editor", BucketRole::Editor),
                        ("manager", BucketRole::Manager),
                        ("owner", BucketRole::Owner),
                    ],
                ),
                None => Some(BucketRole::Viewer),
            };
            let Some(user) = user else { continue };
            if members.iter().any(|x| x.user == user) {
                r.error(
                    m.user.span(),
                    format!("user {user} is listed twice in this bucket's members"),
                );
                continue;
            }
            if let Some(role) = role {
                members.push(BucketMember {
                    user,
                    role,
                    view_conversations: m.view_conversations.unwrap_or(false),
                });
            }
        }
        out.push(Bucket {
            name,
            owner,
            contacts: bucket_contacts,
            members,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1970, 1, 2), 1);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(days_from_civil(2026, 11, 1), 20_758);
        // Leap years: 2000 (divisible by 400) and 2024 have Feb 29; 1900 and
        // 2100 do not.
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
        assert_eq!(
            days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28),
            2
        );
        assert_eq!(
            days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 28),
            1
        );
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1
        );
        assert_eq!(
            days_from_civil(2023, 3, 1) - days_from_civil(2023, 2, 28),
            1
        );
        // Whole years.
        assert_eq!(
            days_from_civil(2025, 1, 1) - days_from_civil(2024, 1, 1),
            366
        );
        assert_eq!(
            days_from_civil(2026, 1, 1) - days_from_civil(2025, 1, 1),
            365
        );
        // Before 1970, and before year 0 (proleptic Gregorian).
        assert_eq!(days_from_civil(1900, 1, 1), -25_567);
        assert_eq!(days_from_civil(1600, 3, 1), -135_080);
        assert_eq!(days_from_civil(0, 3, 1), -719_468);
        assert_eq!(days_from_civil(-1, 12, 31), -719_529);
    }

    #[test]
    fn days_from_civil_counts_every_day_once() {
        let mut expected = days_from_civil(1896, 1, 1);
        for year in 1896..=2104 {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            for month in 1..=12u32 {
                let len = match month {
                    2 if leap => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                for day in 1..=len {
                    assert_eq!(days_from_civil(year, month, day), expected);
                    expected += 1;
                }
            }
        }
    }

    fn since(toml_value: &str) -> Result<i64, String> {
        let t: toml::Table = toml::from_str(&format!("v = {toml_value}")).unwrap();
        share_since_seconds(&t["v"])
    }

    #[test]
    fn share_since_accepts_offsets_dates_and_rfc3339_strings() {
        let nov1 = 20_758 * 86_400;
        assert_eq!(since("2026-11-01T00:00:00Z"), Ok(nov1));
        assert_eq!(since("2026-11-01T00:00:00.999Z"), Ok(nov1));
        assert_eq!(since("2026-11-01T02:00:00+02:00"), Ok(nov1));
        assert_eq!(since("2026-10-31T19:30:00-04:30"), Ok(nov1));
        assert_eq!(since("2026-11-01"), Ok(nov1));
        assert_eq!(since("\"2026-11-01T00:00:00Z\""), Ok(nov1));
        assert_eq!(since("\"2026-11-01T01:00:00+01:00\""), Ok(nov1));
        assert_eq!(since("1969-12-31T23:59:59Z"), Ok(-1));
    }

    #[test]
    fn share_since_rejects_local_times_and_other_values() {
        for bad in [
            "2026-11-01T00:00:00",
            "10:00:00",
            "\"2026-11-01\"",
            "\"2026-11-01T00:00:00\"",
            "\"yesterday\"",
            "1700000000",
            "true",
        ] {
            let e = since(bad).unwrap_err();
            assert!(e.contains(SHARE_SINCE_HINT), "{bad}: {e}");
        }
    }
}
