//! The HTTP service: routes, handlers, and the cache in front of the
//! database.
//!
//! | route | what |
//! |---|---|
//! | `GET /products/{id}` | one product (`get_or_load_optional`); 404 if none |
//! | `GET /products?ids=1,2,3` | a page, in order, `null` where none (`get_many_or_load`: one `IN (...)` query for the missing) |
//! | `PUT /products/{id}` | writes the database, then deletes the cached entry |
//! | `GET /metrics` | Prometheus text: the cache's `cachex_*` metrics and `service_db_queries_total` |
//! | `GET /stats` | JSON [`ServiceStats`]: database queries and the cache's counters |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cachex::prometheus_client::encoding::text::encode;
use cachex::prometheus_client::registry::Registry;
use cachex::{Cache, CacheMetrics, MAX_BATCH};
use serde::{Deserialize, Serialize};

use crate::db::{Database, DbError, Product, ProductUpdate};

/// What the OpenMetrics text format is served as.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How the cache in front of the database is set up.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Entries kept in memory (the L1 of the hybrid).
    pub capacity: u64,
    /// How long a product stays cached; the last sixth of it is refreshed
    /// in the background (stale-while-revalidate).
    pub ttl: Duration,
    /// `Some(url)`: the hybrid store, memory in front of this Redis (keys
    /// under the prefix `cachex-service`, cleared at start). `None`: memory
    /// only.
    pub redis: Option<String>,
}

/// Builds the `products` cache described by `config`.
pub async fn build_cache(config: &CacheConfig) -> cachex::Result<Cache<Product>> {
    let builder = Cache::builder()
        .name("products")
        .capacity(config.capacity)
        .default_ttl(config.ttl)
        .stale_while_revalidate(config.ttl / 6);
    let Some(url) = &config.redis else {
        return Ok(builder.build());
    };
    use cachex::store::hybrid::HybridStore;
    use cachex::store::{RedisStore, Store};
    let redis: RedisStore<Product> = RedisStore::builder()
        .url(url)
        .prefix("cachex-service")
        .build()
        .await?;
    // The database may have been seeded anew: what an earlier run cached
    // may no longer be true.
    redis.clear().await?;
    let store = HybridStore::builder(redis)
        .l1_capacity(config.capacity)
        .build()
        .await?;
    Ok(builder.store(store).build())
}

/// The cache key of product `id`.
fn key(id: i64) -> String {
    format!("product:{id}")
}

/// The product id in a cache key.
fn id_of(key: &str) -> Option<i64> {
    key.strip_prefix("product:")?.parse().ok()
}

/// What `GET /stats` answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Queries sent to the database since the service started.
    pub db_queries: u64,
    /// The cache's counters; `None` when serving with `--no-cache`.
    pub cache: Option<CacheCounters>,
}

/// The cache counters `GET /stats` reports (see [`cachex::Stats`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheCounters {
    /// Lookups answered with a cached product.
    pub hits: u64,
    /// Lookups answered with a cached "no such product".
    pub negative_hits: u64,
    /// Lookups that found nothing cached.
    pub misses: u64,
    /// Loader calls made on misses.
    pub loads: u64,
    /// Background refreshes.
    pub refreshes: u64,
}

impl CacheCounters {
    /// Lookups answered from the cache over all lookups, or 0 without any.
    ///
    /// ```
    /// let c = cachex_service::app::CacheCounters { hits: 3, negative_hits: 1, misses: 4, ..Default::default() };
    /// assert_eq!(c.hit_ratio(), 0.5);
    /// ```
    pub fn hit_ratio(&self) -> f64 {
        let answered = self.hits + self.negative_hits;
        let lookups = answered + self.misses;
        if lookups == 0 {
            0.0
        } else {
            answered as f64 / lookups as f64
        }
    }
}

struct Inner {
    db: Database,
    cache: Option<Cache<Product>>,
    registry: Registry,
}

/// The service's shared state: the database, the cache (none with
/// `--no-cache`) and the metrics registry.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

impl App {
    /// The service over `db`, reading through `cache` if there is one.
    pub fn new(db: Database, cache: Option<Cache<Product>>) -> App {
        let mut registry = Registry::default();
        let metrics = CacheMetrics::new();
        metrics.register(&mut registry);
        if let Some(cache) = &cache {
            // One cache in a fresh collector: its name cannot be taken.
            let added = metrics.add(cache);
            debug_assert!(added, "the only cache of a new CacheMetrics");
        }
        registry.register(
            "service_db_queries",
            "Queries sent to the database",
            db.queries_counter(),
        );
        App {
            inner: Arc::new(Inner {
                db,
                cache,
                registry,
            }),
        }
    }

