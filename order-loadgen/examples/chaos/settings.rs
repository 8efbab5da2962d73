//! What the processes run with: how long the faults last, the
//! compensators' retry limit and lease, the shutdown grace, and the
//! environment of each role.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::Auth;
use crate::broker::BrokerUnderTest;
use crate::stack::Role;

/// How long things last.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub rate: u32,
    pub db_cut: Duration,
    pub broker_cut: Duration,
    pub redis_cut: Duration,
    pub pause: Duration,
    pub settle: Duration,
}

impl Timing {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                rate: 400,
                db_cut: Duration::from_secs(3),
                broker_cut: Duration::from_secs(2),
                redis_cut: Duration::from_secs(3),
                pause: Duration::from_secs(1),
                settle: Duration::from_secs(180),
            }
        } else {
            Self {
                rate: 1000,
                db_cut: Duration::from_secs(10),
                broker_cut: Duration::from_secs(5),
                redis_cut: Duration::from_secs(10),
                pause: Duration::from_secs(2),
                settle: Duration::from_secs(300),
            }
        }
    }
}

/// Retries of a failing write before it is given up (`failed`).
pub const MAX_RETRIES: u32 = 3;
/// How long a compensator's claim lasts.
const LEASE: Duration = Duration::from_secs(10);
/// How long a process may take to exit after SIGTERM (Kubernetes' grace).
pub const GRACE: Duration = Duration::from_secs(30);

/// The environment of each role.
pub fn environment(
    database_url: &str,
    broker: &BrokerUnderTest,
    redis: SocketAddr,
    redis_for_api: SocketAddr,
    run_id: &str,
    auth: &Auth,
) -> BTreeMap<Role, Vec<(String, String)>> {
    let common = |redis: SocketAddr| {
        let mut env: Vec<(String, String)> = [
            ("ORDER__DATABASE__URL", database_url.to_owned()),
            ("ORDER__DATABASE__MAX_CONNECTIONS", "10".into()),
            ("ORDER__DATABASE__ACQUIRE_TIMEOUT", "2s".into()),
            ("ORDER__REDIS__HOST", redis.ip().to_string()),
            ("ORDER__REDIS__PORT", redis.port().to_string()),
            (
                "ORDER__REDIS__KEY_PREFIX",
                format!("ordertest:chaos:{run_id}:"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(broker.env());
        env
    };
    let mut worker = common(redis);
    worker.push(("ORDER__WORKER__SHUTDOWN_TIMEOUT".into(), "20s".into()));
    worker.push(("ORDER__EVENTS__PUBLISH_TIMEOUT".into(), "2s".into()));
    let mut compensator = common(redis);
    compensator.extend(
        [
            ("ORDER__COMPENSATOR__RETRY_CRON", "* * * * * *".to_owned()),
            ("ORDER__COMPENSATOR__EXPIRE_CRON", "*/5 * * * * *".into()),
            ("ORDER__COMPENSATOR__MAX_RETRIES", MAX_RETRIES.to_string()),
            ("ORDER__COMPENSATOR__BACKOFF_BASE", "1s".into()),
            ("ORDER__COMPENSATOR__BACKOFF_MAX", "2s".into()),
            ("ORDER__COMPENSATOR__LEASE", format!("{}s", LEASE.as_secs())),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut api = common(redis_for_api);
    api.push(("ORDER__API__ADMIN_TOKEN".into(), auth.operator.clone()));
    api.push(("ORDER__API__AUTH__JWT_SECRET".into(), auth.secret.clone()));
    BTreeMap::from([
        (Role::Worker, worker),
        (Role::Compensator, compensator),
        (Role::Api, api),
    ])
}
