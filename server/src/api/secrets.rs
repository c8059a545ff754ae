//! A tenant's secrets: written and listed by name, never read back.

use super::{ErrorBody, Json, Path};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::Service;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// Secrets a tenant may keep, and how long a value may be: environment variables, not
/// files.
const MAX_SECRETS: usize = 100;
const MAX_VALUE_BYTES: usize = 64 << 10;

#[derive(Serialize, ToSchema)]
pub struct Names {
    names: Vec<String>,
}

/// The names of the tenant's secrets.
#[utoipa::path(
    get,
    path = "/secrets",
    tag = "secrets",
    responses((status = 200, body = Names), (status = 401, description = "No token, or not a valid one", body = ErrorBody)),
)]
pub async fn list(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
) -> Result<Json<Names>, ApiError> {
    let names = service.engine().store().secret_names(&tenant.name).await?;
    Ok(Json(Names { names }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// At most 64 KiB, without NUL (an environment variable cannot hold one).
    #[schema(max_length = 65536, pattern = "^[^\\u0000]*$")]
    value: String,
}

/// Sets a secret: 201 when new, 204 when replaced. The value is never answered.
#[utoipa::path(
    put,
    path = "/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9_]{1,256}$",
        description = "Its name, as an environment variable's")),
    request_body = SecretValue,
    responses(
        (status = 201, description = "Set"),
        (status = 204, description = "Replaced"),
        (status = 400, description = "The request is malformed", body = ErrorBody),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 409, description = "The tenant keeps as many secrets as it may", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared JSON", body = ErrorBody),
        (status = 422, description = "The JSON does not fit the request", body = ErrorBody),
    ),
)]
pub async fn set(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
    Json(SecretValue { value }): Json<SecretValue>,
) -> Result<StatusCode, ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(ApiError::bad_request(
            "a secret's name is 1 to 256 ASCII letters, digits and underscores, as an \
             environment variable's",
        ));
    }
    if value.len() > MAX_VALUE_BYTES || value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "a secret's value is at most {MAX_VALUE_BYTES} bytes, without NUL"
        )));
    }
    let store = service.engine().store();
    let names = store.secret_names(&tenant.name).await?;
    if names.len() >= MAX_SECRETS && !names.contains(&name) {
        return Err(ApiError::quota(
            StatusCode::CONFLICT,
            format!("a tenant may keep {MAX_SECRETS} secrets; remove one first"),
        ));
    }
    let replaced = store.set_secret(&tenant.name, &name, Some(value)).await?;
    Ok(if replaced {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

/// Removes a secret.
#[utoipa::path(
    delete,
    path = "/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "Its name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such thing, or another tenant's", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = service.engine().store();
    if store.set_secret(&tenant.name, &name, None).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("secret {name} does not exist")))
    }
}
