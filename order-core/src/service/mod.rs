//! Services: the rules that combine domain and storage, shared by every binary.

mod creation;

pub use creation::{Attempt, OrderCreator};
