//! One message, its attachments, its thread, the owner's share action, and
//! search. Every record passes `engine::visible`; hidden is 404.

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::page::{self, Pick};
use super::render;
use super::search::{Terms, SEARCH_BUDGET};
use super::AdminState;
use crate::engine::{self, visible, Grant, Level, Record, View, Viewer};
use crate::store::Store;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// The record and the viewer's view of it; 404 when absent or hidden.
fn load_visible(
    store: &dyn Store,
    policy: &engine::Policy,
    viewer: &Viewer,
    id: &str,
) -> Result<(Record, View), ApiError> {
    let record = store.message(id)?.ok_or_else(ApiError::not_found)?;
    let view = visible(policy, viewer, &record);
    if view.level == Level::Hidden {
        return Err(ApiError::not_found());
    }
    Ok((record, view))
}

/// Read a body blob as text (invalid UTF-8 replaced).
fn body_text(
    store: &dyn Store,
    blob: Option<&engine::BlobRef>,
) -> Result<Option<String>, ApiError> {
    let Some(b) = blob else { return Ok(None) };
    match store.blob(&b.sha256)? {
        Some(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        None => Err(ApiError::internal(format_args!(
            "missing body blob {}",
            b.sha256
        ))),
    }
}

/// `GET /api/v1/messages/{id}`: the entry, plus bodies and attachment
/// descriptions at level full.
pub async fn get_one(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let viewer = caller.viewer()?;
    page::id(&id)?;
    let policy = caller.policy.clone();
    state
        .blocking(move |store| {
            let (r, view) = load_visible(store, &policy, &viewer, &id)?;
            let mut entry = render::Entry::new(&r, &view);
            if view.level == Level::Full {
                let c = r.content.as_ref();
                let text = body_text(store, c.and_then(|c| c.text.as_ref()))?;
                let html = body_text(store, c.and_then(|c| c.html.as_ref()))?;
                entry = entry.with_content(&r, text, html);
            }
            Ok(render::json(&entry))
        })
        .await
}

/// `GET /api/v1/messages/{id}/attachments/{n}`: the bytes, with the stored
/// content type, as a download. Hidden, or past `attachment_count`: 404;
/// visible below full: 403.
pub async fn attachment(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath((id, n)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let viewer = caller.viewer()?;
    page::id(&id)?;
    let index: usize = match n.parse() {
        Ok(i) if n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()) => i,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_index",
                "attachment index must be a small non-negative integer",
            ))
        }
    };
    let policy = caller.policy.clone();
    state
        .blocking(move |store| {
            let (r, view) = load_visible(store, &policy, &viewer, &id)?;
            // The count is metadata: past it there is nothing, at any level.
            if index >= r.attachment_count as usize {
                return Err(ApiError::not_found());
            }
            if view.level < Level::Full {
                return Err(ApiError::forbidden(
                    "level_too_low",
                    "attachments are shown only at level full",
                ));
            }
            let a = r
                .content
                .as_ref()
                .and_then(|c| c.attachments.get(index))
                .ok_or_else(ApiError::not_found)?;
            let bytes = store.blob(&a.blob.sha256)?.ok_or_else(|| {
                ApiError::internal(format_args!("missing attachment blob {}", a.blob.sha256))
            })?;
            Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        render::safe_content_type(&a.content_type).to_string(),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        render::content_disposition(a.name.as_deref(), index),
                    ),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; sandbox".to_string(),
                    ),
                    (header::CACHE_CONTROL, "private, no-store".to_string()),
                ],
                Body::from(bytes),
            )
                .into_response())
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadQuery {
    limit: Option<String>,
    cursor: Option<String>,
    #[serde(rename = "as")]
    _as: Option<String>,
}

/// `GET /api/v1/threads/{id}`: the visible messages of a thread, oldest
/// first. No visible message: 404.
pub async fn thread(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ThreadQuery>,
) -> Result<Response, ApiError> {
    let viewer = caller.viewer()?;
    page::id(&id)?;
    let limit = page::limit(query.limit.as_deref())?;
    let after = page::cursor(query.cursor.as_deref())?;
    let policy = caller.policy.clone();
    state
        .blocking(move |store| {
            let records = store.thread(&id)?;
            let visible: Vec<(Record, View)> = records
                .into_iter()
                .filter_map(|r| {
                    let v = visible(&policy, &viewer, &r);
                    (v.level > Level::Hidden).then_some((r, v))
                })
                .collect();
            if visible.is_empty() {
                return Err(ApiError::not_found());
            }
            let after_key = after.as_ref().map(|c| (c.date(), c.id().to_string()));
            let mut rest: Vec<(Record, View)> = visible
                .into_iter()
                .filter(|(r, _)| {
                    after_key
                        .as_ref()
                        .is_none_or(|(d, i)| (r.date, &r.id) > (*d, i))
                })
                .take(limit + 1)
                .collect();
            let more = rest.len() > limit;
            rest.truncate(limit);
            let next = if more {
                rest.last().map(|(r, _)| page::position(r).encode())
            } else {
                None
            };
            Ok(render::entry_page("entries", &rest, next))
        })
        .await
}

