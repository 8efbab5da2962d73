use super::*;

#[tokio::test]
async fn all_checks_up_is_ok() {
    let report = HealthChecks::new()
        .with("a", true, || async { true })
        .with("b", false, || async { true })
        .run()
        .await;
    assert_eq!((report.status, report.http_status()), ("ok", 200));
    assert_eq!(report.checks["a"], "up");
}

#[tokio::test]
async fn a_failing_optional_check_is_degraded_but_200() {
    let report = HealthChecks::new()
        .with("db", true, || async { true })
        .with("redis", false, || async { false })
        .run()
        .await;
    assert_eq!((report.status, report.http_status()), ("degraded", 200));
    assert_eq!(report.checks["redis"], "down");
}

#[tokio::test]
async fn a_failing_critical_check_is_down_and_503() {
    let report = HealthChecks::new()
        .with("redis", false, || async { false })
        .with("db", true, || async { false })
        .run()
        .await;
    assert_eq!((report.status, report.http_status()), ("down", 503));
}

/// The names of the metrics recorded in the workspace's sources: the
/// string after each `counter!(`, `gauge!(` or `histogram!(`.
fn recorded_metric_names() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir()
                && !name.starts_with('.')
                && !["target", "node_modules", "fuzz"].contains(&name.as_str())
            {
                dirs.push(path);
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    let mut names = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                if let Some(quoted) = rest.strip_prefix('"') {
                    let name = &quoted[..quoted.find('"').unwrap()];
                    // A metric name, not this scanner's own strings.
                    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    {
                        names.push(name.to_owned());
                    }
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_recorded_metric_has_help_text() {
    let names = recorded_metric_names();
    assert!(names.len() > 20, "the scan found {names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !METRICS.iter().any(|(m, _, _)| m == n))
        .collect();
    assert!(
        missing.is_empty(),
        "add these to METRICS with a help text: {missing:?}"
    );
    for (name, _, help) in METRICS {
        assert!(!help.is_empty(), "{name}");
    }
}

#[test]
fn the_rendered_metrics_carry_help_and_build_info() {
    let handle = install_metrics("order-test");
    metrics::counter!("orders_created_total", "source" => "test").increment(0);
    let text = handle.render();
    assert!(
        text.contains("# HELP orders_created_total Orders created"),
        "{text}"
    );
    assert!(
        text.contains("order_service_build_info{role=\"order-test\",version=\""),
        "{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
}

#[tokio::test]
async fn probe_ports_answer_json_errors_and_allow_on_405() {
    use order_testkit::http;
    let stop = CancellationToken::new();
    let (addr, server) = serve(
        "127.0.0.1",
        0,
        HealthChecks::new().with("ok", true, || async { true }),
        None,
        stop.clone(),
    )
    .await
    .unwrap();
    let nowhere = http::request(addr, "GET", "/nowhere", &[], None).await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.header("content-type"), Some("application/json"));
    assert_eq!(nowhere.json()["error"]["code"], "not_found");
    for path in PROBE_PATHS {
        let wrong = http::request(addr, "POST", path, &[], None).await;
        assert_eq!(wrong.status, 405, "{path}");
        assert_eq!(wrong.header("allow"), Some("GET, HEAD"), "{path}");
        assert_eq!(wrong.json()["error"]["code"], "method_not_allowed");
        let head = http::request(addr, "HEAD", path, &[], None).await;
        assert_eq!(head.status, 200, "HEAD {path}");
    }
    let live = http::request(addr, "GET", "/health/live", &[], None).await;
    assert_eq!(
        (live.status, live.json()["status"].as_str()),
        (200, Some("ok"))
    );
    stop.cancel();
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_check_that_hangs_counts_as_down() {
    let report = HealthChecks::new()
        .with("db", true, std::future::pending::<bool>)
        .run()
        .await;
    assert_eq!(report.status, "down");
}
