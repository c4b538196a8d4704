//! The PostgreSQL store itself: replicas starting at once migrate it once; when it goes away,
//! handlers fail fast with a clear answer and change nothing.

use crate::helpers::*;
use sqlx::{Connection, Row};
use std::time::{Duration, Instant};

/// Runs `sql` on the test server as the admin role.
async fn admin(sql: String) {
    let url = postgres_admin_url().expect("Postgres variants have a URL");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
}

postgres_tests! {
#[tokio::test]
async fn a_command_while_the_database_is_unreachable_is_answered_in_time_and_changes_nothing() {
    let app = spawn_app().await;
    let db: String = sqlx::query("SELECT current_database()::text AS d")
        .fetch_one(&app.sql)
        .await
        .unwrap()
        .get("d");
    // Nobody may connect any more, and every open connection is cut.
    admin(format!("ALTER DATABASE {db} CONNECTION LIMIT 0")).await;
    admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    ))
    .await;

    let sent = Instant::now();
    let (status, json) = app.slash_as(STEVE, "web1 22 1h").await;
    let answered = sent.elapsed();
    println!("METRIC command_answer_without_database_ms={}", answered.as_millis());
    assert_eq!(status, 200, "{json}");
    let text = json["text"].as_str().unwrap_or_default();
    assert!(text.contains("database is not answering"), "{text}");
    assert!(text.contains("Nothing was changed"), "{text}");
    assert!(answered < Duration::from_secs(3), "answered after {answered:?}");

    // The database is back: the command left no trace and nothing was opened or posted.
    admin(format!("ALTER DATABASE {db} CONNECTION LIMIT -1")).await;
    let requests: i64 = sqlx::query("SELECT COUNT(*) AS n FROM requests")
        .fetch_one(&app.sql)
        .await
        .unwrap()
        .get("n");
    assert_eq!(requests, 0);
    assert!(app.slack.messages(APPROVALS).is_empty());
    assert!(app.arm.requests().iter().all(|r| r.method != "PUT"));
    // And jitbot works again without a restart.
    let id = app.submit(STEVE, "web1 22 1h").await;
    app.card_ts(&id).await;
}

#[tokio::test]
async fn replicas_starting_at_once_on_an_empty_database_migrate_it_once() {
    jitbot::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(dir.path()).await;
    let (a, b, c) = tokio::join!(
        jitbot::store::Store::connect(&url),
        jitbot::store::Store::connect(&url),
        jitbot::store::Store::connect(&url)
    );
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let applied: i64 = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations")
        .fetch_one(&sql_pool(&url).await)
        .await
        .unwrap()
        .get("n");
    let migrations = std::fs::read_dir("migrations/postgres").unwrap().count() as i64;
    assert_eq!(applied, migrations);
    assert!(a.verify_audit().await.unwrap().broken.is_none());
}
}
