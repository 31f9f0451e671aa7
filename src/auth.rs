//! Editor tokens: created by the CLI or by an admin over HTTP, presented as
//! `Authorization: Bearer <token>` (the scheme in any case, as RFC 9110 says).
//!
//! Two roles: an **editor** flags, corrects and retracts alerts and reads the figures; an
//! **admin** may do all that and manage tokens ([`Admin`] guards those endpoints; later
//! admin-only endpoints take the same extractor).
//!
//! A token is `sdk_` + 32 random bytes in base64url. Only its SHA-256 is stored; a lookup by hash
//! on every request makes revocation immediate. A fast hash is right here: the token has 256 bits
//! of entropy, so there is nothing to brute-force that stretching would slow down.

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::{
    app::AppState,
    server::error::ApiError,
    validation::{FieldError, Lines, check_text},
};

const PREFIX: &str = "sdk_";

/// A token's role (`editor_tokens.role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    Editor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Editor => "editor",
            Self::Admin => "admin",
        }
    }

    /// Parses a role given in a request as `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        match value {
            "editor" => Ok(Self::Editor),
            "admin" => Ok(Self::Admin),
            other => Err(FieldError::new(field, format!("`{other}` is not a role; known: editor, admin"))),
        }
    }
}

/// The authenticated caller of an editor endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Editor {
    /// The token's id (`sondakika token list`).
    pub id: i64,
    pub name: String,
    pub role: Role,
}

/// The authenticated caller of an admin-only endpoint: an [`Editor`] whose token has the admin
/// role. Anyone else with a valid token gets 403.
#[derive(Debug, Clone)]
pub struct Admin(pub Editor);

pub const MAX_NAME_CHARS: usize = 100;

/// A token's name (who it is for): 1 to 100 characters through the shared text check.
pub fn parse_name(name: &str) -> Result<String, FieldError> {
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(FieldError::new(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters (got {chars})"),
        ));
    }
    check_text("name", name, Lines::Single)?;
    Ok(name.to_string())
}

/// A token as listed (never the token itself).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// The token's first characters, to tell tokens apart.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token and returns it in clear: the only time it exists outside the editor's hands.
pub async fn create(pool: &PgPool, name: &str, role: Role) -> anyhow::Result<(i64, String)> {
    parse_name(name).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let hint = format!("{}…", &token[..PREFIX.len() + 6]);
    let id = sqlx::query_scalar!(
        "insert into editor_tokens (name, role, token_hash, hint) values ($1, $2, $3, $4) returning id",
        name,
        role as _,
        &hash(&token),
        hint,
    )
    .fetch_one(pool)
    .await?;
    Ok((id, token))
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<TokenInfo>> {
    sqlx::query_as!(
        TokenInfo,
        r#"select id, name, role as "role: Role", hint, created_at, last_used_at, revoked_at
         from editor_tokens order by id"#,
    )
    .fetch_all(pool)
    .await
}

/// Revokes a token; returns false if there is no such token.
pub async fn revoke(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let n =
        sqlx::query!("update editor_tokens set revoked_at = coalesce(revoked_at, now()) where id = $1", id)
            .execute(pool)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// Looks a presented token up. Updates `last_used_at` at most once a minute per token so that a
/// busy console does not turn every read into a write.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<Editor>, sqlx::Error> {
    if !token.starts_with(PREFIX) || token.len() > 100 {
        return Ok(None);
    }
    sqlx::query_as!(
        Editor,
        r#"with hit as (
            select id, name, role, last_used_at from editor_tokens
            where token_hash = $1 and revoked_at is null
         ), touch as (
            update editor_tokens set last_used_at = now()
            where id = (select id from hit)
              and (last_used_at is null or last_used_at < now() - interval '1 minute')
         )
         select id as "id!", name as "name!", role as "role!: Role" from hit"#,
        &hash(token),
    )
    .fetch_optional(pool)
    .await
}

/// The bearer token the request carries, if any (a long-lived stream checks it again later).
pub fn request_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok().and_then(bearer_token)
}

/// The token of an `Authorization` header value: the `Bearer` scheme in any letter case
/// (RFC 9110 §11.1: schemes are case-insensitive), one or more spaces, the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for Editor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("send your editor token as `Authorization: Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let editor = authenticate(&state.db, token)
            .await?
            .ok_or(ApiError::Unauthorized("this token is unknown or has been revoked"))?;
        tracing::Span::current().record("editor_id", editor.id);
        Ok(editor)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let editor = Editor::from_request_parts(parts, state).await?;
        if editor.role != Role::Admin {
            return Err(ApiError::Forbidden(
                "this needs an admin token: editors flag, correct and retract alerts; admins also \
                 manage tokens"
                    .into(),
            ));
        }
        Ok(Self(editor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer sdk_x", "bearer sdk_x", "BEARER sdk_x", "bEaReR  sdk_x"] {
            assert_eq!(bearer_token(header), Some("sdk_x"), "{header}");
        }
        for header in ["Basic sdk_x", "Bearer", "Bearer ", "Bearersdk_x", "sdk_x"] {
            assert_eq!(bearer_token(header), None, "{header}");
        }
    }
}
