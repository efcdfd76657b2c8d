//! loom models (filled in below).
