//! One error type for the whole API, [`ApiError`], answered as JSON
//! `{"error": "...", "code": "..."}` with its status; and the extractors
//! [`ApiJson`], [`ApiQuery`], [`ApiPath`], which turn axum's rejections
//! (plain-text bodies) into `ApiError`s.
//!
//! Messages are fixed strings or echo only what the client sent: never a
//! stored field (a hidden subject must not leak through an error). Store and
//! internal failures are logged here and answered with a generic 500.

use crate::store::StoreError;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use std::borrow::Cow;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// 400 with a machine-readable code.
    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no token, an unknown token, or a removed user's token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
        )
    }

    /// 403: authenticated, but not allowed to do this.
    pub fn forbidden(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404, identical for "does not exist" and "you may not see it".
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "not found")
    }

    pub fn conflict(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422: well-formed, but not acceptable (above the ceiling, unknown viewer).
    pub fn unprocessable(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500: logged with its cause; the client learns nothing more.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "admin API internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (logged)",
        )
    }

    /// An axum rejection (body, query, path) as an `ApiError` with the same
    /// status; its text describes only what the client sent.
    fn from_rejection(status: StatusCode, text: String) -> Self {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            _ => "bad_request",
        };
        let status = match status {
            s if s.is_client_error() => s,
            // A failure to read the body, not the server's fault either.
            _ => StatusCode::BAD_REQUEST,
        };
        let mut text = text;
        if text.len() > 300 {
            let mut cut = 300;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Self::new(status, code, text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code });
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor => ApiError::bad_request("invalid_cursor", "invalid cursor"),
            StoreError::InvalidId => ApiError::bad_request("invalid_id", "invalid id"),
            StoreError::NoSuchMessage { .. } | StoreError::NoSuchRequest { .. } => {
                ApiError::not_found()
            }
            StoreError::NotOwner { .. } => {
                ApiError::forbidden("not_owner", "only an owner of the message may do this")
            }
            StoreError::AlreadyDecided { .. } => ApiError::conflict(
                "already_decided",
                "this access request was already approved or denied",
            ),
            StoreError::DuplicateRequest { .. } => ApiError::conflict(
                "duplicate_request",
                "you already have a pending access request for this message",
            ),
            other => ApiError::internal(other),
        }
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s: syntax errors 400, unknown
/// fields and wrong types 422, oversized bodies 413, a missing
/// `Content-Type: application/json` 415.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(ApiError::from_rejection(r.status(), r.body_text())),
        }
    }
}

/// `Query<T>` whose rejections are 400 [`ApiError`]s.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(ApiError::from_rejection(
                StatusCode::BAD_REQUEST,
                r.body_text(),
            )),
        }
    }
}

/// `Path<T>` whose rejections (bad percent-encoding, invalid UTF-8) are 400
/// [`ApiError`]s.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(r) => {
                let status = if r.status().is_client_error() {
                    StatusCode::BAD_REQUEST
                } else {
                    // A route/extractor mismatch is our bug, not the client's.
                    return Err(ApiError::internal(r.body_text()));
                };
                Err(ApiError::from_rejection(status, r.body_text()))
            }
        }
    }
}

/// The router's fallback: an unknown path.
pub async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint")
}

/// A known path with a method it does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
