//! `config::load` / `config::load_policy` through the library API: the shipped
//! examples load cleanly, and every broken fixture reports exactly the
//! diagnostics it declares.
//!
//! Each fixture under `tests/fixtures/config/{policy,mailshare,multi}/` states
//! what it must produce in comments of the form
//!
//! ```text
//! # expect: LINE:COLUMN: substring of the message
//! ```
//!
//! and the tests assert that the diagnostics for that file are exactly those
//! (same count, same positions, message containing the substring), so the
//! fixtures double as documentation of every error `mailshare check` reports.

use mailshare::config::{self, LogFormat, LogLevel, TlsMode};
use mailshare::diag::Diagnostic;
use mailshare::engine::policy::{
    AutoCreate, BucketRole, ContactKind, ContactTarget, ContactsMode, Defaults, UserStatus,
    DEFAULT_CONFIDENTIAL_KEYWORDS, DEFAULT_IMPERSONAL_LOCALPARTS, DEFAULT_PERSONAL_DOMAINS,
};
use mailshare::engine::Level;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_dir(sub: &str) -> PathBuf {
    root().join("tests/fixtures/config").join(sub)
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The `.toml` files of a fixture directory, sorted.
fn fixtures(sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(fixture_dir(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[derive(Debug)]
struct Expect {
    line: usize,
    column: usize,
    text: String,
}

/// The `# expect: L:C: text` lines of a fixture.
fn expectations(path: &Path) -> Vec<Expect> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().unwrap().parse().unwrap();
            let column = parts.next().unwrap().parse().unwrap();
            let text = parts.next().unwrap().trim().to_string();
            Expect { line, column, text }
        })
        .collect()
}

/// Check that `diags` (for `file` only) are exactly what `file` declares;
/// the error says what differs.
fn check_expectations(file: &Path, diags: &[Diagnostic]) -> Result<(), String> {
    let expected = expectations(file);
    let shown = config_render(diags);
    if expected.is_empty() {
        return Err(format!("{} declares no expectation", file.display()));
    }
    let got: Vec<&Diagnostic> = diags.iter().filter(|d| d.file == file).collect();
    if got.len() != expected.len() {
        return Err(format!(
            "{}: expected {} diagnostics {expected:?}, got:\n{shown}",
            file.display(),
            expected.len()
        ));
    }
    for (d, e) in got.iter().zip(&expected) {
        if d.line != e.line || d.column != e.column || !d.message.contains(&e.text) {
            return Err(format!(
                "{}: expected {}:{}: …{}…, got:\n{shown}",
                file.display(),
                e.line,
                e.column,
                e.text
            ));
        }
        // The printed form is the contract: file:line:column: message.
        let printed = format!("{}:{}:{}: {}", file.display(), e.line, e.column, d.message);
        if d.to_string() != printed {
            return Err(format!("{d} is not printed as {printed}"));
        }
    }
    Ok(())
}

fn assert_matches_expectations(file: &Path, diags: &[Diagnostic]) {
    if let Err(e) = check_expectations(file, diags) {
        panic!("{e}");
    }
}

fn config_render(diags: &[Diagnostic]) -> String {
    mailshare::diag::render(diags)
}

// ---------------------------------------------------------------------------
// The shipped examples.

#[test]
fn example_files_load_cleanly_with_every_feature() {
    let path = root().join("config/mailshare.toml");
    let loaded = match config::load(&path) {
        Ok(l) => l,
        Err(d) => panic!("example config has errors:\n{}", config_render(&d)),
    };
    let c = &loaded.config;
    let dir = root().join("config");
    assert_eq!(c.store.path, dir.join("../data/store"));
    assert_eq!(loaded.policy_path, dir.join("policy.toml"));
    assert_eq!(c.policy.path, loaded.policy_path);
    let tls = c.tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, dir.join("tls/cert.pem"));
    assert_eq!(tls.key_file, dir.join("tls/key.pem"));

    let admin = c.admin.as_ref().unwrap();
    assert_eq!(admin.listen.to_string(), "127.0.0.1:8025");
    assert_eq!(admin.admin_tokens_sha256, vec![sha256("demo-admin")]);

    let smtp = c.smtp.as_ref().unwrap();
    assert_eq!(smtp.upstream.address, "127.0.0.1:1587");
    assert_eq!(smtp.upstream.port, 1587);
    assert_eq!(smtp.upstream.tls, TlsMode::None);
    let ports: Vec<(u16, TlsMode)> = smtp
        .listeners
        .iter()
        .map(|l| (l.listen.port(), l.tls))
        .collect();
    assert_eq!(
        ports,
        [(2587, TlsMode::Starttls), (2465, TlsMode::Implicit)]
    );
    let imap = c.imap.as_ref().unwrap();
    assert_eq!(imap.upstream.address, "127.0.0.1:1143");
    let ports: Vec<(u16, TlsMode)> = imap
        .listeners
        .iter()
        .map(|l| (l.listen.port(), l.tls))
        .collect();
    assert_eq!(
        ports,
        [(2143, TlsMode::Starttls), (2993, TlsMode::Implicit)]
    );
    assert!(c
        .smtp
        .iter()
        .chain(&c.imap)
        .flat_map(|p| &p.listeners)
        .all(|l| l.listen.ip().is_loopback() && !l.allow_plaintext_auth && !l.proxy_protocol));
    assert_eq!(c.limits, config::Limits::default());
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.log.format, LogFormat::Auto);

    let p = &loaded.policy;
    let org = &p.organization;
    assert_eq!(org.name, "Acme Advisors");
    assert_eq!(org.internal_domains, ["acme.example"]);
    assert_eq!(org.contacts, ContactsMode::Team);
    assert_eq!(org.auto_create_contacts, AutoCreate::Sent);
    assert!(org
        .confidential_keywords
        .contains(&"restricted".to_string()));
    assert!(org.impersonal_localparts.contains("careers"));
    assert!(org.personal_domains.contains("posteo.de"));
    assert_eq!(
        p.defaults,
        Defaults {
            activity: true,
            inbound: Level::Subject,
            outbound: Level::Full
        }
    );

    let alice = p.user_by_login("alice").unwrap();
    assert_eq!(alice.address, "alice@acme.example");
    assert_eq!(p.user_by_address("A.Smith@acme.example"), Some(alice));
    assert_eq!(alice.share_since, Some(1_672_531_200)); // 2023-01-01T00:00:00Z
    assert_eq!(alice.token_sha256, Some(sha256("demo-alice")));
    assert_eq!(alice.inbound, Some(Level::Full));
    assert_eq!(alice.contacts.len(), 3);
    assert_eq!(
        alice.contacts[0].target,
        ContactTarget::Address("bob@client-a.example".into())
    );
    assert_eq!(
        alice.contacts[1].target,
        ContactTarget::Contact(p.contact_by_name("globex corporation").unwrap())
    );
    assert_eq!(
        alice.contacts[2].target,
        ContactTarget::Domain("lawyers.example".into())
    );
    let bob = p.user_by_login("bob").unwrap();
    assert_eq!(bob.share_since, Some(1_685_577_600)); // 2023-06-01, midnight UTC
    assert_eq!(p.user_by_token_hash(&sha256("demo-bob")), Some(bob));
    let carol = p.find_user("carol").unwrap();
    assert_eq!(carol.activity, Some(false));
    assert!(!p.activity(carol));
    let dave = p.find_user("d.jones@acme.example").unwrap();
    assert_eq!(dave.status, UserStatus::Removed);
    assert_eq!(p.user_by_token_hash(&sha256("demo-carol")), Some(carol));
    assert_eq!(p.user_by_token_hash(&sha256("demo-dave")), Some(dave));

    // bob@client-a is listed by the organization and by Bob Stone: the person wins.
    let client_a = p.contact_by_name("Client A Ltd").unwrap();
    let bob_stone = p.contact_by_name("bob stone").unwrap();
    assert_eq!(
        p.contact_for_address("bob@client-a.example"),
        Some(bob_stone)
    );
    assert_eq!(
        p.contact_for_address("office@client-a.example"),
        Some(client_a)
    );
    assert_eq!(p.contacts[bob_stone].organization, Some(client_a));
    assert_eq!(p.contacts[bob_stone].kind, ContactKind::Person);
    assert_eq!(
        p.org_for_domain("mx.globex.example"),
        p.contact_by_name("Globex Corporation")
    );

    let bucket = &p.buckets[0];
    assert_eq!(bucket.owner, "alice@acme.example");
    assert_eq!(bucket.contacts, [client_a, bob_stone]);
    assert_eq!(bucket.members.len(), 2);
    assert_eq!(bucket.members[0].role, BucketRole::Viewer);
    assert!(bucket.members[0].view_conversations);
    assert_eq!(bucket.members[1].role, BucketRole::Manager);
}

