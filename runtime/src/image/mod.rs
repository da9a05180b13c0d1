//! Images: content-addressed store, import, pull, unpack, overlay snapshots.
