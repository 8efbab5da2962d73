//! Connection handling of the API server: connections that do nothing are
//! closed (`server.read_timeout` for the first request, `server.idle_timeout`
//! between requests) and at most `server.max_connections` are open at once.
//! Against a real database and Redis, spawned on port 0, with small timeouts.
//! Only `/health/live` is called.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use order_api::Application;
use order_core::storage::Storage;
use order_runtime::config::{AuthMode, Driver, Settings};
use order_testkit::{TestDatabase, redis_settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 5;
/// Scheduling slack on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(900);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];
/// A SETTINGS frame with the ACK flag.
const H2_SETTINGS_ACK: &[u8] = &[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0];
const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n";
const LIVE_BODY: &str = r#"{"status":"ok"}"#;

struct TestApp {
    addr: SocketAddr,
    _db: TestDatabase,
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
    let db = TestDatabase::new(Driver::Postgres).await;
    let mut settings = Settings {
        database: db.settings.clone(),
        redis: redis_settings(),
        ..Settings::default()
    };
    settings.server.port = 0;
    settings.server.read_timeout = READ_TIMEOUT;
    settings.server.idle_timeout = IDLE_TIMEOUT;
    settings.server.max_connections = MAX_CONNECTIONS;
    settings.api.auth.mode = AuthMode::None;
    let storage = Storage::connect(&settings.database).unwrap();
    let app = Application::build(&settings, storage).await.unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], app.port()).into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        _db: db,
        stop: Some(stop),
    }
}

/// Reads and discards until the peer closes (read returns 0 or fails);
/// returns how long that took from `since`, or `None` if it did not happen
/// within `within`.
async fn time_to_close(
    stream: &mut TcpStream,
    since: Instant,
    within: Duration,
) -> Option<Duration> {
    let mut buf = [0_u8; 4096];
    let deadline = tokio::time::Instant::from_std(since + within);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Asserts the connection is closed by the server between `at_least` and
/// `at_least + MARGIN` after `since`.
async fn assert_closed_after(stream: &mut TcpStream, since: Instant, at_least: Duration) {
    let took = time_to_close(stream, since, at_least + MARGIN)
        .await
        .unwrap_or_else(|| panic!("still open {:?} after", at_least + MARGIN));
    assert!(
        took + Duration::from_millis(50) >= at_least,
        "closed after {took:?}, before {at_least:?}"
    );
}

/// Reads one HTTP/1 response with a `content-length`; returns status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read a response");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..end];
        let status = head[9..12].parse().expect("a status code");
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().expect("a length"))
            })
            .expect("a content-length");
        if got.len() >= end + 4 + length {
            return (status, text[end + 4..end + 4 + length].to_string());
        }
    }
}

/// One HTTP/1 keep-alive request on `stream`.
async fn live(stream: &mut TcpStream) -> (u16, String) {
    stream.write_all(LIVE).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), read_response(stream))
        .await
        .expect("a response in time")
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_read_timeout() {
    let app = spawn_app().await;
    let opened = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    assert_closed_after(&mut stream, opened, READ_TIMEOUT).await;
}

#[tokio::test]
async fn a_connection_that_sends_only_a_partial_request_line_is_closed_after_read_timeout() {
    let app = spawn_app().await;
    let opened = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /health/li").await.unwrap();
    assert_closed_after(&mut stream, opened, READ_TIMEOUT).await;
}

#[tokio::test]
async fn a_connection_that_sends_only_part_of_the_http2_preface_is_closed_after_read_timeout() {
    let app = spawn_app().await;
    let opened = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(&H2_PREFACE[..10]).await.unwrap();
    assert_closed_after(&mut stream, opened, READ_TIMEOUT).await;
}

#[tokio::test]
async fn a_connection_that_sends_only_the_http2_preface_is_closed_after_read_timeout() {
    let app = spawn_app().await;
    let opened = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    assert_closed_after(&mut stream, opened, READ_TIMEOUT).await;
}

#[tokio::test]
async fn a_connection_that_sends_the_http2_preface_and_settings_but_no_request_is_closed_after_read_timeout()
 {
    let app = spawn_app().await;
    let opened = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    stream.write_all(H2_SETTINGS).await.unwrap();
    stream.write_all(H2_SETTINGS_ACK).await.unwrap();
    assert_closed_after(&mut stream, opened, READ_TIMEOUT).await;
}

#[tokio::test]
async fn an_http1_keep_alive_connection_is_closed_after_idle_timeout_not_read_timeout() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(live(&mut stream).await.0, 200);
    let answered = Instant::now();
    assert_closed_after(&mut stream, answered, IDLE_TIMEOUT).await;
}

#[tokio::test]
async fn an_http1_keep_alive_connection_in_use_stays_open_past_idle_timeout() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let opened = Instant::now();
    // Gaps longer than read_timeout, shorter than idle_timeout.
    let gap = IDLE_TIMEOUT * 7 / 10;
    assert!(gap > READ_TIMEOUT);
    for _ in 0..4 {
        assert_eq!(live(&mut stream).await, (200, LIVE_BODY.to_owned()));
        tokio::time::sleep(gap).await;
    }
    assert_eq!(live(&mut stream).await.0, 200);
    assert!(opened.elapsed() > IDLE_TIMEOUT * 2);
}

