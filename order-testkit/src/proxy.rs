//! A TCP proxy the test controls, to cut a dependency and heal it again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards `127.0.0.1:<port>` to a target until cut; can hold back
/// the target's answers.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    /// Milliseconds each chunk from the target is held before it is passed on.
    delay_ms: Arc<AtomicU64>,
    /// Told when the target sends a chunk containing these bytes.
    watch: Watch,
}

/// A pending [`FaultProxy::watch_answers`].
type Watch = Arc<Mutex<Option<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>>>;

/// What a relay does with the chunks it passes on.
#[derive(Clone, Default)]
struct Relay {
    delay_ms: Arc<AtomicU64>,
    watch: Watch,
}

/// Copies `from` to `to`, telling the watcher of a chunk it waits for,
/// and holding each chunk `delay_ms` before passing it on.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    Relay { delay_ms, watch }: Relay,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let mut watch = watch.lock().expect("proxy watch");
            let seen = watch.as_ref().is_some_and(|(needle, _)| {
                buf[..n]
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice())
            });
            if seen && let Some((_, tell)) = watch.take() {
                let _ = tell.send(());
            }
        }
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[derive(Debug)]
struct State {
    cut: bool,
    /// Cancelled on every cut: ends the connections open at that time.
    generation: CancellationToken,
}

impl FaultProxy {
    /// Starts forwarding to `target` on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State {
            cut: false,
            generation: CancellationToken::new(),
        }));
        let stop = CancellationToken::new();
        let answers = Relay::default();
        let (accept_state, accept_stop) = (state.clone(), stop.clone());
        let accept_answers = answers.clone();
        tokio::spawn(async move {
            loop {
                let (inbound, _) = tokio::select! {
                    () = accept_stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                };
                let (cut, generation) = {
                    let s = accept_state.lock().expect("proxy state");
                    (s.cut, s.generation.clone())
                };
                if cut {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let answers = accept_answers.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::select! {
                        () = generation.cancelled() => {}
                        () = relay(in_read, out_write, Relay::default()) => {}
                        () = relay(out_read, in_write, answers) => {}
                    }
                });
            }
        });
        Self {
            addr,
            state,
            stop,
            delay_ms: answers.delay_ms,
            watch: answers.watch,
        }
    }

    /// Resolves when the target next sends a chunk containing `needle`
    /// (seen as it arrives, before any delay).
    pub fn watch_answers(&self, needle: &[u8]) -> tokio::sync::oneshot::Receiver<()> {
        let (tell, told) = tokio::sync::oneshot::channel();
        *self.watch.lock().expect("proxy watch") = Some((needle.to_vec(), tell));
        told
    }

    /// From now on, every chunk the target sends is held `delay` before
    /// it reaches the client (zero: passed on at once).
    pub fn delay_answers(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The address clients should connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones until [`FaultProxy::heal`].
    pub fn cut(&self) {
        let mut s = self.state.lock().expect("proxy state");
        s.cut = true;
        s.generation.cancel();
        s.generation = CancellationToken::new();
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.state.lock().expect("proxy state").cut = false;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

/// A proxy in front of the Redis of `direct`, and the same settings (same
/// keys) pointed at it.
///
/// # Panics
/// When the Redis host does not resolve.
pub async fn redis_through_proxy(
    direct: &order_runtime::config::RedisSettings,
) -> (FaultProxy, order_runtime::config::RedisSettings) {
    use std::net::ToSocketAddrs;
    let redis: SocketAddr = (direct.host.as_str(), direct.port)
        .to_socket_addrs()
        .expect("resolve the Redis host")
        .next()
        .expect("an address of the Redis host");
    let proxy = FaultProxy::start(redis).await;
    let via = order_runtime::config::RedisSettings {
        host: proxy.addr().ip().to_string(),
        port: proxy.addr().port(),
        ..direct.clone()
    };
    (proxy, via)
}
