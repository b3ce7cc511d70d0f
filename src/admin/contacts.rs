//! Contacts: the list (policy contacts and auto-created ones, minus
//! tombstones, only those the viewer can open), one contact, deletion
//! (tombstone), and a contact's timeline.
//!
//! A contact the viewer cannot open (read rule 4, buckets mode) is a 404,
//! the same as one that does not exist.

use super::auth::{Caller, Principal};
use super::error::{ApiError, ApiPath, ApiQuery};
use super::page::{self, Pick};
use super::render;
use super::search::{Terms, SEARCH_BUDGET};
use super::AdminState;
use crate::engine::policy::BucketRole;
use crate::engine::{can_open_contact, visible, ContactState, Level, Policy, Viewer};
use crate::store::{Store, StoredContact};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;

/// A contact with where it comes from.
pub(crate) struct Found {
    pub contact: StoredContact,
    /// Declared in the policy (else auto-created in the store).
    pub from_policy: bool,
}

/// The policy contact at `i` in the shape of a stored one.
fn policy_contact(policy: &Policy, i: usize) -> StoredContact {
    let c = &policy.contacts[i];
    let mut addresses = c.addresses.clone();
    for a in &c.primary_addresses {
        if !addresses.contains(a) {
            addresses.push(a.clone());
        }
    }
    StoredContact {
        id: c.id.clone(),
        kind: c.kind,
        name: c.name.clone(),
        addresses,
        domains: c.domains.clone(),
        organization_id: c.organization.map(|o| policy.contacts[o].id.clone()),
    }
}

/// A contact by id: a policy contact unless tombstoned, else an auto-created one.
pub(crate) fn find(
    store: &dyn Store,
    policy: &Policy,
    id: &str,
) -> Result<Option<Found>, ApiError> {
    if let Some(i) = policy.contacts.iter().position(|c| c.id == id) {
        if store.contact_state(id)? == ContactState::Tombstoned {
            return Ok(None);
        }
        return Ok(Some(Found {
            contact: policy_contact(policy, i),
            from_policy: true,
        }));
    }
    Ok(store.contact(id)?.map(|contact| Found {
        contact,
        from_policy: false,
    }))
}

/// Read rule 4: a person is opened through its own id or its organization's.
pub(crate) fn can_open(policy: &Policy, viewer: &Viewer, c: &StoredContact) -> bool {
    let mut ids = vec![c.id.as_str()];
    if let Some(o) = &c.organization_id {
        ids.push(o);
    }
    can_open_contact(policy, viewer, &ids)
}

/// Whether `user` manages the contact: owner, or manager/owner member, of a
/// bucket that holds it.
fn manages(policy: &Policy, user: &str, contact_id: &str) -> bool {
    policy.buckets.iter().any(|b| {
        let role = b.owner == user
            || b.members
                .iter()
                .any(|m| m.user == user && m.role >= BucketRole::Manager);
        role && b
            .contacts
            .iter()
            .any(|&i| policy.contacts[i].id == contact_id)
    })
}

/// Longest contact `q`.
const MAX_CONTACT_QUERY: usize = 256;

/// Prefix match over the name (whole, or any of its words), addresses and domains.
fn contact_matches(c: &StoredContact, q: &str) -> bool {
    let name = c.name.to_lowercase();
    name.starts_with(q)
        || name.split_whitespace().any(|w| w.starts_with(q))
        || c.addresses.iter().any(|a| a.starts_with(q))
        || c.domains.iter().any(|d| d.starts_with(q))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    #[serde(rename = "as")]
    _as: Option<String>,
}

/// `GET /api/v1/contacts?q=&limit=&cursor=`: ordered by id; the cursor is
/// the last id of the previous page.
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let viewer = caller.viewer()?;
    let limit = page::limit(query.limit.as_deref())?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| {
            page::id(c)
                .map(str::to_string)
                .map_err(|_| ApiError::bad_request("invalid_cursor", "invalid cursor"))
        })
        .transpose()?;
    let q = match query.q {
        Some(q) if q.len() > MAX_CONTACT_QUERY => {
            return Err(ApiError::bad_request("invalid_query", "q is too long"))
        }
        Some(q) => Some(q.trim().to_lowercase()).filter(|q| !q.is_empty()),
        None => None,
    };
    let policy = caller.policy.clone();
    state
        .blocking(move |store| {
            let mut declared: Vec<StoredContact> = (0..policy.contacts.len())
                .map(|i| policy_contact(&policy, i))
                .filter(|c| after.as_ref().is_none_or(|a| &c.id > a))
                .collect();
            declared.sort_by(|a, b| a.id.cmp(&b.id));
            let mut declared: VecDeque<StoredContact> = declared.into();
            let mut stored: VecDeque<StoredContact> = VecDeque::new();
            let mut stored_after = after.clone();
            let mut stored_done = false;
            const CHUNK: usize = 256;
            let mut out: Vec<StoredContact> = Vec::new();
            let mut more = false;
            loop {
                if stored.is_empty() && !stored_done {
                    let batch = store.contacts(stored_after.as_deref(), CHUNK)?;
                    stored_done = batch.len() < CHUNK;
                    if let Some(last) = batch.last() {
                        stored_after = Some(last.id.clone());
                    }
                    stored.extend(batch);
                }
                // Merge the two id-ordered sources; the policy wins a tie.
                let (c, from_policy) = match (declared.front(), stored.front()) {
                    (None, None) => break,
                    (Some(d), Some(s)) if s.id < d.id => (stored.pop_front(), false),
                    (Some(d), Some(s)) if s.id == d.id => {
                        stored.pop_front();
                        (declared.pop_front(), true)
                    }
                    (Some(_), _) => (declared.pop_front(), true),
                    (None, Some(_)) => (stored.pop_front(), false),
                };
                let Some(c) = c else { break };
                if from_policy && store.contact_state(&c.id)? == ContactState::Tombstoned {
                    continue;
                }
                if !can_open(&policy, &viewer, &c) {
                    continue;
                }
                if q.as_deref().is_some_and(|q| !contact_matches(&c, q)) {
                    continue;
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                out.push(c);
            }
            let next = if more {
                out.last().map(|c| c.id.clone())
            } else {
                None
            };
            let contacts: Vec<Value> = out.iter().map(render::contact).collect();
            Ok(Json(json!({ "contacts": contacts, "next_cursor": next })))
        })
        .await
}

