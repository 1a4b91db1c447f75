//! convoy-agent
