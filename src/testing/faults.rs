//! Fault cases driven by harness hooks.
