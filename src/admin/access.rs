//! Access requests (read rule 5): a viewer who sees a message below the
//! level they need asks its owners; an owner approves (a grant of the
//! requested level, capped by the ceiling then) or denies.
//!
//! Decisions: asking needs a user token and a message the asker sees (else
//! 404) and a level above what they see (else 409 `already_visible`). It is
//! not checked against the ceiling: refusing would tell the asker how much
//! is stored, which their level does not show; approval caps the grant at
//! the ceiling instead. One pending request per asker and message (409). Approving or denying: an owner of the message (the asker gets 403
//! `not_owner`; anyone else 404, the request is not theirs to know of);
//! decided already: 409. A request never shows the message's owners (some
//! may be hidden from the asker by read rule 3).

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::page;
use super::render;
use super::AdminState;
use crate::engine::{visible, Level};
use crate::store::{AccessRequest, RequestRole, RequestStatus};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// Longest note, in characters.
const MAX_NOTE_CHARS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Default `full`.
    level: Option<Level>,
    note: Option<String>,
}

fn new_request_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(ApiError::internal)?;
    Ok(hex::encode(bytes))
}

/// `POST /api/v1/messages/{id}/access-requests` → 201 with the request.
pub async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = caller.acting_user()?;
    page::id(&id)?;
    let level = body.level.unwrap_or(Level::Full);
    let note = body
        .note
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| {
        n.chars().count() > MAX_NOTE_CHARS || n.chars().any(|c| c.is_control() && c != '\n')
    }) {
        return Err(ApiError::unprocessable(
            "invalid_note",
            "note must be at most 1000 characters, without control characters",
        ));
    }
    let policy = caller.policy.clone();
    let now = crate::app::unix_now();
    let request_id = new_request_id()?;
    state
        .blocking(move |store| {
            let record = store.message(&id)?.ok_or_else(ApiError::not_found)?;
            let view = visible(&policy, &user, &record);
            if view.level == Level::Hidden {
                return Err(ApiError::not_found());
            }
            if level <= view.level {
                return Err(ApiError::conflict(
                    "already_visible",
                    "you already see this message at that level",
                ));
            }
            let req = AccessRequest {
                id: request_id,
                message: record.id.clone(),
                requester: user.user.clone(),
                owners: record.owners.iter().map(|o| o.user.clone()).collect(),
                level,
                note,
                status: RequestStatus::Pending,
                created: now,
                decided_by: None,
                decided_at: None,
                granted: None,
            };
            store.create_access_request(&req)?;
            Ok((StatusCode::CREATED, Json(render::access_request(&req))))
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    #[serde(rename = "as")]
    _as: Option<String>,
}

/// `GET /api/v1/access-requests?status=&limit=`: `{"to_me": [...],
/// "from_me": [...]}`, newest first, at most `limit` each.
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let viewer = caller.viewer()?;
    let limit = page::limit(query.limit.as_deref())?;
    let status = match query.status.as_deref() {
        None | Some("all") => None,
        Some("pending") => Some(RequestStatus::Pending),
        Some("approved") => Some(RequestStatus::Approved),
        Some("denied") => Some(RequestStatus::Denied),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_status",
                "status must be pending, approved, denied or all",
            ))
        }
    };
    state
        .blocking(move |store| {
            let side = |role| -> Result<Vec<Value>, ApiError> {
                // Filtering by status after the fetch: read a bounded
                // number more so a page of one status is usually full.
                let fetch = if status.is_some() { limit * 4 } else { limit };
                Ok(store
                    .access_requests(&viewer.user, role, fetch)?
                    .iter()
                    .filter(|r| status.is_none_or(|s| r.status == s))
                    .take(limit)
                    .map(render::access_request)
                    .collect())
            };
            Ok(Json(json!({
                "to_me": side(RequestRole::Owner)?,
                "from_me": side(RequestRole::Requester)?,
            })))
        })
        .await
}

async fn decide(
    state: AdminState,
    caller: Caller,
    id: String,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    let user = caller.acting_user()?;
    page::id(&id)?;
    let now = crate::app::unix_now();
    state
        .blocking(move |store| {
            let req = store.access_request(&id)?.ok_or_else(ApiError::not_found)?;
            let record = store.message(&req.message)?;
            let is_owner = record
                .as_ref()
                .is_some_and(|r| r.owners.iter().any(|o| o.user == user.user));
            if !is_owner {
                return Err(if req.requester == user.user {
                    ApiError::forbidden(
                        "not_owner",
                        "only an owner of the message may decide this request",
                    )
                } else {
                    ApiError::not_found()
                });
            }
            let done = store.decide_access_request(&id, &user.user, approve, now)?;
            tracing::info!(request = %id, by = %user.user, approve, "access request decided");
            Ok(Json(render::access_request(&done)))
        })
        .await
}

/// `POST /api/v1/access-requests/{id}/approve`.
pub async fn approve(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    decide(state, caller, id, true).await
}

/// `POST /api/v1/access-requests/{id}/deny`.
pub async fn deny(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    decide(state, caller, id, false).await
}
