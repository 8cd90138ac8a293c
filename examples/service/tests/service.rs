//! The `service` binary as a user meets it: started as a process on a free
//! loopback port over a freshly seeded SQLite file, asked over HTTP.

use std::path::Path;

use cachex_service::app::ServiceStats;
use cachex_service::client::Client;
use cachex_service::db::{Product, ProductUpdate};
use cachex_service::process::ServiceProcess;
use cachex_testkit::RedisServer;
use hyper::StatusCode;

const SERVICE: &str = env!("CARGO_BIN_EXE_service");

/// The service over 1,000 products in `dir`, with `extra` arguments.
fn start(dir: &Path, extra: &[&str]) -> ServiceProcess {
    let mut args = vec![
        "--products=1000".to_string(),
        format!("--db={}", dir.join("products.db").display()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    ServiceProcess::start(Path::new(SERVICE), &args).unwrap_or_else(|e| panic!("{e}"))
}

async fn db_queries(client: &mut Client) -> u64 {
    let answer = client.get("/stats").await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    answer.json::<ServiceStats>().unwrap().db_queries
}

async fn product(client: &mut Client, id: i64) -> (StatusCode, Option<Product>) {
    let answer = client.get(&format!("/products/{id}")).await.unwrap();
    let product = (answer.status == StatusCode::OK).then(|| answer.json().unwrap());
    (answer.status, product)
}

/// What every store must answer the same way: items, 404s, pages with a
/// missing id, bad input, an update read back at once, metrics, and a
/// second read served without the database.
async fn answers(service: &ServiceProcess, metric_tiers: &[&str]) {
    let mut client = Client::connect(service.addr()).await.unwrap();

    assert_eq!(
        product(&mut client, 7).await,
        (StatusCode::OK, Some(Product::seeded(7)))
    );
    assert_eq!(
        product(&mut client, 1001).await,
        (StatusCode::NOT_FOUND, None)
    );

    // A second read of an item, and of a missing one, does not query again.
    let queries = db_queries(&mut client).await;
    assert_eq!(product(&mut client, 7).await.1, Some(Product::seeded(7)));
    assert_eq!(product(&mut client, 1001).await.0, StatusCode::NOT_FOUND);
    assert_eq!(db_queries(&mut client).await, queries);

    // A page: in order, null where absent, one query for the missing ids
    // (7 is cached, 1001 is cached as absent).
    let answer = client.get("/products?ids=3,1001,7,2000,3").await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let page: Vec<Option<Product>> = answer.json().unwrap();
    let seeded = |id| Some(Product::seeded(id));
    assert_eq!(page, vec![seeded(3), None, seeded(7), None, seeded(3)]);
    assert_eq!(db_queries(&mut client).await, queries + 1);
    // The same page again: all of it from the cache.
    let again: Vec<Option<Product>> = client
        .get("/products?ids=3,1001,7,2000,3")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again, page);
    assert_eq!(db_queries(&mut client).await, queries + 1);

    // An update is read back at once, though the old row was cached.
    let update = ProductUpdate {
        name: "renamed".into(),
        price_cents: 4_242,
    };
    let answer = client.put_json("/products/7", &update).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let renamed = Product {
        id: 7,
        name: "renamed".into(),
        price_cents: 4_242,
    };
    assert_eq!(answer.json::<Product>().unwrap(), renamed);
    assert_eq!(product(&mut client, 7).await.1, Some(renamed.clone()));
    let page: Vec<Option<Product>> = client.get("/products?ids=7").await.unwrap().json().unwrap();
    assert_eq!(page, vec![Some(renamed)]);
    let answer = client.put_json("/products/5000", &update).await.unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    // Bad input: a clear 4xx, and the service still answers.
    for path in [
        "/products/abc",
        "/products?ids=1,x",
        "/products?ids=",
        "/products",
    ] {
        let answer = client.get(path).await.unwrap();
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "GET {path}");
    }
    let negative = ProductUpdate {
        name: "x".into(),
        price_cents: -1,
    };
    let answer = client.put_json("/products/8", &negative).await.unwrap();
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains("price_cents"), "{}", answer.text());
    assert_eq!(product(&mut client, 8).await.1, Some(Product::seeded(8)));

    let answer = client.get("/metrics").await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let metrics = answer.text();
    for line in [
        "cachex_hits_total{cache=\"products\"} ",
        "cachex_misses_total{cache=\"products\"} ",
        "cachex_loads_total{cache=\"products\"} ",
        "cachex_batch_calls_total{cache=\"products\"} 3\n",
        "service_db_queries_total ",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    for tier in metric_tiers {
        let tier_line = format!("cachex_tier_misses_total{{cache=\"products\",tier=\"{tier}\"}} ");
        assert!(
            metrics.contains(&tier_line),
            "no {tier_line:?} in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_cache_answers_and_spares_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path(), &[]);
    answers(&service, &["l1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hybrid_cache_answers_and_spares_the_database() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path(), &["--redis", &redis.url()]);
    answers(&service, &["l1", "l2"]).await;
}

/// The baseline: every read is a query, and the answers are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_every_read_queries_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path(), &["--no-cache"]);
    let mut client = Client::connect(service.addr()).await.unwrap();
    let before = db_queries(&mut client).await;
    for _ in 0..3 {
        assert_eq!(product(&mut client, 9).await.1, Some(Product::seeded(9)));
    }
    let page: Vec<Option<Product>> = client
        .get("/products?ids=9,1001,9")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        page,
        vec![Some(Product::seeded(9)), None, Some(Product::seeded(9))]
    );
    assert_eq!(db_queries(&mut client).await, before + 4);
    let stats: ServiceStats = client.get("/stats").await.unwrap().json().unwrap();
    assert_eq!(stats.cache, None);
}

/// The database outlives the service: a restart over the same file serves
/// the updated row, not a reseeded one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let update = ProductUpdate {
        name: "kept".into(),
        price_cents: 1,
    };
    {
        let service = start(dir.path(), &[]);
        let mut client = Client::connect(service.addr()).await.unwrap();
        let answer = client.put_json("/products/5", &update).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
    }
    let service = start(dir.path(), &[]);
    let mut client = Client::connect(service.addr()).await.unwrap();
    assert_eq!(product(&mut client, 5).await.1.unwrap().name, "kept");
}
