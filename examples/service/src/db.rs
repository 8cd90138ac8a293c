//! The database: SQLite in a file, a table of products, a pool of
//! connections, and a count of every query sent to it.
//!
//! SQLite calls block, so each runs on tokio's blocking pool
//! (`spawn_blocking`) with a connection taken from an `r2d2` pool: the
//! async workers never wait on the database.

use std::path::Path;
use std::time::Duration;

use cachex::prometheus_client::metrics::counter::Counter;
use r2d2::Pool;
use r2d2_sqlite::rusqlite::{params, params_from_iter, OptionalExtension, Row};
use r2d2_sqlite::SqliteConnectionManager;
use serde::{Deserialize, Serialize};

/// What a failed database call returns.
pub type DbError = Box<dyn std::error::Error + Send + Sync>;

/// A row of the `products` table, as the service serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// The primary key, from 1.
    pub id: i64,
    /// The product's name.
    pub name: String,
    /// Its price, in cents.
    pub price_cents: i64,
}

impl Product {
    /// The row the seed writes for `id`.
    ///
    /// ```
    /// let p = cachex_service::db::Product::seeded(7);
    /// assert_eq!((p.id, p.name.as_str()), (7, "product 7"));
    /// ```
    pub fn seeded(id: i64) -> Product {
        Product {
            id,
            name: format!("product {id}"),
            price_cents: 100 + (id * 7_919) % 9_900,
        }
    }

    fn from_row(row: &Row<'_>) -> r2d2_sqlite::rusqlite::Result<Product> {
        Ok(Product {
            id: row.get(0)?,
            name: row.get(1)?,
            price_cents: row.get(2)?,
        })
    }
}

/// What `PUT /products/{id}` changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpdate {
    /// The new name.
    pub name: String,
    /// The new price, in cents.
    pub price_cents: i64,
}

/// A pool of connections to one SQLite file, counting queries.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use cachex_service::db::Database;
///
/// let dir = tempfile::tempdir()?;
/// let db = Database::open(&dir.path().join("shop.db"), 100, 2, std::time::Duration::ZERO)?;
/// assert_eq!(db.product(3).await?.unwrap().name, "product 3");
/// assert_eq!(db.product(101).await?, None);
/// assert_eq!(db.products(vec![1, 2, 500]).await?.len(), 2);
/// assert_eq!(db.queries(), 3);
/// # Ok::<(), cachex_service::db::DbError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Database {
    pool: Pool<SqliteConnectionManager>,
    queries: Counter,
    latency: Duration,
}

