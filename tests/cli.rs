//! The `mailshare` binary as admins use it: `check`, `token new`, `ingest`,
//! and `ingest` against a store held by a running `serve`. Every child
//! process runs under a deadline; nothing here can hang.

use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailshare"))
}

/// Run to completion with a deadline (killed and failed past it).
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailshare");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mailshare did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A copy of the example config directory whose store lands in the temp dir.
fn example_config(tmp: &Path) -> PathBuf {
    let dst = tmp.join("config");
    copy_dir(&root().join("config"), &dst);
    dst.join("mailshare.toml")
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

#[test]
fn check_accepts_the_shipped_examples() {
    let out = run(bin()
        .args(["check", "-c"])
        .arg(root().join("config/mailshare.toml")));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(": ok ("),
        "{}",
        text(&out.stdout)
    );
}

/// `# expect: L:C: text` lines of a fixture.
fn expectations(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let (pos, msg) = rest.split_at(rest.find(": ").expect("L:C: text"));
            (pos.to_string(), msg[2..].to_string())
        })
        .collect()
}

#[test]
fn check_rejects_each_broken_policy_with_file_line_column_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = root().join("tests/fixtures/config/policy");
    let mut fixtures: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 10, "want at least ten broken variants");
    for fixture in fixtures {
        let cfg = tmp.path().join("mailshare.toml");
        fs::write(
            &cfg,
            format!(
                "[store]\npath = \"store\"\n[policy]\npath = {:?}\n",
                fixture.display().to_string()
            ),
        )
        .unwrap();
        let out = run(bin().args(["check", "-c"]).arg(&cfg));
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {stderr}",
            fixture.display()
        );
        let want = expectations(&fixture);
        assert!(
            !want.is_empty(),
            "{} declares no expectation",
            fixture.display()
        );
        for (pos, msg) in want {
            let line = format!("{}:{pos}: ", fixture.display());
            assert!(
                stderr
                    .lines()
                    .any(|l| l.starts_with(&line) && l.contains(&msg)),
                "{}: missing `{line}…{msg}` in:\n{stderr}",
                fixture.display()
            );
        }
    }
}

#[test]
fn check_reports_a_broken_mailshare_toml_and_a_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("mailshare.toml");
    fs::write(&cfg, "[store]\npath = \"s\"\nbogus = 1\n").unwrap();
    let out = run(bin().args(["check", "-c"]).arg(&cfg));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:1: ", cfg.display())),
        "{stderr}"
    );
    let out = run(bin().args(["check", "-c", "/nonexistent/mailshare.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/mailshare.toml"));
}

#[test]
fn token_new_prints_a_fresh_token_and_its_sha256() {
    let a = text(&run(bin().args(["token", "new", "alice@acme.example"])).stdout);
    let b = text(&run(bin().args(["token", "new", "alice@acme.example"])).stdout);
    let field = |s: &str, key: &str| -> String {
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {key} in {s}"))
            .to_string()
    };
    let (token, hash) = (field(&a, "token"), field(&a, "token_sha256"));
    assert!(token.len() >= 32, "at least 128 bits: {token}");
    assert_eq!(hash, hex::encode(Sha256::digest(token.as_bytes())));
    assert_ne!(token, field(&b, "token"), "tokens are random");
}

