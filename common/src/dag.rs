//! Dependency ordering and cycle detection over groups.
