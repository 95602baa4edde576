//! The exclusion and fencing history checker.
