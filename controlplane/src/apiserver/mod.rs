//! The Kubernetes API over HTTPS: routing, auth, the generic verbs on the store, and the
//! per-kind knowledge (resource table, discovery, OpenAPI, Table output, validation, defaults).

pub mod defaults;
pub mod discovery;
pub mod openapi;
pub mod resources;
pub mod table;
pub mod validation;
