//! convoy-coordinator
