//! The REST API against a real database and Redis, spawned on port 0.
//! One behaviour per test.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use order_api::Application;
use order_core::cache::{Cached, OrderCache};
use order_core::domain::{
    Encoding, FailureStatus, KeptMessage, NewFailure, NewOrder, OrderStatus, SeckillMessage, Source,
};
use order_core::storage::Storage;
use order_runtime::config::{Driver, Settings};
use order_testkit::http::{self, Response};
use order_testkit::proxy::FaultProxy;
use order_testkit::{TestDatabase, redis_settings};
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "test-operator-token";
const JWT_SECRET: &str = "test-jwt-secret-of-at-least-32-bytes";

struct TestApp {
    addr: SocketAddr,
    db: TestDatabase,
    /// The app's own storage (same pool).
    storage: Storage,
    cache: OrderCache,
    settings: Settings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(Driver::Postgres, |_| {}).await
}

async fn spawn_app_with(driver: Driver, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDatabase::new(driver).await;
    let mut settings = Settings {
        database: db.settings.clone(),
        redis: redis_settings(),
        ..Settings::default()
    };
    settings.server.port = 0;
    settings.api.admin_token = order_runtime::config::Secret::new(TOKEN);
    settings.api.auth.jwt_secret = order_runtime::config::Secret::new(JWT_SECRET);
    configure(&mut settings);
    let storage =
        Storage::connect_with(&settings.database, Some(settings.api.statement_timeout)).unwrap();
    let app = Application::build(&settings, storage.clone())
        .await
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], app.port()).into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    // The test's own handle on the same keys, enabled even when the app's cache is not.
    let cache = OrderCache::connect(&order_runtime::config::RedisSettings {
        enabled: true,
        ..settings.redis.clone()
    })
    .unwrap();
    TestApp {
        addr,
        db,
        storage,
        cache,
        settings,
        stop: Some(stop),
    }
}

impl TestApp {
    /// A GET as the operator (who may read everything).
    async fn get(&self, path: &str) -> Response {
        self.operator("GET", path, None).await
    }

    /// A request with no credentials.
    async fn anonymous(&self, method: &str, path: &str) -> Response {
        http::request(self.addr, method, path, &[], None).await
    }

    /// A request as end user `user`, with a token minted by the API's own code.
    async fn as_user(&self, user: i64, method: &str, path: &str) -> Response {
        let token =
            order_api::auth::mint(&self.settings.api, user, Duration::from_secs(300)).unwrap();
        self.with_token(&token, method, path, None).await
    }

    async fn with_token(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Response {
        let auth = format!("Bearer {token}");
        http::request(
            self.addr,
            method,
            path,
            &[("Authorization", &auth)],
            body.map(str::as_bytes),
        )
        .await
    }

    async fn operator(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let auth = format!("Bearer {TOKEN}");
        let body = body.map(|b| b.to_string());
        http::request(
            self.addr,
            method,
            path,
            &[("Authorization", &auth)],
            body.as_deref().map(str::as_bytes),
        )
        .await
    }

    /// A PUT as the operator.
    async fn put(&self, path: &str, body: Option<Value>) -> Response {
        self.operator("PUT", path, body).await
    }

    async fn order(&self, user: i64, product: i64, price: &str, quantity: i32) -> Uuid {
        let message = format!(
            r#"{{"user_id":{user},"product_id":{product},"quantity":{quantity},"unit_price":"{price}","seckill_id":"sk_{product}","timestamp":"2024-01-01T12:00:00Z","product_name":"P{product}"}}"#
        );
        let order = NewOrder::new(SeckillMessage::parse(message.as_bytes()).unwrap());
        self.db
            .storage
            .create_orders(std::slice::from_ref(&order))
            .await
            .unwrap();
        order.order_id
    }
}

fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{:?}",
        r.headers
    );
    let body = r.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

// ---- orders -------------------------------------------------------------

#[tokio::test]
async fn an_order_is_returned_with_its_items_and_money_as_strings() {
    let app = spawn_app().await;
    let id = app.order(5, 9, "0.10", 3).await;
    let r = app.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let o = r.json();
    assert_eq!(o["order_id"], id.to_string());
    assert_eq!(
        (
            o["user_id"].as_i64(),
            o["product_id"].as_i64(),
            o["quantity"].as_i64()
        ),
        (Some(5), Some(9), Some(3))
    );
    assert_eq!(o["unit_price"], "0.10");
    assert_eq!(o["total_amount"], "0.30");
    assert_eq!(o["status"], "pending");
    assert_eq!(o["items"][0]["product_name"], "P9");
    assert_eq!(o["items"][0]["total_price"], "0.30");
    assert!(o.get("id").is_none(), "the surrogate key stays internal");
}

#[tokio::test]
async fn an_order_id_that_is_not_a_uuid_is_400() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/orders/42",
        "/api/v1/orders/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/orders/'%20OR%201=1--",
    ] {
        assert_error(&app.get(path).await, 400, "bad_request");
    }
}

#[tokio::test]
async fn an_unknown_order_is_404_and_stays_404() {
    let app = spawn_app().await;
    let id = Uuid::now_v7();
    for _ in 0..2 {
        let r = app.get(&format!("/api/v1/orders/{id}")).await;
        assert_error(&r, 404, "not_found");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&id.to_string())
        );
    }
}

#[tokio::test]
async fn status_changes_need_the_operator_token() {
    let app = spawn_app().await;
    let id = app.order(1, 1, "1", 1).await;
    let path = format!("/api/v1/orders/{id}/status");
    let body = json!({"status": "completed"}).to_string();
    let none = http::request(app.addr, "PUT", &path, &[], Some(body.as_bytes())).await;
    assert_error(&none, 401, "unauthorized");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = http::request(
        app.addr,
        "PUT",
        &path,
        &[("Authorization", "Bearer nope")],
        Some(body.as_bytes()),
    )
    .await;
    assert_error(&wrong, 401, "unauthorized");
    assert_eq!(
        app.db.storage.get_order(id).await.unwrap().unwrap().status,
        OrderStatus::Pending
    );
}

