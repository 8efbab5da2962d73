//! The outbox relay's transport: connects to the broker `events.broker`
//! names, and runs [`order_core::service::Relay`] rounds through it until
//! stopped.
//!
//! - A round that claimed a full batch is followed at once by the next;
//!   otherwise the relay waits for a commit that wrote events (PostgreSQL
//!   `LISTEN`) or `events.poll_interval`, whichever comes first.
//! - Broker unreachable (a round left events unsent): the connection is
//!   dropped, and made again after a wait that grows with each failed try
//!   (100 ms doubling up to 10 s). Events accumulate in the outbox
//!   meanwhile; nothing is lost.
//! - Database unreachable: the same wait, then the next round.
//! - Stop: the round in hand finishes (its events are marked), then the
//!   relay ends.

pub mod kafka;
pub mod rabbitmq;

use std::sync::Arc;
use std::time::Duration;

use order_core::domain::Backoff;
use order_core::service::{Publisher, Relay};
use order_runtime::config::{EventBroker, Settings};
use tokio_util::sync::CancellationToken;

use crate::Connected;

/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Why [`serve`] returned.
enum Served {
    Stopped,
    /// The broker did not take a round: reconnect. `healthy` when rounds
    /// went through before it.
    BrokerDown {
        reason: String,
        healthy: bool,
    },
}

/// Runs the relay until `stop` is cancelled.
///
/// # Errors
/// Never in practice: every outage is waited out. The signature matches
/// the consumers', which the worker runs side by side.
pub async fn run(
    settings: Settings,
    relay: Relay,
    connected: Arc<Connected>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let broker = settings.event_broker();
    let name = match broker {
        EventBroker::Kafka => "kafka",
        _ => "rabbitmq",
    };
    let mut backoff = Backoff::outage();
    let mut down = false;
    tracing::info!(
        broker = name,
        batch_size = relay.batch(),
        "order events relay started"
    );
    while !stop.is_cancelled() {
        let served = match broker {
            EventBroker::Kafka => match kafka::KafkaPublisher::connect(&settings).await {
                Ok(publisher) => {
                    connected.set("relay", true);
                    serve(&settings, &relay, &publisher, &stop).await
                }
                Err(e) => Served::BrokerDown {
                    reason: format!("{e:#}"),
                    healthy: false,
                },
            },
            _ => match rabbitmq::RabbitPublisher::connect(&settings).await {
                Ok(publisher) => {
                    connected.set("relay", true);
                    let served = serve(&settings, &relay, &publisher, &stop).await;
                    publisher.close().await;
                    served
                }
                Err(e) => Served::BrokerDown {
                    reason: format!("{e:#}"),
                    healthy: false,
                },
            },
        };
        let Served::BrokerDown { reason, healthy } = served else {
            break;
        };
        connected.set("relay", false);
        if healthy {
            backoff.reset();
            down = false;
        }
        let delay = backoff.next_delay();
        if down {
            tracing::debug!(broker = name, error = %reason, retry_in_ms = delay.as_millis(), "the events broker is still unreachable");
        } else {
            down = true;
            metrics::counter!("order_events_relay_pauses_total").increment(1);
            tracing::warn!(broker = name, error = %reason, "order events cannot be published: they wait in the outbox until the broker is back");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    connected.set("relay", false);
    tracing::info!("order events relay stopped");
    Ok(())
}

/// Runs rounds through `publisher` until stopped or the broker fails one.
async fn serve<P: Publisher>(
    settings: &Settings,
    relay: &Relay,
    publisher: &P,
    stop: &CancellationToken,
) -> Served {
    let mut wakeups = relay.storage().event_wakeups();
    let mut healthy = false;
    let mut db_backoff = Backoff::outage();
    let mut db_down = false;
    let mut backlog_at = tokio::time::Instant::now();
    loop {
        if stop.is_cancelled() {
            return Served::Stopped;
        }
        if backlog_at.elapsed() >= BACKLOG_EVERY {
            backlog_at = tokio::time::Instant::now();
            if let Err(e) = relay.export_backlog().await {
                tracing::debug!(error = %e, "cannot read the outbox backlog");
            }
        }
        let pause = match relay.run_once(publisher).await {
            Ok(round) if round.unsent > 0 => {
                return Served::BrokerDown {
                    reason: round.unsent_reason.unwrap_or_default(),
                    healthy,
                };
            }
            Ok(round) => {
                if !healthy {
                    healthy = true;
                    tracing::info!(
                        broker = publisher.name(),
                        "order events relay connected to its broker"
                    );
                }
                if std::mem::take(&mut db_down) {
                    db_backoff.reset();
                    tracing::info!("the outbox can be read again");
                }
                if round.claimed >= relay.batch() as usize {
                    continue;
                }
                None
            }
            Err(e) => {
                let delay = db_backoff.next_delay();
                if std::mem::replace(&mut db_down, true) {
                    tracing::debug!(error = %e, retry_in_ms = delay.as_millis(), "the outbox still cannot be read");
                } else {
                    tracing::warn!(error = %e, "the outbox cannot be read: database unavailable; events wait in it");
                }
                Some(delay)
            }
        };
        tokio::select! {
            () = stop.cancelled() => return Served::Stopped,
            () = async {
                match pause {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => wakeups.wait(settings.events.poll_interval).await,
                }
            } => {}
        }
    }
}
