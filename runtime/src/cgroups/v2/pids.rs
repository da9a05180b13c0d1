//! v2 pids controller: pids.max and pids.current have the same format as in v1.

pub use crate::cgroups::v1::pids::{stats, writes};
