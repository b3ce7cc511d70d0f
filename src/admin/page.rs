//! Pagination over lists the viewer sees only part of.
//!
//! Privacy rule: what a page holds and whether it has a `next_cursor` depend
//! only on the records visible to the viewer, never on hidden ones. So:
//! - a cursor is always the position of a record the viewer sees (the last
//!   one returned, or the last one examined), never of a hidden record;
//! - hidden records are skipped without counting toward any bound (the scan
//!   goes on until the page fills or the list ends: a cost, not a leak);
//! - the work bound counts visible records examined (for filters, whose
//!   matching may read bodies). When it is reached the page may be shorter
//!   than `limit` and still carry a `next_cursor`: only `next_cursor: null`
//!   means the end.

use super::error::ApiError;
use crate::engine::{Direction, Record};
use crate::store::{Cursor, StoreError, TimelinePage};

/// Default page size.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size; larger requests are clamped to it.
pub const MAX_LIMIT: usize = 200;

/// Parse `limit`: digits only, at least 1; above [`MAX_LIMIT`] (however
/// large) it is clamped.
pub fn limit(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    if raw.is_empty() || raw.len() > 40 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be a positive integer",
        ));
    }
    let digits = raw.trim_start_matches('0');
    if digits.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be at least 1",
        ));
    }
    Ok(digits
        .parse::<usize>()
        .map_or(MAX_LIMIT, |n| n.min(MAX_LIMIT)))
}

/// Longest id accepted in a path (ours are 16 or 24 hex digits).
pub const MAX_ID_LEN: usize = 64;

/// Check an id from a path or query: lowercase hex, 1 to [`MAX_ID_LEN`]
/// characters (every id this API hands out has that form).
pub fn id(raw: &str) -> Result<&str, ApiError> {
    if raw.is_empty()
        || raw.len() > MAX_ID_LEN
        || !raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(ApiError::bad_request("invalid_id", "invalid id"));
    }
    Ok(raw)
}

/// Parse a `direction` filter.
pub fn direction(raw: Option<&str>) -> Result<Option<Direction>, ApiError> {
    raw.map(|d| match d {
        "inbound" => Ok(Direction::Inbound),
        "outbound" => Ok(Direction::Outbound),
        _ => Err(ApiError::bad_request(
            "invalid_direction",
            "direction must be inbound or outbound",
        )),
    })
    .transpose()
}

/// Parse a record-position cursor.
pub fn cursor(raw: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    raw.map(|c| Cursor::decode(c).map_err(ApiError::from))
        .transpose()
}

/// What the filter made of one record.
pub enum Pick<T> {
    /// The viewer may not see it: skipped, not counted.
    Hidden,
    /// Visible but filtered out: counted toward the work bound.
    Skipped,
    /// On the page.
    Take(T),
}

/// One page and the cursor of the next, if any.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// The position of a record in a newest-first listing.
pub fn position(r: &Record) -> Cursor {
    Cursor::new(r.date, &r.id)
}

/// Fill one page from a newest-first store listing (`timeline`, `recent`).
/// `budget` bounds the visible records examined (at least `limit + 1`).
pub fn fill<T>(
    fetch: impl Fn(Option<&Cursor>, usize) -> Result<TimelinePage, StoreError>,
    start: Option<Cursor>,
    limit: usize,
    budget: usize,
    mut pick: impl FnMut(Record) -> Result<Pick<T>, ApiError>,
) -> Result<Page<T>, ApiError> {
    let budget = budget.max(limit + 1);
    let chunk = (limit + 1).clamp(32, 256);
    let mut items = Vec::new();
    let mut examined = 0usize;
    let mut last_taken: Option<Cursor> = None;
    let mut at = start;
    loop {
        let (records, next) = fetch(at.as_ref(), chunk)?;
        for r in records {
            let at_r = position(&r);
            match pick(r)? {
                Pick::Hidden => continue,
                Pick::Skipped => {}
                Pick::Take(t) => {
                    if items.len() == limit {
                        // One more visible match exists: the page is full.
                        return Ok(Page {
                            items,
                            next: last_taken,
                        });
                    }
                    items.push(t);
                    last_taken = Some(at_r.clone());
                }
            }
            examined += 1;
            if examined >= budget {
                // The last visible record examined: the next page starts after it.
                return Ok(Page {
                    items,
                    next: Some(at_r),
                });
            }
        }
        match next {
            Some(c) => at = Some(c),
            None => return Ok(Page { items, next: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_clamp_and_reject_garbage() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("7")).unwrap(), 7);
        assert_eq!(limit(Some("200")).unwrap(), 200);
        assert_eq!(limit(Some("201")).unwrap(), MAX_LIMIT);
        assert_eq!(
            limit(Some("99999999999999999999999999")).unwrap(),
            MAX_LIMIT
        );
        for bad in ["", "0", "000", "-1", "1.5", "ten", " 5", "1e3"] {
            assert_eq!(
                limit(Some(bad)).unwrap_err().code(),
                "invalid_limit",
                "{bad:?}"
            );
        }
    }
}
