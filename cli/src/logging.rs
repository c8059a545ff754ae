//! The process's own log, on stderr: lines for people by default, or with `--log-format
//! json` one JSON object a line for log pipelines, carrying the fields of the spans the
//! line happened in: the run's (`run_id`, `tenant`, `workflow`, `trace_id`) and the
//! attempt's (`task`, `attempt`, and its `span_id`). A task's own log lines come through
//! the same way (target `sandflow::plugin`), so they carry them too.

use clap::ValueEnum;
use serde_json::{Map, Value};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Copy, Debug, Default, PartialEq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people
    #[default]
    Text,
    /// One JSON object a line
    Json,
}

/// Installs the log for the whole process: `RUST_LOG` filters it, else `default`. With
/// an OTLP endpoint, runs and attempts are exported as traces too, whatever the log's
/// filter; the exporter it returns sends what is left when dropped.
pub fn init(
    format: LogFormat,
    default: &str,
    otlp: Option<&str>,
) -> Result<Option<crate::telemetry::Exporter>, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let text = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => text.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => text
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines {
                otel: otlp.is_some(),
            })
            .boxed(),
    };
    let (exporter, traces) = match otlp {
        Some(endpoint) => {
            let (exporter, tracer) = crate::telemetry::Exporter::new(endpoint)?;
            // sandflow's own spans, and tasks' log lines as their events.
            let spans = Targets::new().with_target("sandflow", Level::INFO);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(spans);
            (Some(exporter), Some(layer))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(log.with_filter(filter))
        .with(traces)
        .init();
    Ok(exporter)
}

/// Formats an event as one JSON object: its time, level, target and fields, and the
/// fields of every span it is in, outermost first, flattened, so that a log pipeline
/// can filter on `run_id` or `task` without knowing how spans nest.
struct JsonLines {
    /// Spans are exported: the trace and span ids are theirs.
    otel: bool,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // Before the spans' extensions are read below: this reads them too.
        let exported = self.otel.then(exported_ids).flatten();
        let mut line = Map::new();
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        line.insert("timestamp".into(), now.to_string().into());
        let metadata = event.metadata();
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = None;
            for span in scope.from_root() {
                // Recorded by `JsonFields` as a JSON object when the span was made.
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str(&fields.fields)
                {
                    line.extend(fields);
                }
                innermost = Some(span.id().into_u64());
            }
            if let Some(id) = innermost {
                line.insert("span_id".into(), format!("{id:016x}").into());
            }
        }
        if let Some((trace_id, span_id)) = exported {
            line.insert("trace_id".into(), trace_id.into());
            line.insert("span_id".into(), span_id.into());
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The trace and span ids the current span is exported under, if it is.
fn exported_ids() -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    let span = context.span();
    let ids = span.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

/// An event's fields, into the line's object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn a_line_carries_the_fields_of_every_span_it_is_in() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines { otel: false })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("run", run_id = 7_u64, tenant = "red");
            let _run = run.enter();
            let attempt = tracing::info_span!("attempt", task = "fetch", attempt = 2_u32);
            let _attempt = attempt.enter();
            tracing::warn!(target: "sandflow::plugin", bytes = 12_u64, "half \"done\"");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["message"], "half \"done\"");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "sandflow::plugin");
        assert_eq!(
            (&line["run_id"], &line["tenant"]),
            (&7.into(), &"red".into())
        );
        assert_eq!(
            (&line["task"], &line["attempt"]),
            (&"fetch".into(), &2.into())
        );
        assert_eq!(line["bytes"], 12);
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16));
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    }
}
