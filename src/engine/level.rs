//! Sharing levels and message direction.
//!
//! Levels are totally ordered, `Hidden < Metadata < Subject < Full`, so "privacy
//! wins" is simply `min` and "the most any owner shares" is `max`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How much of a message a colleague may see (DESIGN §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing is stored or shown.
    Hidden,
    /// Date, direction, participants (never bcc), size, owners, thread, Message-ID, attachment count.
    Metadata,
    /// Metadata plus the subject.
    Subject,
    /// Subject plus text and html bodies and attachments.
    Full,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::Hidden, Level::Metadata, Level::Subject, Level::Full];

    /// The lowercase name used in policy files, headers and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Hidden => "hidden",
            Level::Metadata => "metadata",
            Level::Subject => "subject",
            Level::Full => "full",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value was not one of `hidden`, `metadata`, `subject`, `full`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid level {0:?}: expected hidden, metadata, subject or full")]
pub struct InvalidLevel(pub String);

impl FromStr for Level {
    type Err = InvalidLevel;
    /// Case-insensitive, surrounding whitespace ignored (header values arrive padded).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| InvalidLevel(s.to_string()))
    }
}

/// Whether mail came into the firm or left it, from the owner's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            _ => Err(format!(
                "invalid direction {s:?}: expected inbound or outbound"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_privacy_first() {
        assert!(Level::Hidden < Level::Metadata);
        assert!(Level::Metadata < Level::Subject);
        assert!(Level::Subject < Level::Full);
        assert_eq!(Level::Full.min(Level::Metadata), Level::Metadata);
    }

    #[test]
    fn level_parses_case_insensitively_and_rejects_garbage() {
        assert_eq!(" FULL ".parse::<Level>(), Ok(Level::Full));
        assert_eq!("metadata".parse::<Level>(), Ok(Level::Metadata));
        assert!("everything".parse::<Level>().is_err());
        assert!("".parse::<Level>().is_err());
    }
}
