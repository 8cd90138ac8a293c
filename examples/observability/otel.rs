//! The cache's tracing spans exported with OpenTelemetry, to standard
//! output.
//!
//! ```sh
//! cargo run -p cachex-examples-observability --example otel
//! ```
//!
//! `tracing-opentelemetry` turns `tracing` spans into OpenTelemetry spans;
//! the SDK hands them to its stdout exporter (any other exporter, OTLP
//! included, plugs in the same way). The cache's spans are at `DEBUG`
//! level under the target `cachex`, so the filter enables `cachex=debug`.
//! Each request below is a root span; the cache operations are its
//! children, and the loader's database query a child of `cache.get_or_load`.

use std::time::Duration;

use cachex::{Cache, KeyMode, Ttl};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;

async fn fetch_user(id: u64) -> Result<Option<String>, std::io::Error> {
    // The loader's own span: a child of the cache's get_or_load span.
    let span = tracing::info_span!(
        "db.query",
        "db.system.name" = "postgresql",
        "db.operation.name" = "SELECT"
    );
    async move {
        tokio::time::sleep(Duration::from_millis(3)).await;
        Ok((id != 404).then(|| format!("user {id}")))
    }
    .instrument(span)
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new("info,cachex=debug"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("otel-example")));
    tracing::subscriber::set_global_default(subscriber)?;

    let cache: Cache<String> = Cache::builder()
        .name("users")
        // Hashed: spans show which key, without showing the key.
        .key_mode(KeyMode::Hashed)
        .build();

    for id in [7, 7, 404] {
        // OpenTelemetry HTTP naming: method and route template.
        let request = tracing::info_span!(
            "GET /users/{id}",
            "http.route" = "/users/{id}",
            user.id = id
        );
        async {
            let key = format!("user:{id}");
            let user = cache
                .get_or_load_optional(&key, move || fetch_user(id))
                .await;
            tracing::info!(found = matches!(user, Ok(Some(_))), "answered");
        }
        .instrument(request)
        .await;
    }
    cache
        .set(
            "motd",
            "hello".to_string(),
            Ttl::After(Duration::from_secs(60)),
        )
        .await?;
    cache.delete("motd").await?;
    // A failure, recorded on its span as error.type and an ERROR status.
    let _ = cache
        .get_or_load("user:500", || async {
            Err::<String, _>(std::io::Error::other("timeout"))
        })
        .await;

    // Flushes what the exporter still holds.
    provider.shutdown()?;
    Ok(())
}
