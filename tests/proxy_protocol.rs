//! PROXY protocol v1 and v2 through a real HAProxy (Debian's `haproxy`
//! package, `mode tcp`, `send-proxy` / `send-proxy-v2`) in front of the
//! `mailshare serve` binary, itself in front of the test Dovecot.
//!
//! Clients connect to HAProxy from 127.0.0.2 and 127.0.0.3 (Linux routes all
//! of 127.0.0.0/8 to lo) while HAProxy connects to mailshare from 127.0.0.1,
//! so the test can tell the real client from the balancer: the session span
//! in mailshare's JSON log must name the real client, and the per-IP limit
//! (`max_connections_per_ip = 1`) must count the real client, refuse a
//! second connection from it with the protocol's busy reply, serve another
//! client, and count the refusal on `/metrics`.

#[path = "imap_support/mod.rs"]
mod imap_support;
mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::haproxy::{HaProxy, Route};
use support::server::{Binary, ListenerSpec, Spec};
use support::upstreams::{password, LineClient, Upstreams};
use support::Deadline;

/// The client whose address the test follows, and another one.
const CLIENT_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const CLIENT_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// HAProxy's frontends for one PROXY protocol version.
#[derive(Clone, Copy, Debug)]
struct Fronts {
    smtp: SocketAddr,
    imap: SocketAddr,
}

/// HAProxy in front of mailshare's SMTP and IMAP listeners, sending PROXY
/// v1 on one pair of frontends and v2 on the other.
fn haproxy(smtp: SocketAddr, imap: SocketAddr) -> (HaProxy, Fronts, Fronts) {
    let route = |name, backend, server_options, greeting| Route {
        name,
        backend,
        server_options,
        greeting,
    };
    let ha = HaProxy::start(
        &[
            route("smtp_v1", smtp, "send-proxy", "220"),
            route("imap_v1", imap, "send-proxy", "* OK"),
            route("smtp_v2", smtp, "send-proxy-v2", "220"),
            route("imap_v2", imap, "send-proxy-v2", "* OK"),
        ],
        200,
    );
    let f = ha.fronts.clone();
    let v1 = Fronts {
        smtp: f[0],
        imap: f[1],
    };
    let v2 = Fronts {
        smtp: f[2],
        imap: f[3],
    };
    (ha, v1, v2)
}

/// mailshare's JSON log lines so far.
fn log_lines(ms: &Binary) -> Vec<Value> {
    ms.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `session` span's fields on a log line, if it is in one.
fn session_of(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "session")
}

