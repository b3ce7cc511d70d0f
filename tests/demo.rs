//! The newcomer's demo end to end: `scripts/demo --check` installs what it
//! needs, starts Dovecot and smtp-sink (scripts/upstreams) and this build's
//! `mailshare serve` on free ports, sends the demo mail with swaks and
//! imaplib, checks the timelines through the admin API, and cleans up.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_demo_runs_to_completion_and_its_timelines_show_the_demo_mail() {
    let _deadline = support::Deadline::new("demo", 600);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/demo"))
        .arg("--check")
        .env("MAILSHARE_BIN", env!("CARGO_BIN_EXE_mailshare"))
        // Never the example's fixed ports: other tests and a running demo may hold them.
        .env("MAILSHARE_DEMO_PORTS", "free")
        .output()
        .expect("run scripts/demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/demo --check failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for expected in [
        // What the clients did.
        "alice → office@client-a.example: Q3 figures",
        "bob    FETCH  INBOX   Globex renewal",
        "bob    APPEND Drafts  Notes on the fee schedule",
        // Timelines as bob: levels and what each level shows.
        "full      alice@acme.example → office@client-a.example  Q3 figures  [1 attachment]",
        "subject   bob@client-a.example → alice@acme.example  Re: Q3 figures",
        "metadata  alice@acme.example → bob@client-a.example  (subject not shared)",
        "subject   bob@acme.example → hank@globex.example  Re: Globex renewal",
        "full      alice@acme.example → dana@newco.example  Introduction",
        // The checks.
        "ok  alice, bob and carol each see the 8 captured messages",
        "ok  not captured: Lunch? (internal only); Your statement is ready",
        "ok  dave has left: his token gets 401",
        "ok  smtp-sink received alice's 5 messages, X-Mailshare-Share removed",
        "Q3 figures     alice (its owner) sees full     bob sees metadata",
        "== demo check passed",
    ] {
        assert!(
            stdout.contains(expected),
            "no {expected:?} in:\n{stdout}\n{stderr}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");

    // Cleaned up: the work directory is gone and the admin API is closed.
    let work = stdout
        .split("copied to ")
        .nth(1)
        .and_then(|s| s.split("/config").next())
        .expect("the work directory is printed");
    assert!(!Path::new(work).exists(), "{work} was not removed");
    let api: SocketAddr = stdout
        .split("admin API http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("the admin address is printed");
    assert!(
        TcpStream::connect_timeout(&api, Duration::from_secs(2)).is_err(),
        "mailshare still answers on {api}"
    );
}
