//! The little IMAP syntax the relay reads after login, over complete line
//! segments (never whole messages): command tags and names, the arguments of
//! APPEND up to its message literals, LIST/LSUB lines that name the \Drafts
//! mailbox, the kind of a server line, and the FETCH item a literal belongs
//! to. Everything else passes through unread.
//!
//! Parsers here are total: any bytes give an answer, and "don't know" always
//! means "don't capture" (never "forward differently").

/// Commands counted by name in the metrics; anything else is `other`.
pub const COMMAND_LABELS: &[&str] = &[
    "append",
    "authenticate",
    "capability",
    "check",
    "close",
    "compress",
    "copy",
    "create",
    "delete",
    "enable",
    "examine",
    "expunge",
    "fetch",
    "getquotaroot",
    "id",
    "idle",
    "list",
    "login",
    "logout",
    "lsub",
    "move",
    "namespace",
    "noop",
    "rename",
    "replace",
    "search",
    "select",
    "sort",
    "starttls",
    "status",
    "store",
    "subscribe",
    "thread",
    "uid_copy",
    "uid_expunge",
    "uid_fetch",
    "uid_move",
    "uid_replace",
    "uid_search",
    "uid_sort",
    "uid_store",
    "uid_thread",
    "unselect",
    "unsubscribe",
    "other",
];

/// The metric label of a command name (`uid` for the UID variants).
pub fn command_label(name: &[u8], uid: bool) -> &'static str {
    let mut buf = [0u8; 24];
    let prefix: &[u8] = if uid { b"uid_" } else { b"" };
    if prefix.len() + name.len() > buf.len() {
        return "other";
    }
    buf[..prefix.len()].copy_from_slice(prefix);
    for (d, s) in buf[prefix.len()..].iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let key = &buf[..prefix.len() + name.len()];
    COMMAND_LABELS
        .iter()
        .find(|l| l.as_bytes() == key)
        .copied()
        .unwrap_or("other")
}

/// The start of a client command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandHead<'a> {
    pub tag: &'a [u8],
    /// The command name as sent (after `UID ` for UID commands).
    pub name: &'a [u8],
    pub uid: bool,
    /// After the name and one SP (empty when the line ends there).
    pub rest: &'a [u8],
    /// Where `rest` starts in the line.
    pub rest_at: usize,
}

impl CommandHead<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    pub fn label(&self) -> &'static str {
        command_label(self.name, self.uid)
    }
}

/// `tag SP name [SP …]`, or `None` for a line that is not a command (such as
/// `DONE` ending IDLE, or a SASL response).
pub fn command_head(line: &[u8]) -> Option<CommandHead<'_>> {
    let line = trim_eol(line);
    let at = |rest: &[u8]| line.len() - rest.len();
    let sp = memchr::memchr(b' ', line)?;
    let tag = &line[..sp];
    if tag.is_empty() || !tag.iter().all(|&b| is_tag_char(b)) {
        return None;
    }
    let after = &line[sp + 1..];
    let (name, rest) = split_token(after);
    if name.is_empty() || !name.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    if name.eq_ignore_ascii_case(b"UID") {
        let (name, rest) = split_token(rest);
        if name.is_empty() || !name.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        return Some(CommandHead {
            tag,
            name,
            uid: true,
            rest,
            rest_at: at(rest),
        });
    }
    Some(CommandHead {
        tag,
        name,
        uid: false,
        rest,
        rest_at: at(rest),
    })
}

fn split_token(s: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b' ', s) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[]),
    }
}

/// The line without its CRLF / LF.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// ASTRING-CHAR except `+` (RFC 9051 `tag`).
pub fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

/// ATOM-CHAR or `]`.
pub fn is_astring_char(b: u8) -> bool {
    b == b']' || is_atom_char(b)
}

/// Any CHAR except atom-specials: `(`, `)`, `{`, SP, CTL, `%`, `*`, `"`, `\`, `]`.
pub fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b)
        && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// A server line, as far as the relay cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerLine<'a> {
    /// `+ …`: a continuation request.
    Continuation,
    /// `* CAPABILITY …`.
    Capability,
    /// `* OK|NO|BAD|PREAUTH|BYE …` (untagged status). `capability`: its
    /// response code is `[CAPABILITY …]`.
    Status { bye: bool, capability: bool },
    /// `tag OK|NO|BAD …`.
    Tagged {
        tag: &'a [u8],
        ok: bool,
        capability: bool,
    },
    /// `* n FETCH (…`.
    Fetch,
    /// `* LIST`, `* LSUB`, `* XLIST`.
    List,
    /// Anything else (other untagged data, garbage).
    Other,
}

