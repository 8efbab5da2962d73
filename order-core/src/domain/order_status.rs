use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The life of an order: `pending` → `completed` | `cancelled` | `failed`.
///
/// The three outcomes are final; every other transition is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Created, awaiting payment.
    Pending,
    /// Paid.
    Completed,
    /// Cancelled by the buyer, an operator or payment expiry.
    Cancelled,
    /// Given up.
    Failed,
}

/// A status name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?} (expected pending, completed, cancelled or failed)")]
pub struct UnknownStatus(pub String);

/// A transition the status machine refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("order status cannot change from {from} to {to}")]
pub struct TransitionError {
    /// The order's status now.
    pub from: OrderStatus,
    /// The status asked for.
    pub to: OrderStatus,
}

impl OrderStatus {
    /// Every status, in life order.
    pub const ALL: [OrderStatus; 4] = [
        Self::Pending,
        Self::Completed,
        Self::Cancelled,
        Self::Failed,
    ];

    /// The name stored in the database and shown in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// No transition leaves a final status.
    #[must_use]
    pub fn is_final(self) -> bool {
        self != Self::Pending
    }

    /// Checks `self → to` against the status machine.
    ///
    /// # Errors
    /// [`TransitionError`] for every transition but `pending` → a final status.
    pub fn transition_to(self, to: OrderStatus) -> Result<(), TransitionError> {
        if self == Self::Pending && to.is_final() {
            Ok(())
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_to_a_final_status_is_allowed() {
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let allowed = from == OrderStatus::Pending && to != OrderStatus::Pending;
                assert_eq!(from.transition_to(to).is_ok(), allowed, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>().unwrap(), status);
        }
        assert!("PENDING".parse::<OrderStatus>().is_err());
    }

    #[test]
    fn a_refused_transition_names_both_ends() {
        let err = OrderStatus::Completed
            .transition_to(OrderStatus::Cancelled)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "order status cannot change from completed to cancelled"
        );
    }
}
