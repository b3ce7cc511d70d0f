//! Bearer tokens → who is calling ([`Caller`]), and who reads or acts.
//!
//! A token is hashed (SHA-256 of its UTF-8 bytes) and compared, in constant
//! time, with every admin token hash of `mailshare.toml` and every user's
//! `token_sha256` in the policy in force (a reload takes effect on the next
//! request). Decisions:
//!
//! | token | `?as=` | reads (GET) | owner actions (share, requests) | delete contact |
//! |---|---|---|---|---|
//! | none, unknown, or a removed user's | – | 401 | 401 | 401 |
//! | user | absent | as that user | as that user | bucket manager/owner of the contact |
//! | user | present | 403 `as_forbidden` | 403 | 403 |
//! | admin | absent | 400 `as_required`: an admin sees nothing as itself | 403 `user_token_required` | allowed |
//! | admin | active user | as that user (never more) | 403 `user_token_required` | 400 `as_not_applicable` |
//! | admin | unknown or removed user | 400 `unknown_user` | – | – |
//!
//! Owner actions need the owner's own token: grants and decisions record who
//! made them, and an admin reading as a user must not act in their name.

use super::error::{ApiError, ApiQuery};
use super::AdminState;
use crate::engine::policy::constant_time_eq;
use crate::engine::read::active_user;
use crate::engine::{Policy, Viewer};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Longest token accepted (generated ones are 67 bytes).
const MAX_TOKEN_LEN: usize = 1024;

/// Whose token it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// One of `[admin] admin_tokens_sha256`.
    Admin,
    /// An active user, by primary address.
    User(String),
}

/// The authenticated caller of one request, with the policy snapshot every
/// decision of that request uses.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    /// `?as=` as given.
    pub as_user: Option<String>,
    pub policy: Arc<Policy>,
}

#[derive(Deserialize)]
struct AsParam {
    #[serde(rename = "as")]
    as_user: Option<String>,
}

/// SHA-256 of the token's bytes.
fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The bearer token of the request, if well-formed.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_LEN)
        .then_some(token)
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        let hash = token_hash(token);
        let policy = state.gateway().policy.current();
        // Every admin hash is compared (no early exit), then every user's.
        let mut admin = false;
        for h in state.admin_tokens() {
            admin |= constant_time_eq(h, &hash);
        }
        let user = policy.user_by_token_hash(&hash);
        let principal = if admin {
            Principal::Admin
        } else {
            match user.filter(|u| active_user(&policy, &Viewer::new(&u.address)).is_some()) {
                Some(u) => Principal::User(u.address.clone()),
                // Unknown, or a removed user's token (read rule 1).
                None => return Err(ApiError::unauthorized()),
            }
        };
        let ApiQuery(AsParam { as_user }) = ApiQuery::from_request_parts(parts, state).await?;
        Ok(Caller {
            principal,
            as_user,
            policy,
        })
    }
}

impl Caller {
    /// The viewer a read acts as (see the module table).
    ///
    /// # Errors
    /// 403 for `?as=` with a user token; 400 for an admin token without
    /// `?as=` or naming no active user.
    pub fn viewer(&self) -> Result<Viewer, ApiError> {
        match (&self.principal, &self.as_user) {
            (Principal::User(a), None) => Ok(Viewer::new(a)),
            (Principal::User(_), Some(_)) => Err(as_forbidden()),
            (Principal::Admin, None) => Err(ApiError::bad_request(
                "as_required",
                "an admin token reads as a user: add ?as=<user address>",
            )),
            (Principal::Admin, Some(who)) => active_user(&self.policy, &Viewer::new(who))
                .map(|u| Viewer::new(&u.address))
                .ok_or_else(|| ApiError::bad_request("unknown_user", "?as= names no active user")),
        }
    }

    /// The user an owner action (share, access requests) acts as: a user
    /// token without `?as=`.
    ///
    /// # Errors
    /// 403 otherwise.
    pub fn acting_user(&self) -> Result<Viewer, ApiError> {
        match (&self.principal, &self.as_user) {
            (Principal::User(a), None) => Ok(Viewer::new(a)),
            (Principal::User(_), Some(_)) => Err(as_forbidden()),
            (Principal::Admin, _) => Err(ApiError::forbidden(
                "user_token_required",
                "this action is taken by a user with their own token, not by an admin token",
            )),
        }
    }
}

fn as_forbidden() -> ApiError {
    ApiError::forbidden("as_forbidden", "only admin tokens may use ?as=")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(auth: Option<&str>) -> Parts {
        let mut b = Request::builder().uri("/x");
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer(&parts(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(&parts(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer(&parts(Some("Basic abc"))), None);
        assert_eq!(bearer(&parts(Some("Bearer "))), None);
        assert_eq!(bearer(&parts(Some("Bearer"))), None);
        assert_eq!(bearer(&parts(None)), None);
        let long = format!("Bearer {}", "x".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(bearer(&parts(Some(&long))), None);
    }

    #[test]
    fn token_hash_is_sha256_of_the_utf8_bytes() {
        // The demo admin token of config/mailshare.toml.
        assert_eq!(
            hex::encode(token_hash("demo-admin")),
            "cce7a2cf1ae045989cfc914fb95a41526f167a838b3c7d33745143614abace7c"
        );
    }
}
