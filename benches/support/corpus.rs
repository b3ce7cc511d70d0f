//! A deterministic corpus of realistic RFC 5322 messages for benchmarks and
//! tests. Included by path (`#[path = "support/corpus.rs"] mod corpus;`), so
//! it needs nothing but std: a xorshift generator, its own base64 and
//! quoted-printable encoders.
//!
//! The mix, by message count (by bytes the attachments dominate, as in real
//! mailboxes):
//!
//! | share | kind | size |
//! |---|---|---|
//! | 70 % | text/plain mail | 1–8 KB |
//! | 23 % | multipart/alternative, quoted-printable HTML | 10–60 KB |
//! | 6.5 % | multipart/mixed with base64 attachments | 100 KB–1 MB |
//! | 0.5 % | multipart/mixed with large attachments | 2–10 MB |
//!
//! Participants: alice, bob and carol at the internal domain `acme.example`
//! and people at a few external domains (client-a.example, client-b.example,
//! client-c.example, partner.example, supplier.example, gmail.com), some with
//! RFC 2047 encoded names. 45 % outbound, 45 % inbound (with Received
//! headers), 10 % internal. About 30 % are replies carrying In-Reply-To and
//! References; a few subjects carry a confidential keyword. CRLF line endings
//! throughout, every line shorter than 998 bytes.
//!
//! Same `(total_bytes, seed)`, same bytes, on every platform.
#![allow(dead_code, unreachable_pub)]

/// xorshift64* seeded through splitmix64: fast, deterministic, good enough.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }

    /// True with probability `percent / 100`.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len())]
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// The internal domain of the corpus.
pub const INTERNAL_DOMAIN: &str = "acme.example";

/// (display name as it appears in the header, address)
pub const INTERNAL: &[(&str, &str)] = &[
    ("Alice Smith", "alice@acme.example"),
    ("Bob Miller", "bob@acme.example"),
    ("Carol Jones", "carol@acme.example"),
];

pub const EXTERNAL: &[(&str, &str)] = &[
    ("Bob Stone", "bob@client-a.example"),
    ("Client A Office", "office@client-a.example"),
    ("Dana Lee", "dana@client-b.example"),
    ("Erik Berg", "erik@client-b.example"),
    ("Grace Kim", "grace@client-c.example"),
    (
        "=?UTF-8?Q?Ren=C3=A9e_M=C3=BCller?=",
        "renee@partner.example",
    ),
    ("=?UTF-8?B?SsO2cmcgV8O8c3Q=?=", "joerg@partner.example"),
    ("Frank Ode", "frank.ode@gmail.com"),
    ("Supplier Billing", "billing@supplier.example"),
    ("", "noreply@supplier.example"),
];

const TOPICS: &[&str] = &[
    "Q3 figures",
    "Engagement letter",
    "Meeting on Tuesday",
    "Tax return 2026",
    "Draft contract",
    "Invoice 2026-114",
    "Board pack",
    "Due diligence questions",
    "Payroll update",
    "Year-end closing",
    "Audit schedule",
    "Lease renewal",
    "VAT registration",
    "Quarterly review",
];

const CONFIDENTIAL: &[&str] = &["Confidential", "Private", "Personal"];

const WORDS: &[&str] = &[
    "the",
    "figures",
    "for",
    "the",
    "quarter",
    "are",
    "attached",
    "and",
    "we",
    "would",
    "like",
    "to",
    "discuss",
    "them",
    "with",
    "you",
    "next",
    "week",
    "please",
    "let",
    "us",
    "know",
    "when",
    "suits",
    "revenue",
    "costs",
    "margin",
    "forecast",
    "contract",
    "draft",
    "clause",
    "signature",
    "invoice",
    "payment",
    "due",
    "schedule",
    "meeting",
    "agenda",
    "review",
    "comments",
    "changes",
    "thank",
    "regards",
    "deadline",
    "filing",
    "return",
    "account",
    "balance",
    "statement",
    "audit",
    "team",
    "office",
    "client",
    "proposal",
    "budget",
    "approval",
    "update",
    "question",
    "answer",
    "Monday",
    "Tuesday",
    "Friday",
    "report",
    "summary",
    "notes",
    "follow-up",
    "call",
    "tomorrow",
    "morning",
    "afternoon",
];

