//! What every source does with a batch: gather it ([`next_batch`]), settle
//! it through the creation path, count it, dead-letter what could not even
//! be recorded.

use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use order_core::domain::Source;
use order_core::service::{OrderCreator, Settlement};
use order_core::storage::StorageError;
use tokio_util::sync::CancellationToken;

/// What [`next_batch`] gathered.
#[derive(Debug)]
pub enum Gathered<T, E> {
    /// At least one item, received first at `received_at`. `cut_short` is
    /// the error that ended the batch early, if one did: the items before it
    /// are whole, what to do with the error is the source's call.
    Batch {
        /// The items, in the order received.
        items: Vec<T>,
        /// When the first item arrived.
        received_at: Instant,
        /// The error that ended the batch before `size` or `linger`.
        cut_short: Option<E>,
    },
    /// The first receive failed.
    Failed(E),
    /// The stream ended before any item.
    Ended,
    /// `stop` came before any item.
    Stopped,
}

/// Gathers the next batch from `stream`: waits for a first item (or
/// `stop`), then takes more until there are `size`, `linger` has passed
/// since the first, the stream ends or fails, or `stop` is cancelled: a stop
/// mid-batch returns what was gathered, to be settled and acknowledged.
pub async fn next_batch<S, T, E>(
    stream: &mut S,
    size: usize,
    linger: Duration,
    stop: &CancellationToken,
) -> Gathered<T, E>
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    let first = tokio::select! {
        biased;
        () = stop.cancelled() => return Gathered::Stopped,
        next = stream.next() => next,
    };
    let first = match first {
        Some(Ok(item)) => item,
        Some(Err(e)) => return Gathered::Failed(e),
        None => return Gathered::Ended,
    };
    let received_at = Instant::now();
    let mut items = vec![first];
    let mut cut_short = None;
    let deadline = tokio::time::Instant::now() + linger;
    while items.len() < size {
        tokio::select! {
            biased;
            next = stream.next() => match next {
                Some(Ok(item)) => items.push(item),
                Some(Err(e)) => {
                    cut_short = Some(e);
                    break;
                }
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
            () = stop.cancelled() => break,
        }
    }
    Gathered::Batch {
        items,
        received_at,
        cut_short,
    }
}

/// Counts a batch taken from a source (once, however often it is retried).
pub fn received(source: Source, messages: usize) {
    let label = source.as_str();
    metrics::counter!("messages_received_total", "source" => label).increment(messages as u64);
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("worker_batch_size", "source" => label).record(messages as f64);
}

/// Settles one batch through the creation path and records how long it took
/// from receipt to commit.
///
/// # Errors
/// When the database is unavailable: acknowledge nothing.
pub async fn settle<P: order_core::service::Incoming>(
    creator: &OrderCreator,
    source: Source,
    payloads: &[P],
    received_at: Instant,
) -> Result<Vec<Settlement>, StorageError> {
    let settled = creator.process_batch(source, payloads).await?;
    metrics::histogram!("message_processing_seconds", "source" => source.as_str())
        .record(received_at.elapsed().as_secs_f64());
    Ok(settled)
}

/// The positions of the messages to dead-letter, with why.
#[must_use]
pub fn dead_letters(settled: &[Settlement]) -> Vec<(usize, String)> {
    settled
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.dead_letter_reason().map(|reason| (i, reason)))
        .collect()
}

/// Counts and logs (once for the batch) messages sent to the dead-letter
/// destination `to`.
pub fn dead_lettered(source: Source, to: &str, dead: &[(usize, String)]) {
    if let Some((_, first)) = dead.first() {
        metrics::counter!("messages_dead_lettered_total", "source" => source.as_str())
            .increment(dead.len() as u64);
        tracing::warn!(
            message.source = source.as_str(),
            dead_letter = to,
            count = dead.len(),
            reason = %first,
            "messages whose failure could not be recorded were dead-lettered"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn items(n: u32) -> impl Stream<Item = Result<u32, &'static str>> + Unpin {
        futures_util::stream::iter((0..n).map(Ok))
    }

    #[tokio::test]
    async fn a_batch_is_cut_at_its_size_and_the_rest_waits() {
        let stop = CancellationToken::new();
        let mut stream = items(5);
        let Gathered::Batch {
            items, cut_short, ..
        } = next_batch(&mut stream, 3, Duration::from_secs(60), &stop).await
        else {
            panic!("a batch expected");
        };
        assert_eq!((items, cut_short), (vec![0, 1, 2], None));
        let Gathered::Batch { items, .. } =
            next_batch(&mut stream, 3, Duration::from_secs(60), &stop).await
        else {
            panic!("a batch expected");
        };
        assert_eq!(items, [3, 4]);
        assert!(matches!(
            next_batch(&mut stream, 3, Duration::from_secs(60), &stop).await,
            Gathered::Ended
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_ends_at_the_linger_after_its_first_item() {
        let stop = CancellationToken::new();
        let mut stream = items(1).chain(futures_util::stream::pending());
        let Gathered::Batch { items, .. } =
            next_batch(&mut stream, 10, Duration::from_millis(5), &stop).await
        else {
            panic!("a batch expected");
        };
        assert_eq!(items, [0]);
    }

    #[tokio::test]
    async fn an_error_mid_batch_keeps_what_came_before_it() {
        let stop = CancellationToken::new();
        let mut stream = futures_util::stream::iter([Ok(1), Ok(2), Err("lost"), Ok(3)]);
        let Gathered::Batch {
            items, cut_short, ..
        } = next_batch(&mut stream, 10, Duration::from_secs(60), &stop).await
        else {
            panic!("a batch expected");
        };
        assert_eq!((items, cut_short), (vec![1, 2], Some("lost")));
        let mut failing = futures_util::stream::iter([Err::<u32, _>("down")]);
        assert!(matches!(
            next_batch(&mut failing, 10, Duration::from_secs(60), &stop).await,
            Gathered::Failed("down")
        ));
    }

    #[tokio::test]
    async fn a_stop_before_the_first_item_gathers_nothing() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut stream = futures_util::stream::pending::<Result<u32, Infallible>>();
        assert!(matches!(
            next_batch(&mut stream, 10, Duration::from_secs(60), &stop).await,
            Gathered::Stopped
        ));
    }
}
