//! The PostgreSQL database the tests use: `SANDFLOW_TEST_POSTGRES`, else the one this
//! project's machines run. A test that cannot reach it fails, saying how to point it at
//! one; it never skips.

/// The test database's URL.
pub fn test_url() -> String {
    std::env::var("SANDFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs `sql` on the test database, outside any store.
pub async fn admin(sql: &str) {
    connect().await.batch_execute(sql).await.unwrap();
}

/// A connection to the test database, outside any store.
pub async fn connect() -> tokio_postgres::Client {
    let url = test_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL tests need a database: none at {url} ({e}); set \
                 SANDFLOW_TEST_POSTGRES to one's URL (see the README)"
            )
        });
    tokio::spawn(connection);
    client
}