/// The example replaces the built-in lists to show the keys; it must not
/// drop any default, or the demo would behave unlike the documentation.
#[test]
fn example_lists_extend_the_builtin_defaults() {
    let p = config::load_policy(&root().join("config/policy.toml")).unwrap();
    let org = &p.organization;
    for k in DEFAULT_CONFIDENTIAL_KEYWORDS {
        assert!(org.confidential_keywords.contains(&k.to_lowercase()), "{k}");
    }
    for l in DEFAULT_IMPERSONAL_LOCALPARTS {
        assert!(org.impersonal_localparts.contains(*l), "{l}");
    }
    for d in DEFAULT_PERSONAL_DOMAINS {
        assert!(org.personal_domains.contains(*d), "{d}");
    }
}

#[test]
fn the_demo_certificate_is_present_and_pem() {
    let dir = root().join("config/tls");
    let cert = fs::read_to_string(dir.join("cert.pem")).unwrap();
    let key = fs::read_to_string(dir.join("key.pem")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(dir.join("README.md").exists());
}

// ---------------------------------------------------------------------------
// Broken fixtures.

/// Every error kind has its own fixture; losing one loses coverage.
const POLICY_FIXTURES: &[&str] = &[
    "bad-token-hash",
    "bucket-member-twice",
    "bucket-unknown-names",
    "contact-internal",
    "domain-claimed-twice",
    "duplicate-contact-name",
    "duplicate-login",
    "duplicate-user-address",
    "invalid-exclude",
    "invalid-kind",
    "invalid-level",
    "invalid-org-modes",
    "invalid-role",
    "invalid-status",
    "missing-organization",
    "person-organization",
    "primary-not-listed",
    "share-since-local",
    "syntax-error",
    "three-errors",
    "unknown-key",
    "user-contact-level",
    "user-outside-internal",
];

const MAILSHARE_FIXTURES: &[&str] = &[
    "bad-addresses",
    "bad-admin-hash",
    "bad-enums",
    "bad-limits",
    "listener-conflicts",
    "listeners-without-upstream",
    "policy-missing",
    "syntax-error",
    "tls-files",
    "tls-missing",
    "unknown-key",
];

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_policy_fixture_reports_exactly_what_it_declares() {
    let files = fixtures("policy");
    assert_eq!(names(&files), POLICY_FIXTURES);
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| match config::load_policy(f) {
            Ok(_) => Some(format!("{}: loaded without error", f.display())),
            Err(diags) => check_expectations(f, &diags).err(),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_mailshare_fixture_reports_exactly_what_it_declares() {
    let files = fixtures("mailshare");
    assert_eq!(names(&files), MAILSHARE_FIXTURES);
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| match config::load(f) {
            Ok(_) => Some(format!("{}: loaded without error", f.display())),
            Err(diags) => check_expectations(f, &diags).err(),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn three_independent_errors_are_all_reported() {
    let f = fixture_dir("policy").join("three-errors.toml");
    let diags = config::load_policy(&f).unwrap_err();
    assert_eq!(diags.len(), 3, "{}", config_render(&diags));
    assert_matches_expectations(&f, &diags);
}

#[test]
fn errors_of_both_files_are_reported_together_config_first() {
    let dir = fixture_dir("multi");
    let config_file = dir.join("mailshare.toml");
    let policy_file = dir.join("policy.toml");
    let diags = config::load(&config_file).unwrap_err();
    assert_eq!(diags.len(), 3, "{}", config_render(&diags));
    assert_eq!(diags[0].file, config_file);
    assert_matches_expectations(&config_file, &diags);
    assert_matches_expectations(&policy_file, &diags);
}

// ---------------------------------------------------------------------------
// Smaller cases, written to a temporary directory.

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

const MINIMAL_POLICY: &str = "[organization]\ninternal_domains = [\"acme.example\"]\n";

#[test]
fn a_config_with_only_admin_serves_the_api_over_a_store() {
    let d = Dir::new();
    d.write("policy.toml", MINIMAL_POLICY);
    let cfg = d.write(
        "mailshare.toml",
        "[store]\npath = \"/var/lib/mailshare\"\n[admin]\n",
    );
    let loaded = config::load(&cfg).unwrap();
    assert_eq!(loaded.config.store.path, Path::new("/var/lib/mailshare"));
    let admin = loaded.config.admin.unwrap();
    assert_eq!(admin.listen.to_string(), config::DEFAULT_ADMIN_LISTEN);
    assert!(admin.admin_tokens_sha256.is_empty());
    assert!(loaded.config.smtp.is_none() && loaded.config.imap.is_none());
    assert_eq!(loaded.policy_path, d.0.path().join("policy.toml"));
}

#[test]
fn a_minimal_policy_gets_the_documented_defaults() {
    let d = Dir::new();
    let f = d.write(
        "policy.toml",
        &format!(
            "{MINIMAL_POLICY}[[users]]\naddress = \"Alice@Acme.Example\"\nlogins = [\"ALICE\"]\n"
        ),
    );
    let p = config::load_policy(&f).unwrap();
    assert_eq!(p.defaults, Defaults::default());
    assert_eq!(p.organization.contacts, ContactsMode::Team);
    assert_eq!(p.organization.auto_create_contacts, AutoCreate::Sent);
    assert_eq!(
        p.organization.confidential_keywords,
        ["confidential", "private", "personal", "privileged"]
    );
    assert_eq!(
        p.organization.personal_domains.len(),
        DEFAULT_PERSONAL_DOMAINS.len()
    );
    let u = p.user_by_login("alice").unwrap();
    assert_eq!(u.address, "alice@acme.example");
    assert_eq!(u.logins, ["alice"]);
    assert_eq!(u.status, UserStatus::Active);
    assert_eq!((u.activity, u.inbound, u.share_since), (None, None, None));
}

#[test]
fn a_given_list_replaces_the_builtin_one() {
    let d = Dir::new();
    let f = d.write(
        "policy.toml",
        "[organization]\ninternal_domains = [\"acme.example\"]\nconfidential_keywords = [\"Secret\"]\npersonal_domains = []\n",
    );
    let p = config::load_policy(&f).unwrap();
    assert_eq!(p.organization.confidential_keywords, ["secret"]);
    assert!(p.organization.personal_domains.is_empty());
    assert_eq!(
        p.organization.impersonal_localparts.len(),
        DEFAULT_IMPERSONAL_LOCALPARTS.len()
    );
}

#[test]
fn an_unknown_key_in_the_config_does_not_hide_policy_errors() {
    let d = Dir::new();
    d.write(
        "policy.toml",
        "[organization]\ninternal_domains = [\"acme.example\"]\n[defaults]\ninbound = \"loads\"\n",
    );
    let cfg = d.write(
        "mailshare.toml",
        "[policy]\npath = \"policy.toml\"\nbogus = 1\n",
    );
    let diags = config::load(&cfg).unwrap_err();
    let text = config_render(&diags);
    assert_eq!(diags.len(), 2, "{text}");
    assert_eq!((diags[0].line, diags[0].column), (3, 1), "{text}");
    assert!(diags[0].message.contains("unknown field `bogus`"), "{text}");
    assert!(diags[1].file.ends_with("policy.toml"), "{text}");
    assert_eq!((diags[1].line, diags[1].column), (4, 11), "{text}");
}

#[test]
fn an_unreadable_file_is_one_diagnostic_without_position() {
    let d = Dir::new();
    let missing = d.0.path().join("nope.toml");
    let diags = config::load(&missing).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert_eq!((diags[0].line, diags[0].column), (0, 0));
    assert!(diags[0]
        .to_string()
        .starts_with(&format!("{}: cannot read", missing.display())));
    let diags = config::load_policy(&missing).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert!(diags[0].message.contains("cannot read policy file"));
}

#[test]
fn an_admin_token_that_is_also_a_user_token_is_rejected() {
    let d = Dir::new();
    let hash = hex::encode(sha256("shared"));
    d.write(
        "policy.toml",
        &format!("{MINIMAL_POLICY}[[users]]\naddress = \"alice@acme.example\"\ntoken_sha256 = \"{hash}\"\n"),
    );
    let cfg = d.write(
        "mailshare.toml",
        &format!(
            "[admin]\nadmin_tokens_sha256 = [\"{}\"]\n",
            hash.to_uppercase()
        ),
    );
    let diags = config::load(&cfg).unwrap_err();
    assert_eq!(diags.len(), 1, "{}", config_render(&diags));
    assert_eq!((diags[0].line, diags[0].column), (2, 24));
    assert!(diags[0]
        .message
        .contains("also the token_sha256 of user alice@acme.example"));
}

#[test]
fn a_type_error_points_at_the_value() {
    let d = Dir::new();
    let f = d.write(
        "policy.toml",
        &format!(
            "{MINIMAL_POLICY}[[users]]\naddress = \"alice@acme.example\"\nactivity = \"yes\"\n"
        ),
    );
    let diags = config::load_policy(&f).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert_eq!((diags[0].line, diags[0].column), (5, 12));
    assert!(
        diags[0].message.contains("expected a boolean"),
        "{}",
        diags[0]
    );
}

#[test]
fn columns_count_characters_in_real_files() {
    // "Zoë Café" has two 2-byte characters before the error on the same line.
    let d = Dir::new();
    let f = d.write(
        "policy.toml",
        "[organization]\ninternal_domains = [\"acme.example\"]\n[[contacts]]\nname = \"Zoë Café\"; kind = \"person\"\n",
    );
    let diags = config::load_policy(&f).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert_eq!((diags[0].line, diags[0].column), (4, 18), "{}", diags[0]);
}

#[test]
fn user_contact_entries_resolve_name_then_address_then_domain() {
    let d = Dir::new();
    let f = d.write(
        "policy.toml",
        r#"[organization]
internal_domains = ["acme.example"]
[[users]]
address = "alice@acme.example"
contacts = [
    { contact = "ACME Clients", level = "full" },
    { contact = "Bob@Client.Example", level = "hidden" },
    { contact = "*@client.example", level = "metadata" },
    { contact = "Client.Example", level = "subject" },
]
[[contacts]]
name = "Acme Clients"
kind = "organization"
domains = ["clients.example"]
"#,
    );
    let p = config::load_policy(&f).unwrap();
    let targets: Vec<&ContactTarget> = p.users[0].contacts.iter().map(|s| &s.target).collect();
    assert_eq!(
        targets,
        [
            &ContactTarget::Contact(0),
            &ContactTarget::Address("bob@client.example".into()),
            &ContactTarget::Domain("client.example".into()),
            &ContactTarget::Domain("client.example".into()),
        ]
    );
}
