//! The conformance cases (moved here from the crate's tests; see the module list).
