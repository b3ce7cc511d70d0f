//! The compiled policy: `config/policy.toml` after validation, with addresses
//! lowercased and lookup indexes built. Built by `config::policy` (which owns
//! the file format and its diagnostics) through [`Policy::build`]; read by
//! `capture` and `read`. Immutable: a reload builds a new one.

use super::facts::domain_of;
use super::level::{Direction, Level};
use std::collections::{HashMap, HashSet};

/// The built-in impersonal local parts: never person contacts.
pub const DEFAULT_IMPERSONAL_LOCALPARTS: &[&str] = &[
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "support",
    "team",
    "info",
    "sales",
    "billing",
    "postmaster",
    "mailer-daemon",
    "abuse",
    "admin",
    "hello",
    "contact",
    "help",
    "notifications",
    "notification",
    "newsletter",
    "news",
    "office",
    "accounts",
    "invoice",
    "invoices",
    "bounce",
    "bounces",
    "root",
    "webmaster",
    "marketing",
];

/// The built-in personal mail providers: never organizations.
pub const DEFAULT_PERSONAL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "ymail.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "pm.me",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "mail.com",
    "zoho.com",
    "yandex.com",
    "yandex.ru",
    "fastmail.com",
    "hey.com",
    "tutanota.com",
    "qq.com",
    "163.com",
];

/// The built-in confidential keywords.
pub const DEFAULT_CONFIDENTIAL_KEYWORDS: &[&str] =
    &["Confidential", "Private", "Personal", "Privileged"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactsMode {
    /// Every active user can open every contact's timeline.
    Team,
    /// Only bucket members with `view_conversations` (and bucket owners).
    Buckets,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCreate {
    /// External participants of mail a user sends.
    Sent,
    /// External participants of any captured mail.
    All,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Removed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactKind {
    Person,
    Organization,
}

impl ContactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactKind::Person => "person",
            ContactKind::Organization => "organization",
        }
    }
}

/// An exclude pattern: `*@domain`, `local@domain` or `domain`. Domains also
/// match their subdomains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Address(String),
    Domain(String),
}

impl Pattern {
    /// Parse a pattern; `None` when it is empty or malformed.
    pub fn parse(s: &str) -> Option<Pattern> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return None;
        }
        match s.rsplit_once('@') {
            Some(("*", d)) if valid_domain(d) => Some(Pattern::Domain(d.to_string())),
            Some((l, d)) if !l.is_empty() && !l.contains('*') && valid_domain(d) => {
                Some(Pattern::Address(s.clone()))
            }
            Some(_) => None,
            None if valid_domain(&s) => Some(Pattern::Domain(s)),
            None => None,
        }
    }

    pub fn matches(&self, address: &str) -> bool {
        match self {
            Pattern::Address(a) => a == address,
            Pattern::Domain(d) => domain_matches(domain_of(address), d),
        }
    }
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && !d.starts_with('.')
        && !d.ends_with('.')
        && !d.contains("..")
        && !d.contains('*')
        && !d.contains('@')
}

/// True when `domain` is `pattern` or one of its subdomains.
pub fn domain_matches(domain: &str, pattern: &str) -> bool {
    domain == pattern
        || (domain.len() > pattern.len()
            && domain.ends_with(pattern)
            && domain.as_bytes()[domain.len() - pattern.len() - 1] == b'.')
}

/// What a per-contact setting of a user names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContactTarget {
    Address(String),
    Domain(String),
    /// Index into `Policy::contacts`.
    Contact(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactSetting {
    pub target: ContactTarget,
    pub level: Level,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Primary address, lowercase.
    pub address: String,
    pub aliases: Vec<String>,
    /// Login names, lowercase.
    pub logins: Vec<String>,
    pub status: UserStatus,
    /// `None`: the org default.
    pub activity: Option<bool>,
    pub inbound: Option<Level>,
    pub outbound: Option<Level>,
    /// Unix seconds.
    pub share_since: Option<i64>,
    pub exclude: Vec<Pattern>,
    /// SHA-256 of the user's API token.
    pub token_sha256: Option<[u8; 32]>,
    pub contacts: Vec<ContactSetting>,
}

impl User {
    /// The primary address and the aliases.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.address.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    pub fn has_address(&self, address: &str) -> bool {
        self.addresses().any(|a| a == address)
    }
}