/// Wait (bounded) for the line with this message in the session of
/// `client`; returns the line and its session fields.
fn wait_line(ms: &Binary, message: &str, client: SocketAddr) -> (Value, Value) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        for line in log_lines(ms) {
            if line["fields"]["message"] != message {
                continue;
            }
            if let Some(s) = session_of(&line) {
                if s["client"] == client.to_string().as_str() {
                    let s = s.clone();
                    return (line, s);
                }
            }
        }
        assert!(
            Instant::now() < end,
            "no {message:?} line for client {client} in:\n{}",
            ms.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `GET /metrics` from the admin listener.
fn metrics(ms: &Binary) -> String {
    let addr = ms.admin.expect("admin listener");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

fn refused(ms: &Binary, protocol: &str, listener: &str, reason: &str) -> f64 {
    imap_support::metric_sum(
        &metrics(ms),
        "mailshare_connections_refused_total",
        &[
            ("protocol", protocol),
            ("listener", listener),
            ("reason", reason),
        ],
    )
}

/// The session span of a client that came through HAProxy: the real
/// client, HAProxy's address as `proxy`, the protocol.
fn assert_proxied_session(session: &Value, protocol: &str, listener: &str) {
    assert_eq!(session["protocol"], protocol, "{session}");
    assert_eq!(session["listener"], listener, "{session}");
    let proxy = session["proxy"].as_str().unwrap_or_default();
    assert!(
        proxy.starts_with("127.0.0.1:"),
        "the balancer is recorded as proxy: {session}"
    );
    assert!(session["id"].as_str().is_some_and(|i| !i.is_empty()));
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn smtp_through(ms: &Binary, up: &Upstreams, version: &str, front: SocketAddr) {
    let listener = format!("smtp:{}", ms.addrs[0]);
    // A full session from 127.0.0.2, kept open.
    let mut a = LineClient::connect_from(CLIENT_A, front);
    assert!(a.smtp_reply()[0].starts_with("220"));
    a.send(b"EHLO client.example\r\n");
    a.smtp_reply();
    a.send(
        format!(
            "AUTH PLAIN {}\r\n",
            b64(&format!("\0alice\0{}", password("alice")))
        )
        .as_bytes(),
    );
    let r = a.smtp_reply();
    assert!(r[0].starts_with("235"), "{r:?}");
    let id = format!("haproxy-{version}@acme.example");
    a.send(b"MAIL FROM:<alice@acme.example>\r\n");
    assert!(a.smtp_reply()[0].starts_with("250"));
    a.send(b"RCPT TO:<office@client-a.example>\r\n");
    assert!(a.smtp_reply()[0].starts_with("250"));
    a.send(b"DATA\r\n");
    assert!(a.smtp_reply()[0].starts_with("354"));
    a.send(
        format!(
            "From: alice@acme.example\r\nTo: office@client-a.example\r\nSubject: through HAProxy {version}\r\nMessage-ID: <{id}>\r\n\r\nHello.\r\n.\r\n"
        )
        .as_bytes(),
    );
    let r = a.smtp_reply();
    assert!(r[0].starts_with("250"), "{r:?}");
    let (_, session) = wait_line(ms, "session started", a.local_addr());
    assert_proxied_session(&session, "smtp", &listener);

    // A second connection from the same client: over its limit of one.
    let before = refused(ms, "smtp", &listener, "per_ip");
    let mut b = LineClient::connect_from(CLIENT_A, front);
    assert_eq!(
        b.rest(),
        "421 4.7.0 Too many connections from your address\r\n"
    );
    let (line, session) = wait_line(ms, "connection refused", b.local_addr());
    assert_eq!(line["fields"]["reason"], "per_ip", "{line}");
    assert_proxied_session(&session, "smtp", &listener);
    assert_eq!(refused(ms, "smtp", &listener, "per_ip"), before + 1.0);

    // Another client is served meanwhile.
    let mut c = LineClient::connect_from(CLIENT_B, front);
    assert!(c.smtp_reply()[0].starts_with("220"));
    c.send(b"QUIT\r\n");
    assert!(c.smtp_reply()[0].starts_with("221"));
    wait_line(ms, "session ended", c.local_addr());

    a.send(b"QUIT\r\n");
    assert!(a.smtp_reply()[0].starts_with("221"));
    let (_, session) = wait_line(ms, "session ended", a.local_addr());
    assert_eq!(session["login"], "alice", "{session}");
    assert_eq!(session["owner"], "alice@acme.example", "{session}");
    let sink = up.wait_for_sink(1, Duration::from_secs(20));
    assert!(
        sink.iter()
            .any(|m| m.data.contains(&format!("Message-ID: <{id}>"))),
        "the message reached the sink"
    );
}

fn imap_through(ms: &Binary, front: SocketAddr) {
    let listener = format!("imap:{}", ms.imap_addrs[0]);
    let mut a = LineClient::connect_from(CLIENT_A, front);
    assert!(a.line().starts_with("* OK"));
    a.send(format!("a LOGIN alice {}\r\n", password("alice")).as_bytes());
    let r = a.imap_until("a");
    assert!(r.last().unwrap().starts_with("a OK"), "{r:?}");
    a.send(b"b SELECT INBOX\r\n");
    let r = a.imap_until("b");
    assert!(r.last().unwrap().starts_with("b OK"), "{r:?}");
    let (_, session) = wait_line(ms, "session started", a.local_addr());
    assert_proxied_session(&session, "imap", &listener);

    let before = refused(ms, "imap", &listener, "per_ip");
    let mut b = LineClient::connect_from(CLIENT_A, front);
    assert_eq!(
        b.rest(),
        "* BYE [UNAVAILABLE] Too many connections from your address\r\n"
    );
    let (line, session) = wait_line(ms, "connection refused", b.local_addr());
    assert_eq!(line["fields"]["reason"], "per_ip", "{line}");
    assert_proxied_session(&session, "imap", &listener);
    assert_eq!(refused(ms, "imap", &listener, "per_ip"), before + 1.0);

    let mut c = LineClient::connect_from(CLIENT_B, front);
    assert!(c.line().starts_with("* OK"));
    c.send(format!("c LOGIN bob {}\r\nd LOGOUT\r\n", password("bob")).as_bytes());
    let r = c.imap_until("d");
    assert!(r.iter().any(|l| l.starts_with("c OK")), "{r:?}");
    let (_, session) = wait_line(ms, "session ended", c.local_addr());
    assert_eq!(session["login"], "bob", "{session}");

    a.send(b"e LOGOUT\r\n");
    a.imap_until("e");
    let (_, session) = wait_line(ms, "session ended", a.local_addr());
    assert_eq!(session["login"], "alice", "{session}");
    assert_eq!(session["owner"], "alice@acme.example", "{session}");
}

#[test]
fn proxy_protocol_v1_and_v2_through_haproxy() {
    let _d = Deadline::new("haproxy", 240);
    let up = Upstreams::start();
    let mut spec = Spec::new(up.submission, vec![ListenerSpec::plain().proxied()])
        .limit("max_connections_per_ip = 1");
    spec.imap = Some((up.imap, vec![ListenerSpec::plain().proxied()]));
    spec.admin = true;
    spec.log_level = "info";
    let mut ms = Binary::start(&spec, &[]);
    let (ha, v1, v2) = haproxy(ms.addrs[0], ms.imap_addrs[0]);
    for (version, front) in [("v1", v1), ("v2", v2)] {
        smtp_through(&ms, &up, version, front.smtp);
        imap_through(&ms, front.imap);
    }
    // One refusal per protocol and version (the readiness probes from
    // 127.0.0.1 may have added their own).
    assert!(refused(&ms, "smtp", &format!("smtp:{}", ms.addrs[0]), "per_ip") >= 2.0);
    assert!(refused(&ms, "imap", &format!("imap:{}", ms.imap_addrs[0]), "per_ip") >= 2.0);
    drop(ha);
    ms.stop();
    let log = ms.log_text();
    for secret in [
        password("alice"),
        password("bob"),
        b64(&format!("\0alice\0{}", password("alice"))).as_str(),
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
}
