//! Who is calling: every API request carries `Authorization: Bearer TOKEN`, and the token's
//! hash names the tenant.

use crate::error::ApiError;
use crate::service::Service;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sandflow::Tenant;
use sandflow::tenant::token_hash;
use std::sync::Arc;

/// The tenant a request acts for.
pub struct Caller(pub Tenant);

impl FromRequestParts<Arc<Service>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Arc<Service>,
    ) -> Result<Self, ApiError> {
        let unauthorized = |message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned())
        };
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthorized("no Authorization header: send `Bearer TOKEN`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
        let tenant = service
            .tenant_by_token(&token_hash(token.trim()))
            .await?
            .ok_or_else(|| {
                unauthorized("the token is not valid (rotated, or the tenant removed)")
            })?;
        Ok(Self(tenant))
    }
}