/// How many head bytes [`classify`] needs at most to decide.
pub const CLASSIFY_HEAD: usize = 512;

/// Classify a server line from its head (the first bytes of the line, up to
/// [`CLASSIFY_HEAD`], or the whole line). `None`: more bytes are needed
/// (only when `head` is shorter than `CLASSIFY_HEAD` and has no LF).
pub fn classify(head: &[u8]) -> Option<ServerLine<'_>> {
    let complete = head.contains(&b'\n') || head.len() >= CLASSIFY_HEAD;
    let (first, rest) = match memchr::memchr(b' ', head) {
        Some(i) => (&head[..i], &head[i + 1..]),
        None if complete => {
            return Some(if trim_eol(head) == b"+" {
                ServerLine::Continuation
            } else {
                ServerLine::Other
            });
        }
        None => return None,
    };
    if first == b"+" {
        return Some(ServerLine::Continuation);
    }
    // The second token must be complete (followed by SP or the line end).
    let (second, after) = match memchr::memchr(b' ', rest) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None if complete => (trim_eol(rest), None),
        None => return None,
    };
    let code_cap = |after: Option<&[u8]>| -> Option<bool> {
        match after {
            None => Some(false),
            Some(a) => {
                const CAP: &[u8] = b"[CAPABILITY ";
                let n = a.len().min(CAP.len());
                if !a[..n].eq_ignore_ascii_case(&CAP[..n]) {
                    Some(false)
                } else if n == CAP.len() {
                    Some(true)
                } else if complete {
                    Some(false)
                } else {
                    None
                }
            }
        }
    };
    if first == b"*" {
        let upper = |s: &[u8], w: &str| s.eq_ignore_ascii_case(w.as_bytes());
        if upper(second, "CAPABILITY") {
            return Some(ServerLine::Capability);
        }
        for (word, bye) in [
            ("OK", false),
            ("NO", false),
            ("BAD", false),
            ("PREAUTH", false),
            ("BYE", true),
        ] {
            if upper(second, word) {
                return Some(ServerLine::Status {
                    bye,
                    capability: code_cap(after)?,
                });
            }
        }
        if upper(second, "LIST") || upper(second, "LSUB") || upper(second, "XLIST") {
            return Some(ServerLine::List);
        }
        if !second.is_empty() && second.iter().all(u8::is_ascii_digit) {
            let third = match after {
                Some(a) => match memchr::memchr(b' ', a) {
                    Some(i) => &a[..i],
                    None if complete => trim_eol(a),
                    None => return None,
                },
                None => return Some(ServerLine::Other),
            };
            if third.eq_ignore_ascii_case(b"FETCH") {
                return Some(ServerLine::Fetch);
            }
        }
        return Some(ServerLine::Other);
    }
    if !first.is_empty() && first.iter().all(|&b| is_tag_char(b)) {
        for (word, ok) in [("OK", true), ("NO", false), ("BAD", false)] {
            if second.eq_ignore_ascii_case(word.as_bytes()) {
                return Some(ServerLine::Tagged {
                    tag: first,
                    ok,
                    capability: code_cap(after)?,
                });
            }
        }
    }
    Some(ServerLine::Other)
}

