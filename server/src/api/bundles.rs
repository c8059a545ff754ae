//! Bundles: uploaded as raw `.wasm` bytes, named by their SHA-256.

use super::{ErrorBody, Json, Path};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::Service;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use sandflow::StoredBundle;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// Compiles and keeps a bundle: 201 when new, 200 when the tenant had it already.
#[utoipa::path(
    post,
    path = "/bundles",
    tag = "bundles",
    request_body(content = WasmBundle, content_type = "application/octet-stream",
        description = "The bundle: a WebAssembly component built with sandflow-sdk"),
    responses(
        (status = 201, description = "Compiled, validated and kept", body = StoredBundle),
        (status = 200, description = "The tenant had it already", body = StoredBundle),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 413, description = "Larger than the tenant's quota", body = ErrorBody),
        (status = 422, description = "Not a valid bundle, or its tasks ask for more than the quota allows", body = ErrorBody),
    ),
)]
pub async fn upload(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<StoredBundle>), ApiError> {
    let (bundle, new) = service.upload(&tenant, body.to_vec()).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(bundle)))
}

/// A bundle's bytes, as uploaded.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct WasmBundle(#[allow(dead_code)] Vec<u8>);

#[derive(Serialize, ToSchema)]
pub struct Bundles {
    bundles: Vec<StoredBundle>,
}

/// The tenant's bundles.
#[utoipa::path(
    get,
    path = "/bundles",
    tag = "bundles",
    responses((status = 200, body = Bundles), (status = 401, description = "No token, or not a valid one", body = ErrorBody)),
)]
pub async fn list(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
) -> Result<Json<Bundles>, ApiError> {
    let bundles = service.engine().store().bundles(&tenant.name).await?;
    Ok(Json(Bundles { bundles }))
}

/// A bundle and the workflow it describes.
#[derive(Serialize, ToSchema)]
pub struct BundleView {
    #[serde(flatten)]
    bundle: StoredBundle,
    definition: sandflow::workflow::WorkflowDef,
}

/// One of the tenant's bundles, with the workflow it describes.
#[utoipa::path(
    get,
    path = "/bundles/{hash}",
    tag = "bundles",
    params(("hash" = String, Path, description = "The bundle's SHA-256, hex-encoded")),
    responses(
        (status = 200, body = BundleView),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such thing, or another tenant's", body = ErrorBody),
    ),
)]
pub async fn get(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(hash): Path<String>,
) -> Result<Json<BundleView>, ApiError> {
    let bundle = service.bundle_of(&tenant, &hash).await?;
    let flow = service.flow(&tenant, &hash).await?;
    let definition = flow.bundle().workflow().clone();
    Ok(Json(BundleView { bundle, definition }))
}

/// Forgets a bundle, unless a run of it is in flight.
#[utoipa::path(
    delete,
    path = "/bundles/{hash}",
    tag = "bundles",
    params(("hash" = String, Path, description = "The bundle's SHA-256, hex-encoded")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 401, description = "No token, or not a valid one", body = ErrorBody),
        (status = 404, description = "No such thing, or another tenant's", body = ErrorBody),
        (status = 409, description = "A run of it is in flight", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(hash): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.remove_bundle(&tenant, &hash).await?;
    Ok(StatusCode::NO_CONTENT)
}