/// `GET /api/v1/contacts/{id}`.
pub async fn get_one(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let viewer = caller.viewer()?;
    page::id(&id)?;
    let policy = caller.policy.clone();
    state
        .blocking(move |store| match find(store, &policy, &id)? {
            Some(f) if can_open(&policy, &viewer, &f.contact) => {
                Ok(Json(render::contact(&f.contact)))
            }
            _ => Err(ApiError::not_found()),
        })
        .await
}

/// `DELETE /api/v1/contacts/{id}`: tombstone. An admin token, or a user who
/// owns or manages a bucket holding the contact. A user who may open the
/// contact but not manage it gets 403; one who may not even open it, 404.
pub async fn delete_one(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let user = match (&caller.principal, &caller.as_user) {
        (Principal::Admin, None) => None,
        (Principal::Admin, Some(_)) => {
            return Err(ApiError::bad_request(
                "as_not_applicable",
                "deleting a contact is an admin action: drop ?as=",
            ))
        }
        (Principal::User(_), _) => Some(caller.acting_user()?),
    };
    page::id(&id)?;
    let policy = caller.policy.clone();
    state
        .blocking(move |store| {
            let Some(found) = find(store, &policy, &id)? else {
                return Err(ApiError::not_found());
            };
            if let Some(user) = &user {
                if !(found.from_policy && manages(&policy, &user.user, &id)) {
                    return Err(if can_open(&policy, user, &found.contact) {
                        ApiError::forbidden(
                            "not_manager",
                            "only an admin or a manager of a bucket holding this contact may delete it",
                        )
                    } else {
                        ApiError::not_found()
                    });
                }
            }
            store.delete_contact(&id)?;
            tracing::info!(contact = %id, by = ?user.map(|u| u.user), "contact deleted (tombstoned)");
            Ok(StatusCode::NO_CONTENT)
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    limit: Option<String>,
    cursor: Option<String>,
    direction: Option<String>,
    q: Option<String>,
    #[serde(rename = "as")]
    _as: Option<String>,
}

/// `GET /api/v1/contacts/{id}/timeline`: newest first, each entry at the
/// viewer's level; hidden entries skipped (see `page`).
pub async fn timeline(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<TimelineQuery>,
) -> Result<Response, ApiError> {
    let viewer = caller.viewer()?;
    page::id(&id)?;
    let limit = page::limit(query.limit.as_deref())?;
    let start = page::cursor(query.cursor.as_deref())?;
    let direction = page::direction(query.direction.as_deref())?;
    let terms = query.q.as_deref().map(Terms::parse).transpose()?;
    let policy = caller.policy.clone();
    state
        .blocking(move |store| {
            match find(store, &policy, &id)? {
                Some(f) if can_open(&policy, &viewer, &f.contact) => {}
                _ => return Err(ApiError::not_found()),
            }
            let filtered = direction.is_some() || terms.is_some();
            let budget = if filtered { SEARCH_BUDGET } else { usize::MAX };
            let page = page::fill(
                |c, n| store.timeline(&id, c, n),
                start,
                limit,
                budget,
                |r| {
                    let view = visible(&policy, &viewer, &r);
                    if view.level == Level::Hidden {
                        return Ok(Pick::Hidden);
                    }
                    if direction.is_some_and(|d| d != r.direction) {
                        return Ok(Pick::Skipped);
                    }
                    if let Some(t) = &terms {
                        if !t.matches(store, &r, view.level)? {
                            return Ok(Pick::Skipped);
                        }
                    }
                    Ok(Pick::Take((r, view)))
                },
            )?;
            Ok(render::entry_page(
                "entries",
                &page.items,
                page.next.map(|c| c.encode()),
            ))
        })
        .await
}
