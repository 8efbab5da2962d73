//! The broker under test, RabbitMQ or a private Kafka (Tansu), behind a
//! fault proxy: its topology, the workers' settings, publishing the stream
//! and telling when nothing is left for the workers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use order_loadgen::Message;
use order_runtime::config::{KafkaSettings, RabbitMqSettings};
use order_testkit::proxy::FaultProxy;

use crate::{Broker, Cli, say, secs};

/// The broker the workers read, behind a proxy the harness controls.
pub struct BrokerUnderTest {
    pub proxy: FaultProxy,
    kind: Transport,
    /// The run's order events exchange (RabbitMQ) or topic (Kafka).
    events: String,
}

enum Transport {
    Rabbit {
        /// Names as the workers see them (through the proxy).
        settings: Box<RabbitMqSettings>,
        /// The same broker, directly (the seckill service publishing).
        direct: Box<RabbitMqSettings>,
    },
    Kafka {
        settings: KafkaSettings,
        tansu: std::process::Child,
        dir: PathBuf,
    },
}

impl BrokerUnderTest {
    pub async fn start(cli: &Cli, run_id: &str, log_dir: &std::path::Path) -> anyhow::Result<Self> {
        match cli.broker {
            Broker::Rabbitmq => {
                let proxy = FaultProxy::start(cli.amqp).await;
                let direct = RabbitMqSettings {
                    host: cli.amqp.ip().to_string(),
                    port: cli.amqp.port(),
                    exchange: format!("ordertest.chaos.{run_id}.seckill"),
                    queue: format!("ordertest.chaos.{run_id}.orders"),
                    dead_letter_exchange: format!("ordertest.chaos.{run_id}.dlx"),
                    dead_letter_queue: format!("ordertest.chaos.{run_id}.dlq"),
                    ..RabbitMqSettings::default()
                };
                let settings = RabbitMqSettings {
                    host: proxy.addr().ip().to_string(),
                    port: proxy.addr().port(),
                    ..direct.clone()
                };
                Ok(Self {
                    proxy,
                    kind: Transport::Rabbit {
                        settings: Box::new(settings),
                        direct: Box::new(direct),
                    },
                    events: format!("ordertest.chaos.{run_id}.events"),
                })
            }
            Broker::Kafka => {
                let tansu = cli
                    .tansu
                    .as_ref()
                    .context("--broker kafka needs --tansu PATH")?;
                // The broker advertises the proxy, so every client goes through it.
                let listen = order_testkit::free_port();
                let upstream = SocketAddr::from(([127, 0, 0, 1], listen));
                let proxy = FaultProxy::start(upstream).await;
                let dir = std::env::temp_dir().join(format!("ordertest-chaos-tansu-{run_id}"));
                std::fs::create_dir_all(&dir)?;
                let child = std::process::Command::new(tansu)
                    .current_dir(&dir)
                    .args([
                        "broker",
                        "--listener-url",
                        &format!("tcp://{upstream}"),
                        "--advertised-listener-url",
                        &format!("tcp://{}", proxy.addr()),
                        "--storage-engine",
                        "memory://tansu/",
                    ])
                    .env_remove("LISTENER_URL")
                    .env_remove("ADVERTISED_LISTENER_URL")
                    .env_remove("STORAGE_ENGINE")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::fs::File::create(log_dir.join("tansu.log"))?)
                    .stderr(std::fs::File::create(log_dir.join("tansu.err"))?)
                    .spawn()
                    .with_context(|| format!("start {}", tansu.display()))?;
                let deadline = Instant::now() + Duration::from_secs(30);
                while tokio::net::TcpStream::connect(upstream).await.is_err() {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "Tansu does not listen on {upstream}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let settings = KafkaSettings {
                    brokers: vec![proxy.addr().to_string()],
                    topic: format!("ordertest-chaos-{run_id}"),
                    group_id: format!("ordertest-chaos-{run_id}"),
                    session_timeout: Duration::from_secs(6),
                    dead_letter_topic: format!("ordertest-chaos-{run_id}.dlq"),
                    ..KafkaSettings::default()
                };
                order_loadgen::kafka::ensure_topic(&settings, 3).await?;
                Ok(Self {
                    proxy,
                    kind: Transport::Kafka {
                        settings,
                        tansu: child,
                        dir,
                    },
                    events: format!("ordertest-chaos-{run_id}-events"),
                })
            }
        }
    }

    /// The workers' broker settings, their order events included.
    pub fn env(&self) -> Vec<(String, String)> {
        let env: Vec<(&str, String)> = match &self.kind {
            Transport::Rabbit { settings, .. } => {
                let mut env = order_testkit::rabbitmq_env(settings);
                env.push(("ORDER__EVENTS__EXCHANGE", self.events.clone()));
                env
            }
            Transport::Kafka { settings: k, .. } => vec![
                ("ORDER__EVENTS__TOPIC", self.events.clone()),
                ("ORDER__RABBITMQ__ENABLED", "false".into()),
                ("ORDER__KAFKA__ENABLED", "true".into()),
                ("ORDER__KAFKA__BROKERS", k.brokers.join(",")),
                ("ORDER__KAFKA__TOPIC", k.topic.clone()),
                ("ORDER__KAFKA__GROUP_ID", k.group_id.clone()),
                (
                    "ORDER__KAFKA__DEAD_LETTER_TOPIC",
                    k.dead_letter_topic.clone(),
                ),
                (
                    "ORDER__KAFKA__SESSION_TIMEOUT",
                    format!("{}s", k.session_timeout.as_secs()),
                ),
            ],
        };
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// Publishes the stream at `rate`, except `burst`, published at once;
    /// returns Kafka's end offsets per partition.
    pub fn publish(
        &self,
        messages: Vec<Message>,
        rate: u32,
        burst: Range<usize>,
        started: Instant,
    ) -> impl Future<Output = anyhow::Result<HashMap<i32, i64>>> + use<> {
        let target = match &self.kind {
            Transport::Rabbit { direct, .. } => Ok(direct.as_ref().clone()),
            Transport::Kafka { settings, .. } => Err(settings.clone()),
        };
        async move {
            let mut parts = vec![(0..messages.len(), Some(rate))];
            if !burst.is_empty() {
                parts = vec![
                    (0..burst.start, Some(rate)),
                    (burst.clone(), None),
                    (burst.end..messages.len(), Some(rate)),
                ];
            }
            let mut ends: HashMap<i32, i64> = HashMap::new();
            for (range, pace) in parts.into_iter().filter(|(r, _)| !r.is_empty()) {
                let unpaced = pace.is_none();
                if unpaced {
                    say(format!(
                        "{:>5.1}s  publishing {} flood messages at once",
                        secs(started),
                        range.len()
                    ));
                }
                let part = &messages[range];
                match &target {
                    Ok(rabbit) => {
                        order_loadgen::rabbitmq::publish(rabbit, part, pace, true).await?;
                    }
                    Err(kafka) => {
                        for (partition, end) in
                            order_loadgen::kafka::publish(kafka, part, pace, true).await?
                        {
                            let seen = ends.entry(partition).or_insert(0);
                            *seen = (*seen).max(end);
                        }
                    }
                }
                if unpaced {
                    say(format!("{:>5.1}s  flood published", secs(started)));
                }
            }
            Ok(ends)
        }
    }

    /// A consumer of the run's order events, from now on (RabbitMQ: a queue
    /// bound with `#`, straight to the broker; Kafka: the topic from its
    /// start, through the proxy as every client).
    pub async fn subscribe_events(
        &self,
    ) -> anyhow::Result<
        tokio::sync::mpsc::UnboundedReceiver<anyhow::Result<order_loadgen::events::ReceivedEvent>>,
    > {
        match &self.kind {
            Transport::Rabbit { direct, .. } => {
                order_loadgen::events::subscribe_rabbitmq(direct, &self.events, "#").await
            }
            Transport::Kafka { settings, .. } => {
                order_loadgen::events::subscribe_kafka(settings, &self.events, true).await
            }
        }
    }

    pub fn drained_what(&self) -> &'static str {
        match self.kind {
            Transport::Rabbit { .. } => "queue empty and nothing unacknowledged",
            Transport::Kafka { .. } => "the group's lag is 0 on every partition",
        }
    }

    /// Ok with the figure when nothing is left for the workers.
    pub async fn drained(&self, ends: &HashMap<i32, i64>) -> anyhow::Result<String> {
        match &self.kind {
            Transport::Rabbit { direct, .. } => {
                let (ready, unacked) = queue_depth(&direct.queue)?;
                anyhow::ensure!(
                    ready == 0 && unacked == 0,
                    "{ready} ready, {unacked} unacknowledged"
                );
                Ok(format!("{ready} ready, {unacked} unacknowledged"))
            }
            Transport::Kafka { settings, .. } => {
                let committed = order_loadgen::kafka::committed(settings, 3)?;
                let lag: i64 = ends
                    .iter()
                    .map(|(p, end)| end - committed.get(p).copied().unwrap_or(0))
                    .sum();
                anyhow::ensure!(
                    lag == 0,
                    "lag {lag}: committed {committed:?}, ends {ends:?}"
                );
                Ok(format!("lag 0; committed = ends = {ends:?}"))
            }
        }
    }

    /// Deletes the run's RabbitMQ queues and exchanges.
    pub async fn stop(&self) {
        if let Transport::Rabbit { direct, .. } = &self.kind {
            order_loadgen::rabbitmq::delete_topology(direct).await;
            order_loadgen::rabbitmq::delete_exchange(direct, &self.events).await;
        }
    }
}

impl Drop for BrokerUnderTest {
    fn drop(&mut self) {
        if let Transport::Kafka { tansu, dir, .. } = &mut self.kind {
            let _ = tansu.kill();
            let _ = tansu.wait();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Ready and unacknowledged messages of `queue`, from `rabbitmqctl`.
fn queue_depth(queue: &str) -> anyhow::Result<(u64, u64)> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output()
        .context("run rabbitmqctl list_queues")?;
    anyhow::ensure!(
        output.status.success(),
        "rabbitmqctl list_queues: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [name, ready, unacked] = fields[..]
            && name == queue
        {
            return Ok((ready.parse()?, unacked.parse()?));
        }
    }
    bail!("queue {queue} not found by rabbitmqctl")
}
