//! `redis.password` reaches Redis as written, whatever characters it holds:
//! a throwaway `redis-server` of this test's own (the shared one keeps no
//! password) requires one full of URL syntax.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use order_core::cache::OrderCache;
use order_runtime::config::{RedisSettings, Secret};
use order_testkit::{free_port, redis_settings};

const PASSWORD: &str = "p@ss:w/rd#%20 x";

/// A `redis-server` on a loopback port, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(password: &str) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--requirepass", password])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed?)");
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().expect("redis-server status") {
                panic!("redis-server on port {port} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn settings(&self, password: &str) -> RedisSettings {
        RedisSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            password: Secret::new(password),
            ..redis_settings()
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_password_full_of_url_syntax_authenticates() {
    let server = Server::start(PASSWORD);

    let cache = OrderCache::connect(&server.settings(PASSWORD)).unwrap();
    cache.ping().await.expect("the password is sent as written");

    // The server really checks it: a wrong one, or none, is refused.
    for wrong in ["p@ss", ""] {
        let cache = OrderCache::connect(&server.settings(wrong)).unwrap();
        assert!(cache.ping().await.is_err(), "password {wrong:?} accepted");
    }
}