#[tokio::test]
async fn at_max_connections_the_next_client_waits_until_one_closes_then_clients_are_served() {
    let app = spawn_app().await;
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // The kernel completes the handshake; the server does not accept it yet.
    let mut waiting = TcpStream::connect(app.addr).await.unwrap();
    waiting.write_all(LIVE).await.unwrap();
    let (status, _) = tokio::time::timeout(READ_TIMEOUT + MARGIN * 2, read_response(&mut waiting))
        .await
        .expect("served once the silent connections are closed");
    let served_after = opened.elapsed();
    assert_eq!(status, 200);
    assert!(
        served_after >= READ_TIMEOUT - Duration::from_millis(50),
        "served after {served_after:?}, before a slot was free"
    );
    for mut stream in silent {
        assert!(
            time_to_close(&mut stream, opened, READ_TIMEOUT + MARGIN)
                .await
                .is_some(),
            "a silent connection is closed by now"
        );
    }
    // Slots are free again: new clients are served at once.
    let mut clients = Vec::new();
    for _ in 0..MAX_CONNECTIONS - 1 {
        let started = Instant::now();
        let mut client = TcpStream::connect(app.addr).await.unwrap();
        assert_eq!(live(&mut client).await.0, 200);
        assert!(
            started.elapsed() < READ_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
        clients.push(client);
    }
}

#[tokio::test]
async fn http1_requests_are_served() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(live(&mut stream).await, (200, LIVE_BODY.to_owned()));
    assert_eq!(live(&mut stream).await, (200, LIVE_BODY.to_owned()));
}

/// Writes one HTTP/2 frame.
async fn write_frame(stream: &mut TcpStream, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await.unwrap();
}

/// Reads one HTTP/2 frame: (type, flags, stream id, payload); `None` when
/// the server closed the connection.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0_u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0_u8; length];
    stream.read_exact(&mut payload).await.ok()?;
    let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream_id, payload))
}

#[tokio::test]
async fn an_http2_connection_is_served_then_closed_after_idle_timeout_even_while_answering_pings() {
    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const END_STREAM: u8 = 0x1;
    const ACK: u8 = 0x1;
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    write_frame(&mut stream, SETTINGS, 0, 0, &[]).await;
    // GET /health/live, HPACK without Huffman: :method GET (static 2),
    // :scheme http (6), :path (name 4) literal, :authority (name 1) literal.
    let mut block = vec![0x82, 0x86, 0x44, 12];
    block.extend_from_slice(b"/health/live");
    block.extend_from_slice(&[0x41, 4]);
    block.extend_from_slice(b"test");
    write_frame(&mut stream, HEADERS, 0x4 | END_STREAM, 1, &block).await;

    let mut status = None;
    let mut body = Vec::new();
    let mut answered = None;
    let deadline = Instant::now() + Duration::from_secs(5) + IDLE_TIMEOUT + MARGIN;
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(frame) = tokio::time::timeout(left, read_frame(&mut stream)).await else {
            break None;
        };
        let Some((kind, flags, id, payload)) = frame else {
            break Some(Instant::now());
        };
        match kind {
            SETTINGS if flags & ACK == 0 => {
                write_frame(&mut stream, SETTINGS, ACK, 0, &[]).await;
            }
            PING if flags & ACK == 0 => {
                write_frame(&mut stream, PING, ACK, 0, &payload).await;
            }
            HEADERS if id == 1 => {
                // :status 200 is static entry 8.
                status = Some(payload.first() == Some(&0x88));
                if flags & END_STREAM != 0 {
                    answered = Some(Instant::now());
                }
            }
            DATA if id == 1 => {
                body.extend_from_slice(&payload);
                if flags & END_STREAM != 0 {
                    answered = Some(Instant::now());
                }
            }
            _ => {}
        }
    };
    assert_eq!(status, Some(true), "a 200 response");
    assert_eq!(body, LIVE_BODY.as_bytes());
    let answered = answered.expect("the response ended");
    let closed = closed.expect("the idle HTTP/2 connection is closed");
    let idle = closed - answered;
    assert!(
        idle + Duration::from_millis(50) >= IDLE_TIMEOUT && idle <= IDLE_TIMEOUT + MARGIN,
        "closed {idle:?} after the response"
    );
}

#[tokio::test]
async fn curl_with_http2_prior_knowledge_is_served() {
    let app = spawn_app().await;
    let url = format!("http://{}/health/live", app.addr);
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                "5",
                "--http2-prior-knowledge",
            ])
            .args(["--write-out", "\n%{http_version} %{http_code}", &url])
            .output()
    })
    .await
    .unwrap();
    let Ok(output) = run else {
        eprintln!("curl is not installed: skipping");
        return;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "curl failed: {output:?}");
    assert_eq!(stdout, format!("{LIVE_BODY}\n2 200"));
}