#[test]
fn ingest_reports_each_file_and_keeps_going_past_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = example_config(tmp.path());
    let mail = root().join("scripts/demo-mail");
    let garbage = tmp.path().join("garbage.eml");
    fs::write(&garbage, b"").unwrap();
    let out = run(bin()
        .args(["ingest", "-c"])
        .arg(&cfg)
        .args(["--owner", "alice", "--direction", "outbound"])
        .arg(mail.join("01-outbound-q3-figures.eml"))
        .arg(tmp.path().join("missing.eml"))
        .arg(&garbage)
        .arg(mail.join("05-internal-only.eml"))
        .arg(mail.join("04-outbound-new-contact.eml")));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "one failure → exit 1: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        lines[0].contains("01-outbound-q3-figures.eml: stored: "),
        "{stdout}"
    );
    assert!(
        lines[1].contains("missing.eml: error: cannot read"),
        "{stdout}"
    );
    assert!(lines[2].contains("garbage.eml: error: "), "{stdout}");
    assert!(
        lines[3].ends_with("05-internal-only.eml: skipped: internal-only"),
        "{stdout}"
    );
    assert!(
        lines[4].contains("04-outbound-new-contact.eml: stored: full"),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("2 of 5 file(s) failed"));

    // The same mail again merges into the same record.
    let again = run(bin()
        .args(["ingest", "-c"])
        .arg(&cfg)
        .args(["--owner", "bob", "--direction", "inbound"])
        .arg(mail.join("04-outbound-new-contact.eml")));
    assert!(again.status.success(), "{}", text(&again.stderr));
    let id = |s: &str| s.split("message ").nth(1).unwrap()[..24].to_string();
    assert_eq!(id(lines[4]), id(&text(&again.stdout)));
}

#[test]
fn ingest_rejects_an_unknown_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = example_config(tmp.path());
    let out = run(bin()
        .args(["ingest", "-c"])
        .arg(&cfg)
        .args(["--owner", "mallory", "--direction", "inbound"])
        .arg(root().join("scripts/demo-mail/02-inbound-reply.eml")));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--owner mallory: no such user"));
}

struct Serve(Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config with only the store and the policy of the example (no listeners).
fn store_only_config(tmp: &Path) -> PathBuf {
    let cfg = example_config(tmp);
    let text_cfg = fs::read_to_string(&cfg).unwrap();
    let store_only: String = text_cfg
        .split("\n[")
        .filter(|s| s.starts_with("store]") || s.starts_with("policy]") || s.starts_with("# "))
        .collect::<Vec<_>>()
        .join("\n[");
    fs::write(&cfg, store_only).unwrap();
    cfg
}

/// Start `mailshare serve` and wait until it says it is ready.
fn start_serve(cfg: &Path) -> Serve {
    let mut serve = Serve(
        bin()
            .args(["serve", "-c"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = serve.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("mailshare ready") => return serve,
            Ok(_) => {}
            Err(e) => panic!("serve never said it was ready: {e}"),
        }
    }
}

#[test]
fn ingest_says_in_one_line_when_serve_holds_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = store_only_config(tmp.path());
    let _serve = start_serve(&cfg);
    let store = tmp.path().join("data/store");
    let out = run(bin()
        .args(["ingest", "-c"])
        .arg(&cfg)
        .args(["--owner", "alice", "--direction", "inbound"])
        .arg(root().join("scripts/demo-mail/02-inbound-reply.eml")));
    assert!(store.exists());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(
        stderr.contains("is in use by another mailshare process (is `mailshare serve` running?)"),
        "{stderr}"
    );
}

#[test]
fn ingest_captures_headers_when_the_parser_gives_up_on_the_mime_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = example_config(tmp.path());
    let out = run(bin()
        .args(["ingest", "-c"])
        .arg(&cfg)
        .args(["--owner", "alice", "--direction", "inbound"])
        .arg(root().join("tests/fixtures/mail/hostile/multipart-panic.eml")));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    assert!(
        stdout.contains("stored: ") && stdout.contains("headers only"),
        "{stdout}"
    );
}

fn ingest_demo(cfg: &Path) {
    let mail = root().join("scripts/demo-mail");
    let out = run(bin()
        .args(["ingest", "-c"])
        .arg(cfg)
        .args(["--owner", "alice", "--direction", "outbound"])
        .arg(mail.join("01-outbound-q3-figures.eml"))
        .arg(mail.join("04-outbound-new-contact.eml")));
    assert!(out.status.success(), "{}", text(&out.stdout));
}

