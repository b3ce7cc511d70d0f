//! The documentation against the code:
//!
//! - `docs/configuration.md` documents every key the parser accepts, in the
//!   section it belongs to, and no key it does not; the example files
//!   `config/mailshare.toml` and `config/policy.toml` use every key.
//! - The defaults it states are the code's.
//! - Every metric named in `docs/*.md` and `README.md` is registered in `src/`.
//!
//! What the parser accepts is asked of the parser itself: a table holding only
//! an unknown key makes serde (`deny_unknown_fields`) list the table's fields
//! in its error, so no list of keys is kept here.

use mailshare::config::{self, Limits};
use mailshare::engine::policy::{
    Defaults, DEFAULT_CONFIDENTIAL_KEYWORDS, DEFAULT_IMPERSONAL_LOCALPARTS,
    DEFAULT_PERSONAL_DOMAINS,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const PROBE: &str = "__probe__";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum File {
    Config,
    Policy,
}

impl File {
    fn all() -> [File; 2] {
        [File::Config, File::Policy]
    }

    fn name(self) -> &'static str {
        match self {
            File::Config => "mailshare.toml",
            File::Policy => "policy.toml",
        }
    }

    fn example(self) -> String {
        read(&format!("config/{}", self.name()))
    }

    /// The diagnostics the parser gives for `text`.
    fn diagnostics(self, text: &str) -> Vec<String> {
        let path = Path::new("/nonexistent").join(self.name());
        let result = match self {
            File::Config => config::parse_config(&path, text).map(drop),
            File::Policy => config::parse_policy(&path, text).map(drop),
        };
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.message)
            .collect()
    }
}

/// One table of a file: its dotted path and, per segment, whether it is an
/// array of tables (`[[users]]`) or a table (`[store]`).
#[derive(Clone, Debug, Default)]
struct Table {
    segments: Vec<(String, bool)>,
    /// Keys whose value is a plain value (not a table).
    leaves: BTreeSet<String>,
    /// Keys whose value is a table or an array of tables.
    children: BTreeSet<String>,
}

impl Table {
    fn path(&self) -> String {
        let names: Vec<&str> = self.segments.iter().map(|(s, _)| s.as_str()).collect();
        names.join(".")
    }

    fn is_array(&self) -> bool {
        self.segments.last().is_some_and(|(_, a)| *a)
    }

    fn keys(&self) -> BTreeSet<String> {
        self.leaves.union(&self.children).cloned().collect()
    }

    /// A document holding only an unknown key in this table.
    fn probe_document(&self) -> String {
        let mut value = toml::Value::Table(toml::Table::from_iter([(
            PROBE.to_string(),
            toml::Value::Integer(1),
        )]));
        for (name, array) in self.segments.iter().rev() {
            let inner = if *array {
                toml::Value::Array(vec![value])
            } else {
                value
            };
            value = toml::Value::Table(toml::Table::from_iter([(name.clone(), inner)]));
        }
        toml::to_string(&value).expect("serialize the probe")
    }
}

/// Every table of an example file, by path, with the keys it uses (the
/// union over all entries of an array of tables).
fn example_tables(file: File) -> BTreeMap<String, Table> {
    fn walk(t: &toml::Table, segments: Vec<(String, bool)>, out: &mut BTreeMap<String, Table>) {
        let mut here = Table {
            segments: segments.clone(),
            ..Table::default()
        };
        for (key, value) in t {
            let mut child = segments.clone();
            match value {
                toml::Value::Table(inner) => {
                    child.push((key.clone(), false));
                    walk(inner, child, out);
                    here.children.insert(key.clone());
                }
                toml::Value::Array(items)
                    if !items.is_empty() && items.iter().all(toml::Value::is_table) =>
                {
                    child.push((key.clone(), true));
                    for item in items {
                        walk(item.as_table().unwrap(), child.clone(), out);
                    }
                    here.children.insert(key.clone());
                }
                _ => {
                    here.leaves.insert(key.clone());
                }
            }
        }
        let entry = out.entry(here.path()).or_insert_with(|| Table {
            segments,
            ..Table::default()
        });
        entry.leaves.extend(here.leaves);
        entry.children.extend(here.children);
    }
    let text = file.example();
    let table: toml::Table = toml::from_str(&text).expect("example parses");
    let mut out = BTreeMap::new();
    walk(&table, Vec::new(), &mut out);
    out
}