/// A byte cursor for the small parsers below.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'a> {
    s: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(s: &'a [u8]) -> Self {
        Cursor { s }
    }

    pub fn rest(&self) -> &'a [u8] {
        self.s
    }

    pub fn is_empty(&self) -> bool {
        self.s.is_empty()
    }

    pub fn peek(&self) -> Option<u8> {
        self.s.first().copied()
    }

    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.s = &self.s[1..];
            true
        } else {
            false
        }
    }

    /// Case-insensitive keyword.
    pub fn eat_word(&mut self, w: &str) -> bool {
        let w = w.as_bytes();
        if self.s.len() >= w.len() && self.s[..w.len()].eq_ignore_ascii_case(w) {
            self.s = &self.s[w.len()..];
            true
        } else {
            false
        }
    }

    /// `1*ASTRING-CHAR`.
    pub fn atom(&mut self) -> Option<&'a [u8]> {
        let n = self.s.iter().take_while(|&&b| is_astring_char(b)).count();
        if n == 0 {
            return None;
        }
        let (a, r) = self.s.split_at(n);
        self.s = r;
        Some(a)
    }

    /// A quoted string, unescaped.
    pub fn quoted(&mut self) -> Option<Vec<u8>> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let mut out = Vec::new();
        let mut i = 1;
        while i < self.s.len() {
            match self.s[i] {
                b'"' => {
                    self.s = &self.s[i + 1..];
                    return Some(out);
                }
                b'\\' if i + 1 < self.s.len() => {
                    out.push(self.s[i + 1]);
                    i += 2;
                }
                b'\r' | b'\n' => return None,
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        None
    }

    /// An atom or a quoted string (not a literal), unescaped.
    pub fn astring(&mut self) -> Option<Vec<u8>> {
        if self.peek() == Some(b'"') {
            self.quoted()
        } else {
            self.atom().map(<[u8]>::to_vec)
        }
    }

    /// A parenthesized list without nesting or strings: its raw inside.
    pub fn flat_list(&mut self) -> Option<&'a [u8]> {
        if self.peek() != Some(b'(') {
            return None;
        }
        let close = memchr::memchr(b')', self.s)?;
        let inner = &self.s[1..close];
        if inner
            .iter()
            .any(|&b| matches!(b, b'(' | b'"' | b'{' | b'\r' | b'\n'))
        {
            return None;
        }
        self.s = &self.s[close + 1..];
        Some(inner)
    }
}

/// True when a flat list (`\Seen \Draft`) holds `flag` (case-insensitive).
pub fn list_has(inner: &[u8], flag: &str) -> bool {
    inner
        .split(|&b| b == b' ')
        .any(|f| f.eq_ignore_ascii_case(flag.as_bytes()))
}

/// From a `* LIST`/`* LSUB`/`* XLIST` line: the mailbox name when the line
/// marks it `\Drafts` (RFC 6154; XLIST's `\Drafts` too). Names sent as
/// literals are not read.
pub fn drafts_from_list(line: &[u8]) -> Option<Vec<u8>> {
    let mut c = Cursor::new(trim_eol(line));
    if !c.eat_word("* ") {
        return None;
    }
    if !(c.eat_word("LIST ") || c.eat_word("LSUB ") || c.eat_word("XLIST ")) {
        return None;
    }
    let attrs = c.flat_list()?;
    if !list_has(attrs, "\\Drafts") {
        return None;
    }
    if !c.eat(b' ') {
        return None;
    }
    if !c.eat_word("NIL") {
        c.quoted()?;
    }
    if !c.eat(b' ') {
        return None;
    }
    c.astring()
}

/// True for a mailbox name that is a Drafts folder by name alone (the last
/// hierarchy level is `Drafts`, any case, whatever the separator).
pub fn is_drafts_name(name: &[u8]) -> bool {
    let last = name
        .rsplit(|&b| b == b'/' || b == b'.')
        .next()
        .unwrap_or(name);
    last.eq_ignore_ascii_case(b"Drafts")
}

/// What a literal in a client's APPEND (or REPLACE) command carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendRole {
    /// The mailbox name (collect it, it decides whether this is a draft).
    Mailbox,
    /// A whole message; `draft`: the \Draft flag was given for it.
    Message { draft: bool },
    /// Anything else (CATENATE parts, unknown extensions): not captured.
    Other,
}

/// Follows an APPEND command segment by segment, to tell which literal is a
/// message and whether it is a draft. States are positions in
/// `APPEND mailbox 1*(SP [flags SP] [date SP] (literal / "UTF8 (" literal ")"))`
/// (RFC 3502 MULTIAPPEND, RFC 6855 UTF8), REPLACE (RFC 8508) likewise after
/// its sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendParser {
    state: AppendState,
    /// The mailbox name, once known (unquoted).
    pub mailbox: Option<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppendState {
    /// Before the mailbox argument.
    Mailbox,
    /// Inside the mailbox literal.
    MailboxLiteral,
    /// After the mailbox or a message: `SP` then a message's arguments, or
    /// the end of the command.
    Between,
    /// Inside a message literal; `utf8`: a `)` closes it.
    Message { utf8: bool },
    /// Unparsable or CATENATE: nothing more is captured.
    Skip,
}

impl AppendParser {
    /// For `APPEND`: `rest` is what follows `APPEND `. For `REPLACE`, what
    /// follows `REPLACE ` (a sequence number comes first).
    pub fn new() -> Self {
        AppendParser {
            state: AppendState::Mailbox,
            mailbox: None,
        }
    }