/// Open a backup as a store and compare it with the original's records.
fn assert_same_store(original: &Path, backup: &Path) {
    use mailshare::store::{SledStore, Store, StoreOptions};
    let a = SledStore::open(original, StoreOptions::default()).expect("original opens");
    let b = SledStore::open(backup, StoreOptions::default()).expect("backup opens");
    let (sa, sb) = (a.stats().unwrap(), b.stats().unwrap());
    assert_eq!((sa.messages, sa.blobs), (sb.messages, sb.blobs));
    assert!(sa.messages >= 2);
    assert_eq!(b.check_consistency().unwrap(), Vec::<String>::new());
    for f in ["01-outbound-q3-figures.eml", "04-outbound-new-contact.eml"] {
        let raw = fs::read(root().join("scripts/demo-mail").join(f)).unwrap();
        let facts = mailshare::mail::parse(&raw).unwrap().facts(&[]);
        let id = mailshare::engine::message_key(&facts.message_id);
        assert_eq!(a.message(&id).unwrap(), b.message(&id).unwrap(), "{f}");
        assert!(b.message(&id).unwrap().is_some());
    }
}

#[test]
fn backup_copies_a_free_store_and_a_served_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = store_only_config(tmp.path());
    ingest_demo(&cfg);
    let store = tmp.path().join("data/store");

    // Nobody holds the store: the command copies it itself.
    let dest = tmp.path().join("backup-offline");
    let out = run(bin().args(["backup", "-c"]).arg(&cfg).arg(&dest));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("backed up 2 messages"),
        "{}",
        text(&out.stdout)
    );
    // A second backup into the same (now non-empty) directory is refused.
    let again = run(bin().args(["backup", "-c"]).arg(&cfg).arg(&dest));
    assert_eq!(again.status.code(), Some(1));
    assert_same_store(&store, &dest);

    // serve holds the store: the running server makes the copy.
    let dest2 = tmp.path().join("backup-online");
    {
        let _serve = start_serve(&cfg);
        let out = run(bin().args(["backup", "-c"]).arg(&cfg).arg(&dest2));
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("backed up 2 messages"));
    }
    assert_same_store(&store, &dest2);
}

/// `mailshare <args> --help`: exit 0, what it prints.
fn help(args: &[&str]) -> String {
    let out = run(bin().args(args).arg("--help"));
    assert!(
        out.status.success(),
        "{args:?} --help: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn every_help_lists_its_options_defaults_exit_codes_and_examples() {
    const CONFIG: &str = "-c, --config <FILE>";
    const DEFAULT: &str = "[default: config/mailshare.toml]";
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[],
            &["serve", "check", "backup", "token", "ingest", "--version"],
        ),
        (&["serve"], &[CONFIG, DEFAULT, "SIGHUP", "SIGTERM"]),
        (&["check"], &[CONFIG, DEFAULT, "file:line:column: message"]),
        (&["backup"], &[CONFIG, DEFAULT, "<DEST>", "control.sock"]),
        (&["token"], &["new"]),
        (&["token", "new"], &["<USER>", "token_sha256"]),
        (
            &["ingest"],
            &[
                CONFIG,
                DEFAULT,
                "--owner <OWNER>",
                "--direction <DIRECTION>",
                "--envelope-rcpt <ADDRESS>",
                "--spool",
                "--spool-dir <DIR>",
                "[FILE]...",
            ],
        ),
    ];
    for (args, wants) in cases {
        let out = help(args);
        for want in *wants {
            assert!(out.contains(want), "{args:?} --help lacks {want:?}:\n{out}");
        }
        for want in ["Exit codes:\n  0  ", "  2  usage error", "Examples:\n  "] {
            assert!(out.contains(want), "{args:?} --help lacks {want:?}:\n{out}");
        }
        // Everything that reads the configuration shows its default.
        assert_eq!(
            out.contains(CONFIG),
            out.contains(DEFAULT),
            "{args:?}:\n{out}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    for (args, says) in [
        (&["no-such-command"][..], "unrecognized subcommand"),
        (&["ingest", "x.eml"][..], "--owner"),
        (&["check", "--no-such-option"][..], "--no-such-option"),
        (&["backup"][..], "<DEST>"),
    ] {
        let out = run(bin().args(args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
