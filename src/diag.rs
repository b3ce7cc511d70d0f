//! Diagnostics: one problem found in a file, printed as
//! `file:line:column: message` (the format compilers use, so editors and CI
//! annotate the offending line).
//!
//! Config and policy checks collect every problem they find into a
//! `Vec<Diagnostic>` instead of stopping at the first one: an admin fixing a
//! policy file should see all of its mistakes in one run of `mailshare check`.
//!
//! Positions come from byte spans (what `toml` reports, both in
//! [`toml::de::Error::span`] and in [`toml::Spanned`] values) and are converted
//! here into a 1-based line and a 1-based column counted in characters, not
//! bytes, so a name with accents before the mistake does not shift the caret.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one file.
///
/// `line` and `column` are 1-based; the column counts characters (Unicode
/// scalar values). A problem with the file as a whole (it cannot be read) has
/// `line == 0` and `column == 0` and displays as `file: message`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a known line and column.
    pub fn new(
        file: impl Into<PathBuf>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A diagnostic about the whole file (no position), e.g. it cannot be read.
    pub fn whole_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic::new(file, 0, 0, message)
    }

    /// A diagnostic at byte `offset` of `source` (the text of `file`).
    pub fn at_offset(
        file: impl Into<PathBuf>,
        source: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(source, offset);
        Diagnostic::new(file, line, column, message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for Diagnostic {}

/// The 1-based line and 1-based character column of byte `offset` in `source`.
///
/// An offset past the end is clamped to the end (a syntax error "at end of
/// file" points just after the last character); an offset inside a multibyte
/// character points at that character.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A file's path and text: turns spans into diagnostics about that file.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Source { path, text }
    }

    /// A diagnostic at the start of `span`.
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at_offset(self.path, self.text, span.start, message)
    }

    /// A diagnostic from a TOML syntax, type or unknown-key error; at the start
    /// of the file when the parser gave no position.
    pub fn toml_error(&self, error: &toml::de::Error) -> Diagnostic {
        let start = error.span().map_or(0, |s| s.start);
        Diagnostic::at_offset(self.path, self.text, start, error.message().trim_end())
    }
}

/// Every diagnostic on its own line, in the `file:line:column: message` format.
pub fn render(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_columns() {
        let s = "ab\ncd\n\nef";
        assert_eq!(line_column(s, 0), (1, 1));
        assert_eq!(line_column(s, 1), (1, 2));
        assert_eq!(line_column(s, 2), (1, 3)); // the newline itself
        assert_eq!(line_column(s, 3), (2, 1));
        assert_eq!(line_column(s, 6), (3, 1));
        assert_eq!(line_column(s, 7), (4, 1));
        assert_eq!(line_column(s, 9), (4, 3)); // end of file
        assert_eq!(line_column(s, 100), (4, 3)); // clamped
        assert_eq!(line_column("", 0), (1, 1));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "é" is 2 bytes, "€" 3, "🦀" 4.
        let s = "name = \"Zoé €🦀\" x\nnext";
        let x = s.find(" x").unwrap() + 1;
        assert_eq!(line_column(s, x), (1, 17));
        // Multibyte characters on an earlier line do not shift later lines.
        let n = s.find("next").unwrap();
        assert_eq!(line_column(s, n), (2, 1));
        // An offset inside a multibyte character points at that character.
        let crab = s.find('🦀').unwrap();
        assert_eq!(line_column(s, crab + 2), line_column(s, crab));
        assert_eq!(line_column(s, crab), (1, 14));
    }

    #[test]
    fn crlf_line_endings_count_one_line_each() {
        let s = "a = 1\r\nb = 2\r\n";
        assert_eq!(line_column(s, s.find('b').unwrap()), (2, 1));
    }

    #[test]
    fn display_is_file_line_column_message() {
        let d = Diagnostic::new("config/policy.toml", 12, 9, "invalid level \"x\"");
        assert_eq!(
            d.to_string(),
            "config/policy.toml:12:9: invalid level \"x\""
        );
        let w = Diagnostic::whole_file("missing.toml", "cannot read file");
        assert_eq!(w.to_string(), "missing.toml: cannot read file");
    }

    #[test]
    fn toml_errors_carry_their_position() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let text = "a = 1\nbee = 2\n";
        let err = toml::from_str::<T>(text).unwrap_err();
        let d = Source::new(Path::new("t.toml"), text).toml_error(&err);
        assert_eq!((d.line, d.column), (2, 1));
        assert!(d.message.contains("unknown field `bee`"), "{d}");
    }
}
