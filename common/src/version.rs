//! Version parsing and ordering.
