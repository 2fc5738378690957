//! Crash-safe catalog persistence.
