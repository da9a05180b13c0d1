//! The scheduler: binds each pending pod to a node (issue #6, the seed's step 4).
//!
//! Pure parts, each tested as tables: [`resources`] (what a pod asks, what a node offers),
//! [`filter`] (may it run there), [`score`] (how good is each node), [`cycle`] (one decision),
//! [`cache`] (what each node already holds, assumed pods included) and [`queue`] (active,
//! backoff and unschedulable pods).

pub mod cache;
pub mod cycle;
pub mod filter;
pub mod queue;
pub mod resources;
pub mod score;