/// A contact declared in the policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyContact {
    /// Stable id, from the name (see `engine::policy_contact_id`).
    pub id: String,
    pub name: String,
    pub kind: ContactKind,
    /// Lowercase.
    pub domains: Vec<String>,
    /// Lowercase.
    pub addresses: Vec<String>,
    pub primary_addresses: Vec<String>,
    /// Index into `Policy::contacts` of the organization a person belongs to.
    pub organization: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BucketRole {
    Viewer,
    Editor,
    Manager,
    Owner,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketMember {
    /// A user's primary address.
    pub user: String,
    pub role: BucketRole,
    pub view_conversations: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    /// The owner's primary address.
    pub owner: String,
    /// Indexes into `Policy::contacts`.
    pub contacts: Vec<usize>,
    pub members: Vec<BucketMember>,
}

/// Organisation-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub name: String,
    /// Lowercase; subdomains are internal too.
    pub internal_domains: Vec<String>,
    pub contacts: ContactsMode,
    pub auto_create_contacts: AutoCreate,
    pub exclude: Vec<Pattern>,
    /// Lowercase, matched as whole words.
    pub confidential_keywords: Vec<String>,
    pub impersonal_localparts: HashSet<String>,
    pub personal_domains: HashSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub activity: bool,
    pub inbound: Level,
    pub outbound: Level,
}

impl Default for Defaults {
    /// Privacy first: share metadata only unless the policy says more.
    fn default() -> Self {
        Defaults {
            activity: true,
            inbound: Level::Metadata,
            outbound: Level::Metadata,
        }
    }
}

/// The whole compiled policy plus lookup indexes.
#[derive(Clone, Debug)]
pub struct Policy {
    pub organization: Organization,
    pub defaults: Defaults,
    pub users: Vec<User>,
    pub contacts: Vec<PolicyContact>,
    pub buckets: Vec<Bucket>,
    user_by_address: HashMap<String, usize>,
    user_by_login: HashMap<String, usize>,
    /// Address → index of the contact whose timeline it belongs to.
    contact_by_address: HashMap<String, usize>,
    /// (domain, organization index), longest domain first.
    org_domains: Vec<(String, usize)>,
    contact_by_name: HashMap<String, usize>,
}

/// A structural problem `Policy::build` found. `config::policy` reports these
/// with file positions before calling `build`, so reaching one here means a
/// caller skipped validation; it is still an error, never a silent default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

impl Policy {
    /// Index the parts. Fails on duplicate user addresses/aliases/logins and on
    /// out-of-range contact indexes.
    pub fn build(
        organization: Organization,
        defaults: Defaults,
        users: Vec<User>,
        contacts: Vec<PolicyContact>,
        buckets: Vec<Bucket>,
    ) -> Result<Policy, BuildError> {
        let mut user_by_address = HashMap::new();
        let mut user_by_login = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            for a in u.addresses() {
                if user_by_address.insert(a.to_string(), i).is_some() {
                    return Err(BuildError(format!("address {a} belongs to two users")));
                }
            }
            for l in &u.logins {
                if user_by_login.insert(l.clone(), i).is_some() {
                    return Err(BuildError(format!("login {l} belongs to two users")));
                }
            }
        }
        let n = contacts.len();
        let bad = |i: usize| i >= n;
        if contacts.iter().any(|c| c.organization.is_some_and(bad))
            || buckets.iter().any(|b| b.contacts.iter().any(|&i| bad(i)))
            || users.iter().any(|u| {
                u.contacts
                    .iter()
                    .any(|s| matches!(s.target, ContactTarget::Contact(i) if bad(i)))
            })
        {
            return Err(BuildError("contact index out of range".into()));
        }

