//! Bundles: uploaded as raw `.wasm` bytes, named by their SHA-256.

use super::{Json, Path};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::Service;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use sandflow::StoredBundle;
use serde::Serialize;
use std::sync::Arc;

/// Compiles and keeps a bundle: 201 when new, 200 when the tenant had it already.
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

#[derive(Serialize)]
pub struct Bundles {
    bundles: Vec<StoredBundle>,
}

pub async fn list(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
) -> Result<Json<Bundles>, ApiError> {
    let bundles = service.engine().store().bundles(&tenant.name).await?;
    Ok(Json(Bundles { bundles }))
}

/// A bundle and the workflow it describes.
#[derive(Serialize)]
pub struct BundleView {
    #[serde(flatten)]
    bundle: StoredBundle,
    definition: sandflow::workflow::WorkflowDef,
}

pub async fn get(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(hash): Path<String>,
) -> Result<Json<BundleView>, ApiError> {
    let bundle = service
        .engine()
        .store()
        .bundles(&tenant.name)
        .await?
        .into_iter()
        .find(|b| b.hash == hash)
        .ok_or_else(|| ApiError::not_found(format!("bundle {hash} does not exist")))?;
    let flow = service.flow(&tenant, &hash).await?;
    let definition = flow.bundle().workflow().clone();
    Ok(Json(BundleView { bundle, definition }))
}

pub async fn remove(
    State(service): State<Arc<Service>>,
    Caller(tenant): Caller,
    Path(hash): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.remove_bundle(&tenant, &hash).await?;
    Ok(StatusCode::NO_CONTENT)
}
