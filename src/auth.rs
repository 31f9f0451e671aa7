//! Editor tokens: created by the CLI, presented as `Authorization: Bearer <token>`.
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

use crate::{api::error::ApiError, app::AppState};

const PREFIX: &str = "sdk_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
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
}

/// The authenticated caller of an editor endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Editor {
    pub id: i64,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: String,
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
    let name_chars = name.chars().count();
    if name_chars > 100 {
        anyhow::bail!("--name must be 1 to 100 characters");
    }
    crate::alerts::domain::check_text("name", name, crate::alerts::domain::Lines::Single)
        .map_err(|e| anyhow::anyhow!("--{e}"))?;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let hint = format!("{}…", &token[..PREFIX.len() + 6]);
    let id: i64 = sqlx::query_scalar(
        "insert into editor_tokens (name, role, token_hash, hint) values ($1, $2, $3, $4) returning id",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(hash(&token))
    .bind(hint)
    .fetch_one(pool)
    .await?;
    Ok((id, token))
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<TokenInfo>> {
    sqlx::query_as(
        "select id, name, role, hint, created_at, last_used_at, revoked_at
         from editor_tokens order by id",
    )
    .fetch_all(pool)
    .await
}

/// Revokes a token; returns false if there is no such token.
pub async fn revoke(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let n = sqlx::query("update editor_tokens set revoked_at = coalesce(revoked_at, now()) where id = $1")
        .bind(id)
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
    let row: Option<(i64, String, String)> = sqlx::query_as(
        "with hit as (
            select id, name, role, last_used_at from editor_tokens
            where token_hash = $1 and revoked_at is null
         ), touch as (
            update editor_tokens set last_used_at = now()
            where id = (select id from hit)
              and (last_used_at is null or last_used_at < now() - interval '1 minute')
         )
         select id, name, role from hit",
    )
    .bind(hash(token))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, name, role)| Editor { id, name, role }))
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
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let editor = authenticate(&state.db, token)
            .await?
            .ok_or(ApiError::Unauthorized("this token is unknown or has been revoked"))?;
        tracing::Span::current().record("editor_id", editor.id);
        Ok(editor)
    }
}
