//! The operator's API: tenants, managed while the server runs. Every call carries the
//! admin token `sandflow serve` was started with; without one, the API is off.

use super::{ErrorBody, Json, Path};
use crate::admin::{self, AdminError, QuotaChange, TenantView};
use crate::error::ApiError;
use crate::service::Service;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// A request made with the admin token.
pub struct Admin;

impl FromRequestParts<Arc<Service>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Arc<Service>,
    ) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if service.is_admin(token) {
            Ok(Self)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin API needs the admin token `sandflow serve --admin-token` was given",
            ))
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::BadName(_) => Self::bad_request(error.to_string()),
            AdminError::Exists(_) => Self::conflict(error.to_string()),
            AdminError::NoSuchTenant(_) => Self::not_found(error.to_string()),
            AdminError::Random(_) => Self::internal(&error),
            AdminError::Store(e) => e.into(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// 1 to 64 lowercase letters, digits, - and _.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    name: String,
    #[serde(default)]
    quotas: QuotaChange,
}

/// A tenant's API token, shown this once.
#[derive(Serialize, ToSchema)]
pub struct Token {
    name: String,
    token: String,
}

#[derive(Serialize, ToSchema)]
pub struct Tenants {
    tenants: Vec<TenantView>,
}

const UNAUTHORIZED: &str = "No admin token, or not the server's";

/// Adds a tenant: 201 with its token, which is never shown again.
#[utoipa::path(
    post,
    path = "/tenants",
    tag = "admin",
    request_body = NewTenant,
    responses(
        (status = 201, body = Token),
        (status = 400, description = "The name is not one a tenant may have", body = ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 409, description = "A tenant has the name already", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 422, description = "The JSON does not fit the request", body = ErrorBody),
    ),
)]
pub async fn add(
    State(service): State<Arc<Service>>,
    _: Admin,
    Json(new): Json<NewTenant>,
) -> Result<(StatusCode, Json<Token>), ApiError> {
    let token = admin::add(&**service.engine().store(), &new.name, &new.quotas).await?;
    Ok((
        StatusCode::CREATED,
        Json(Token {
            name: new.name,
            token,
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/tenants",
    tag = "admin",
    responses(
        (status = 200, body = Tenants),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
    ),
)]
pub async fn list(
    State(service): State<Arc<Service>>,
    _: Admin,
) -> Result<Json<Tenants>, ApiError> {
    let tenants = admin::list(&**service.engine().store()).await?;
    Ok(Json(Tenants { tenants }))
}

/// Removes a tenant's access; its runs and bundles stay.
#[utoipa::path(
    delete,
    path = "/tenants/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The tenant")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(service): State<Arc<Service>>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin::remove(&**service.engine().store(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives a tenant a new token, shown this once; the old one stops working at once.
#[utoipa::path(
    post,
    path = "/tenants/{name}/token",
    tag = "admin",
    params(("name" = String, Path, description = "The tenant")),
    responses(
        (status = 200, body = Token),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ),
)]
pub async fn rotate_token(
    State(service): State<Arc<Service>>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<Token>, ApiError> {
    let token = admin::rotate_token(&**service.engine().store(), &name).await?;
    Ok(Json(Token { name, token }))
}

/// Changes a tenant's quotas and weight; what is absent stays. Runs started from now on
/// get them.
#[utoipa::path(
    patch,
    path = "/tenants/{name}/quotas",
    tag = "admin",
    params(("name" = String, Path, description = "The tenant")),
    request_body = QuotaChange,
    responses(
        (status = 200, body = TenantView),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 422, description = "The JSON does not fit the request", body = ErrorBody),
    ),
)]
pub async fn set_quota(
    State(service): State<Arc<Service>>,
    _: Admin,
    Path(name): Path<String>,
    Json(change): Json<QuotaChange>,
) -> Result<Json<TenantView>, ApiError> {
    let tenant = admin::set_quota(&**service.engine().store(), &name, &change).await?;
    service.forget_storage_budget(&name).await;
    Ok(Json(tenant))
}
