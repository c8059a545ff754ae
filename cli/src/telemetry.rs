//! OpenTelemetry: with `--otlp-endpoint URL`, a trace per run with a span per task
//! attempt (its outcome, fuel, cause and queue wait), exported over OTLP/HTTP in protobuf
//! to `URL/v1/traces` by a batch processor on a thread of its own.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exports spans until dropped; dropping it sends what is left.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// An exporter to the OTLP/HTTP collector at `endpoint` (such as
    /// `http://localhost:4318`), and the tracer its spans come from.
    pub fn new(endpoint: &str) -> Result<(Self, opentelemetry_sdk::trace::Tracer), String> {
        let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Ureq::new())
            .with_endpoint(traces)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("sandflow").build())
            .build();
        let tracer = provider.tracer("sandflow");
        Ok((Self { provider }, tracer))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: not every span was exported: {e}");
        }
    }
}

/// The exporter's HTTP client: ureq, blocking, on the batch processor's own thread.
#[derive(Debug)]
struct Ureq(ureq::Agent);

impl Ureq {
    fn new() -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(EXPORT_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Self(agent)
    }
}

#[async_trait::async_trait]
impl HttpClient for Ureq {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, body.to_vec());
        let mut answer = self.0.run(request)?;
        let status = answer.status();
        let body = answer
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()?;
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = status;
        Ok(response)
    }
}
