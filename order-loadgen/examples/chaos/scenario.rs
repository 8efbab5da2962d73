//! The scenario: the stack started, the stream published while workers are
//! killed and the database, the broker and Redis are cut, the API read
//! during the Redis cut and sent hostile requests, then the checks and the
//! report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use order_testkit::proxy::FaultProxy;
use order_testkit::{TestDatabase, http};

use crate::api_inputs;
use crate::api_reads::{read_orders, sample_orders};
use crate::auth::Auth;
use crate::broker::BrokerUnderTest;
use crate::checks::{check, database_checks, settle};
use crate::events;
use crate::settings::{GRACE, environment};
use crate::stack::{End, Role, Stack};
use crate::{Cli, Run, say, secs};

#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
pub async fn scenario(
    cli: &Cli,
    run: &Run,
    db: &TestDatabase,
    db_proxy: &FaultProxy,
    redis_proxy: &FaultProxy,
    broker: &BrokerUnderTest,
) -> anyhow::Result<bool> {
    let Run {
        id: run_id,
        log_dir,
        seed,
        timing,
        messages,
        burst,
        expected,
    } = run;
    let (seed, timing) = (*seed, *timing);

    // ------------------------------------------------------------- stack ---
    let token = format!("chaos-{run_id}");
    let auth = Auth::new(&token, run_id);
    let env = environment(
        db.settings_via(db_proxy.addr()).url.expose(),
        broker,
        cli.redis,
        redis_proxy.addr(),
        run_id,
        &auth,
    );
    // The run's order events, consumed from before anything is written.
    let received = events::Received::collect(broker.subscribe_events().await?);
    let mut stack = Stack::new(&cli.bin_dir, log_dir, env)?;
    for (name, role) in [
        ("worker-1", Role::Worker),
        ("worker-2", Role::Worker),
        ("compensator-1", Role::Compensator),
        ("compensator-2", Role::Compensator),
        ("api", Role::Api),
    ] {
        stack.start(name, role).await?;
    }
    for name in [
        "worker-1",
        "worker-2",
        "compensator-1",
        "compensator-2",
        "api",
    ] {
        stack
            .wait_healthy(name, "/health/ready", Duration::from_secs(60))
            .await?;
    }
    say("stack ready: 2 workers, 2 compensators, 1 API");

    // ------------------------------------------------ the stream, faults ---
    let started = Instant::now();
    let publisher =
        tokio::spawn(broker.publish(messages.clone(), timing.rate, burst.clone(), started));
    let pause = timing.pause;

    tokio::time::sleep(pause).await;
    say(format!(
        "{:>5.1}s  SIGKILL worker-1 (1 of 3)",
        secs(started)
    ));
    crash_and_restart(&mut stack, "worker-1", pause / 2).await?;
    stack
        .wait_healthy("worker-1", "/health/live", Duration::from_secs(30))
        .await?;

    tokio::time::sleep(pause).await;
    say(format!(
        "{:>5.1}s  database cut for {:?}",
        secs(started),
        timing.db_cut
    ));
    db_proxy.cut();
    tokio::time::sleep(timing.db_cut / 2).await;
    // A pod rescheduled during the outage: it must wait for the database.
    say(format!(
        "{:>5.1}s  SIGKILL worker-2 (2 of 3), started again during the cut",
        secs(started)
    ));
    stack.kill("worker-2")?;
    stack.launch("worker-2", Role::Worker)?;
    tokio::time::sleep(timing.db_cut / 2).await;
    db_proxy.heal();
    say(format!("{:>5.1}s  database healed", secs(started)));
    stack.attach("worker-2", Duration::from_secs(60)).await?;
    stack
        .wait_healthy("worker-2", "/health/live", Duration::from_secs(30))
        .await?;
    say(format!("{:>5.1}s  worker-2 up", secs(started)));

    tokio::time::sleep(pause).await;
    say(format!(
        "{:>5.1}s  broker cut for {:?}",
        secs(started),
        timing.broker_cut
    ));
    broker.proxy.cut();
    tokio::time::sleep(timing.broker_cut).await;
    broker.proxy.heal();
    say(format!("{:>5.1}s  broker healed", secs(started)));

    tokio::time::sleep(pause).await;
    // After the faults so far (on Kafka each kill costs a rebalance), the
    // first orders may still be on their way.
    let mut sample = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sample.len() < 20 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "fewer than 20 orders committed {:.0} s into the run",
            secs(started)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        sample = sample_orders(db, messages).await?;
    }
    let api = stack.addr("api");
    for (id, order) in &sample {
        let bearer = auth.user_bearer(order);
        let r = http::request(
            api,
            "GET",
            &format!("/api/v1/orders/{id}"),
            &[("Authorization", &bearer)],
            None,
        )
        .await;
        anyhow::ensure!(
            r.status == 200,
            "warming the cache: {} {}",
            r.status,
            r.body
        );
    }
    say(format!(
        "{:>5.1}s  Redis cut for the API for {:?}, reading {} orders meanwhile",
        secs(started),
        timing.redis_cut,
        sample.len()
    ));
    redis_proxy.cut();
    let cut_at = Instant::now();
    let reading = Arc::new(AtomicBool::new(true));
    let reader = tokio::spawn(read_orders(
        api,
        sample.clone(),
        auth.clone(),
        reading.clone(),
    ));
    tokio::time::sleep(timing.redis_cut / 3).await;
    say(format!(
        "{:>5.1}s  SIGTERM compensator-1, start compensator-3",
        secs(started)
    ));
    let compensator_exit = stack.terminate("compensator-1", GRACE).await;
    stack.start("compensator-3", Role::Compensator).await?;
    tokio::time::sleep(timing.redis_cut.saturating_sub(cut_at.elapsed())).await;
    reading.store(false, Ordering::Relaxed);
    let reads = reader.await.context("the reader")?;
    redis_proxy.heal();
    say(format!("{:>5.1}s  Redis healed", secs(started)));
    if let Err(e) = compensator_exit {
        say(format!("compensator-1: {e:#}"));
    }

    tokio::time::sleep(pause).await;
    say(format!(
        "{:>5.1}s  SIGKILL worker-1 (3 of 3)",
        secs(started)
    ));
    crash_and_restart(&mut stack, "worker-1", pause / 2).await?;

    let ends = publisher
        .await
        .context("the publisher")?
        .context("publishing")?;
    say(format!(
        "{:>5.1}s  all {} messages published",
        secs(started),
        expected.sent
    ));

    // ------------------------------------------------------- quiescence ---
    let quiet = settle(db, expected, broker, &ends, timing.settle, &mut stack).await;
    say(format!(
        "{:>5.1}s  {}",
        secs(started),
        match &quiet {
            Ok(()) => "quiescent".to_owned(),
            Err(e) => format!("not quiescent: {e:#}"),
        }
    ));
    let drained = broker.drained(&ends).await;

    // ------------------------------------------------- hostile requests ---
    let (order_id, user_id) = sample.first().map_or_else(
        || (uuid::Uuid::nil().to_string(), 1),
        |(id, order)| (id.clone(), order["user_id"].as_i64().unwrap_or(1)),
    );
    let hostile = api_inputs::run(api, &auth, &order_id, user_id).await;
    let api_healthy = http::try_request(api, "GET", "/health/ready", &[], None)
        .await
        .is_ok_and(|r| r.status == 200);

    // ----------------------------------------------------- order events ---
    // Buyers cancel some orders, then every order still unpaid expires.
    let mut cancelled_by_buyers = 0;
    for (id, order) in sample.iter().take(10) {
        let bearer = auth.user_bearer(order);
        let r = http::try_request(
            api,
            "PUT",
            &format!("/api/v1/orders/{id}/cancel"),
            &[("Authorization", &bearer)],
            None,
        )
        .await;
        if r.is_ok_and(|r| r.status == 200) {
            cancelled_by_buyers += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expiry = stack
        .run_once(
            "expire-all",
            Role::Compensator,
            &["run-once", "expire-unpaid"],
            &[("ORDER__ORDERS__PAYMENT_TIMEOUT", "1s")],
        )
        .await;
    say(format!(
        "{:>5.1}s  {cancelled_by_buyers} orders cancelled by their buyers, the unpaid rest expired{}",
        secs(started),
        expiry
            .as_ref()
            .err()
            .map_or_else(String::new, |e| format!(" (expiry failed: {e:#})"))
    ));
    let events_settled = events::settle(db, &received, timing.settle).await;
    say(format!(
        "{:>5.1}s  order events {}",
        secs(started),
        match &events_settled {
            Ok(()) => "all published and received".to_owned(),
            Err(e) => format!("not settled: {e:#}"),
        }
    ));

    stack.reap();
    stack.stop_all(GRACE).await;

    // ------------------------------------------------------------ checks ---
    let mut checks = database_checks(db, expected).await;
    checks.push(check(
        "buyers' cancellations and the expiry of the rest went through",
        format!(
            "{cancelled_by_buyers} of {} cancelled; expiry {}",
            sample.len().min(10),
            expiry
                .as_ref()
                .map_or_else(|e| format!("failed: {e:#}"), |()| "ran".to_owned())
        ),
        cancelled_by_buyers == sample.len().min(10) && expiry.is_ok(),
    ));
    match events::checks(db, &received).await {
        Ok(more) => checks.extend(more),
        Err(e) => checks.push(check("order events", format!("{e:#}"), false)),
    }
    if let Err(e) = &events_settled {
        checks.push(check("order events settled", format!("{e:#}"), false));
    }
    checks.push(match drained {
        Ok(figure) => check(broker.drained_what(), figure, true),
        Err(e) => check(broker.drained_what(), format!("{e:#}"), false),
    });
    let bad_reads: Vec<&String> = reads.wrong.iter().take(3).collect();
    checks.push(check(
        "every API read during the Redis cut: 200 and the order as stored",
        format!(
            "{}/{} right{}",
            reads.right,
            reads.right + reads.wrong.len(),
            if bad_reads.is_empty() {
                String::new()
            } else {
                format!("; e.g. {bad_reads:?}")
            }
        ),
        reads.wrong.is_empty() && reads.right > 0,
    ));
    let refused: Vec<String> = hostile
        .iter()
        .filter(|o| !o.is_ok())
        .map(|o| format!("{}: {:?}", o.name, o.answer))
        .collect();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in &hostile {
        let status = outcome
            .answer
            .as_ref()
            .map_or_else(|_| "no answer".to_owned(), u16::to_string);
        *statuses.entry(status).or_default() += 1;
    }
    let statuses: Vec<String> = statuses
        .iter()
        .map(|(status, n)| format!("{status}×{n}"))
        .collect();
    checks.push(check(
        "hostile API requests answered without a 5xx",
        format!(
            "{}/{} ({}){}",
            hostile.len() - refused.len(),
            hostile.len(),
            statuses.join(", "),
            if refused.is_empty() {
                String::new()
            } else {
                format!("; {refused:?}")
            }
        ),
        refused.is_empty(),
    ));
    checks.push(check(
        "the API is ready after them",
        if api_healthy { "200" } else { "not 200" },
        api_healthy,
    ));
    let unexpected: Vec<String> = stack
        .ended
        .iter()
        .filter(|(_, end)| !end.is_expected())
        .map(|(name, end)| format!("{name}: {end}"))
        .collect();
    let killed = stack
        .ended
        .iter()
        .filter(|(_, end)| matches!(end, End::Killed))
        .count();
    checks.push(check(
        "no process exited non-zero except the killed ones",
        format!(
            "{} ended: {killed} killed, {} exit 0 on SIGTERM{}",
            stack.ended.len(),
            stack.ended.len() - killed - unexpected.len(),
            if unexpected.is_empty() {
                String::new()
            } else {
                format!("; unexpected: {unexpected:?}")
            }
        ),
        unexpected.is_empty() && killed == 3,
    ));
    if let Err(e) = &quiet {
        checks.push(check("quiescence", format!("{e:#}"), false));
    }

    println!();
    let width = checks.iter().map(|c| c.what.len()).max().unwrap_or(0);
    for c in &checks {
        println!(
            "{}  {:width$}  {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.what,
            c.figure
        );
    }
    let ok = checks.iter().all(|c| c.ok);
    println!();
    say(format!(
        "{} in {:.0} s ({} messages, seed {seed}, logs in {})",
        if ok {
            "all invariants hold"
        } else {
            "INVARIANTS BROKEN"
        },
        secs(started),
        expected.sent,
        log_dir.display()
    ));
    Ok(ok)
}

/// SIGKILL a worker and start it again after `pause`, as Kubernetes would.
async fn crash_and_restart(stack: &mut Stack, name: &str, pause: Duration) -> anyhow::Result<()> {
    stack.kill(name)?;
    tokio::time::sleep(pause).await;
    stack.start(name, Role::Worker).await
}