    /// The routes of the table above.
    pub fn router(self) -> Router {
        Router::new()
            .route("/products", get(page))
            .route("/products/{id}", get(product).put(update))
            .route("/metrics", get(metrics))
            .route("/stats", get(stats))
            .with_state(self)
    }

    /// The counters `GET /stats` serves.
    pub fn stats(&self) -> ServiceStats {
        ServiceStats {
            db_queries: self.inner.db.queries(),
            cache: self.inner.cache.as_ref().map(|cache| {
                let stats = cache.stats();
                CacheCounters {
                    hits: stats.hits,
                    negative_hits: stats.negative_hits,
                    misses: stats.misses,
                    loads: stats.loads,
                    refreshes: stats.refreshes,
                }
            }),
        }
    }

    /// Closes the cache (stops its background work).
    pub async fn close(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.close().await;
        }
    }
}

/// A failed request: its status and a one-line reason.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, self.1 + "\n").into_response()
    }
}

fn internal(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{what}: {error}"),
    )
}

async fn product(State(app): State<App>, Path(id): Path<i64>) -> Result<Json<Product>, Failure> {
    let db = app.inner.db.clone();
    let found = match &app.inner.cache {
        Some(cache) => cache
            .get_or_load_optional(&key(id), move || async move { db.product(id).await })
            .await
            .map_err(|e| internal("cache", e))?,
        None => db.product(id).await.map_err(|e| internal("database", e))?,
    };
    found
        .map(Json)
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("no product {id}")))
}

/// `?ids=1,2,3`.
#[derive(Deserialize)]
struct PageQuery {
    ids: String,
}

/// The ids of `ids=1,2,3`, or why they are not.
fn parse_ids(ids: &str) -> Result<Vec<i64>, Failure> {
    let bad = |message: String| Failure(StatusCode::BAD_REQUEST, message);
    let ids = ids
        .split(',')
        .map(|id| {
            id.trim()
                .parse()
                .map_err(|_| bad(format!("ids: {id:?} is not a product id")))
        })
        .collect::<Result<Vec<i64>, _>>()?;
    if ids.len() > MAX_BATCH {
        return Err(bad(format!("ids: at most {MAX_BATCH} in a page")));
    }
    Ok(ids)
}

async fn page(
    State(app): State<App>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Vec<Option<Product>>>, Failure> {
    let ids = parse_ids(&query.ids)?;
    let db = app.inner.db.clone();
    let page = match &app.inner.cache {
        Some(cache) => {
            let keys: Vec<String> = ids.iter().map(|&id| key(id)).collect();
            // Called once, with the keys that are neither cached nor being
            // loaded by another request: one query for all of them.
            let load = move |keys: Vec<String>| {
                let db = db.clone();
                async move {
                    let ids = keys.iter().filter_map(|k| id_of(k)).collect();
                    let rows = db.products(ids).await?;
                    Ok::<_, DbError>(rows.into_iter().map(|p| (key(p.id), p)))
                }
            };
            cache
                .get_many_or_load(&keys, load)
                .await
                .map_err(|e| internal("cache", e))?
        }
        None => {
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            let rows = db
                .products(unique)
                .await
                .map_err(|e| internal("database", e))?;
            let by_id: HashMap<i64, Product> = rows.into_iter().map(|p| (p.id, p)).collect();
            ids.iter().map(|id| by_id.get(id).cloned()).collect()
        }
    };
    Ok(Json(page))
}

async fn update(
    State(app): State<App>,
    Path(id): Path<i64>,
    Json(update): Json<ProductUpdate>,
) -> Result<Json<Product>, Failure> {
    if update.price_cents < 0 {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "price_cents: must not be negative".into(),
        ));
    }
    let updated = app
        .inner
        .db
        .update(id, update)
        .await
        .map_err(|e| internal("database", e))?
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("no product {id}")))?;
    // After the write, so that a read after this response loads the new row.
    if let Some(cache) = &app.inner.cache {
        cache.delete(&key(id)).await.map_err(|e| {
            internal(
                "the database was updated, but the cached entry could not be deleted",
                e,
            )
        })?;
    }
    Ok(Json(updated))
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &app.inner.registry);
    ([(CONTENT_TYPE, OPENMETRICS)], text)
}

async fn stats(State(app): State<App>) -> Json<ServiceStats> {
    Json(app.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_or_say_which_is_wrong() {
        assert_eq!(parse_ids("1, 2,3").ok().unwrap(), vec![1, 2, 3]);
        let Failure(status, message) = parse_ids("1,x").err().unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("\"x\""), "{message}");
        assert!(parse_ids("").is_err());
        let too_many = vec!["1"; MAX_BATCH + 1].join(",");
        assert!(parse_ids(&too_many).is_err());
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(id_of(&key(42)), Some(42));
        assert_eq!(id_of("user:42"), None);
    }
}