/// The keys the parser accepts in `table`, from its unknown-field error.
fn accepted_keys(file: File, table: &Table) -> BTreeSet<String> {
    let doc = table.probe_document();
    let diags = file.diagnostics(&doc);
    let message = diags
        .iter()
        .find(|m| m.contains(&format!("unknown field `{PROBE}`")))
        .unwrap_or_else(|| {
            panic!(
                "{} [{}]: probing with an unknown key gave {diags:?} for\n{doc}",
                file.name(),
                table.path()
            )
        });
    let expected = message.split_once("expected").map_or("", |(_, rest)| rest);
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// `docs/configuration.md`, per file and table path: the keys of its rows,
/// and whether the heading writes the table as an array (`[[…]]`).
#[derive(Default)]
struct Documented {
    keys: BTreeMap<(File, String), Vec<Row>>,
    array: BTreeMap<(File, String), bool>,
}

#[derive(Clone, Debug)]
struct Row {
    key: String,
    cells: Vec<String>,
}

/// The cells of a Markdown table row (`\|` is a pipe inside a cell).
fn table_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = line.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    if cells.last().is_some_and(|c| c.trim().is_empty()) {
        cells.pop();
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

fn documented() -> Documented {
    let text = read("docs/configuration.md");
    let mut doc = Documented::default();
    let mut file = None;
    let mut sections: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            file = if h.contains("`mailshare.toml`") {
                Some(File::Config)
            } else if h.contains("`policy.toml`") {
                Some(File::Policy)
            } else {
                None
            };
            sections.clear();
        } else if let Some(h) = line.strip_prefix("### ") {
            sections.clear();
            let Some(f) = file else { continue };
            for token in h.split('`').skip(1).step_by(2) {
                let array = token.starts_with("[[") && token.ends_with("]]");
                let inner = token.trim_start_matches('[').trim_end_matches(']');
                if token.starts_with('[') && !inner.is_empty() {
                    doc.array.insert((f, inner.to_string()), array);
                    doc.keys.entry((f, inner.to_string())).or_default();
                    sections.push(inner.to_string());
                }
            }
        } else if line.starts_with("| `") {
            let Some(f) = file else { continue };
            let cells = table_cells(line);
            let key = cells[0].trim_matches('`').to_string();
            for s in &sections {
                doc.keys.entry((f, s.clone())).or_default().push(Row {
                    key: key.clone(),
                    cells: cells.clone(),
                });
            }
        }
    }
    doc
}

