//! defaults: per-kind API knowledge (filled by the apiserver-kinds work).
