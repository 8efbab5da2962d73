use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMITS: Limits = Limits {
    read_timeout: Duration::from_secs(1),
    idle_timeout: Duration::from_secs(5),
};

fn secs(origin: Instant, s: f64) -> Instant {
    origin + Duration::from_secs_f64(s)
}

#[test]
fn a_new_connection_gets_read_timeout_for_its_first_request_whatever_it_sends() {
    let o = Instant::now();
    let a = Activity::new(o);
    assert_eq!(a.verdict(o, LIMITS), Verdict::WaitUntil(secs(o, 1.0)));
    a.bytes_read(secs(o, 0.5));
    assert_eq!(
        a.verdict(secs(o, 0.9), LIMITS),
        Verdict::WaitUntil(secs(o, 1.0))
    );
    assert_eq!(
        a.verdict(secs(o, 1.0), LIMITS),
        Verdict::Close(IdleReason::FirstRequest)
    );
}

#[test]
fn a_request_in_flight_is_never_cut_and_idle_counts_from_its_end() {
    let o = Instant::now();
    let a = Arc::new(Activity::new(o));
    let request = a.request_started(Version::HTTP_11);
    assert_eq!(a.verdict(secs(o, 100.0), LIMITS), Verdict::Busy);
    a.bytes_read(secs(o, 50.0)); // the request's body: not a new request
    drop(request);
    let Verdict::WaitUntil(deadline) = a.verdict(Instant::now(), LIMITS) else {
        panic!("idle, not closed yet");
    };
    assert!(deadline >= o + LIMITS.idle_timeout);
    assert_eq!(
        a.verdict(deadline, LIMITS),
        Verdict::Close(IdleReason::Idle)
    );
}

#[test]
fn a_later_http1_request_gets_read_timeout_from_its_first_byte() {
    let o = Instant::now();
    let a = Arc::new(Activity::new(o));
    drop(a.request_started(Version::HTTP_11));
    let idle_since = a.instant(a.idle_since.load(Ordering::SeqCst));
    let first_byte = idle_since + Duration::from_secs(3);
    a.bytes_read(first_byte);
    assert_eq!(
        a.verdict(first_byte, LIMITS),
        Verdict::WaitUntil(first_byte + LIMITS.read_timeout)
    );
    assert_eq!(
        a.verdict(first_byte + LIMITS.read_timeout, LIMITS),
        Verdict::Close(IdleReason::Headers)
    );
    // Its headers complete: in flight.
    let _request = a.request_started(Version::HTTP_11);
    assert_eq!(
        a.verdict(first_byte + LIMITS.idle_timeout * 9, LIMITS),
        Verdict::Busy
    );
}

#[test]
fn http2_frames_between_requests_do_not_end_idleness() {
    let o = Instant::now();
    let a = Arc::new(Activity::new(o));
    drop(a.request_started(Version::HTTP_2));
    let idle_since = a.instant(a.idle_since.load(Ordering::SeqCst));
    a.bytes_read(idle_since + Duration::from_secs(1)); // a PING, say
    assert_eq!(
        a.verdict(idle_since, LIMITS),
        Verdict::WaitUntil(idle_since + LIMITS.idle_timeout)
    );
}

/// Serves a tiny app whose `/slow` takes `slow` to answer.
async fn spawn_server(
    limits: Limits,
    slow: Duration,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    use warp::Filter;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = warp::path("slow")
        .and_then(move || async move {
            tokio::time::sleep(slow).await;
            Ok::<_, std::convert::Infallible>("slow")
        })
        .or(warp::path("fast").map(|| "fast"));
    let service = hyper_util::service::TowerToHyperService::new(warp::service(routes));
    let server = ServerSettings {
        port: 0,
        read_timeout: limits.read_timeout,
        write_timeout: Duration::from_secs(10),
        idle_timeout: limits.idle_timeout,
        max_connections: 10,
        ..ServerSettings::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(listener, service, &server, async {
            let _ = stopped.await;
        })
        .await;
    });
    (addr, stop)
}

/// Reads one response (a `content-length` body) and returns its body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0_u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a full response: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if got.len() >= end + 4 + length {
                return text[end + 4..].to_string();
            }
        }
    }
}

async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0_u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_slow_request_outlives_idle_timeout_then_the_idle_connection_closes() {
    let limits = Limits {
        read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
    };
    let (addr, _stop) = spawn_server(limits, Duration::from_millis(1500)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await, "slow");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // Idle now: open until idle_timeout, closed soon after.
    assert!(!closed_within(&mut stream, Duration::from_millis(450)).await);
    assert!(closed_within(&mut stream, Duration::from_millis(900)).await);
}

#[tokio::test]
async fn a_later_request_with_slow_headers_is_cut_after_read_timeout_from_its_first_byte() {
    let limits = Limits {
        read_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_secs(5),
    };
    let (addr, _stop) = spawn_server(limits, Duration::ZERO).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await, "fast");
    // Idle for longer than read_timeout: still open.
    assert!(!closed_within(&mut stream, Duration::from_millis(800)).await);
    stream.write_all(b"GET /fast HTTP/1.1\r\n").await.unwrap();
    let sent = std::time::Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}