#[test]
fn the_examples_use_every_key_the_parser_accepts() {
    let mut problems = Vec::new();
    for file in File::all() {
        for table in example_tables(file).values() {
            let accepted = accepted_keys(file, table);
            let used = table.keys();
            for k in accepted.difference(&used) {
                problems.push(format!(
                    "config/{} does not use [{}] {k}",
                    file.name(),
                    table.path()
                ));
            }
            for k in used.difference(&accepted) {
                problems.push(format!(
                    "config/{} uses [{}] {k}, which the parser rejects",
                    file.name(),
                    table.path()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn configuration_md_documents_every_key_and_only_those() {
    let doc = documented();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in File::all() {
        let tables = example_tables(file);
        for table in tables.values() {
            let path = table.path();
            if table.leaves.is_empty() {
                continue; // only sub-tables ([smtp], the file's top level)
            }
            let Some(rows) = doc.keys.get(&(file, path.clone())) else {
                problems.push(format!(
                    "docs/configuration.md has no section for {} [{path}]",
                    file.name()
                ));
                continue;
            };
            if doc.array.get(&(file, path.clone())) != Some(&table.is_array()) {
                let want = if table.is_array() {
                    format!("[[{path}]]")
                } else {
                    format!("[{path}]")
                };
                problems.push(format!("docs/configuration.md should write it `{want}`"));
            }
            let documented: BTreeSet<String> = rows.iter().map(|r| r.key.clone()).collect();
            let accepted = accepted_keys(file, table);
            for k in table.leaves.difference(&documented) {
                problems.push(format!(
                    "docs/configuration.md does not document {} [{path}] {k}",
                    file.name()
                ));
            }
            for k in documented.difference(&accepted) {
                problems.push(format!(
                    "docs/configuration.md documents {} [{path}] {k}, which the parser rejects",
                    file.name()
                ));
            }
            for r in rows {
                if r.cells.len() != 7 || r.cells.iter().any(String::is_empty) {
                    problems.push(format!(
                        "docs/configuration.md [{path}] {}: a row needs 7 cells \
                         (key, type, default, allowed, example, SIGHUP, what it does)",
                        r.key
                    ));
                }
            }
            checked += documented.len();
        }
        for (f, path) in doc.keys.keys() {
            if *f == file && !tables.contains_key(path) {
                problems.push(format!(
                    "docs/configuration.md has a section [{path}] that {} does not have",
                    file.name()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked > 60, "only {checked} keys documented");
}

/// The default cell of a documented key.
fn default_cell(doc: &Documented, file: File, path: &str, key: &str) -> String {
    doc.keys[&(file, path.to_string())]
        .iter()
        .find(|r| r.key == key)
        .unwrap_or_else(|| panic!("[{path}] {key} is not documented"))
        .cells[2]
        .clone()
}

/// The first integer in a cell (`67108864` of "`67108864` (64 MiB)").
fn first_integer(cell: &str) -> Option<u64> {
    let start = cell.find(|c: char| c.is_ascii_digit())?;
    let digits: String = cell[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn documented_defaults_are_the_codes() {
    let doc = documented();
    let d = Limits::default();
    let numbers: &[(&str, u64)] = &[
        ("max_capture_bytes", d.max_capture_bytes),
        ("max_header_bytes", d.max_header_bytes),
        (
            "max_connections_per_listener",
            d.max_connections_per_listener,
        ),
        ("max_connections_per_ip", d.max_connections_per_ip),
        ("prelogin_timeout_secs", d.prelogin_timeout_secs),
        ("smtp_idle_timeout_secs", d.smtp_idle_timeout_secs),
        ("imap_idle_timeout_secs", d.imap_idle_timeout_secs),
        ("session_timeout_secs", d.session_timeout_secs),
        ("imap_max_line_bytes", d.imap_max_line_bytes),
        ("imap_max_literal_bytes", d.imap_max_literal_bytes),
        ("imap_max_pending_commands", d.imap_max_pending_commands),
        ("shutdown_grace_secs", d.shutdown_grace_secs),
        ("group_commit_max_delay_ms", d.group_commit_max_delay_ms),
        ("group_commit_max_batch", d.group_commit_max_batch),
        ("smtp_max_message_bytes", d.smtp_max_message_bytes),
        ("smtp_max_recipients", d.smtp_max_recipients),
        ("smtp_max_commands", d.smtp_max_commands),
        ("capture_memory_budget_bytes", d.capture_memory_budget_bytes),
    ];
    let mut problems = Vec::new();
    for row in &doc.keys[&(File::Config, "limits".to_string())] {
        let cell = &row.cells[2];
        if row.key == "smtp_bare_lf" {
            if !cell.contains(&format!("\"{}\"", d.smtp_bare_lf.as_str())) {
                problems.push(format!("[limits] smtp_bare_lf default {cell}"));
            }
            continue;
        }
        match numbers.iter().find(|(k, _)| *k == row.key) {
            Some((_, want)) if first_integer(cell) == Some(*want) => {}
            Some((_, want)) => problems.push(format!(
                "[limits] {} default is {want}, documented as {cell}",
                row.key
            )),
            None => problems.push(format!(
                "[limits] {}: add its default to documented_defaults_are_the_codes",
                row.key
            )),
        }
    }

    let quoted = |s: &str| format!("`\"{s}\"`");
    let expect = [
        (
            File::Config,
            "store",
            "path",
            quoted(config::DEFAULT_STORE_PATH),
        ),
        (
            File::Config,
            "policy",
            "path",
            quoted(config::DEFAULT_POLICY_PATH),
        ),
        (
            File::Config,
            "admin",
            "listen",
            quoted(config::DEFAULT_ADMIN_LISTEN),
        ),
        (
            File::Config,
            "smtp.upstream",
            "connect_timeout_secs",
            format!("`{}`", config::DEFAULT_CONNECT_TIMEOUT_SECS),
        ),
        (
            File::Config,
            "smtp.upstream",
            "timeout_secs",
            format!("`{}`", config::DEFAULT_UPSTREAM_TIMEOUT_SECS),
        ),
        (
            File::Config,
            "log",
            "level",
            quoted(config::LogLevel::default().as_str()),
        ),
        (
            File::Policy,
            "defaults",
            "inbound",
            quoted(Defaults::default().inbound.as_str()),
        ),
        (
            File::Policy,
            "defaults",
            "outbound",
            quoted(Defaults::default().outbound.as_str()),
        ),
        (
            File::Policy,
            "defaults",
            "activity",
            format!("`{}`", Defaults::default().activity),
        ),
    ];
    for (file, path, key, want) in expect {
        let cell = default_cell(&doc, file, path, key);
        if cell != want {
            problems.push(format!(
                "[{path}] {key} default is {want}, documented as {cell}"
            ));
        }
    }

    // The built-in lists, word for word.
    for (key, list) in [
        ("confidential_keywords", DEFAULT_CONFIDENTIAL_KEYWORDS),
        ("impersonal_localparts", DEFAULT_IMPERSONAL_LOCALPARTS),
        ("personal_domains", DEFAULT_PERSONAL_DOMAINS),
    ] {
        let cell = default_cell(&doc, File::Policy, "organization", key);
        let words: BTreeSet<&str> = cell
            .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            .filter(|w| !w.is_empty())
            .collect();
        for item in list {
            if !words.contains(item) {
                problems.push(format!("[organization] {key} default lacks {item}"));
            }
        }
        let listed = cell.matches(',').count() + 1;
        if listed != list.len() {
            problems.push(format!(
                "[organization] {key} default lists {listed} entries, the code {}",
                list.len()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `mailshare_…` name in `text`, as written (a name ending in `_` is a
/// prefix, as in `mailshare_smtp_*`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    for (i, _) in text.match_indices("mailshare_") {
        if i > 0 && (word(bytes[i - 1]) || bytes[i - 1].is_ascii_uppercase()) {
            continue;
        }
        let end = bytes[i..]
            .iter()
            .position(|&b| !word(b))
            .map_or(bytes.len(), |n| i + n);
        out.insert(text[i..end].to_string());
    }
    out
}

/// The metric names registered in `src/`: every string literal that is a
/// whole `mailshare_…` name.
fn registered_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).unwrap();
                for literal in text.split('"').skip(1).step_by(2) {
                    if literal.starts_with("mailshare_")
                        && !literal.ends_with('_')
                        && metric_names(literal).contains(literal)
                    {
                        out.insert(literal.to_string());
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&repo().join("src"), &mut out);
    out
}

#[test]
fn every_metric_the_docs_name_is_registered() {
    let registered = registered_metrics();
    assert!(
        registered.len() > 40 && registered.contains("mailshare_captures_total"),
        "found only {registered:?}"
    );
    let mut docs: Vec<String> = fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    docs.push("README.md".into());
    docs.sort();
    let mut problems = Vec::new();
    let mut named = 0;
    for doc in &docs {
        for name in metric_names(&read(doc)) {
            named += 1;
            let known = if name.ends_with('_') {
                registered.iter().any(|r| r.starts_with(&name))
            } else {
                registered.contains(&name)
                    || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                        name.strip_suffix(suffix)
                            .is_some_and(|base| registered.contains(base))
                    })
            };
            if !known {
                problems.push(format!(
                    "{doc} names {name}, which is not registered in src/"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(named >= 10, "only {named} metric names in {docs:?}");
}

#[test]
fn the_metric_scanner_finds_names_and_prefixes() {
    let found = metric_names(
        "`mailshare_captures_total{protocol}` and mailshare_smtp_* but not \
         xmailshare_x, config/mailshare.toml or MAILSHARE_X; \
         rate(mailshare_capture_seconds_bucket[5m])",
    );
    let want: BTreeSet<String> = [
        "mailshare_captures_total",
        "mailshare_smtp_",
        "mailshare_capture_seconds_bucket",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(found, want);
}
