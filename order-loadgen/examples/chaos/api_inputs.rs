//! Hostile REST requests: path traversal in ids, SQL metacharacters in every
//! parameter, huge page numbers, overlong headers and URLs, forged tokens.
//! None may be answered with a 5xx, and the API must stay healthy after them
//! all. End-user requests are sent with the token of the user whose data they
//! name, so that they reach the parameter parsing behind authentication.

use std::net::SocketAddr;

use order_testkit::http;

use crate::auth::Auth;

/// One request and what came back.
#[derive(Debug)]
pub struct Outcome {
    /// What the request tries.
    pub name: String,
    /// The status, or why there was none.
    pub answer: Result<u16, String>,
}

impl Outcome {
    /// A 2xx–4xx answer. A connection closed without an answer counts as
    /// a failure too: the client deserves a clear error.
    pub fn is_ok(&self) -> bool {
        matches!(self.answer, Ok(status) if status < 500)
    }
}

struct Probe {
    name: String,
    method: &'static str,
    path: String,
    operator: bool,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

fn get(name: &str, path: impl Into<String>) -> Probe {
    Probe {
        name: name.to_owned(),
        method: "GET",
        path: path.into(),
        operator: false,
        headers: Vec::new(),
        body: None,
    }
}

fn operator(mut probe: Probe) -> Probe {
    probe.operator = true;
    probe
}

const SQL: [&str; 5] = [
    "1'%20OR%20'1'%3D'1",
    "1%3B%20DROP%20TABLE%20orders%3B--",
    "'%20UNION%20SELECT%20*%20FROM%20order_failures--",
    "1%22%20OR%20%221%22%3D%221",
    "%5C'%3B%20SELECT%20pg_sleep(10)%3B--",
];

fn probes(order_id: &str, user_id: i64) -> Vec<Probe> {
    let mut probes = vec![
        get(
            "path traversal in an order id",
            "/api/v1/orders/../../etc/passwd",
        ),
        get(
            "encoded path traversal in an order id",
            "/api/v1/orders/..%2F..%2F..%2Fetc%2Fpasswd",
        ),
        get(
            "double-encoded path traversal",
            "/api/v1/orders/%252e%252e%252fetc%252fpasswd",
        ),
        get("NUL byte in an order id", "/api/v1/orders/abc%00def"),
        get("invalid UTF-8 in an order id", "/api/v1/orders/%ff%fe%fd"),
        get("path traversal in a user id", "/api/v1/users/..%2F1/orders"),
        get(
            "huge page number",
            format!("/api/v1/users/{user_id}/orders?page=99999999999999999999999999&pageSize=10"),
        ),
        get(
            "page at i64::MAX",
            format!("/api/v1/users/{user_id}/orders?page=9223372036854775807&pageSize=100"),
        ),
        get(
            "page at u32::MAX",
            format!("/api/v1/users/{user_id}/orders?page=4294967295&pageSize=100"),
        ),
        get(
            "negative page",
            format!("/api/v1/users/{user_id}/orders?page=-1"),
        ),
        get(
            "huge pageSize",
            format!("/api/v1/users/{user_id}/orders?pageSize=18446744073709551616"),
        ),
        get(
            "user id beyond 64 bits",
            "/api/v1/users/99999999999999999999/orders",
        ),
        get(
            "user id at i64::MAX",
            "/api/v1/users/9223372036854775807/orders",
        ),
        operator(get(
            "stats over the widest dates",
            "/api/v1/stats/orders?from=0000-01-01&to=9999-12-31",
        )),
        operator(get(
            "stats with out-of-range years",
            "/api/v1/stats/orders?from=-262144-01-01&to=%2B262143-12-31",
        )),
        operator(get(
            "failures page beyond 64 bits",
            "/api/v1/failures?page=99999999999999999999&pageSize=100",
        )),
        operator(get(
            "failure id beyond 64 bits",
            "/api/v1/failures/99999999999999999999",
        )),
        operator(Probe {
            name: "retry of a negative failure id".into(),
            method: "POST",
            ..get("", "/api/v1/failures/-1/retry")
        }),
        get(
            "overlong URL (100 KiB order id)",
            format!("/api/v1/orders/{}", "a".repeat(100 * 1024)),
        ),
        get(
            "overlong query (100 KiB)",
            format!("/api/v1/users/1/orders?status={}", "p".repeat(100 * 1024)),
        ),
        Probe {
            headers: vec![("X-Padding".into(), "h".repeat(100 * 1024))],
            ..get("one 100 KiB header", "/health/live")
        },
        Probe {
            headers: (0..500)
                .map(|i| (format!("X-Header-{i}"), "v".repeat(64)))
                .collect(),
            ..get("500 headers", format!("/api/v1/orders/{order_id}"))
        },
        Probe {
            headers: vec![(
                "Authorization".into(),
                format!("Bearer {}", "t".repeat(70_000)),
            )],
            ..get("a 70 KB bearer token", "/api/v1/failures")
        },
        Probe {
            headers: vec![("Authorization".into(), "Bearer ' OR 1=1--".into())],
            ..get("SQL in the bearer token", "/api/v1/failures")
        },
        operator(Probe {
            method: "PUT",
            body: Some(br#"{"status":"completed'; DROP TABLE orders;--"}"#.to_vec()),
            ..get(
                "SQL in a status body",
                format!("/api/v1/orders/{order_id}/status"),
            )
        }),
        operator(Probe {
            method: "PUT",
            body: Some(vec![b'{'; 1024 * 1024]),
            ..get("1 MiB body", format!("/api/v1/orders/{order_id}/status"))
        }),
        operator(Probe {
            method: "PUT",
            body: Some(b"{\"status\":\"compl\xff\xfeted\"}".to_vec()),
            ..get(
                "invalid UTF-8 body",
                format!("/api/v1/orders/{order_id}/status"),
            )
        }),
    ];
    for sql in SQL {
        probes.push(get("SQL in an order id", format!("/api/v1/orders/{sql}")));
        probes.push(Probe {
            method: "PUT",
            ..get(
                "SQL in an order id (cancel)",
                format!("/api/v1/orders/{sql}/cancel"),
            )
        });
        probes.push(get(
            "SQL in a user id",
            format!("/api/v1/users/{sql}/orders"),
        ));
        probes.push(get(
            "SQL in page",
            format!("/api/v1/users/{user_id}/orders?page={sql}"),
        ));
        probes.push(get(
            "SQL in pageSize",
            format!("/api/v1/users/{user_id}/orders?pageSize={sql}"),
        ));
        probes.push(get(
            "SQL in status",
            format!("/api/v1/users/{user_id}/orders?status={sql}"),
        ));
        probes.push(operator(get(
            "SQL in date",
            format!("/api/v1/stats/orders?date={sql}"),
        )));
        probes.push(operator(get(
            "SQL in from and to",
            format!("/api/v1/stats/orders?from={sql}&to={sql}"),
        )));
        probes.push(operator(get(
            "SQL in a failures filter",
            format!("/api/v1/failures?status={sql}&page={sql}&pageSize={sql}"),
        )));
        probes.push(operator(get(
            "SQL in a failure id",
            format!("/api/v1/failures/{sql}"),
        )));
        probes.push(operator(Probe {
            method: "POST",
            ..get(
                "SQL in a failure id (retry)",
                format!("/api/v1/failures/{sql}/retry"),
            )
        }));
    }
    probes
}

/// Sends every probe to the API at `addr`; `order_id` and `user_id` name
/// real data. Operator probes carry the operator token, the others the
/// token of `user_id`, unless they bring an `Authorization` of their own.
pub async fn run(addr: SocketAddr, auth: &Auth, order_id: &str, user_id: i64) -> Vec<Outcome> {
    let (operator, user) = (auth.operator_bearer(), auth.bearer_of(user_id));
    let mut outcomes = Vec::new();
    for probe in probes(order_id, user_id)
        .into_iter()
        .chain(token_probes(auth, order_id, user_id))
    {
        let mut headers: Vec<(&str, &str)> = probe
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        {
            headers.push((
                "Authorization",
                if probe.operator { &operator } else { &user },
            ));
        }
        let answer = http::try_request(
            addr,
            probe.method,
            &probe.path,
            &headers,
            probe.body.as_deref(),
        )
        .await
        .map(|r| r.status)
        .map_err(|e| format!("no answer: {e}"));
        outcomes.push(Outcome {
            name: probe.name,
            answer,
        });
    }
    outcomes
}

/// Tokens that must be refused, and another user's data.
fn token_probes(auth: &Auth, order_id: &str, user_id: i64) -> Vec<Probe> {
    let with = |name: &str, path: String, bearer: String| Probe {
        headers: vec![("Authorization".into(), bearer)],
        ..get(name, path)
    };
    let user = auth.bearer_of(user_id);
    let (_, signature) = user.rsplit_once('.').unwrap_or_default();
    let header_and_claims = user
        .trim_start_matches("Bearer ")
        .rsplit_once('.')
        .map_or("", |(h, _)| h);
    vec![
        with(
            "a token with its signature cut off",
            format!("/api/v1/orders/{order_id}"),
            format!("Bearer {header_and_claims}."),
        ),
        with(
            "a token whose signature is another's",
            format!("/api/v1/orders/{order_id}"),
            format!("Bearer e30.e30.{signature}"),
        ),
        with(
            "another user's list",
            format!("/api/v1/users/{}/orders", user_id + 1),
            user.clone(),
        ),
        with(
            "an end user on an operator endpoint",
            "/api/v1/failures".to_owned(),
            user,
        ),
        with(
            "a 70 KB JWT-looking token",
            format!("/api/v1/orders/{order_id}"),
            format!(
                "Bearer {}.{}.{}",
                "e".repeat(35_000),
                "x".repeat(35_000),
                "y"
            ),
        ),
    ]
}
