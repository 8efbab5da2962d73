//! `order-http-rate`: GET requests at a fixed rate, latency percentiles.
//!
//! wrk sends as fast as the server answers, so it cannot say what latency
//! clients see at a given load. This tool schedules request `i` at
//! `start + i / rate` over a pool of keep-alive connections, and measures
//! each latency from its scheduled time (so a stalled server is not hidden
//! by requests that were never sent: no coordinated omission). Paths are
//! taken round-robin from a file, one per line, each prefixed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Sends GET requests at a fixed rate and prints latency percentiles as JSON.
#[derive(Debug, Parser)]
#[command(name = "order-http-rate", version)]
struct Cli {
    /// The server, e.g. 127.0.0.1:8082
    #[arg(long)]
    addr: SocketAddr,
    /// Requests per second
    #[arg(long)]
    rate: u32,
    /// How long to send, e.g. 20s
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Keep-alive connections
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// A file of path suffixes, one per line (default: the prefix alone); a
    /// line may add a header of its own after a tab: `<path>\t<Name: value>`
    #[arg(long)]
    paths: Option<PathBuf>,
    /// Put before every path
    #[arg(long, default_value = "/")]
    prefix: String,
    /// An extra request header, `Name: value` (repeatable), e.g. an Authorization
    #[arg(long = "header")]
    headers: Vec<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(report) => {
            #[allow(clippy::print_stdout)]
            {
                let _ = order_runtime::output::line(&report.to_string());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            order_runtime::output::error_line(&format!(
                "error: {}",
                order_runtime::telemetry::error_chain(e.as_ref())
            ));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        cli.rate > 0 && cli.connections > 0,
        "rate and connections must be > 0"
    );
    let check = |header: &str| {
        anyhow::ensure!(
            header.contains(':') && !header.contains(['\r', '\n']),
            "a header must read `Name: value`, got {header:?}"
        );
        Ok(format!("{header}\r\n"))
    };
    let mut extra = String::new();
    for header in &cli.headers {
        extra.push_str(&check(header)?);
    }
    // (path, the headers sent with it)
    let paths: Vec<(String, String)> = match &cli.paths {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("read {}", file.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match l.split_once('\t') {
                Some((path, header)) => Ok((
                    format!("{}{}", cli.prefix, path.trim()),
                    format!("{extra}{}", check(header.trim())?),
                )),
                None => Ok((format!("{}{}", cli.prefix, l.trim()), extra.clone())),
            })
            .collect::<anyhow::Result<_>>()?,
        None => vec![(cli.prefix.clone(), extra)],
    };
    anyhow::ensure!(!paths.is_empty(), "no paths");
    let total = (cli.duration.as_secs_f64() * f64::from(cli.rate)).ceil();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let total = total as u64;
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs(1) / cli.rate;
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cli.connections {
        let (paths, next, addr) = (paths.clone(), next.clone(), cli.addr);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0_u64;
            let mut conn: Option<BufReader<TcpStream>> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return (latencies, errors);
                }
                let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due).await;
                #[allow(clippy::cast_possible_truncation)]
                let (path, extra) = &paths[(i % paths.len() as u64) as usize];
                let ok = match conn.take() {
                    Some(c) => get(c, addr, path, extra).await,
                    None => match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            get(BufReader::new(s), addr, path, extra).await
                        }
                        Err(e) => Err(e.into()),
                    },
                };
                match ok {
                    Ok(c) => {
                        latencies.push(due.elapsed());
                        conn = Some(c);
                    }
                    Err(_) => errors += 1,
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done?;
        latencies.extend(l);
        errors += e;
    }
    let took = start.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies
            .get(at - 1)
            .map_or(0.0, |d| (d.as_secs_f64() * 1e6).round() / 1e3)
    };
    #[allow(clippy::cast_precision_loss)]
    let achieved = latencies.len() as f64 / took.as_secs_f64();
    Ok(serde_json::json!({
        "rate": cli.rate,
        "sent": total,
        "ok": latencies.len(),
        "errors": errors,
        "achieved_rate": achieved.round(),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    }))
}

/// One keep-alive GET; the connection back when the answer was a 200.
async fn get(
    mut conn: BufReader<TcpStream>,
    addr: SocketAddr,
    path: &str,
    extra_headers: &str,
) -> anyhow::Result<BufReader<TcpStream>> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}\r\n");
    conn.get_mut().write_all(head.as_bytes()).await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut length = 0_usize;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    anyhow::ensure!(status == "200", "status {status}");
    Ok(conn)
}