    /// Skip REPLACE's sequence number in `rest`; returns what follows it.
    pub fn skip_replace_seq(rest: &[u8]) -> &[u8] {
        match memchr::memchr(b' ', rest) {
            Some(i) => &rest[i + 1..],
            None => &[],
        }
    }

    /// Feed a segment's text (the first segment after `APPEND `, later
    /// segments whole) and its announcement, if any. Returns the role of the
    /// announced literal (`Other` when none is announced).
    pub fn segment(&mut self, text: &[u8], announce_suffix: Option<usize>) -> AppendRole {
        let body = match announce_suffix {
            Some(n) => &text[..text.len().saturating_sub(n)],
            None => trim_eol(text),
        };
        let mut c = Cursor::new(body);
        loop {
            match self.state {
                AppendState::Skip => return AppendRole::Other,
                AppendState::Mailbox => {
                    if c.is_empty() && announce_suffix.is_some() {
                        self.state = AppendState::MailboxLiteral;
                        return AppendRole::Mailbox;
                    }
                    match c.astring() {
                        Some(m) => {
                            self.mailbox = Some(m);
                            self.state = AppendState::Between;
                        }
                        None => return self.skip(),
                    }
                }
                AppendState::MailboxLiteral => {
                    // Called for the segment after the mailbox literal.
                    self.state = AppendState::Between;
                }
                AppendState::Message { utf8 } => {
                    // The segment after a message literal.
                    if utf8 && !c.eat(b')') {
                        return self.skip();
                    }
                    self.state = AppendState::Between;
                }
                AppendState::Between => {
                    if c.is_empty() {
                        // End of the command (or an unannounced literal).
                        return if announce_suffix.is_some() {
                            self.skip()
                        } else {
                            AppendRole::Other
                        };
                    }
                    if !c.eat(b' ') {
                        return self.skip();
                    }
                    let mut draft = false;
                    if c.peek() == Some(b'(') {
                        match c.flat_list() {
                            Some(flags) => draft = list_has(flags, "\\Draft"),
                            None => return self.skip(),
                        }
                        if c.is_empty() {
                            return self.message(announce_suffix, draft, false);
                        }
                        if !c.eat(b' ') {
                            return self.skip();
                        }
                    }
                    if c.peek() == Some(b'"') {
                        if c.quoted().is_none() {
                            return self.skip();
                        }
                        if c.is_empty() {
                            return self.message(announce_suffix, draft, false);
                        }
                        if !c.eat(b' ') {
                            return self.skip();
                        }
                    }
                    if c.is_empty() {
                        return self.message(announce_suffix, draft, false);
                    }
                    if c.eat_word("UTF8 (") && c.is_empty() {
                        return self.message(announce_suffix, draft, true);
                    }
                    // CATENATE and anything unknown.
                    return self.skip();
                }
            }
        }
    }

    fn message(&mut self, announce: Option<usize>, draft: bool, utf8: bool) -> AppendRole {
        if announce.is_none() {
            return self.skip();
        }
        self.state = AppendState::Message { utf8 };
        AppendRole::Message { draft }
    }

    fn skip(&mut self) -> AppendRole {
        self.state = AppendState::Skip;
        AppendRole::Other
    }
}

impl Default for AppendParser {
    fn default() -> Self {
        AppendParser::new()
    }
}

/// What a FETCH response's literal carries, from the item name before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchItem {
    /// `BODY[]`, `RFC822`, `BINARY[]`: the whole message.
    Whole,
    /// `BODY[HEADER]`, `RFC822.HEADER`: the whole header block.
    Header,
    /// `BODY[HEADER.FIELDS (…)]` / `.NOT`: some header fields.
    HeaderFields,
    /// `BODY[]<0>` / `BINARY[]<0>`: the first piece of a message fetched in
    /// pieces (Thunderbird does so for large ones): its header block, when
    /// the piece holds all of it.
    Head,
    /// Anything else (parts, partial fetches, envelope strings…).
    Other,
}

