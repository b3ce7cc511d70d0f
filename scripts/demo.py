#!/usr/bin/env python3
"""Helpers for scripts/demo: free ports, the IMAP client (imaplib), and the
admin API views and checks. Standard library only.

  demo.py ports N                       N distinct free ports on 127.0.0.1
  demo.py free PORT...                  exit 0 if every port can be bound
  demo.py wait SECS [URL] PORT...       every port accepts (and URL answers 200)
  demo.py deliver PORT LOGIN FILE...    APPEND to LOGIN's INBOX straight at Dovecot
  demo.py imap PORT CAFILE LOGIN [MAILBOX=FILE[:draft]]...
                                        via mailshare: STARTTLS, FETCH the INBOX, APPEND
  demo.py show API                      the demo contacts' timelines as bob
  demo.py check API SINKDIR             verify the captures (exit 1 on a failure)
  demo.py set-policy FILE USER KEY VALUE   edit one key of one [[users]] entry
  demo.py check-lowered API             verify the read-time rule after alice lowered outbound
  demo.py guide API PID WORKDIR         what to try next (curl commands with real ids)
"""

import email
import email.policy
import glob
import imaplib
import json
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request

# What the demo mail should become, by Message-ID: (subject, expected level
# for every active colleague, why). See scripts/demo-mail/ and config/policy.toml.
EXPECTED = {
    "<q3-figures@acme.example>": ("Q3 figures", "full", "alice's outbound default"),
    "<re-q3@client-a.example>": ("Re: Q3 figures", "subject", "alice's setting for Bob Stone"),
    "<fees-2027@client-a.example>": (
        "Confidential: fee schedule 2027",
        "metadata",
        "confidential subject",
    ),
    "<intro-dana@acme.example>": ("Introduction", "full", "alice's outbound default"),
    "<terms-2027@acme.example>": (
        "Confidential: engagement terms 2027",
        "metadata",
        "confidential subject",
    ),
    "<agenda@acme.example>": ("Tuesday: agenda", "metadata", "X-Mailshare-Share: metadata"),
    "<renewal@globex.example>": ("Globex renewal", "metadata", "bob's inbound default"),
    "<re-renewal@acme.example>": ("Re: Globex renewal", "subject", "bob's outbound default"),
}
NOT_CAPTURED = {
    "<lunch@acme.example>": "Lunch? (internal only)",
    "<stmt-1@bank.example>": "Your statement is ready (bank.example is excluded)",
    "<fee-notes-draft@acme.example>": "Notes on the fee schedule (a draft)",
}
# After alice's `outbound` drops to metadata: what colleagues see of her sent mail.
LOWERED = {"<q3-figures@acme.example>": "metadata", "<intro-dana@acme.example>": "metadata"}
VIEWERS = ["alice", "bob", "carol"]
ORGS = ["Client A Ltd", "Globex Corporation", "newco.example"]


def fail(msg):
    print(f"demo: {msg}", file=sys.stderr)
    sys.exit(1)


# ---- ports and readiness ------------------------------------------------------


