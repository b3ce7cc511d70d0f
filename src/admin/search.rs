//! Text matching for `GET /api/v1/search` and the timeline's `q`: only over
//! what the viewer sees of a record at their level.
//!
//! | level | searched |
//! |---|---|
//! | metadata | sender address and name |
//! | subject | + subject |
//! | full | + text and html bodies (the first [`MAX_BODY_BYTES`] of each) |
//!
//! Every term must occur (case-insensitive substring) in one of those
//! fields. Matching is a scan: the store keeps no text index. A page
//! examines at most [`SEARCH_BUDGET`] visible records (reading up to two
//! bodies each), so one request costs at most that many blob reads; a
//! viewer who sees few records also skips the hidden ones, cheaply (one
//! record decode each), up to the whole store.

use super::error::ApiError;
use crate::engine::{Level, Record};
use crate::store::Store;
use std::io::Read;

/// Visible records a search or filtered timeline page examines at most.
pub const SEARCH_BUDGET: usize = 2000;
/// Bytes of each body searched.
pub const MAX_BODY_BYTES: u64 = 1 << 20;
/// Longest `q`.
pub const MAX_QUERY_BYTES: usize = 512;
/// Most terms in `q`.
pub const MAX_TERMS: usize = 16;

/// A parsed `q`: lowercase terms, all of which must match.
#[derive(Clone, Debug)]
pub struct Terms(Vec<String>);

impl Terms {
    /// # Errors
    /// 400 when `q` is empty, too long or has too many terms.
    pub fn parse(q: &str) -> Result<Terms, ApiError> {
        if q.len() > MAX_QUERY_BYTES {
            return Err(ApiError::bad_request("invalid_query", "q is too long"));
        }
        let terms: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
        if terms.is_empty() {
            return Err(ApiError::bad_request("invalid_query", "q is empty"));
        }
        if terms.len() > MAX_TERMS {
            return Err(ApiError::bad_request(
                "invalid_query",
                "q has too many terms",
            ));
        }
        Ok(Terms(terms))
    }

    /// Whether every term occurs in what a viewer at `level` sees of `r`.
    /// Bodies are read only at `full`, and only while a term is unmatched.
    pub fn matches(&self, store: &dyn Store, r: &Record, level: Level) -> Result<bool, ApiError> {
        if level == Level::Hidden {
            return Ok(false);
        }
        let mut pending: Vec<&str> = self.0.iter().map(String::as_str).collect();
        let check = |text: &str, pending: &mut Vec<&str>| {
            let text = text.to_lowercase();
            pending.retain(|t| !text.contains(t));
        };
        if let Some(from) = &r.from {
            check(&from.address, &mut pending);
            if let Some(n) = &from.name {
                check(n, &mut pending);
            }
        }
        if level >= Level::Subject && !pending.is_empty() {
            if let Some(s) = &r.subject {
                check(s, &mut pending);
            }
        }
        if level == Level::Full && !pending.is_empty() {
            if let Some(c) = &r.content {
                for blob in [&c.text, &c.html].into_iter().flatten() {
                    if pending.is_empty() {
                        break;
                    }
                    if let Some(reader) = store.open_blob(&blob.sha256)? {
                        let mut bytes = Vec::new();
                        reader
                            .take(MAX_BODY_BYTES)
                            .read_to_end(&mut bytes)
                            .map_err(ApiError::internal)?;
                        check(&String::from_utf8_lossy(&bytes), &mut pending);
                    }
                }
            }
        }
        Ok(pending.is_empty())
    }
}