impl Database {
    /// Opens (or creates) the database at `path` with a pool of
    /// `connections`. An empty database gets the schema and `products`
    /// rows (ids 1 to `products`); one that already has products is used
    /// as it is. Every query then also waits `latency` while holding its
    /// connection, to stand for a database across a network.
    pub fn open(
        path: &Path,
        products: u64,
        connections: u32,
        latency: Duration,
    ) -> Result<Database, DbError> {
        let manager = SqliteConnectionManager::file(path).with_init(|connection| {
            // Readers never block the writer nor each other in WAL mode; a
            // writer waits for another rather than failing at once.
            connection.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
            )
        });
        let pool = Pool::builder()
            .max_size(connections.max(1))
            .build(manager)?;
        seed(&pool, products)?;
        Ok(Database {
            pool,
            queries: Counter::default(),
            latency,
        })
    }

    /// Queries sent to the database so far.
    pub fn queries(&self) -> u64 {
        self.queries.get()
    }

    /// The count of queries as a Prometheus counter, for a registry.
    pub fn queries_counter(&self) -> Counter {
        self.queries.clone()
    }

    /// The product `id`, if it exists: one query.
    pub async fn product(&self, id: i64) -> Result<Option<Product>, DbError> {
        self.run(move |connection| {
            connection
                .prepare_cached("SELECT id, name, price_cents FROM products WHERE id = ?1")?
                .query_row([id], Product::from_row)
                .optional()
        })
        .await
    }

    /// The products among `ids` that exist, in no particular order: one
    /// query (`WHERE id IN (...)`).
    pub async fn products(&self, ids: Vec<i64>) -> Result<Vec<Product>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.run(move |connection| {
            let placeholders = vec!["?"; ids.len()].join(",");
            let sql =
                format!("SELECT id, name, price_cents FROM products WHERE id IN ({placeholders})");
            let mut statement = connection.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(ids), Product::from_row)?;
            rows.collect()
        })
        .await
    }

    /// Writes `update` to the product `id` and returns the new row, or
    /// `None` if there is no such product: one query.
    pub async fn update(&self, id: i64, update: ProductUpdate) -> Result<Option<Product>, DbError> {
        self.run(move |connection| {
            connection
                .prepare_cached(
                    "UPDATE products SET name = ?2, price_cents = ?3 WHERE id = ?1 \
                     RETURNING id, name, price_cents",
                )?
                .query_row(
                    params![id, update.name, update.price_cents],
                    Product::from_row,
                )
                .optional()
        })
        .await
    }

    /// Runs one query on a pooled connection, off the async workers.
    async fn run<T, F>(&self, query: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&r2d2_sqlite::rusqlite::Connection) -> r2d2_sqlite::rusqlite::Result<T>
            + Send
            + 'static,
    {
        let (pool, latency) = (self.pool.clone(), self.latency);
        self.queries.inc();
        tokio::task::spawn_blocking(move || {
            let connection = pool.get()?;
            if !latency.is_zero() {
                std::thread::sleep(latency);
            }
            Ok(query(&connection)?)
        })
        .await?
    }
}

/// Creates the schema and, if the table is empty, `products` rows.
fn seed(pool: &Pool<SqliteConnectionManager>, products: u64) -> Result<(), DbError> {
    let mut connection = pool.get()?;
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS products (
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             price_cents INTEGER NOT NULL
         )",
    )?;
    let existing: i64 =
        connection.query_row("SELECT count(*) FROM products", [], |row| row.get(0))?;
    if existing > 0 {
        return Ok(());
    }
    let products = i64::try_from(products)?;
    let transaction = connection.transaction()?;
    {
        let mut insert = transaction
            .prepare("INSERT INTO products (id, name, price_cents) VALUES (?1, ?2, ?3)")?;
        for id in 1..=products {
            let product = Product::seeded(id);
            insert.execute(params![product.id, product.name, product.price_cents])?;
        }
    }
    transaction.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_pages_and_updates_count_one_query_each() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("t.db"), 50, 2, Duration::ZERO).unwrap();
        let mut page = db.products(vec![50, 3, 51, 3]).await.unwrap();
        page.sort_by_key(|p| p.id);
        assert_eq!(page, vec![Product::seeded(3), Product::seeded(50)]);
        let update = ProductUpdate {
            name: "new".into(),
            price_cents: 5,
        };
        let updated = db.update(4, update.clone()).await.unwrap().unwrap();
        assert_eq!((updated.name.as_str(), updated.price_cents), ("new", 5));
        assert_eq!(db.update(99, update).await.unwrap(), None);
        assert_eq!(db.product(4).await.unwrap(), Some(updated));
        assert_eq!(db.products(Vec::new()).await.unwrap(), Vec::new());
        // The empty page never reached the database.
        assert_eq!(db.queries(), 4);
    }

    #[tokio::test]
    async fn an_existing_database_is_not_seeded_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Database::open(&path, 10, 1, Duration::ZERO).unwrap();
        let update = ProductUpdate {
            name: "kept".into(),
            price_cents: 1,
        };
        db.update(2, update).await.unwrap();
        drop(db);
        let db = Database::open(&path, 1_000, 1, Duration::ZERO).unwrap();
        assert_eq!(db.product(2).await.unwrap().unwrap().name, "kept");
        assert_eq!(db.product(11).await.unwrap(), None);
    }
}