        // Primary owner of each address: primary_addresses, else a person
        // listing it, else the first contact listing it.
        let mut contact_by_address: HashMap<String, usize> = HashMap::new();
        let mut rank: HashMap<String, u8> = HashMap::new();
        for (i, c) in contacts.iter().enumerate() {
            for a in &c.addresses {
                let r = if c.primary_addresses.contains(a) {
                    3
                } else if c.kind == ContactKind::Person {
                    2
                } else {
                    1
                };
                if rank.get(a).is_none_or(|&old| r > old) {
                    rank.insert(a.clone(), r);
                    contact_by_address.insert(a.clone(), i);
                }
            }
            for a in &c.primary_addresses {
                if !c.addresses.contains(a) && rank.get(a).is_none_or(|&old| 3 > old) {
                    rank.insert(a.clone(), 3);
                    contact_by_address.insert(a.clone(), i);
                }
            }
        }
        let mut org_domains: Vec<(String, usize)> = contacts
            .iter()
            .enumerate()
            .filter(|(_, c)| c.kind == ContactKind::Organization)
            .flat_map(|(i, c)| c.domains.iter().map(move |d| (d.clone(), i)))
            .collect();
        org_domains.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let contact_by_name = contacts
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.to_lowercase(), i))
            .collect();
        Ok(Policy {
            organization,
            defaults,
            users,
            contacts,
            buckets,
            user_by_address,
            user_by_login,
            contact_by_address,
            org_domains,
            contact_by_name,
        })
    }

    /// The user owning this address (primary or alias), case-insensitive.
    pub fn user_by_address(&self, address: &str) -> Option<&User> {
        let a = address.trim().to_ascii_lowercase();
        self.user_by_address.get(&a).map(|&i| &self.users[i])
    }

    /// The user for a login name seen in AUTH / LOGIN; a login that is one of
    /// the user's addresses also counts.
    pub fn user_by_login(&self, login: &str) -> Option<&User> {
        let l = login.trim().to_ascii_lowercase();
        self.user_by_login
            .get(&l)
            .or_else(|| self.user_by_address.get(&l))
            .map(|&i| &self.users[i])
    }

    /// The user by login or address (what `--owner` and the capture paths accept).
    pub fn find_user(&self, who: &str) -> Option<&User> {
        self.user_by_login(who)
    }

    /// The user whose API token hashes to `sha256`. Constant-time per comparison.
    pub fn user_by_token_hash(&self, sha256: &[u8; 32]) -> Option<&User> {
        let mut found = None;
        for u in &self.users {
            if let Some(h) = &u.token_sha256 {
                if constant_time_eq(h, sha256) {
                    found = Some(u);
                }
            }
        }
        found
    }

    /// True when the address is in an internal domain (or a subdomain) or belongs to a user.
    pub fn is_internal(&self, address: &str) -> bool {
        let d = domain_of(address);
        self.organization
            .internal_domains
            .iter()
            .any(|p| domain_matches(d, p))
            || self.user_by_address.contains_key(address)
    }

    /// The policy contact an address belongs to (its timeline), if any.
    pub fn contact_for_address(&self, address: &str) -> Option<usize> {
        self.contact_by_address.get(address).copied()
    }

    /// The policy organization owning the address's domain (most specific first).
    pub fn org_for_domain(&self, domain: &str) -> Option<usize> {
        self.org_domains
            .iter()
            .find(|(d, _)| domain_matches(domain, d))
            .map(|&(_, i)| i)
    }

    pub fn contact_by_name(&self, name: &str) -> Option<usize> {
        self.contact_by_name.get(&name.to_lowercase()).copied()
    }

    pub fn contact_by_id(&self, id: &str) -> Option<&PolicyContact> {
        self.contacts.iter().find(|c| c.id == id)
    }

    /// The owner's default level for a direction (user setting, else org default).
    pub fn default_level(&self, user: &User, direction: Direction) -> (Level, bool) {
        match direction {
            Direction::Inbound => user
                .inbound
                .map(|l| (l, true))
                .unwrap_or((self.defaults.inbound, false)),
            Direction::Outbound => user
                .outbound
                .map(|l| (l, true))
                .unwrap_or((self.defaults.outbound, false)),
        }
    }

    pub fn activity(&self, user: &User) -> bool {
        user.activity.unwrap_or(self.defaults.activity)
    }
}

/// Compare two equal-length byte arrays without an early exit.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_domains_and_subdomains() {
        let p = Pattern::parse("*@Bank.example").unwrap();
        assert!(p.matches("x@bank.example"));
        assert!(p.matches("x@eu.bank.example"));
        assert!(!p.matches("x@notbank.example"));
        let d = Pattern::parse("family.example").unwrap();
        assert!(d.matches("mum@family.example"));
        assert!(d.matches("mum@home.family.example"));
        let a = Pattern::parse("bob@client.example").unwrap();
        assert!(a.matches("bob@client.example"));
        assert!(!a.matches("rob@client.example"));
        for bad in ["", "*", "a@", "@x", "a b@c", "*@*.x", "x..y", "a*@b.c"] {
            assert_eq!(Pattern::parse(bad), None, "{bad}");
        }
    }
}