const ATTACHMENTS: &[(&str, &str, &[u8])] = &[
    ("application/pdf", "pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
    ("image/jpeg", "jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("image/png", "png", b"\x89PNG\r\n\x1a\n"),
    (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xlsx",
        b"PK\x03\x04\x14\x00\x06\x00",
    ),
    ("application/zip", "zip", b"PK\x03\x04\x14\x00\x00\x00"),
];

const TIMEZONES: &[(i64, &str)] = &[
    (0, "+0000"),
    (3600, "+0100"),
    (7200, "+0200"),
    (-18000, "-0500"),
    (-28800, "-0800"),
];

/// 2026-10-01T08:00:00Z
const START: i64 = 1_790_841_600;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Text,
    Html,
    Attachments,
    Large,
}

struct Sent {
    id: String,
    topic: String,
    references: Vec<String>,
    from: (&'static str, &'static str),
    to: (&'static str, &'static str),
}

/// Generates messages until their total size reaches `total_bytes` (the last
/// one may overshoot by one message). A message that would overshoot the
/// budget by more than its kind's size is replaced with a small text mail, so
/// a small budget gives small mail and a large one the full mix.
pub fn generate(total_bytes: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut g = Generator::new(seed);
    let mut out = Vec::new();
    let mut total = 0usize;
    while total < total_bytes {
        let roll = g.rng.range(0, 1000);
        let (mut kind, mut size) = match roll {
            0..=699 => (Kind::Text, g.rng.range(1024, 8 * 1024)),
            700..=929 => (Kind::Html, g.rng.range(10 * 1024, 60 * 1024)),
            930..=994 => (Kind::Attachments, g.rng.range(100 * 1024, 1024 * 1024)),
            _ => (Kind::Large, g.rng.range(2 << 20, 10 << 20)),
        };
        if !out.is_empty() && size > total_bytes - total {
            kind = Kind::Text;
            size = g.rng.range(1024, 8 * 1024);
        }
        let m = g.message(kind, size);
        total += m.len();
        out.push(m);
    }
    out
}

/// `n` plain text mails of 1–4 KB (store ingest benchmarks).
pub fn small_messages(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut g = Generator::new(seed);
    (0..n)
        .map(|_| {
            let size = g.rng.range(1024, 4 * 1024);
            g.message(Kind::Text, size)
        })
        .collect()
}

struct Generator {
    rng: Rng,
    n: u64,
    clock: i64,
    history: Vec<Sent>,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            n: 0,
            clock: START,
            history: Vec::new(),
        }
    }

    /// One message of about `size` bytes.
    fn message(&mut self, kind: Kind, size: usize) -> Vec<u8> {
        self.n += 1;
        self.clock += self.rng.range(30, 3600) as i64;
        let mut m = Vec::with_capacity(size + 1024);
        let boundary = format!("----=_Part_{}_{:08x}", self.n, self.rng.next_u64() as u32);
        self.headers(&mut m, kind);
        let body_budget = size.saturating_sub(m.len());
        match kind {
            Kind::Text => {
                m.extend_from_slice(
                    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
                );
                let budget = size.saturating_sub(m.len());
                self.text(&mut m, budget.max(64));
            }
            Kind::Html => {
                m.extend_from_slice(
                    format!("Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\nThis is a multi-part message in MIME format.\r\n\r\n").as_bytes(),
                );
                self.alternative(&mut m, &boundary, body_budget);
                m.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
            Kind::Attachments | Kind::Large => {
                m.extend_from_slice(
                    format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\nThis is a multi-part message in MIME format.\r\n\r\n").as_bytes(),
                );
                let inner = format!("{boundary}_alt");
                m.extend_from_slice(
                    format!("--{boundary}\r\nContent-Type: multipart/alternative; boundary=\"{inner}\"\r\n\r\n").as_bytes(),
                );
                let body = self.rng.range(3 * 1024, 12 * 1024);
                self.alternative(&mut m, &inner, body);
                m.extend_from_slice(format!("--{inner}--\r\n\r\n").as_bytes());
                let count = if kind == Kind::Large {
                    self.rng.range(1, 3)
                } else {
                    self.rng.range(1, 4)
                };
                let mut left = size.saturating_sub(m.len());
                for i in 0..count {
                    let encoded = if i + 1 == count {
                        left
                    } else {
                        left / (count - i) + self.rng.range(0, left / (2 * (count - i)) + 1)
                    };
                    let encoded = encoded.min(left).max(1024);
                    left = left.saturating_sub(encoded);
                    self.attachment(&mut m, &boundary, encoded);
                }
                m.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
        }
        m
    }

    fn headers(&mut self, m: &mut Vec<u8>, kind: Kind) {
        let reply_to = if !self.history.is_empty() && self.rng.chance(30) {
            Some(self.rng.range(0, self.history.len()))
        } else {
            None
        };
        let (from, to, topic, in_reply_to, references) = match reply_to {
            Some(i) => {
                let prev = &self.history[i];
                let mut refs = prev.references.clone();
                refs.push(prev.id.clone());
                if refs.len() > 12 {
                    refs.drain(1..refs.len() - 11);
                }
                (
                    prev.to,
                    prev.from,
                    prev.topic.clone(),
                    Some(prev.id.clone()),
                    refs,
                )
            }
            None => {
                let direction = self.rng.range(0, 100);
                let (from, to) = if direction < 45 {
                    (*self.rng.pick(INTERNAL), *self.rng.pick(&EXTERNAL[..8]))
                } else if direction < 90 {
                    (*self.rng.pick(EXTERNAL), *self.rng.pick(INTERNAL))
                } else {
                    let a = self.rng.range(0, INTERNAL.len());
                    let b = (a + self.rng.range(1, INTERNAL.len())) % INTERNAL.len();
                    (INTERNAL[a], INTERNAL[b])
                };
                let mut topic = self.rng.pick(TOPICS).to_string();
                if self.rng.chance(3) {
                    topic = format!("{}: {topic}", self.rng.pick(CONFIDENTIAL));
                }
                (from, to, topic, None, Vec::new())
            }
        };
        let inbound = !from.1.ends_with(INTERNAL_DOMAIN);
        let from_domain = from.1.rsplit_once('@').map_or("", |(_, d)| d);
        let id = format!(
            "<{:016x}.{}@{}>",
            self.rng.next_u64(),
            self.n,
            if inbound {
                from_domain
            } else {
                "mail.acme.example"
            }
        );

        if inbound {
            m.extend_from_slice(format!("Return-Path: <{}>\r\n", from.1).as_bytes());
            for hop in 0..self.rng.range(1, 4) {
                m.extend_from_slice(
                    format!(
                        "Received: from mx{hop}.{from_domain} (mx{hop}.{from_domain} [192.0.2.{}])\r\n\tby mail.acme.example (Postfix) with ESMTPS id {:010X}\r\n\tfor <{}>; {}\r\n",
                        self.rng.range(1, 255),
                        self.rng.next_u64() >> 24,
                        to.1,
                        date(self.clock - hop as i64, 0, "+0000"),
                    )
                    .as_bytes(),
                );
            }
        }
        m.extend_from_slice(format!("From: {}\r\n", mailbox(from)).as_bytes());
        m.extend_from_slice(format!("To: {}", mailbox(to)).as_bytes());
        if self.rng.chance(25) {
            let extra = if inbound {
                *self.rng.pick(&EXTERNAL[..8])
            } else {
                *self.rng.pick(INTERNAL)
            };
            if extra.1 != to.1 && extra.1 != from.1 {
                m.extend_from_slice(format!(",\r\n {}", mailbox(extra)).as_bytes());
            }
        }
        m.extend_from_slice(b"\r\n");
        if self.rng.chance(30) {
            let cc = if inbound {
                *self.rng.pick(INTERNAL)
            } else {
                *self.rng.pick(&EXTERNAL[..8])
            };
            if cc.1 != to.1 && cc.1 != from.1 {
                m.extend_from_slice(format!("Cc: {}\r\n", mailbox(cc)).as_bytes());
            }
        }
        let subject = if in_reply_to.is_some() {
            format!("Re: {topic}")
        } else {
            topic.clone()
        };
        m.extend_from_slice(format!("Subject: {subject}\r\n").as_bytes());
        let (offset, tz) = *self.rng.pick(TIMEZONES);
        m.extend_from_slice(format!("Date: {}\r\n", date(self.clock, offset, tz)).as_bytes());
        m.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
        if let Some(parent) = &in_reply_to {
            m.extend_from_slice(format!("In-Reply-To: {parent}\r\n").as_bytes());
            m.extend_from_slice(b"References:");
            for (i, r) in references.iter().enumerate() {
                let fold = if i == 0 { "" } else { "\r\n" };
                m.extend_from_slice(format!("{fold} {r}").as_bytes());
            }
            m.extend_from_slice(b"\r\n");
        }
        if !inbound || self.rng.chance(50) {
            m.extend_from_slice(b"User-Agent: Mozilla Thunderbird\r\n");
        }
        if kind == Kind::Text && from.1.starts_with("noreply@") {
            m.extend_from_slice(b"Auto-Submitted: auto-generated\r\n");
        }
        m.extend_from_slice(b"MIME-Version: 1.0\r\n");

        self.history.push(Sent {
            id,
            topic,
            references,
            from,
            to,
        });
        if self.history.len() > 256 {
            self.history.remove(0);
        }
    }

    /// A text/plain and a quoted-printable text/html part sharing `budget`.
    fn alternative(&mut self, m: &mut Vec<u8>, boundary: &str, budget: usize) {
        let mut text = Vec::new();
        self.text(&mut text, (budget / 4).max(256));
        m.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n").as_bytes(),
        );
        m.extend_from_slice(&text);
        m.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n").as_bytes(),
        );
        let html = self.html(budget.saturating_sub(text.len()).max(256));
        quoted_printable(m, &html);
        m.extend_from_slice(b"\r\n");
    }

    /// Wrapped paragraphs of words until about `budget` bytes.
    fn text(&mut self, m: &mut Vec<u8>, budget: usize) {
        const CLOSING: &[u8] = b"\r\n\r\nBest regards\r\n";
        let start = m.len();
        m.extend_from_slice(b"Hello,\r\n\r\n");
        let mut line = 0;
        while m.len() - start + CLOSING.len() < budget {
            let w = self.rng.pick(WORDS).as_bytes();
            if line + w.len() + 1 > 72 {
                m.extend_from_slice(b"\r\n");
                line = 0;
                if self.rng.chance(12) {
                    m.extend_from_slice(b"\r\n");
                }
            } else if line > 0 {
                m.push(b' ');
                line += 1;
            }
            m.extend_from_slice(w);
            line += w.len();
        }
        m.extend_from_slice(CLOSING);
    }

    fn html(&mut self, budget: usize) -> Vec<u8> {
        let mut h = Vec::with_capacity(budget + 256);
        h.extend_from_slice(b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>p{margin:0 0 1em 0;font-family:Calibri,sans-serif}</style></head><body>");
        while h.len() < budget {
            if self.rng.chance(10) {
                h.extend_from_slice(b"<table style=\"border-collapse:collapse;width:100%\"><tr>");
                for _ in 0..4 {
                    h.extend_from_slice(
                        format!(
                            "<td style=\"border:1px solid #ccc;padding:4px\">{}</td>",
                            self.rng.range(100, 99_999)
                        )
                        .as_bytes(),
                    );
                }
                h.extend_from_slice(b"</tr></table>");
            }
            h.extend_from_slice(b"<p>");
            for i in 0..self.rng.range(20, 80) {
                if i > 0 {
                    h.push(b' ');
                }
                let w = self.rng.pick(WORDS);
                if self.rng.chance(4) {
                    h.extend_from_slice(format!("<b>{w}</b>").as_bytes());
                } else {
                    h.extend_from_slice(w.as_bytes());
                }
            }
            h.extend_from_slice(b"</p>\n");
        }
        h.extend_from_slice(b"</body></html>");
        h
    }

    /// A base64 attachment part whose encoded body is about `encoded` bytes.
    fn attachment(&mut self, m: &mut Vec<u8>, boundary: &str, encoded: usize) {
        let (ctype, ext, magic) = *self.rng.pick(ATTACHMENTS);
        let name = format!(
            "{}-{}.{ext}",
            self.rng.pick(TOPICS).replace(' ', "-"),
            self.n
        );
        let inline = ctype.starts_with("image/") && self.rng.chance(30);
        m.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: {}; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                if inline { "inline" } else { "attachment" }
            )
            .as_bytes(),
        );
        // 76 characters + CRLF per 57 decoded bytes.
        let raw_len = (encoded / 78 * 57).max(magic.len());
        let mut data = vec![0u8; raw_len];
        self.rng.fill(&mut data);
        data[..magic.len()].copy_from_slice(magic);
        base64(m, &data);
        m.extend_from_slice(b"\r\n");
    }
}