/// Most viewers one share names.
const MAX_SHARE_VIEWERS: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareBody {
    level: Level,
    viewers: Option<Vec<String>>,
}

/// `POST /api/v1/messages/{id}/share`, owners only.
///
/// Without `viewers`: the owner's per-message override (capture rule 4c),
/// which binds every copy. With `viewers`: a grant to each (level `hidden`
/// revokes theirs). Never above the ceiling: for an override, the ceiling
/// the message would have with it (another owner's lower override, or this
/// owner's activity off or `share_since`, keep it down); for a grant, the
/// current ceiling. Above: 422.
pub async fn share(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ShareBody>,
) -> Result<Json<Value>, ApiError> {
    let user = caller.acting_user()?;
    page::id(&id)?;
    let policy = caller.policy.clone();
    let viewers: Option<Vec<String>> = match body.viewers {
        None => None,
        Some(v) if v.is_empty() || v.len() > MAX_SHARE_VIEWERS => {
            return Err(ApiError::unprocessable(
                "invalid_viewers",
                "viewers must name 1 to 100 users",
            ))
        }
        Some(v) => Some(
            v.iter()
                .map(|a| {
                    engine::read::active_user(&policy, &Viewer::new(a))
                        .map(|u| u.address.clone())
                        .ok_or_else(|| {
                            ApiError::unprocessable(
                                "unknown_viewer",
                                "viewers must be active users",
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let level = body.level;
    state
        .blocking(move |store| {
            let (record, _) = load_visible(store, &policy, &user, &id)?;
            if !record.owners.iter().any(|o| o.user == user.user) {
                return Err(ApiError::forbidden(
                    "not_owner",
                    "only an owner of the message may share it",
                ));
            }
            let above = |ceiling: Level| {
                ApiError::unprocessable(
                    "above_ceiling",
                    format!("level {level} is above the message's ceiling ({ceiling})"),
                )
            };
            let updated = match &viewers {
                None => {
                    let mut trial = record.clone();
                    engine::set_override(&policy, &mut trial, &user.user, Some(level));
                    if level > trial.ceiling() {
                        return Err(above(trial.ceiling()));
                    }
                    store.set_override(&policy, &id, &user.user, level)?
                }
                Some(viewers) => {
                    if level > record.ceiling() {
                        return Err(above(record.ceiling()));
                    }
                    let mut updated = record;
                    for v in viewers {
                        updated = store.add_grant(
                            &id,
                            Grant {
                                viewer: v.clone(),
                                level,
                                by: user.user.clone(),
                            },
                        )?;
                    }
                    updated
                }
            };
            tracing::info!(message = %id, by = %user.user, level = %level, viewers = viewers.as_ref().map_or(0, Vec::len), "message shared");
            let own = updated.owners.iter().find(|o| o.user == user.user);
            let grants: Vec<Value> = updated
                .grants
                .iter()
                .filter(|g| g.level > Level::Hidden)
                .map(|g| json!({ "viewer": g.viewer, "level": g.level.as_str(), "by": g.by }))
                .collect();
            Ok(Json(json!({
                "id": updated.id,
                "ceiling": updated.ceiling().as_str(),
                "stored": updated.stored.as_str(),
                "override": own.and_then(|o| o.override_level).map(Level::as_str),
                "grants": grants,
            })))
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    direction: Option<String>,
    #[serde(rename = "as")]
    _as: Option<String>,
}

/// `GET /api/v1/search?q=`: newest first over every record the viewer
/// sees, matching only fields within their level (see `search`).
pub async fn search(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Response, ApiError> {
    let viewer = caller.viewer()?;
    let terms = Terms::parse(query.q.as_deref().unwrap_or(""))?;
    let limit = page::limit(query.limit.as_deref())?;
    let start = page::cursor(query.cursor.as_deref())?;
    let direction = page::direction(query.direction.as_deref())?;
    let policy = caller.policy.clone();
    state
        .blocking(move |store| {
            let page = page::fill(
                |c, n| store.recent(c, n),
                start,
                limit,
                SEARCH_BUDGET,
                |r| {
                    let view = visible(&policy, &viewer, &r);
                    if view.level == Level::Hidden {
                        return Ok(Pick::Hidden);
                    }
                    if direction.is_some_and(|d| d != r.direction)
                        || !terms.matches(store, &r, view.level)?
                    {
                        return Ok(Pick::Skipped);
                    }
                    Ok(Pick::Take((r, view)))
                },
            )?;
            Ok(render::entry_page(
                "results",
                &page.items,
                page.next.map(|c| c.encode()),
            ))
        })
        .await
}