def cmd_ports(n):
    socks = []
    for _ in range(int(n)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_free(*ports):
    for p in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", int(p)))
        except OSError:
            sys.exit(1)
        finally:
            s.close()


def cmd_wait(secs, *ports):
    url = ports[0] if ports and ports[0].startswith("http") else None
    ports = ports[1:] if url else ports
    end = time.monotonic() + float(secs)
    while time.monotonic() < end:
        if all(connects(int(p)) for p in ports) and (url is None or answers(url)):
            return
        time.sleep(0.1)
    sys.exit(1)


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


# ---- mail clients ---------------------------------------------------------------


def subject_of(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)["Subject"]


def cmd_deliver(port, login, *files):
    c = imaplib.IMAP4("127.0.0.1", int(port), timeout=30)
    c.login(login, "pw-" + login)
    for f in files:
        raw = open(f, "rb").read()
        typ, _ = c.append("INBOX", None, None, raw)
        if typ != "OK":
            fail(f"delivering {f} to {login}: {typ}")
        print(f"   {login:<6} INBOX  ← {subject_of(raw)}")
    c.logout()


def cmd_imap(port, cafile, login, *appends):
    c = imaplib.IMAP4("127.0.0.1", int(port), timeout=30)
    # The demo certificate is self-signed: trust exactly it, verify as usual.
    c.starttls(ssl_context=ssl.create_default_context(cafile=cafile))
    c.login(login, "pw-" + login)
    typ, data = c.select("INBOX")
    if typ != "OK":
        fail(f"{login}: SELECT INBOX: {data}")
    if int(data[0]) > 0:
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        if typ != "OK":
            fail(f"{login}: FETCH: {data}")
        for part in data:
            if isinstance(part, tuple):
                print(f"   {login:<6} FETCH  INBOX   {subject_of(part[1])}")
    for a in appends:
        mailbox, _, path = a.partition("=")
        path, _, kind = path.partition(":")
        raw = open(path, "rb").read()
        flags = "(\\Draft)" if kind == "draft" else None
        typ, data = c.append(mailbox, flags, None, raw)
        if typ != "OK":
            fail(f"{login}: APPEND {mailbox}: {data}")
        print(f"   {login:<6} APPEND {mailbox:<7} {subject_of(raw)}")
    c.logout()


# ---- the admin API --------------------------------------------------------------


def get(api, path, token):
    req = urllib.request.Request(api + path, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None


def pages(api, path, token, key):
    out, cursor = [], None
    for _ in range(50):
        sep = "&" if "?" in path else "?"
        page = path + sep + "limit=200" + (f"&cursor={cursor}" if cursor else "")
        status, body = get(api, page, token)
        if status != 200:
            fail(f"GET {page} as {token}: HTTP {status}")
        out += body[key]
        cursor = body.get("next_cursor")
        if not cursor:
            return out
    fail(f"GET {path}: too many pages")


def contacts(api, token):
    return pages(api, "/api/v1/contacts", token, "contacts")


def seen_by(api, viewer):
    """Every message on any timeline `viewer` opens: Message-ID → entry."""
    token = "demo-" + viewer
    out = {}
    for c in contacts(api, token):
        for e in pages(api, f"/api/v1/contacts/{c['id']}/timeline", token, "entries"):
            out[e["message_id"]] = e
    return out


def org_id(api, name):
    for c in contacts(api, "demo-bob"):
        if c["name"] == name:
            return c["id"]
    fail(f"no contact named {name}")


def line(e):
    who = e["from"]["address"] if e.get("from") else "?"
    to = ", ".join(a["address"] for a in e.get("to", []))
    subject = e.get("subject", "(subject not shared)")
    extra = f"  [{e['attachment_count']} attachment]" if e.get("attachment_count") else ""
    return f"{e['date'][:16].replace('T', ' ')}  {e['level']:<8}  {who} → {to}  {subject}{extra}"


def cmd_show(api):
    for name in ORGS:
        cid = org_id(api, name)
        entries = pages(api, f"/api/v1/contacts/{cid}/timeline", "demo-bob", "entries")
        print(f"   {name} (contact {cid}), as bob:")
        for e in entries:
            print("     " + line(e))
    print("   (alice and carol see the same levels: a colleague sees what the owners share,")
    print("   and an owner sees her own mail as it was stored; see step 10)")


def wait_captured(api, secs=30):
    """IMAP captures are stored off the I/O path: wait (bounded) for them."""
    end = time.monotonic() + secs
    while True:
        seen = seen_by(api, "alice")
        if set(EXPECTED) <= set(seen) or time.monotonic() > end:
            return
        time.sleep(0.2)


def cmd_check(api, sinkdir):
    wait_captured(api)
    problems = []
    for v in VIEWERS:
        seen = seen_by(api, v)
        for mid, (subject, level, _) in EXPECTED.items():
            e = seen.get(mid)
            if e is None:
                problems.append(f"{v} does not see {subject!r} {mid}")
            elif e["level"] != level:
                problems.append(f"{v} sees {subject!r} at {e['level']}, expected {level}")
        for mid, what in NOT_CAPTURED.items():
            if mid in seen:
                problems.append(f"{v} sees {what}: it should not have been captured")
        extra = set(seen) - set(EXPECTED)
        if extra - set(NOT_CAPTURED):
            problems.append(f"{v} sees unexpected messages {sorted(extra)}")
    if not problems:
        print(f"   ok  alice, bob and carol each see the {len(EXPECTED)} captured messages at these levels:")
        for mid, (subject, level, why) in EXPECTED.items():
            print(f"         {level:<8}  {subject:<36} ({why})")
        print("   ok  not captured: " + "; ".join(NOT_CAPTURED.values()))

    # The Q3 figures in full for alice: body and attachment.
    q3 = seen_by(api, "alice").get("<q3-figures@acme.example>")
    if q3:
        status, m = get(api, f"/api/v1/messages/{q3['id']}", "demo-alice")
        if status != 200 or "Revenue is up 12%" not in (m.get("text") or ""):
            problems.append(f"alice's GET /messages/{q3['id']}: no text body ({status})")
        elif len(m.get("attachments", [])) != 1:
            problems.append("the Q3 figures should carry one attachment (q3.csv)")
        else:
            print(f"   ok  GET /api/v1/messages/{q3['id']} as alice: text body and q3.csv")

    status, _ = get(api, "/api/v1/contacts", "demo-dave")
    if status != 401:
        problems.append(f"dave (removed) got HTTP {status}, expected 401")
    else:
        print("   ok  dave has left: his token gets 401")
    status, body = get(api, "/api/v1/contacts?as=bob@acme.example", "demo-admin")
    if status != 200 or len(body["contacts"]) != len(contacts(api, "demo-bob")):
        problems.append(f"demo-admin ?as=bob: HTTP {status}")
    else:
        print("   ok  demo-admin reads ?as=bob@acme.example exactly as bob")

    dumps = sorted(glob.glob(f"{sinkdir}/*"))
    header = [d for d in dumps if "x-mailshare-share" in open(d, errors="replace").read().lower()]
    if len(dumps) != 5:
        problems.append(f"smtp-sink received {len(dumps)} messages, expected alice's 5")
    elif header:
        problems.append(f"X-Mailshare-Share reached the final hop: {header}")
    else:
        print("   ok  smtp-sink received alice's 5 messages, X-Mailshare-Share removed")

    if problems:
        for p in problems:
            print(f"   FAIL {p}")
        sys.exit(1)


def cmd_set_policy(path, user, key, value):
    """Set `key = value` in the [[users]] entry of `user` (a key it has)."""
    lines = open(path).read().split("\n")
    current, done = None, False
    for i, l in enumerate(lines):
        s = l.strip()
        if s.startswith("["):
            current = "users" if s == "[[users]]" else None
        elif current == "users" and s.startswith("address"):
            current = s.split("=", 1)[1].strip().strip('"')
        elif current == f"{user}@acme.example" and s.split("=")[0].strip() == key:
            lines[i] = f'{key} = "{value}"'
            done = True
    if not done:
        fail(f"{path}: no {key} for {user}")
    open(path, "w").write("\n".join(lines))


def cmd_check_lowered(api):
    alice, bob = seen_by(api, "alice"), seen_by(api, "bob")
    problems = []
    for mid, level in LOWERED.items():
        subject = EXPECTED[mid][0]
        a, b = alice.get(mid), bob.get(mid)
        if not a or not b:
            problems.append(f"{subject!r} missing")
            continue
        print(f"   {subject:<14} alice (its owner) sees {a['level']:<8} bob sees {b['level']}")
        if a["level"] != EXPECTED[mid][1] or b["level"] != level:
            problems.append(f"{subject!r}: expected alice {EXPECTED[mid][1]}, bob {level}")
    if problems:
        for p in problems:
            print(f"   FAIL {p}")
        sys.exit(1)


def cmd_wait_reloads(api, n, secs="20"):
    """Wait until mailshare_policy_reloads_total reaches n (a SIGHUP was handled)."""
    end = time.monotonic() + float(secs)
    while time.monotonic() < end:
        with urllib.request.urlopen(api + "/metrics", timeout=10) as r:
            text = r.read().decode()
        values = {
            l.split()[0]: float(l.split()[1])
            for l in text.splitlines()
            if l.startswith("mailshare_policy_reload")
        }
        if values.get("mailshare_policy_reload_failed", 0) != 0:
            fail("the policy reload failed (see the mailshare log)")
        if values.get("mailshare_policy_reloads_total", 0) >= int(n):
            return
        time.sleep(0.1)
    fail("mailshare did not reload the policy after SIGHUP")


def cmd_guide(api, pid, work):
    alice = seen_by(api, "alice")
    q3 = alice["<q3-figures@acme.example>"]["id"]
    client_a = org_id(api, "Client A Ltd")
    captures = [
        l
        for l in urllib.request.urlopen(api + "/metrics", timeout=10).read().decode().splitlines()
        if l.startswith("mailshare_captures_total")
    ]
    print(f"""   API={api}
   curl -H 'Authorization: Bearer demo-alice' $API/api/v1/contacts            # contacts alice can open
   curl -H 'Authorization: Bearer demo-bob'   $API/api/v1/contacts/{client_a}/timeline
   curl -H 'Authorization: Bearer demo-alice' $API/api/v1/messages/{q3}     # Q3 figures, full
   curl -H 'Authorization: Bearer demo-alice' -OJ $API/api/v1/messages/{q3}/attachments/0
   curl -H 'Authorization: Bearer demo-alice' "$API/api/v1/search?q=figures"
   curl -H 'Authorization: Bearer demo-admin' "$API/api/v1/contacts?as=carol@acme.example"
   curl -H 'Authorization: Bearer demo-dave'  $API/api/v1/contacts            # 401: dave has left
   curl $API/metrics | grep mailshare_captures_total""")
    for c in captures:
        print(f"     {c}")
    print(f"""   Tokens: demo-alice, demo-bob, demo-carol, demo-dave (removed), demo-admin (with ?as=<user>).
   Read-time policy: edit {work}/config/policy.toml, then kill -HUP {pid}.""")


def main():
    cmds = {
        "ports": cmd_ports,
        "free": cmd_free,
        "wait": cmd_wait,
        "deliver": cmd_deliver,
        "imap": cmd_imap,
        "show": cmd_show,
        "check": cmd_check,
        "set-policy": cmd_set_policy,
        "check-lowered": cmd_check_lowered,
        "wait-reloads": cmd_wait_reloads,
        "guide": cmd_guide,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        fail(__doc__)
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as e:
        fail(f"{sys.argv[1]}: {e}")


if __name__ == "__main__":
    main()
