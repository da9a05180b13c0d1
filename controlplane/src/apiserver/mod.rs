//! The Kubernetes API over HTTPS.