#[tokio::test]
async fn without_a_configured_token_operator_endpoints_are_403() {
    let app = spawn_app_with(Driver::Postgres, |s| {
        s.api.admin_token = order_runtime::config::Secret::default()
    })
    .await;
    let id = app.order(1, 1, "1", 1).await;
    let r = app
        .operator(
            "PUT",
            &format!("/api/v1/orders/{id}/status"),
            Some(json!({"status": "completed"})),
        )
        .await;
    assert_error(&r, 403, "forbidden");
    assert_error(
        &app.operator("GET", "/api/v1/failures", None).await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn a_pending_order_moves_to_completed_and_further_moves_are_409_naming_both_statuses() {
    let app = spawn_app().await;
    let id = app.order(1, 1, "1", 1).await;
    let path = format!("/api/v1/orders/{id}/status");
    let r = app
        .operator("PUT", &path, Some(json!({"status": "completed"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "completed");
    let again = app
        .operator("PUT", &path, Some(json!({"status": "cancelled"})))
        .await;
    assert_error(&again, 409, "conflict");
    assert_eq!(
        again.json()["error"]["message"],
        "order status cannot change from completed to cancelled"
    );
}

#[tokio::test]
async fn a_status_change_to_an_unknown_order_is_404() {
    let app = spawn_app().await;
    let r = app
        .operator(
            "PUT",
            &format!("/api/v1/orders/{}/status", Uuid::now_v7()),
            Some(json!({"status": "completed"})),
        )
        .await;
    assert_error(&r, 404, "not_found");
}

#[tokio::test]
async fn bad_status_bodies_are_400() {
    let app = spawn_app().await;
    let id = app.order(1, 1, "1", 1).await;
    let path = format!("/api/v1/orders/{id}/status");
    for body in [
        json!({"status": "shipped"}),
        json!({"state": "completed"}),
        json!({"status": 1}),
        json!([]),
    ] {
        assert_error(
            &app.operator("PUT", &path, Some(body)).await,
            400,
            "bad_request",
        );
    }
    let auth = format!("Bearer {TOKEN}");
    let raw = http::request(
        app.addr,
        "PUT",
        &path,
        &[("Authorization", &auth)],
        Some(b"{not json"),
    )
    .await;
    assert_error(&raw, 400, "bad_request");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(Driver::Postgres, |s| s.api.max_body_bytes = 64).await;
    let id = app.order(1, 1, "1", 1).await;
    let big = json!({"status": "completed", "padding": "x".repeat(100)});
    assert_error(
        &app.operator("PUT", &format!("/api/v1/orders/{id}/status"), Some(big))
            .await,
        413,
        "payload_too_large",
    );
}

#[tokio::test]
async fn cancelling_is_idempotent_on_cancelled_and_409_on_completed_or_failed() {
    let app = spawn_app().await;
    let pending = app.order(1, 1, "1", 1).await;
    for _ in 0..2 {
        let r = app
            .put(&format!("/api/v1/orders/{pending}/cancel"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["status"], "cancelled");
    }
    for (product, status) in [(2, OrderStatus::Completed), (3, OrderStatus::Failed)] {
        let id = app.order(1, product, "1", 1).await;
        app.db.storage.transition_order(id, status).await.unwrap();
        let r = app.put(&format!("/api/v1/orders/{id}/cancel"), None).await;
        assert_error(&r, 409, "conflict");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("from {status} to cancelled"))
        );
    }
    assert_error(
        &app.put(&format!("/api/v1/orders/{}/cancel", Uuid::now_v7()), None)
            .await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn fifty_concurrent_transitions_on_one_order_make_one_change() {
    let app = spawn_app().await;
    let id = app.order(1, 1, "1", 1).await;
    let path = format!("/api/v1/orders/{id}/status");
    let mut calls = Vec::new();
    for i in 0..50 {
        let status = ["completed", "cancelled", "failed"][i % 3];
        let (addr, path) = (app.addr, path.clone());
        calls.push(tokio::spawn(async move {
            let auth = format!("Bearer {TOKEN}");
            let body = json!({"status": status}).to_string();
            let status_code = http::request(
                addr,
                "PUT",
                &path,
                &[("Authorization", &auth)],
                Some(body.as_bytes()),
            )
            .await
            .status;
            (status, status_code)
        }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    // One change wins; asking for the status it set is answered 200 (the
    // order is there already), asking for another is 409.
    let order = app.get(&format!("/api/v1/orders/{id}")).await.json();
    assert_eq!(order["version"], 1, "exactly one change: {order}");
    let won = order["status"].as_str().unwrap();
    for (asked, code) in &answers {
        let expected = if *asked == won { 200 } else { 409 };
        assert_eq!(*code, expected, "asked {asked}, {won} won: {answers:?}");
    }
}

// ---- cache --------------------------------------------------------------

#[tokio::test]
async fn a_status_change_shows_at_once_through_the_cache() {
    let app = spawn_app().await;
    let id = app.order(1, 1, "1", 1).await;
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}")).await.json()["status"],
        "pending"
    );
    assert!(
        matches!(app.cache.get(id).await, Cached::Hit(_)),
        "the first read fills the cache"
    );
    let r = app
        .operator(
            "PUT",
            &format!("/api/v1/orders/{id}/status"),
            Some(json!({"status": "completed"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}")).await.json()["status"],
        "completed"
    );
}

#[tokio::test]
async fn a_cached_order_is_served_with_the_database_pool_closed_and_hits_are_counted() {
    let app = spawn_app().await;
    let id = app.order(1, 1, "1", 1).await;
    // A hit from the near cache, or from Redis while the near cache waits
    // for its first heartbeat.
    let hits = async || {
        counter(&app, "cache_requests_total{result=\"hit\"}").await
            + counter(&app, "near_cache_requests_total{result=\"hit\"}").await
    };
    let hits_before = hits().await;
    assert_eq!(app.get(&format!("/api/v1/orders/{id}")).await.status, 200);
    app.storage.close().await;
    let r = app.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["order_id"], id.to_string());
    assert!(hits().await > hits_before);
    assert_error(
        &app.get(&format!("/api/v1/orders/{}", Uuid::now_v7())).await,
        503,
        "unavailable",
    );
}

async fn counter(app: &TestApp, series: &str) -> f64 {
    let (_, text) = http::get(app.addr, "/metrics").await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn with_redis_down_every_order_endpoint_still_answers_and_health_is_degraded() {
    let app = spawn_app_with(Driver::Postgres, |s| {
        s.redis.port = order_testkit::free_port()
    })
    .await;
    let id = app.order(1, 1, "1", 1).await;
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}")).await.json()["status"],
        "pending"
    );
    let r = app
        .operator(
            "PUT",
            &format!("/api/v1/orders/{id}/status"),
            Some(json!({"status": "completed"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}")).await.json()["status"],
        "completed"
    );
    assert_error(
        &app.get(&format!("/api/v1/orders/{}", Uuid::now_v7())).await,
        404,
        "not_found",
    );
    assert_eq!(app.get("/api/v1/users/1/orders").await.json()["total"], 1);
    let health = app.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(
        health.json(),
        json!({"status": "degraded", "checks": {"database": "up", "redis": "down"}})
    );
}

#[tokio::test]
async fn a_cut_database_gives_503s_and_recovers_without_restart() {
    let db_for_proxy = TestDatabase::new(Driver::Postgres).await;
    let proxy = FaultProxy::start(db_for_proxy.server_addr()).await;
    let via = db_for_proxy.settings_via(proxy.addr());
    let app = spawn_app_with(Driver::Postgres, |s| {
        s.database = via;
        s.database.acquire_timeout = Duration::from_millis(500);
    })
    .await;
    let order = NewOrder::new(SeckillMessage::parse(br#"{"user_id":1,"product_id":1,"quantity":1,"unit_price":1,"seckill_id":"s","timestamp":"2024-01-01T00:00:00Z"}"#).unwrap());
    db_for_proxy
        .storage
        .create_orders(std::slice::from_ref(&order))
        .await
        .unwrap();
    assert_eq!(app.get("/health/ready").await.status, 200);

    proxy.cut();
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["checks"]["database"], "down");
    assert_error(
        &app.get(&format!("/api/v1/orders/{}", order.order_id)).await,
        503,
        "unavailable",
    );
    assert_error(&app.get("/api/v1/users/1/orders").await, 503, "unavailable");

    proxy.heal();
    assert_eq!(app.get("/health/ready").await.status, 200);
    assert_eq!(
        app.get(&format!("/api/v1/orders/{}", order.order_id))
            .await
            .status,
        200
    );
}

// ---- a user's orders ----------------------------------------------------

#[tokio::test]
async fn a_users_orders_come_newest_first_with_total_and_status_filter() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for product in 1..=12 {
        ids.push(app.order(77, product, "2.50", 1).await);
    }
    app.order(78, 1, "1", 1).await;
    app.db
        .storage
        .transition_order(ids[0], OrderStatus::Completed)
        .await
        .unwrap();

    let first = app
        .get("/api/v1/users/77/orders?page=1&pageSize=5")
        .await
        .json();
    assert_eq!(
        (
            first["page"].as_i64(),
            first["page_size"].as_i64(),
            first["total"].as_i64()
        ),
        (Some(1), Some(5), Some(12))
    );
    let got: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    let newest: Vec<String> = ids.iter().rev().take(5).map(ToString::to_string).collect();
    assert_eq!(got, newest);
    let last = app
        .get("/api/v1/users/77/orders?page=3&pageSize=5")
        .await
        .json();
    assert_eq!(last["items"].as_array().unwrap().len(), 2);
    let completed = app
        .get("/api/v1/users/77/orders?status=completed")
        .await
        .json();
    assert_eq!(completed["total"], 1);
    assert_eq!(completed["items"][0]["order_id"], ids[0].to_string());
    let all = app.get("/api/v1/users/77/orders?status=").await.json();
    assert_eq!(all["total"], 12, "an empty status filter is no filter");
}

#[tokio::test]
async fn bad_paging_and_filters_are_400_not_clamped() {
    let app = spawn_app().await;
    for query in [
        "pageSize=0",
        "pageSize=101",
        "page=0",
        "page=-1",
        "page=abc",
        "pageSize=1.5",
        "status=shipped",
        "sort=asc",
        "page=1&cursor=",
        "cursor=garbage",
        "page=99999999999999999999",
    ] {
        let r = app.get(&format!("/api/v1/users/1/orders?{query}")).await;
        assert_error(&r, 400, "bad_request");
    }
    for user in ["0", "-5", "abc", "1%20OR%201=1"] {
        assert_error(
            &app.get(&format!("/api/v1/users/{user}/orders")).await,
            400,
            "bad_request",
        );
    }
}

#[tokio::test]
async fn a_cursor_walks_a_users_orders_newest_first_without_gaps() {
    let app = spawn_app_with(Driver::Mysql, |_| {}).await;
    let mut ids = Vec::new();
    for product in 1..=7 {
        ids.push(app.order(5, product, "1", 1).await.to_string());
    }
    let mut walked = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .get(&format!(
                "/api/v1/users/5/orders?pageSize=3&cursor={cursor}"
            ))
            .await
            .json();
        walked.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["order_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(walked, ids);
}

// ---- stats --------------------------------------------------------------

/// Today: 10.10 paid, and 3 × 0.10 pending.
async fn two_orders_one_paid(app: &TestApp) {
    let a = app.order(1, 1, "10.10", 1).await;
    app.order(1, 2, "0.10", 3).await;
    app.db
        .storage
        .transition_order(a, OrderStatus::Completed)
        .await
        .unwrap();
}

#[tokio::test]
async fn stats_cover_one_day_or_an_inclusive_range() {
    let app = spawn_app().await;
    two_orders_one_paid(&app).await;
    let today = Utc::now().date_naive();
    let r = app.get(&format!("/api/v1/stats/orders?date={today}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!(s["order_count"], 2);
    assert_eq!(
        s["by_status"],
        json!({"pending": 1, "completed": 1, "cancelled": 0, "failed": 0})
    );
    assert_eq!(
        (s["total_amount"].as_str(), s["completed_amount"].as_str()),
        (Some("10.40"), Some("10.10"))
    );
    let yesterday = today.pred_opt().unwrap();
    let range = app
        .get(&format!("/api/v1/stats/orders?from={yesterday}&to={today}"))
        .await
        .json();
    assert_eq!(range["order_count"], 2);
    let empty = app
        .get(&format!("/api/v1/stats/orders?date={yesterday}"))
        .await
        .json();
    assert_eq!(
        (
            empty["order_count"].as_i64(),
            empty["total_amount"].as_str()
        ),
        (Some(0), Some("0.00"))
    );
}

#[tokio::test]
async fn stats_series_answer_one_entry_per_day_or_hour() {
    let app = spawn_app().await;
    two_orders_one_paid(&app).await;
    let today = Utc::now().date_naive();
    let from = today - chrono::Duration::days(365);
    let r = app
        .get(&format!(
            "/api/v1/stats/orders?granularity=day&from={from}&to={today}"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!(s["granularity"], "day");
    assert_eq!(
        (s["from"].as_str(), s["to"].as_str()),
        (Some(&*from.to_string()), Some(&*today.to_string()))
    );
    let entries = s["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 366);
    assert_eq!(entries[0]["date"], from.to_string());
    assert_eq!(entries[0]["order_count"], 0);
    assert_eq!(entries[0]["total_amount"], "0.00");
    // Today's, or yesterday's when midnight passed since the orders.
    let days: Vec<_> = entries.iter().filter(|e| e["order_count"] != 0).collect();
    assert_eq!(days.len(), 1, "{days:?}");
    let last = days[0];
    assert!(last == &entries[365] || last == &entries[364]);
    assert_eq!(last["order_count"], 2);
    assert_eq!(
        last["by_status"],
        json!({"pending": 1, "completed": 1, "cancelled": 0, "failed": 0})
    );
    assert_eq!(
        (
            last["total_amount"].as_str(),
            last["completed_amount"].as_str()
        ),
        (Some("10.40"), Some("10.10"))
    );

    // The last 48 hours, the current one last.
    let s = app
        .get("/api/v1/stats/orders?granularity=hour")
        .await
        .json();
    assert_eq!(s["granularity"], "hour");
    let hours = s["entries"].as_array().unwrap();
    assert_eq!(hours.len(), 48);
    let total: i64 = hours
        .iter()
        .map(|e| e["order_count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 2);
    assert!(hours.iter().all(|e| e.get("date").is_none()));
    let first: chrono::DateTime<Utc> = hours[0]["hour"].as_str().unwrap().parse().unwrap();
    let newest: chrono::DateTime<Utc> = hours[47]["hour"].as_str().unwrap().parse().unwrap();
    assert_eq!(newest - first, chrono::Duration::hours(47));
    assert!(Utc::now() - newest < chrono::Duration::hours(1) + chrono::Duration::seconds(5));

    // A day's hours, and a range given as times.
    let day = app
        .get(&format!(
            "/api/v1/stats/orders?granularity=hour&date={today}"
        ))
        .await
        .json();
    assert_eq!(day["entries"].as_array().unwrap().len(), 24);
    assert_eq!(day["entries"][0]["hour"], format!("{today}T00:00:00Z"));
    let r = app
        .get(&format!(
            "/api/v1/stats/orders?granularity=hour&from={today}T05:59:59Z&to={today}T07:00:00%2B00:00"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let hours = r.json()["entries"].as_array().unwrap().clone();
    assert_eq!(hours.len(), 3);
    assert_eq!(hours[0]["hour"], format!("{today}T05:00:00Z"));
}

#[tokio::test]
async fn bad_stats_series_are_400() {
    let app = spawn_app().await;
    for query in [
        "granularity=week&date=2024-01-01",
        "granularity=day",
        "granularity=day&date=2024-01-01",
        "granularity=day&from=2023-01-01&to=2024-01-02",
        "granularity=hour&from=2024-01-01&to=2024-01-04",
        "granularity=hour&from=2024-01-01T00:00:00Z&to=2024-01-04T00:00:00Z",
        "granularity=hour&from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z",
        "granularity=hour&from=yesterday&to=2024-01-01",
        "granularity=hour&from=2024-01-01",
        "granularity=hour&from=0000-01-01T00:00:00Z&to=0000-01-01T01:00:00Z",
    ] {
        assert_error(
            &app.get(&format!("/api/v1/stats/orders?{query}")).await,
            400,
            "bad_request",
        );
    }
}

#[tokio::test]
async fn bad_stats_dates_are_400() {
    let app = spawn_app().await;
    for query in [
        "",
        "date=2024-02-30",
        "date=yesterday",
        "from=2024-01-01",
        "from=2024-01-02&to=2024-01-01",
        "from=2023-01-01&to=2024-01-02",
        "date=2024-01-01&from=2024-01-01&to=2024-01-01",
    ] {
        assert_error(
            &app.get(&format!("/api/v1/stats/orders?{query}")).await,
            400,
            "bad_request",
        );
    }
}

// ---- failures -----------------------------------------------------------

async fn failures(app: &TestApp) -> Vec<i64> {
    let valid = br#"{"user_id":3,"product_id":4,"quantity":2,"unit_price":"5.00","seckill_id":"s","timestamp":"2024-01-01T00:00:00Z"}"#;
    let due = Utc::now() + chrono::Duration::hours(1);
    app.db
        .storage
        .record_failures(&[
            NewFailure::retryable(valid, "write failed", Source::Rabbitmq, due),
            NewFailure::poison(
                b"{broken",
                "message is not a valid JSON object",
                Source::Kafka,
                Utc::now(),
            ),
        ])
        .await
        .unwrap()
}

const READ_ONLY_TOKEN: &str = "test-read-only-token";

/// `api.readonly_token` reads every operator listing and any order, and
/// every action it tries is a 403 that changes nothing.
#[tokio::test]
async fn the_read_only_token_reads_what_the_operator_reads_and_changes_nothing() {
    let app = spawn_app_with(Driver::Postgres, |s| {
        s.api.readonly_token = order_runtime::config::Secret::new(READ_ONLY_TOKEN);
    })
    .await;
    let order = app.order(1, 1, "5.00", 1).await;
    let ids = failures(&app).await;
    let today = Utc::now().date_naive();
    for path in [
        format!("/api/v1/orders/{order}"),
        "/api/v1/users/1/orders".to_owned(),
        "/api/v1/failures".to_owned(),
        format!("/api/v1/failures/{}", ids[0]),
        "/api/v1/events".to_owned(),
        format!("/api/v1/stats/orders?date={today}"),
        "/api/v1/stats/orders?granularity=hour".to_owned(),
    ] {
        let r = app.with_token(READ_ONLY_TOKEN, "GET", &path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    for (method, path, body) in [
        (
            "PUT",
            format!("/api/v1/orders/{order}/status"),
            Some(r#"{"status":"completed"}"#),
        ),
        ("PUT", format!("/api/v1/orders/{order}/cancel"), None),
        ("POST", format!("/api/v1/failures/{}/retry", ids[0]), None),
        (
            "POST",
            format!("/api/v1/failures/{}/resolve", ids[0]),
            Some(r#"{"note":"by hand"}"#),
        ),
        (
            "POST",
            "/api/v1/failures/retry".to_owned(),
            Some(r#"{"status":"pending","limit":10}"#),
        ),
    ] {
        let r = app.with_token(READ_ONLY_TOKEN, method, &path, body).await;
        assert_error(&r, 403, "forbidden");
        assert!(r.body.contains("read-only"), "{method} {path}: {}", r.body);
    }
    let now = app.get(&format!("/api/v1/orders/{order}")).await.json();
    assert_eq!(now["status"], "pending");
    let failure = app
        .get(&format!("/api/v1/failures/{}", ids[0]))
        .await
        .json();
    assert_eq!(
        (failure["status"].as_str(), failure["retry_count"].as_i64()),
        (Some("pending"), Some(0))
    );
    // The operator's token still acts.
    let r = app
        .operator("POST", &format!("/api/v1/failures/{}/retry", ids[0]), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn operators_list_filter_and_read_failures() {
    let app = spawn_app().await;
    let ids = failures(&app).await;
    let all = app.operator("GET", "/api/v1/failures", None).await;
    assert_eq!(all.status, 200, "{}", all.body);
    let all = all.json();
    assert_eq!(all["total"], 2);
    assert_eq!(all["items"][0]["id"], ids[1], "newest first");
    let pending = app
        .operator(
            "GET",
            "/api/v1/failures?status=pending&page=1&pageSize=1",
            None,
        )
        .await
        .json();
    assert_eq!(
        (
            pending["total"].as_i64(),
            pending["items"][0]["id"].as_i64()
        ),
        (Some(1), Some(ids[0]))
    );
    let one = app
        .operator("GET", &format!("/api/v1/failures/{}", ids[1]), None)
        .await
        .json();
    assert_eq!(
        (
            one["status"].as_str(),
            one["retryable"].as_bool(),
            one["source"].as_str()
        ),
        (Some("failed"), Some(false), Some("kafka"))
    );
    assert_error(
        &app.operator("GET", "/api/v1/failures/999999", None).await,
        404,
        "not_found",
    );
    assert_error(
        &app.operator("GET", "/api/v1/failures/abc", None).await,
        400,
        "bad_request",
    );
    assert_error(
        &app.operator("GET", "/api/v1/failures?status=lost", None)
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &app.anonymous("GET", "/api/v1/failures").await,
        401,
        "unauthorized",
    );
}

/// `s` as a query parameter value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Poison failures of two reason groups and two sources, a retryable one,
/// and one whose body and reason are markup.
async fn ledger(app: &TestApp) -> Vec<i64> {
    let now = Utc::now();
    let mut new = Vec::new();
    for (i, price) in ["1.234", "2.345", "3.456"].iter().enumerate() {
        new.push(NewFailure::poison(
            format!(r#"{{"unit_price":"{price}","n":{i}}}"#).as_bytes(),
            format!("unit_price: must have at most 2 decimal places (got {price})"),
            Source::Rabbitmq,
            now,
        ));
    }
    new.push(NewFailure::poison(
        b"{broken",
        "message is not a valid JSON object: expected value at line 1 column 2",
        Source::Kafka,
        now,
    ));
    new.push(NewFailure::retryable(
        br#"{"user_id":3,"product_id":4,"quantity":2,"unit_price":"5.00","seckill_id":"Flash_Sale","timestamp":"2024-01-01T00:00:00Z"}"#,
        "write failed",
        Source::Kafka,
        now + chrono::Duration::hours(1),
    ));
    new.push(NewFailure::poison(
        b"<script>alert(1)</script>",
        "user_id: must be <b>a number</b> (got \"<img src=x onerror=alert(1)>\")",
        Source::Rabbitmq,
        now,
    ));
    app.db.storage.record_failures(&new).await.unwrap()
}

fn ids_of(listing: &Value) -> Vec<i64> {
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect()
}

/// The listing filters on every field, groups by reason and counts by
/// status; a bad filter is a 400 naming the parameter.
#[tokio::test]
async fn operators_filter_group_and_count_failures() {
    let app = spawn_app().await;
    let ids = ledger(&app).await;
    let today = Utc::now().date_naive();
    let list = |query: String| {
        let app = &app;
        async move {
            let r = app.get(&format!("/api/v1/failures?{query}")).await;
            assert_eq!(r.status, 200, "{query}: {}", r.body);
            r.json()
        }
    };
    let all = list(String::new()).await;
    assert_eq!(all["total"], 6);
    for (query, want) in [
        ("source=kafka".to_owned(), vec![ids[4], ids[3]]),
        ("retryable=true".to_owned(), vec![ids[4]]),
        (
            "retryable=false&source=rabbitmq".to_owned(),
            vec![ids[5], ids[2], ids[1], ids[0]],
        ),
        ("status=pending".to_owned(), vec![ids[4]]),
        (
            format!("q={}", enc("DECIMAL")),
            vec![ids[2], ids[1], ids[0]],
        ),
        (format!("q={}", enc("flash_sale")), vec![ids[4]]),
        (format!("q={}", enc("<script>")), vec![ids[5]]),
        (format!("q={}", enc("%")), vec![]),
        (
            format!(
                "reason={}",
                enc("unit_price: must have at most 2 decimal places")
            ),
            vec![ids[2], ids[1], ids[0]],
        ),
        (
            format!("from={today}&to={today}"),
            ids.iter().rev().copied().collect(),
        ),
        (format!("to={}", today.pred_opt().unwrap()), vec![]),
        (
            format!(
                "from={}",
                enc(&(Utc::now() + chrono::Duration::hours(1)).to_rfc3339())
            ),
            vec![],
        ),
        (
            "source=&q=&reason=".to_owned(),
            ids.iter().rev().copied().collect(),
        ),
    ] {
        let found = list(query.clone()).await;
        assert_eq!(ids_of(&found), want, "{query}");
        assert_eq!(found["total"], want.len(), "{query}");
    }

    let grouped = app.get("/api/v1/failures/reasons").await;
    assert_eq!(grouped.status, 200, "{}", grouped.body);
    let grouped = grouped.json();
    assert_eq!(grouped["total"], 6);
    assert_eq!(
        grouped["groups"][0],
        json!({"reason": "unit_price: must have at most 2 decimal places", "count": 3})
    );
    let groups: Vec<&str> = grouped["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["reason"].as_str().unwrap())
        .collect();
    assert!(
        groups.contains(&"message is not a valid JSON object: expected value"),
        "{groups:?}"
    );
    assert!(
        groups.contains(&"user_id: must be <b>a number</b>"),
        "{groups:?}"
    );
    let kafka = app
        .get("/api/v1/failures/reasons?source=kafka&limit=1")
        .await
        .json();
    assert_eq!(
        (
            kafka["total"].as_i64(),
            kafka["groups"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );

    let summary = app.get("/api/v1/failures/summary").await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(
        summary.json(),
        json!({"pending": 1, "processing": 0, "success": 0, "failed": 5, "resolved": 0})
    );

    for query in [
        "q=%00".to_owned(),
        format!("q={}", "x".repeat(201)),
        "q=a%0Ab".to_owned(),
        "retryable=maybe".to_owned(),
        "source=carrier-pigeon".to_owned(),
        "status=lost".to_owned(),
        format!("from={today}&to={}", today.pred_opt().unwrap()),
        "from=0000-01-01".to_owned(),
        "to=yesterday".to_owned(),
        "from=2026-12-01T00:00:00".to_owned(),
        "reason=%07".to_owned(),
        "sort=id".to_owned(),
    ] {
        for path in ["/api/v1/failures", "/api/v1/failures/reasons"] {
            let r = app.get(&format!("{path}?{query}")).await;
            assert_error(&r, 400, "bad_request");
        }
    }
    for bad in ["limit=0", "limit=101", "limit=x", "page=2"] {
        assert_error(
            &app.get(&format!("/api/v1/failures/reasons?{bad}")).await,
            400,
            "bad_request",
        );
    }
    assert_error(
        &app.get("/api/v1/failures/summary?x=1").await,
        400,
        "bad_request",
    );
    for path in ["/api/v1/failures/summary", "/api/v1/failures/reasons"] {
        assert_error(&app.anonymous("GET", path).await, 401, "unauthorized");
        assert_error(&app.as_user(3, "GET", path).await, 403, "forbidden");
    }
}

/// A filter's time range reaches the ends of what a database stores, and
/// past 2038: the end of year 9999 is no bound (MySQL's DATETIME cannot
/// hold a moment after it), and times are compared as DATETIME, not as
/// TIMESTAMP (which ends in 2038).
#[tokio::test]
async fn a_failure_filter_up_to_the_end_of_time_is_answered_on_mysql() {
    let app = spawn_app_with(Driver::Mysql, |_| {}).await;
    let ids = ledger(&app).await;
    for (query, found) in [
        ("to=9999-12-31", ids.len()),
        ("to=9999-12-31T23%3A59%3A59.999999Z", ids.len()),
        ("from=0001-01-01&to=9999-12-31", ids.len()),
        ("from=0001-01-01T00%3A00%3A00Z", ids.len()),
        ("to=2040-01-01", ids.len()),
        ("from=2040-01-01", 0),
        ("to=2000-01-01", 0),
    ] {
        let r = app.get(&format!("/api/v1/failures?{query}")).await;
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        assert_eq!(r.json()["total"], found, "{query}");
    }
}

/// A bulk retry of a filter says first, as a dry run, how many it would
/// take, and then retries only the retryable failures the filter matches.
#[tokio::test]
async fn a_bulk_retry_of_a_filter_counts_first_and_retries_only_what_it_matches() {
    let app = spawn_app().await;
    let due = Utc::now() + chrono::Duration::hours(1);
    let new: Vec<NewFailure> = (1..=6)
        .map(|p| {
            let source = if p % 2 == 0 { Source::Kafka } else { Source::Rabbitmq };
            NewFailure::retryable(
                format!(r#"{{"user_id":9,"product_id":{p},"quantity":1,"unit_price":"1.00","seckill_id":"s{p}","timestamp":"2024-01-01T00:00:00Z"}}"#).as_bytes(),
                if p <= 4 { "database unreachable" } else { "deadlock" },
                source,
                due,
            )
        })
        .collect();
    let ids = app.db.storage.record_failures(&new).await.unwrap();
    let filter = json!({"status": "pending", "source": "kafka", "q": "unreachable"});
    let mut dry = filter.clone();
    dry["dry_run"] = json!(true);
    let r = app
        .operator("POST", "/api/v1/failures/retry", Some(dry.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"dry_run": true, "matched": 2, "limit": 100})
    );
    assert_eq!(
        app.db.count("SELECT COUNT(*) FROM orders").await,
        0,
        "a dry run retries nothing"
    );

    let r = app
        .operator("POST", "/api/v1/failures/retry", Some(filter.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let done = r.json();
    assert_eq!(
        (done["attempted"].as_i64(), done["succeeded"].as_i64()),
        (Some(2), Some(2))
    );
    let retried: Vec<i64> = done["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        retried,
        [ids[3], ids[1]],
        "products 4 and 2: kafka, unreachable"
    );
    let r = app
        .operator("POST", "/api/v1/failures/retry", Some(dry))
        .await;
    assert_eq!(r.json()["matched"], 0);

    // The retried failure shows its history.
    let one = app
        .get(&format!("/api/v1/failures/{}", ids[1]))
        .await
        .json();
    assert_eq!(one["status"], "success");
    let attempts = one["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{one}");
    assert_eq!(attempts[0]["outcome"], "created");
    assert_eq!(attempts[0]["order_id"], one["order_id"]);
    let untouched = app
        .get(&format!("/api/v1/failures/{}", ids[0]))
        .await
        .json();
    assert_eq!(untouched["attempts"], json!([]));

    for bad in [
        json!({"status": "success"}),
        json!({"status": "resolved", "dry_run": true}),
        json!({"retryable": false}),
        json!({"q": ""}),
        json!({"q": "a\u{0}b"}),
        json!({"source": "pigeon"}),
        json!({"from": "2026-12-05", "to": "2026-12-01"}),
        json!({"dry_run": "yes"}),
        json!({"limit": 0, "dry_run": true}),
        json!({"sort": "id"}),
    ] {
        let r = app
            .operator("POST", "/api/v1/failures/retry", Some(bad.clone()))
            .await;
        if bad == json!({"q": ""}) {
            // An empty search is no search, as in the listing.
            assert_eq!(r.status, 200, "{bad}: {}", r.body);
            continue;
        }
        assert_error(&r, 400, "bad_request");
    }
    assert_eq!(
        app.db.count("SELECT COUNT(*) FROM orders").await,
        6,
        "the empty search retried the rest"
    );
}

/// `GET /api/v1/me` names the caller's role, for the console.
#[tokio::test]
async fn me_names_the_callers_role() {
    let app = spawn_app_with(Driver::Postgres, |s| {
        s.api.readonly_token = order_runtime::config::Secret::new(READ_ONLY_TOKEN);
    })
    .await;
    let me = app.get("/api/v1/me").await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(
        me.json(),
        json!({"role": "operator", "may_act": true, "user_id": null})
    );
    let me = app
        .with_token(READ_ONLY_TOKEN, "GET", "/api/v1/me", None)
        .await;
    assert_eq!(
        me.json(),
        json!({"role": "read_only", "may_act": false, "user_id": null})
    );
    let me = app.as_user(42, "GET", "/api/v1/me").await;
    assert_eq!(
        me.json(),
        json!({"role": "user", "may_act": false, "user_id": 42})
    );
    assert_error(
        &app.anonymous("GET", "/api/v1/me").await,
        401,
        "unauthorized",
    );
    assert_error(
        &app.with_token("not-a-token", "GET", "/api/v1/me", None)
            .await,
        401,
        "unauthorized",
    );
}

#[tokio::test]
async fn retrying_a_failure_creates_its_order_then_409s() {
    let app = spawn_app().await;
    let ids = failures(&app).await;
    let r = app
        .operator("POST", &format!("/api/v1/failures/{}/retry", ids[0]), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["outcome"], "created");
    assert_eq!(body["failure"]["status"], "success");
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(body["failure"]["order_id"], order_id);
    assert_eq!(
        app.get(&format!("/api/v1/orders/{order_id}")).await.json()["total_amount"],
        "10.00"
    );

    let again = app
        .operator("POST", &format!("/api/v1/failures/{}/retry", ids[0]), None)
        .await;
    assert_error(&again, 409, "conflict");
    assert!(
        again.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already succeeded")
    );
    let poison = app
        .operator("POST", &format!("/api/v1/failures/{}/retry", ids[1]), None)
        .await;
    assert_error(&poison, 409, "conflict");
    assert!(
        poison.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not retryable")
    );
    assert_error(
        &app.operator("POST", "/api/v1/failures/999999/retry", None)
            .await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn a_failure_being_processed_cannot_be_retried_by_an_operator() {
    let app = spawn_app().await;
    let ids = failures(&app).await;
    let claimed = app
        .db
        .storage
        .claim_failure(ids[0], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(
        claimed,
        order_core::storage::ClaimById::Claimed(..)
    ));
    let r = app
        .operator("POST", &format!("/api/v1/failures/{}/retry", ids[0]), None)
        .await;
    assert_error(&r, 409, "conflict");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("being retried")
    );
}

#[tokio::test]
async fn bulk_retry_retries_pending_failures_up_to_the_limit() {
    let app = spawn_app().await;
    let due = Utc::now() + chrono::Duration::hours(1);
    let messages: Vec<String> = (1..=3)
        .map(|p| format!(r#"{{"user_id":9,"product_id":{p},"quantity":1,"unit_price":1,"seckill_id":"s","timestamp":"2024-01-01T00:00:00Z"}}"#))
        .collect();
    let recorded: Vec<NewFailure> = messages
        .iter()
        .map(|m| NewFailure::retryable(m.as_bytes(), "x", Source::Rabbitmq, due))
        .collect();
    app.db.storage.record_failures(&recorded).await.unwrap();
    let r = app
        .operator(
            "POST",
            "/api/v1/failures/retry",
            Some(json!({"status": "pending", "limit": 2})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(
        (body["attempted"].as_i64(), body["succeeded"].as_i64()),
        (Some(2), Some(2))
    );
    let rest = app
        .operator("POST", "/api/v1/failures/retry", Some(json!({})))
        .await
        .json();
    assert_eq!(rest["succeeded"], 1);
    assert_eq!(app.db.count("SELECT COUNT(*) FROM orders").await, 3);
    for bad in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"status": "success"}),
        json!({"other": 1}),
    ] {
        assert_error(
            &app.operator("POST", "/api/v1/failures/retry", Some(bad))
                .await,
            400,
            "bad_request",
        );
    }
}

order_testkit::on_both_engines!(
    failures_show_their_exact_bytes_size_and_truncation,
    a_retry_through_the_api_uses_the_failures_exact_bytes,
);

/// The bytes `failure["message_data"]` stands for, by its `message_encoding`.
fn shown_bytes(failure: &Value) -> Vec<u8> {
    let data = failure["message_data"].as_str().expect("message_data");
    let encoding = match failure["message_encoding"].as_str() {
        Some("utf8") => Encoding::Utf8,
        Some("base64") => Encoding::Base64,
        other => panic!("message_encoding {other:?} in {failure}"),
    };
    KeptMessage::from_shown(encoding, data).expect("message_data is base64")
}

async fn failures_show_their_exact_bytes_size_and_truncation(driver: Driver) {
    let app = spawn_app_with(driver, |_| {}).await;
    let binary: &[u8] = b"{\"user_id\":\xff\x00}";
    let text = "{\"user_id\":1,\"product_name\":\"a\u{0}b\u{1b}[31mc\"}".as_bytes();
    let mut huge = b"{\"user_id\":1,\"pad\":\"".to_vec();
    huge.resize(100 * 1024 - 2, b'x');
    huge.extend_from_slice(b"\"}");
    let now = Utc::now();
    let ids = app
        .db
        .storage
        .record_failures(&[
            NewFailure::poison(binary, "not UTF-8", Source::Rabbitmq, now),
            NewFailure::poison(text, "control characters", Source::Kafka, now),
            NewFailure::poison_kept(&huge, 1024, "too large", Source::Kafka, now),
        ])
        .await
        .unwrap();
    // (id, kept bytes, encoding, whole size, truncated)
    let expected = [
        (ids[0], binary, "base64", binary.len(), false),
        (ids[1], text, "utf8", text.len(), false),
        (ids[2], &huge[..1024], "utf8", 100 * 1024, true),
    ];
    let listed = app
        .operator("GET", "/api/v1/failures?status=failed&pageSize=100", None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    assert_eq!(listed["total"], 3, "{listed}");
    for (id, kept, encoding, size, truncated) in expected {
        let stored = app.db.storage.get_failure(id).await.unwrap().unwrap();
        assert_eq!(stored.message.bytes, kept, "failure {id} as stored");
        let one = app
            .operator("GET", &format!("/api/v1/failures/{id}"), None)
            .await;
        assert_eq!(one.status, 200, "{}", one.body);
        let mut one = one.json();
        // GET adds the retry history (none here) to what the list shows.
        assert_eq!(one["attempts"], json!([]), "{one}");
        one.as_object_mut().unwrap().remove("attempts");
        let in_list = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("failure {id} not in {listed}"));
        assert_eq!(in_list, &one, "the list shows failure {id} as GET does");
        assert_eq!(one["message_encoding"], encoding, "{one}");
        assert_eq!(shown_bytes(&one), kept, "failure {id}: {one}");
        assert_eq!(one["message_size"].as_u64(), Some(size as u64), "{one}");
        assert_eq!(one["message_truncated"], truncated, "{one}");
    }
    // JSON escapes the control characters of text shown as it is.
    let raw = app
        .operator("GET", &format!("/api/v1/failures/{}", ids[1]), None)
        .await
        .body;
    assert!(raw.contains(r"a\u0000b\u001b[31mc"), "{raw}");

    // The OpenAPI document's FailureRecord schema (GET's answer) names
    // exactly these fields, all required.
    let doc = app.get("/api/v1/openapi.json").await.json();
    let schema = &doc["components"]["schemas"]["FailureRecord"];
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let mut documented: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let one = app
        .operator("GET", &format!("/api/v1/failures/{}", ids[0]), None)
        .await
        .json();
    let mut answered: Vec<&str> = one
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    required.sort_unstable();
    documented.sort_unstable();
    answered.sort_unstable();
    assert_eq!(required, answered);
    assert_eq!(documented, answered);
    assert_eq!(
        schema["properties"]["message_encoding"]["enum"],
        json!(["utf8", "base64"])
    );
}

async fn a_retry_through_the_api_uses_the_failures_exact_bytes(driver: Driver) {
    let app = spawn_app_with(driver, |_| {}).await;
    let message = "{\"user_id\":7,\"product_id\":8,\"quantity\":1,\"unit_price\":\"3.00\",\"seckill_id\":\"s\",\"timestamp\":\"2024-01-01T00:00:00Z\",\"product_name\":\"Caf\u{e9} \u{2615} \\\"x\\\"\"}";
    let due = Utc::now() + chrono::Duration::hours(1);
    let ids = app
        .db
        .storage
        .record_failures(&[NewFailure::retryable(
            message.as_bytes(),
            "write failed",
            Source::Rabbitmq,
            due,
        )])
        .await
        .unwrap();
    let before = app
        .operator("GET", &format!("/api/v1/failures/{}", ids[0]), None)
        .await
        .json();
    assert_eq!(shown_bytes(&before), message.as_bytes(), "{before}");
    let r = app
        .operator("POST", &format!("/api/v1/failures/{}/retry", ids[0]), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["outcome"], "created", "{body}");
    assert_eq!(shown_bytes(&body["failure"]), message.as_bytes(), "{body}");
    assert_eq!(body["failure"]["message_truncated"], false);
    let order = app
        .get(&format!(
            "/api/v1/orders/{}",
            body["order_id"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(
        order["items"][0]["product_name"],
        "Caf\u{e9} \u{2615} \"x\""
    );
}

/// Records the failures the resolve tests use: `(pending, other pending,
/// poison)`, each retryable one a distinct valid purchase, due in an hour.
async fn failures_to_resolve(app: &TestApp) -> (i64, i64, i64) {
    let due = Utc::now() + chrono::Duration::hours(1);
    let message = |product: i64| {
        format!(
            r#"{{"user_id":21,"product_id":{product},"quantity":1,"unit_price":"2.00","seckill_id":"s","timestamp":"2024-01-01T00:00:00Z"}}"#
        )
    };
    let ids = app
        .db
        .storage
        .record_failures(&[
            NewFailure::retryable(message(1).as_bytes(), "write failed", Source::Rabbitmq, due),
            NewFailure::retryable(message(2).as_bytes(), "write failed", Source::Kafka, due),
            NewFailure::poison(b"{broken", "not JSON", Source::Kafka, Utc::now()),
        ])
        .await
        .unwrap();
    (ids[0], ids[1], ids[2])
}

async fn a_failure_resolved_by_hand_keeps_its_note_and_is_never_retried_again(driver: Driver) {
    let app = spawn_app_with(driver, |_| {}).await;
    let (resolved, other, poison) = failures_to_resolve(&app).await;
    let path = format!("/api/v1/failures/{resolved}/resolve");
    let series = "failures_resolved_by_hand_total{previous_status=\"pending\"}";
    let counted_before = counter(&app, series).await;

    let r = app
        .operator(
            "POST",
            &path,
            Some(json!({"note": "  refunded by hand, OPS-1 "})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["id"], resolved, "{body}");
    assert_eq!(body["status"], "resolved", "{body}");
    assert_eq!(body["resolution_note"], "refunded by hand, OPS-1", "{body}");
    assert!(counter(&app, series).await > counted_before);
    let shown = app
        .operator("GET", &format!("/api/v1/failures/{resolved}"), None)
        .await
        .json();
    // GET adds the retry history: resolving by hand is not a retry.
    assert_eq!(shown["attempts"], json!([]), "{shown}");
    let mut record = shown.clone();
    record.as_object_mut().unwrap().remove("attempts");
    assert_eq!(record, body, "GET shows it as the resolve answered");

    // Never retried again: not by id, not in bulk.
    let retry = app
        .operator("POST", &format!("/api/v1/failures/{resolved}/retry"), None)
        .await;
    assert_error(&retry, 409, "conflict");
    assert!(
        retry.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resolved by hand"),
        "{}",
        retry.body
    );
    for status in ["pending", "failed"] {
        let bulk = app
            .operator(
                "POST",
                "/api/v1/failures/retry",
                Some(json!({"status": status})),
            )
            .await;
        assert_eq!(bulk.status, 200, "{}", bulk.body);
        let bulk = bulk.json();
        assert!(
            bulk["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["id"] != resolved),
            "{bulk}"
        );
        if status == "pending" {
            assert_eq!(
                (
                    bulk["attempted"].as_i64(),
                    bulk["results"][0]["id"].as_i64()
                ),
                (Some(1), Some(other)),
                "the other pending failure is retried: {bulk}"
            );
        }
    }
    assert_eq!(
        app.operator("GET", &format!("/api/v1/failures/{resolved}"), None)
            .await
            .json(),
        shown,
        "untouched by the retries"
    );
    assert_eq!(app.db.count("SELECT COUNT(*) FROM orders").await, 1);

    // Kept for the record, listed by status.
    let listed = app
        .operator("GET", "/api/v1/failures?status=resolved", None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["items"][0], body, "{listed}");
    let all = app.operator("GET", "/api/v1/failures", None).await.json();
    for item in all["items"].as_array().unwrap() {
        if item["id"] != resolved {
            assert_eq!(item["resolution_note"], Value::Null, "{item}");
        }
    }

    // Again (a retried request): 200, the record as it is, the first note kept.
    let again = app
        .operator("POST", &path, Some(json!({"note": "another note"})))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json(), body);

    // A poison (failed) one may be resolved too.
    let r = app
        .operator(
            "POST",
            &format!("/api/v1/failures/{poison}/resolve"),
            Some(json!({"note": "bad publisher build, fixed"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["status"].as_str(), r.json()["retryable"].as_bool()),
        (Some("resolved"), Some(false))
    );
}

async fn resolving_by_hand_refuses_failures_in_progress_or_succeeded_and_bad_requests(
    driver: Driver,
) {
    let app = spawn_app_with(driver, |_| {}).await;
    let (processing, succeeded, _) = failures_to_resolve(&app).await;
    let note = json!({"note": "closing it"});
    let resolve = |id: i64| format!("/api/v1/failures/{id}/resolve");

    // Being retried right now.
    assert!(matches!(
        app.db
            .storage
            .claim_failure(processing, Duration::from_secs(60))
            .await
            .unwrap(),
        order_core::storage::ClaimById::Claimed(..)
    ));
    let r = app
        .operator("POST", &resolve(processing), Some(note.clone()))
        .await;
    assert_error(&r, 409, "conflict");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("being retried"),
        "{}",
        r.body
    );
    // Already succeeded: its order exists.
    let retried = app
        .operator("POST", &format!("/api/v1/failures/{succeeded}/retry"), None)
        .await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let r = app
        .operator("POST", &resolve(succeeded), Some(note.clone()))
        .await;
    assert_error(&r, 409, "conflict");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already succeeded"),
        "{}",
        r.body
    );
    for id in [processing, succeeded] {
        let f = app.db.storage.get_failure(id).await.unwrap().unwrap();
        assert_eq!(f.resolution_note, None, "failure {id} unchanged");
    }

    // A bad note: 400 naming it; nothing changes.
    let pending = app
        .db
        .storage
        .record_failures(&[NewFailure::retryable(
            b"{\"user_id\":1}",
            "x",
            Source::Api,
            Utc::now() + chrono::Duration::hours(1),
        )])
        .await
        .unwrap()[0];
    for bad in [
        json!({}),
        json!({"note": null}),
        json!({"note": ""}),
        json!({"note": " \n\t "}),
        json!({"note": "x".repeat(1001)}),
        json!({"note": 5}),
        json!({"note": "a\u{0}b"}),
        json!({"note": "ok", "other": 1}),
    ] {
        let r = app
            .operator("POST", &resolve(pending), Some(bad.clone()))
            .await;
        assert_error(&r, 400, "bad_request");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("note"),
            "{bad}: {}",
            r.body
        );
    }
    for raw in [None, Some("not json"), Some("[]"), Some("\"note\"")] {
        let r = app.with_token(TOKEN, "POST", &resolve(pending), raw).await;
        assert_error(&r, 400, "bad_request");
    }
    assert_eq!(
        app.db
            .storage
            .get_failure(pending)
            .await
            .unwrap()
            .unwrap()
            .status,
        FailureStatus::Pending
    );

    // Who may, and which failure.
    let anonymous = http::request(
        app.addr,
        "POST",
        &resolve(pending),
        &[],
        Some(note.to_string().as_bytes()),
    )
    .await;
    assert_error(&anonymous, 401, "unauthorized");
    let user_token = order_api::auth::mint(&app.settings.api, 1, Duration::from_secs(300)).unwrap();
    let as_user = app
        .with_token(
            &user_token,
            "POST",
            &resolve(pending),
            Some(&note.to_string()),
        )
        .await;
    assert_error(&as_user, 403, "forbidden");
    assert_error(
        &app.operator("POST", &resolve(999_999), Some(note.clone()))
            .await,
        404,
        "not_found",
    );
    assert_error(
        &app.operator("POST", "/api/v1/failures/abc/resolve", Some(note.clone()))
            .await,
        400,
        "bad_request",
    );
    assert_eq!(
        app.db
            .storage
            .get_failure(pending)
            .await
            .unwrap()
            .unwrap()
            .status,
        FailureStatus::Pending
    );

    // The longest note is taken as it is.
    let longest = "\u{e9}".repeat(1000);
    let r = app
        .operator("POST", &resolve(pending), Some(json!({"note": longest})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["resolution_note"], longest);
}

#[tokio::test]
async fn a_failure_resolved_by_hand_keeps_its_note_and_is_never_retried_again_postgres() {
    a_failure_resolved_by_hand_keeps_its_note_and_is_never_retried_again(Driver::Postgres).await;
}

#[tokio::test]
async fn a_failure_resolved_by_hand_keeps_its_note_and_is_never_retried_again_mysql() {
    a_failure_resolved_by_hand_keeps_its_note_and_is_never_retried_again(Driver::Mysql).await;
}

#[tokio::test]
async fn resolving_by_hand_refuses_failures_in_progress_or_succeeded_and_bad_requests_postgres() {
    resolving_by_hand_refuses_failures_in_progress_or_succeeded_and_bad_requests(Driver::Postgres)
        .await;
}

#[tokio::test]
async fn resolving_by_hand_refuses_failures_in_progress_or_succeeded_and_bad_requests_mysql() {
    resolving_by_hand_refuses_failures_in_progress_or_succeeded_and_bad_requests(Driver::Mysql)
        .await;
}

// ---- the rest -----------------------------------------------------------

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_as_json() {
    let app = spawn_app().await;
    assert_error(&app.get("/api/v1/nothing").await, 404, "not_found");
    let r = http::request(
        app.addr,
        "DELETE",
        &format!("/api/v1/orders/{}", Uuid::now_v7()),
        &[],
        None,
    )
    .await;
    assert_error(&r, 405, "method_not_allowed");
}

#[tokio::test]
async fn health_live_and_ready_answer() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/health/live").await.json(),
        json!({"status": "ok"})
    );
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(
        ready.json(),
        json!({"status": "ok", "checks": {"database": "up", "redis": "up"}})
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let app = spawn_app().await;
    let id = Uuid::now_v7();
    app.get(&format!("/api/v1/orders/{id}")).await;
    let (status, text) = http::get(app.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total")
            && l.contains("route=\"/api/v1/orders/{orderId}\"")
            && l.contains("status=\"404\"")),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("db_pool_connections"), "{text}");
}

#[tokio::test]
async fn the_openapi_document_is_served_and_describes_every_route() {
    let app = spawn_app().await;
    let r = app.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = order_api::routes::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
    // Every documented route answers something other than "no such endpoint".
    for (method, path) in &served {
        let concrete = path
            .replace("{orderId}", &Uuid::now_v7().to_string())
            .replace("{userId}", "1")
            .replace("{failureId}", "1");
        let r = http::request(app.addr, method, &concrete, &[], None).await;
        assert!(
            !(r.status == 404 && r.body.contains("no such endpoint")) && r.status != 405,
            "{method} {concrete}: {} {}",
            r.status,
            r.body
        );
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off_after_the_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(Driver::Postgres, |s| {
        s.server.read_timeout = Duration::from_millis(300)
    })
    .await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server kept a half-sent request open");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // Meanwhile complete requests are served as usual.
    assert_eq!(app.get("/health/live").await.status, 200);
}

#[tokio::test]
async fn with_the_cache_disabled_orders_come_from_the_database_and_health_has_no_redis_check() {
    let app = spawn_app_with(Driver::Postgres, |s| s.redis.enabled = false).await;
    let id = app.order(1, 1, "1", 1).await;
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}")).await.json()["status"],
        "pending"
    );
    assert_eq!(
        app.cache.get(id).await,
        Cached::Unknown,
        "nothing was written to Redis"
    );
    assert_eq!(
        app.get("/health").await.json(),
        json!({"status": "ok", "checks": {"database": "up"}})
    );
}

// ---- who may do what ----------------------------------------------------

async fn users_see_and_cancel_only_their_own_orders(driver: Driver) {
    let app = spawn_app_with(driver, |_| {}).await;
    let mine = app.order(1, 10, "1.00", 1).await;
    let theirs = app.order(2, 10, "1.00", 1).await;

    let r = app
        .as_user(1, "GET", &format!("/api/v1/orders/{mine}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user_id"], 1);
    // Another user's order is 404, read from the database or from the cache.
    for _ in 0..2 {
        assert_error(
            &app.as_user(1, "GET", &format!("/api/v1/orders/{theirs}"))
                .await,
            404,
            "not_found",
        );
        assert_eq!(
            app.get(&format!("/api/v1/orders/{theirs}")).await.status,
            200
        );
    }
    assert_eq!(
        app.as_user(1, "GET", "/api/v1/users/1/orders").await.status,
        200
    );
    let list = app
        .as_user(1, "GET", "/api/v1/users/1/orders?cursor=")
        .await;
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 1);
    for path in ["/api/v1/users/2/orders", "/api/v1/users/2/orders?cursor="] {
        assert_error(&app.as_user(1, "GET", path).await, 403, "forbidden");
    }
    assert_error(
        &app.as_user(1, "PUT", &format!("/api/v1/orders/{theirs}/cancel"))
            .await,
        404,
        "not_found",
    );
    assert_eq!(
        app.storage.get_order(theirs).await.unwrap().unwrap().status,
        OrderStatus::Pending
    );
    let cancelled = app
        .as_user(1, "PUT", &format!("/api/v1/orders/{mine}/cancel"))
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["status"], "cancelled");
}

#[tokio::test]
async fn users_see_and_cancel_only_their_own_orders_postgres() {
    users_see_and_cancel_only_their_own_orders(Driver::Postgres).await;
}

#[tokio::test]
async fn users_see_and_cancel_only_their_own_orders_mysql() {
    users_see_and_cancel_only_their_own_orders(Driver::Mysql).await;
}

fn sign(claims: &Value, secret: &str, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn unsigned(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

async fn bad_tokens_are_401_on_every_user_endpoint(driver: Driver) {
    let app = spawn_app_with(driver, |s| {
        s.api.auth.audience = "order-service".into();
        s.api.auth.issuer = "shop".into();
    })
    .await;
    let id = app.order(1, 10, "1.00", 1).await;
    let now = Utc::now().timestamp();
    let good = json!({"sub": "1", "exp": now + 600, "aud": "order-service", "iss": "shop"});
    let hs = jsonwebtoken::Algorithm::HS256;
    let tokens = [
        (
            "expired",
            sign(
                &json!({"sub": "1", "exp": now - 600, "aud": "order-service", "iss": "shop"}),
                JWT_SECRET,
                hs,
            ),
        ),
        (
            "wrong signature",
            sign(&good, "another-secret-of-at-least-32-bytes!", hs),
        ),
        (
            "wrong audience",
            sign(
                &json!({"sub": "1", "exp": now + 600, "aud": "elsewhere", "iss": "shop"}),
                JWT_SECRET,
                hs,
            ),
        ),
        (
            "wrong issuer",
            sign(
                &json!({"sub": "1", "exp": now + 600, "aud": "order-service", "iss": "evil"}),
                JWT_SECRET,
                hs,
            ),
        ),
        (
            "no expiry",
            sign(
                &json!({"sub": "1", "aud": "order-service", "iss": "shop"}),
                JWT_SECRET,
                hs,
            ),
        ),
        (
            "HS512",
            sign(&good, JWT_SECRET, jsonwebtoken::Algorithm::HS512),
        ),
        ("alg none", unsigned(&good)),
        ("not a JWT", "definitely-not-a-token".to_owned()),
    ];
    let paths = [
        ("GET", format!("/api/v1/orders/{id}")),
        ("PUT", format!("/api/v1/orders/{id}/cancel")),
        ("GET", "/api/v1/users/1/orders".to_owned()),
    ];
    for (method, path) in &paths {
        assert_error(&app.anonymous(method, path).await, 401, "unauthorized");
        for (what, token) in &tokens {
            let r = app.with_token(token, method, path, None).await;
            assert_eq!(r.status, 401, "{what} on {method} {path}: {}", r.body);
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
        let ok = app
            .with_token(&sign(&good, JWT_SECRET, hs), method, path, None)
            .await;
        assert_eq!(
            ok.status, 200,
            "the good token on {method} {path}: {}",
            ok.body
        );
    }
    assert_eq!(
        app.storage.get_order(id).await.unwrap().unwrap().status,
        OrderStatus::Cancelled,
        "only the good token's cancel went through"
    );
}

#[tokio::test]
async fn bad_tokens_are_401_on_every_user_endpoint_postgres() {
    bad_tokens_are_401_on_every_user_endpoint(Driver::Postgres).await;
}

#[tokio::test]
async fn bad_tokens_are_401_on_every_user_endpoint_mysql() {
    bad_tokens_are_401_on_every_user_endpoint(Driver::Mysql).await;
}

async fn the_operator_does_everything_and_users_none_of_the_operator_endpoints(driver: Driver) {
    let app = spawn_app_with(driver, |_| {}).await;
    let a = app.order(1, 10, "1.00", 1).await;
    let b = app.order(2, 10, "1.00", 1).await;
    let today = Utc::now().date_naive();
    let operator_only = [
        (
            "PUT",
            format!("/api/v1/orders/{a}/status"),
            Some(json!({"status": "completed"})),
        ),
        ("GET", "/api/v1/failures".to_owned(), None),
        ("GET", "/api/v1/failures/1".to_owned(), None),
        ("POST", "/api/v1/failures/1/retry".to_owned(), None),
        ("POST", "/api/v1/failures/retry".to_owned(), Some(json!({}))),
        ("GET", format!("/api/v1/stats/orders?date={today}"), None),
    ];
    let user_token = order_api::auth::mint(&app.settings.api, 1, Duration::from_secs(300)).unwrap();
    for (method, path, body) in &operator_only {
        let body = body.as_ref().map(Value::to_string);
        let r = app
            .with_token(&user_token, method, path, body.as_deref())
            .await;
        assert_error(&r, 403, "forbidden");
        let anonymous = http::request(
            app.addr,
            method,
            path,
            &[],
            body.as_deref().map(str::as_bytes),
        )
        .await;
        assert_error(&anonymous, 401, "unauthorized");
    }
    assert_eq!(
        app.storage.get_order(a).await.unwrap().unwrap().status,
        OrderStatus::Pending
    );
    // The operator: any order, any list, any action.
    for id in [a, b] {
        assert_eq!(app.get(&format!("/api/v1/orders/{id}")).await.status, 200);
    }
    for user in [1, 2] {
        assert_eq!(
            app.get(&format!("/api/v1/users/{user}/orders"))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        app.put(&format!("/api/v1/orders/{b}/cancel"), None)
            .await
            .status,
        200
    );
    for (method, path, body) in operator_only {
        let r = app.operator(method, &path, body).await;
        assert!(
            [200, 404].contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(
        app.storage.get_order(a).await.unwrap().unwrap().status,
        OrderStatus::Completed
    );
}

#[tokio::test]
async fn the_operator_does_everything_and_users_none_of_the_operator_endpoints_postgres() {
    the_operator_does_everything_and_users_none_of_the_operator_endpoints(Driver::Postgres).await;
}

#[tokio::test]
async fn the_operator_does_everything_and_users_none_of_the_operator_endpoints_mysql() {
    the_operator_does_everything_and_users_none_of_the_operator_endpoints(Driver::Mysql).await;
}

#[tokio::test]
async fn with_auth_mode_none_anyone_reads_and_cancels_but_operator_endpoints_still_need_the_token()
{
    let app = spawn_app_with(Driver::Postgres, |s| {
        s.api.auth.mode = order_runtime::config::AuthMode::None;
        s.api.auth.jwt_secret = order_runtime::config::Secret::default();
    })
    .await;
    let id = app.order(1, 10, "1.00", 1).await;
    assert_eq!(
        app.anonymous("GET", &format!("/api/v1/orders/{id}"))
            .await
            .status,
        200
    );
    assert_eq!(
        app.anonymous("GET", "/api/v1/users/1/orders").await.status,
        200
    );
    assert_eq!(
        app.anonymous("PUT", &format!("/api/v1/orders/{id}/cancel"))
            .await
            .status,
        200
    );
    assert_error(
        &app.anonymous("GET", "/api/v1/failures").await,
        401,
        "unauthorized",
    );
}

// ---- bounded work -------------------------------------------------------

/// An exclusive lock on `orders`, held from a connection of its own until
/// released.
struct OrdersLock {
    release: tokio::sync::oneshot::Sender<()>,
    released: tokio::task::JoinHandle<()>,
}

impl OrdersLock {
    /// Every statement reading `orders` or the statistics rollups waits
    /// meanwhile: a stand-in for a query that takes as long as the test
    /// likes.
    async fn take(app: &TestApp) -> Self {
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
        let storage = Storage::connect(&app.db.settings).unwrap();
        let released = tokio::spawn(async move {
            match &storage {
                Storage::Postgres(pg) => {
                    let mut tx = pg.pool().begin().await.unwrap();
                    sqlx::query(
                        "LOCK TABLE orders, order_stats_daily, order_stats_hourly IN ACCESS EXCLUSIVE MODE",
                    )
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    let _ = locked_tx.send(());
                    let _ = release_rx.await;
                    tx.rollback().await.unwrap();
                }
                Storage::Mysql(my) => {
                    let mut conn = my.pool().acquire().await.unwrap();
                    sqlx::query(
                        "LOCK TABLES orders WRITE, order_stats_daily WRITE, order_stats_hourly WRITE",
                    )
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                    let _ = locked_tx.send(());
                    let _ = release_rx.await;
                    sqlx::query("UNLOCK TABLES")
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                }
            }
            storage.close().await;
        });
        locked_rx.await.unwrap();
        Self { release, released }
    }

    async fn release(self) {
        let _ = self.release.send(());
        self.released.await.unwrap();
    }
}

async fn slow_stats_cannot_starve_the_rest_of_the_api(driver: Driver) {
    let app = spawn_app_with(driver, |s| {
        s.database.max_connections = 4;
        s.database.acquire_timeout = Duration::from_secs(3);
        s.api.statement_timeout = Duration::from_millis(500);
        s.server.write_timeout = Duration::from_secs(10);
    })
    .await;
    let today = Utc::now().date_naive();
    let lock = OrdersLock::take(&app).await;
    let mut stats = Vec::new();
    for i in 0..12 {
        let (addr, path) = (
            app.addr,
            format!(
                "/api/v1/stats/orders?from={}&to={today}{}",
                today - chrono::Duration::days(365),
                ["", "&granularity=day"][i % 2]
            ),
        );
        stats.push(tokio::spawn(async move {
            let auth = format!("Bearer {TOKEN}");
            http::request(addr, "GET", &path, &[("Authorization", &auth)], None).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for path in ["/health/ready", "/api/v1/failures"] {
        let started = std::time::Instant::now();
        let r = app.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} took {:?} while stats queries were stuck",
            started.elapsed()
        );
    }
    for call in stats {
        let r = call.await.unwrap();
        assert_error(&r, 503, "timeout");
    }
    lock.release().await;
}

#[tokio::test]
async fn slow_stats_cannot_starve_the_rest_of_the_api_postgres() {
    slow_stats_cannot_starve_the_rest_of_the_api(Driver::Postgres).await;
}

#[tokio::test]
async fn slow_stats_cannot_starve_the_rest_of_the_api_mysql() {
    slow_stats_cannot_starve_the_rest_of_the_api(Driver::Mysql).await;
}

#[tokio::test]
async fn unknown_methods_are_counted_as_other() {
    let app = spawn_app().await;
    for method in ["BREW", "X-PROBE-1", "X-PROBE-2"] {
        let r = http::request(app.addr, method, "/health/live", &[], None).await;
        assert_ne!(r.status, 200);
    }
    let (_, text) = http::get(app.addr, "/metrics").await;
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(
        !text.contains("X-PROBE") && !text.contains("BREW"),
        "{text}"
    );
}

// ---- the cache is never stale ---------------------------------------------

/// An API whose database answers arrive `delay` late (through a proxy), on
/// the same database and cache keys as `app`: a replica whose reads are slow.
async fn slow_replica(app: &TestApp) -> (SocketAddr, FaultProxy, tokio::sync::oneshot::Sender<()>) {
    let proxy = FaultProxy::start(app.db.server_addr()).await;
    let mut settings = app.settings.clone();
    settings.database = app.db.settings_via(proxy.addr());
    settings.database.max_connections = 1;
    let storage =
        Storage::connect_with(&settings.database, Some(settings.api.statement_timeout)).unwrap();
    let replica = Application::build(&settings, storage).await.unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], replica.port()).into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(replica.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (addr, proxy, stop)
}

async fn a_slow_read_cannot_put_an_old_status_back_in_the_cache(driver: Driver) {
    let app = spawn_app_with(driver, |_| {}).await;
    let id = app.order(1, 10, "1.00", 1).await;
    let (slow, proxy, _stop) = slow_replica(&app).await;
    let auth = format!("Bearer {TOKEN}");
    // Warm the replica's one connection, then slow its answers down.
    let warm = http::request(
        slow,
        "GET",
        &format!("/api/v1/orders/{}", Uuid::now_v7()),
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(warm.status, 404, "{}", warm.body);
    proxy.delay_answers(Duration::from_millis(1500));

    // The slow replica reads the pending order: as soon as the database has
    // answered that read (the proxy sees the row go by), the other replica
    // cancels it. The slow read's answer, then its items query's, each arrive
    // 1.5 s late: its fill comes well after the change and its invalidation
    // (and after a second delete a second later).
    let row_read = proxy.watch_answers(b"pending");
    let reader = tokio::spawn({
        let auth = auth.clone();
        async move {
            http::request(
                slow,
                "GET",
                &format!("/api/v1/orders/{id}"),
                &[("Authorization", &auth)],
                None,
            )
            .await
        }
    });
    tokio::time::timeout(Duration::from_secs(20), row_read)
        .await
        .expect("the slow replica reads the order")
        .unwrap();
    let cancelled = app.put(&format!("/api/v1/orders/{id}/cancel"), None).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let read = reader.await.unwrap();
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(
        read.json()["status"],
        "pending",
        "the slow read saw the order before the change (the race this test is about)"
    );
    proxy.delay_answers(Duration::ZERO);

    for _ in 0..3 {
        let now = app.get(&format!("/api/v1/orders/{id}")).await;
        assert_eq!(
            now.json()["status"],
            "cancelled",
            "a stale copy is served: {}",
            now.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Cached::Hit(order) = app.cache.get(id).await {
        assert_eq!(order.status, OrderStatus::Cancelled);
    }
}

#[tokio::test]
async fn a_slow_read_cannot_put_an_old_status_back_in_the_cache_postgres() {
    a_slow_read_cannot_put_an_old_status_back_in_the_cache(Driver::Postgres).await;
}

#[tokio::test]
async fn a_slow_read_cannot_put_an_old_status_back_in_the_cache_mysql() {
    a_slow_read_cannot_put_an_old_status_back_in_the_cache(Driver::Mysql).await;
}

// ---- HTTP manners ---------------------------------------------------------

#[tokio::test]
async fn wrong_methods_are_405_naming_the_allowed_ones_in_allow() {
    let app = spawn_app().await;
    let order = format!("/api/v1/orders/{}", Uuid::now_v7());
    for (method, path, allow) in [
        ("DELETE", order.clone(), "GET"),
        ("POST", format!("{order}/status"), "PUT"),
        ("GET", format!("{order}/cancel"), "PUT"),
        ("PUT", "/api/v1/failures".to_owned(), "GET"),
        ("GET", "/api/v1/failures/7/retry".to_owned(), "POST"),
        ("POST", "/api/v1/stats/orders".to_owned(), "GET"),
        ("DELETE", "/health".to_owned(), "GET"),
    ] {
        let r = app.operator(method, &path, None).await;
        assert_error(&r, 405, "method_not_allowed");
        assert_eq!(
            r.header("allow"),
            Some(allow),
            "{method} {path}: {:?}",
            r.headers
        );
    }
    // An unknown path stays 404, whatever the method.
    assert_error(
        &app.operator("DELETE", "/api/v1/nothing", None).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn a_repeated_query_parameter_is_400_naming_it() {
    let app = spawn_app().await;
    for (path, name) in [
        ("/api/v1/users/1/orders?page=1&page=2", "\"page\""),
        (
            "/api/v1/users/1/orders?pageSize=5&status=pending&pageSize=5",
            "\"pageSize\"",
        ),
        (
            "/api/v1/failures?status=pending&status=failed",
            "\"status\"",
        ),
        (
            "/api/v1/stats/orders?date=2024-01-01&date=2024-01-02",
            "\"date\"",
        ),
    ] {
        let r = app.get(path).await;
        assert_error(&r, 400, "bad_request");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(name), "{path}: {message}");
    }
    // Given once, the same parameters are fine.
    assert_eq!(app.get("/api/v1/users/1/orders?page=1").await.status, 200);
}

#[tokio::test]
async fn setting_the_status_an_order_already_has_answers_200_and_changes_nothing() {
    let app = spawn_app().await;
    let id = app.order(1, 1, "1", 1).await;
    let path = format!("/api/v1/orders/{id}/status");
    let same = app.put(&path, Some(json!({"status": "pending"}))).await;
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.json()["status"], "pending");
    assert_eq!(same.json()["version"], 0, "nothing was written");

    let first = app.put(&path, Some(json!({"status": "completed"}))).await;
    assert_eq!(first.status, 200, "{}", first.body);
    // A retried PUT gets the answer of the first.
    let retried = app.put(&path, Some(json!({"status": "completed"}))).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.json(), first.json());
    // A different move from there is still refused.
    assert_error(
        &app.put(&path, Some(json!({"status": "pending"}))).await,
        409,
        "conflict",
    );
}

#[tokio::test]
async fn a_request_without_a_body_is_read_as_an_empty_one_not_411() {
    let app = spawn_app().await;
    // Bulk retry takes an optional body: none means the defaults.
    let r = app.operator("POST", "/api/v1/failures/retry", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["attempted"], 0);
    // A status change needs one: a 400 that says so, not a 411.
    let id = app.order(1, 1, "1", 1).await;
    let r = app
        .operator("PUT", &format!("/api/v1/orders/{id}/status"), None)
        .await;
    assert_error(&r, 400, "bad_request");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no body"),
        "{}",
        r.body
    );
    // Cancel and retry-one take none at all.
    let r = app
        .operator("PUT", &format!("/api/v1/orders/{id}/cancel"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Sends `body` chunked (no Content-Length) and returns the status line.
async fn post_chunked(app: &TestApp, path: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for part in body.chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        request.extend_from_slice(part);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_chunked_body_is_read_up_to_the_limit_and_refused_past_it() {
    let app = spawn_app_with(Driver::Postgres, |s| s.api.max_body_bytes = 2000).await;
    let fits = post_chunked(&app, "/api/v1/failures/retry", br#"{"limit": 5}"#).await;
    assert!(fits.contains(" 200 "), "{fits}");
    let padding = " ".repeat(3000);
    let big = format!(r#"{{"limit": 5{padding}}}"#);
    let refused = post_chunked(&app, "/api/v1/failures/retry", big.as_bytes()).await;
    assert!(refused.contains(" 413 "), "{refused}");
}

async fn changes_through_the_api_write_events_that_operators_list(driver: Driver) {
    let app = spawn_app_with(driver, |_| {}).await;
    let mine = app.order(1, 10, "1.00", 1).await;
    let other = app.order(2, 10, "2.50", 3).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let token = order_api::auth::mint(&app.settings.api, 1, Duration::from_secs(300)).unwrap();
    let auth = format!("Bearer {token}");
    let r = http::request(
        app.addr,
        "PUT",
        &format!("/api/v1/orders/{mine}/cancel"),
        &[("Authorization", &auth), ("traceparent", trace)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Cancelling again changes nothing and writes nothing.
    let again = app
        .as_user(1, "PUT", &format!("/api/v1/orders/{mine}/cancel"))
        .await;
    assert_eq!(again.status, 200);
    let r = app
        .put(
            &format!("/api/v1/orders/{other}/status"),
            Some(json!({"status": "completed"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A refused change (completed → cancelled) writes none either.
    assert_eq!(
        app.put(&format!("/api/v1/orders/{other}/cancel"), None)
            .await
            .status,
        409
    );

    let all = app.get("/api/v1/events").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let items = all.json()["items"].as_array().unwrap().clone();
    let kinds: Vec<&str> = items
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "order.created",
            "order.created",
            "order.cancelled",
            "order.completed"
        ]
    );
    assert_eq!(all.json()["next_after"], Value::Null);
    let cancelled = &items[2];
    assert_eq!(cancelled["status"], "pending");
    let continued = cancelled["traceparent"].as_str().unwrap();
    assert_eq!(continued[..36], trace[..36], "the request's trace");
    assert_ne!(continued, trace, "a span of the API's own");
    assert_eq!(cancelled["event"]["type"], "order.cancelled");
    assert_eq!(cancelled["event"]["id"], cancelled["id"]);
    assert_eq!(cancelled["event"]["traceparent"], continued);
    assert_eq!(
        cancelled["event"]["data"]["reason"],
        "cancelled by the buyer"
    );
    assert_eq!(cancelled["event"]["data"]["user_id"], 1);
    assert_eq!(
        items[3]["event"]["data"]["reason"],
        "set to completed by an operator"
    );
    assert_eq!(items[3]["event"]["data"]["total_amount"], "7.50");

    let of_other = app.get(&format!("/api/v1/events?orderId={other}")).await;
    assert_eq!(of_other.json()["items"].as_array().unwrap().len(), 2);
    let page = app.get("/api/v1/events?pageSize=3").await;
    assert_eq!(page.json()["items"].as_array().unwrap().len(), 3);
    let next = page.json()["next_after"].as_i64().unwrap();
    let rest = app.get(&format!("/api/v1/events?after={next}")).await;
    assert_eq!(rest.json()["items"][0]["event_type"], "order.completed");
    assert_eq!(
        app.get("/api/v1/events?status=published").await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    for bad in [
        "/api/v1/events?status=sent",
        "/api/v1/events?orderId=42",
        "/api/v1/events?after=-1",
        "/api/v1/events?pageSize=0",
        "/api/v1/events?order=1",
    ] {
        assert_error(&app.get(bad).await, 400, "bad_request");
    }
    assert_error(
        &app.as_user(1, "GET", "/api/v1/events").await,
        403,
        "forbidden",
    );
}

#[tokio::test]
async fn changes_through_the_api_write_events_that_operators_list_postgres() {
    changes_through_the_api_write_events_that_operators_list(Driver::Postgres).await;
}

#[tokio::test]
async fn changes_through_the_api_write_events_that_operators_list_mysql() {
    changes_through_the_api_write_events_that_operators_list(Driver::Mysql).await;
}
