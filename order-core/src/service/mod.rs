//! Services: the rules that combine domain and storage, shared by every binary.

mod creation;
mod failures;
pub mod maintenance;
mod orders;
mod relay;
mod retry;

pub use creation::{
    BatchReport, FailureRecords, Incoming, MessageOutcome, OrderCreator, Settlement, Traced,
};
pub use failures::{BulkRetried, BulkRetry, FailureError, FailureRecord, Failures, refusal};
pub use orders::{Caller, OrderError, Orders, READ_ONLY};
pub use relay::{Delivery, Publisher, Relay, RelayRound};
pub use retry::{HandRetry, Retrier, RetryReport};