/// The FETCH item whose value is the literal announced at the end of
/// `segment` (whose last `suffix_len` bytes are the announcement). Only the
/// segment's last bytes are needed: pass a tail of it.
pub fn fetch_item_before(segment: &[u8], suffix_len: usize) -> FetchItem {
    let body = &segment[..segment.len().saturating_sub(suffix_len)];
    let Some(body) = body.strip_suffix(b" ") else {
        return FetchItem::Other;
    };
    // Walk back to the SP or `(` that starts the item, skipping brackets.
    let mut depth = 0i32;
    let mut start = 0;
    for i in (0..body.len()).rev() {
        match body[i] {
            b']' => depth += 1,
            b'[' => depth -= 1,
            b' ' | b'(' if depth == 0 => {
                start = i + 1;
                break;
            }
            _ => {}
        }
    }
    let item = &body[start..];
    let up = |w: &str| item.eq_ignore_ascii_case(w.as_bytes());
    if up("BODY[]") || up("RFC822") || up("BINARY[]") {
        return FetchItem::Whole;
    }
    if up("BODY[HEADER]") || up("RFC822.HEADER") {
        return FetchItem::Header;
    }
    if up("BODY[]<0>") || up("BINARY[]<0>") {
        return FetchItem::Head;
    }
    let prefix = b"BODY[HEADER.FIELDS";
    if item.len() > prefix.len()
        && item[..prefix.len()].eq_ignore_ascii_case(prefix)
        && item.ends_with(b"]")
    {
        return FetchItem::HeaderFields;
    }
    FetchItem::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_heads() {
        let h = command_head(b"a1 UID fetch 1:* (FLAGS)\r\n").unwrap();
        assert_eq!(
            (h.tag, h.name, h.uid, h.rest),
            (&b"a1"[..], &b"fetch"[..], true, &b"1:* (FLAGS)"[..])
        );
        assert_eq!(h.label(), "uid_fetch");
        assert_eq!(h.rest_at, 13);
        let h = command_head(b"x IDLE\r\n").unwrap();
        assert!(h.is("idle") && h.rest.is_empty());
        assert_eq!(command_head(b"DONE\r\n"), None);
        assert_eq!(command_head(b"+tag NOOP\r\n"), None);
        assert_eq!(command_label(b"XYZZY", false), "other");
        assert_eq!(
            command_label(b"averyveryverylongcommandname", true),
            "other"
        );
        for l in COMMAND_LABELS {
            assert!(!l.is_empty() && l.len() <= 24);
        }
    }

    #[test]
    fn server_lines() {
        use ServerLine::*;
        fn c(s: &[u8]) -> Option<ServerLine<'_>> {
            classify(s)
        }
        assert_eq!(c(b"+ idling\r\n"), Some(Continuation));
        assert_eq!(c(b"+\r\n"), Some(Continuation));
        assert_eq!(c(b"* CAPABILITY IMAP4rev1 IDLE\r\n"), Some(Capability));
        assert_eq!(c(b"* CAPABILITY"), None, "CAPABILITYX could follow");
        assert_eq!(
            c(b"* OK [CAPABILITY IMAP4rev1] hi\r\n"),
            Some(Status {
                bye: false,
                capability: true
            })
        );
        assert_eq!(c(b"* OK [CAPAB"), None);
        assert_eq!(
            c(b"* OK [ALERT] x\r\n"),
            Some(Status {
                bye: false,
                capability: false
            })
        );
        assert_eq!(
            c(b"* BYE bye\r\n"),
            Some(Status {
                bye: true,
                capability: false
            })
        );
        assert_eq!(
            c(b"a1 OK [CAPABILITY IMAP4rev1 X] Logged in\r\n"),
            Some(Tagged {
                tag: b"a1",
                ok: true,
                capability: true
            })
        );
        assert_eq!(
            c(b"a1 NO nope\r\n"),
            Some(Tagged {
                tag: b"a1",
                ok: false,
                capability: false
            })
        );
        assert_eq!(c(b"* 12 FETCH (BODY[] {5}\r\n"), Some(Fetch));
        assert_eq!(c(b"* 12 FET"), None);
        assert_eq!(c(b"* 12 EXISTS\r\n"), Some(Other));
        assert_eq!(c(b"* LIST (\\Drafts) \"/\" Drafts\r\n"), Some(List));
        assert_eq!(c(&[b'x'; 600]), Some(Other));
    }

    #[test]
    fn drafts_mailboxes_from_list() {
        assert_eq!(
            drafts_from_list(b"* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts\r\n"),
            Some(b"Drafts".to_vec())
        );
        assert_eq!(
            drafts_from_list(b"* LIST (\\Drafts) \".\" \"INBOX.Entw&APw-rfe\"\r\n"),
            Some(b"INBOX.Entw&APw-rfe".to_vec())
        );
        assert_eq!(
            drafts_from_list(b"* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n"),
            None
        );
        assert_eq!(drafts_from_list(b"* LIST (\\Drafts) NIL {6}\r\n"), None);
        assert!(is_drafts_name(b"INBOX.Drafts") && is_drafts_name(b"[Gmail]/drafts"));
        assert!(!is_drafts_name(b"Drafts-old") && !is_drafts_name(b"INBOX"));
    }

    fn roles(segments: &[(&[u8], Option<usize>)]) -> (Vec<AppendRole>, Option<Vec<u8>>) {
        let mut p = AppendParser::new();
        let r = segments.iter().map(|(t, a)| p.segment(t, *a)).collect();
        (r, p.mailbox)
    }

    #[test]
    fn append_roles() {
        use AppendRole::*;
        let (r, m) = roles(&[(b"INBOX {12}\r\n", Some(6)), (b"\r\n", None)]);
        assert_eq!(r, vec![Message { draft: false }, Other]);
        assert_eq!(m, Some(b"INBOX".to_vec()));
        let (r, _) = roles(&[(
            b"\"Sent Items\" (\\Seen \\Draft) \"01-Jan-2026 10:00:00 +0000\" {3+}\r\n",
            Some(6),
        )]);
        assert_eq!(r, vec![Message { draft: true }]);
        // Mailbox as a literal, then MULTIAPPEND of two messages.
        let (r, m) = roles(&[
            (b"{6}\r\n", Some(5)),
            (b" (\\Seen) {3}\r\n", Some(5)),
            (b" (\\Draft) {4}\r\n", Some(5)),
            (b"\r\n", None),
        ]);
        assert_eq!(
            r,
            vec![
                Mailbox,
                Message { draft: false },
                Message { draft: true },
                Other
            ]
        );
        assert_eq!(m, None, "literal mailbox names are collected by the caller");
        // UTF8 append data.
        let (r, _) = roles(&[(b"INBOX UTF8 (~{3}\r\n", Some(6)), (b")\r\n", None)]);
        assert_eq!(r, vec![Message { draft: false }, Other]);
        // CATENATE is never captured.
        let (r, _) = roles(&[(b"INBOX CATENATE (TEXT {3}\r\n", Some(5)), (b")\r\n", None)]);
        assert_eq!(r, vec![Other, Other]);
        let (r, _) = roles(&[(b"INBOX (\\Seen {3}\r\n", Some(5))]);
        assert_eq!(r, vec![Other]);
    }

    #[test]
    fn fetch_items() {
        let f = |s: &[u8], n| fetch_item_before(s, n);
        assert_eq!(f(b"* 1 FETCH (UID 5 BODY[] {100}\r\n", 7), FetchItem::Whole);
        assert_eq!(f(b"* 1 FETCH (RFC822 {100}\r\n", 7), FetchItem::Whole);
        assert_eq!(f(b"(BINARY[] ~{100}\r\n", 8), FetchItem::Whole);
        assert_eq!(f(b"* 1 FETCH (BODY[]<0> {100}\r\n", 7), FetchItem::Head);
        assert_eq!(f(b"* 1 FETCH (body[]<0> {100}\r\n", 7), FetchItem::Head);
        assert_eq!(
            f(b"* 1 FETCH (BODY[]<65536> {100}\r\n", 7),
            FetchItem::Other
        );
        assert_eq!(f(b"* 1 FETCH (BODY[1]<0> {100}\r\n", 7), FetchItem::Other);
        assert_eq!(f(b" BODY[HEADER] {10}\r\n", 6), FetchItem::Header);
        assert_eq!(f(b" rfc822.header {10}\r\n", 6), FetchItem::Header);
        assert_eq!(
            f(b" BODY[HEADER.FIELDS (FROM TO)] {10}\r\n", 6),
            FetchItem::HeaderFields
        );
        assert_eq!(f(b" BODY[1.HEADER] {10}\r\n", 6), FetchItem::Other);
        assert_eq!(f(b" BODY[TEXT] {10}\r\n", 6), FetchItem::Other);
        assert_eq!(f(b"ENVELOPE (\"date\" {10}\r\n", 6), FetchItem::Other);
        assert_eq!(f(b"{10}\r\n", 6), FetchItem::Other);
    }
}