fn mailbox((name, address): (&str, &str)) -> String {
    if name.is_empty() {
        address.to_string()
    } else if name.starts_with("=?") || !name.contains(',') {
        format!("{name} <{address}>")
    } else {
        format!("\"{name}\" <{address}>")
    }
}

/// RFC 5322 date of `unix` seconds shown at `offset` seconds east of UTC.
fn date(unix: i64, offset: i64, tz: &str) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let local = unix + offset;
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} {tz}",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Base64 with 76-character lines, CRLF-separated, no final CRLF.
fn base64(out: &mut Vec<u8>, data: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.reserve(data.len() / 57 * 78 + 80);
    for (i, line) in data.chunks(57).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        for c in line.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            out.push(ALPHABET[(n >> 18) as usize & 63]);
            out.push(ALPHABET[(n >> 12) as usize & 63]);
            out.push(if c.len() > 1 {
                ALPHABET[(n >> 6) as usize & 63]
            } else {
                b'='
            });
            out.push(if c.len() > 2 {
                ALPHABET[n as usize & 63]
            } else {
                b'='
            });
        }
    }
}

/// Quoted-printable with soft line breaks before 76 characters; `\n` in the
/// input becomes a hard CRLF.
fn quoted_printable(out: &mut Vec<u8>, data: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut col = 0;
    for &b in data {
        if b == b'\n' {
            out.extend_from_slice(b"\r\n");
            col = 0;
            continue;
        }
        let plain = (b' '..=b'~').contains(&b) && b != b'=';
        let width = if plain { 1 } else { 3 };
        if col + width > 75 {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        if plain {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
        col += width;
    }
}
