//! kube-proxy's iptables mode, the pure part: Services + EndpointSlices →
//! `iptables-restore` input with upstream's chain names, rule shapes and comments.
//!
//! ```text
//! let (ports, problems) = model::service_ports(&services, &slices, node_name);
//! // or kept across syncs, deriving again only what changed: PortModel::update(..).ports()
//! let ruleset = rules::build(&config, &ports, &existing_nat_chains);
//! // or, applying it too: Syncer::new(config, Tools::default()).sync(&ports)
//! ```

pub mod daemon;
pub mod hash;
pub mod model;
pub mod nft;
pub mod rules;
pub mod sync;

pub use model::{service_ports, ModelUpdate, PortModel, ProxyError, ServicePortInfo};
pub use rules::{build, ProxyConfig, Ruleset};
pub use sync::{SyncError, Syncer};
