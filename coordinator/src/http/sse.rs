//! Live changes (not written yet).

pub async fn events() -> &'static str {
    "not yet"
}
