//! The dashboard's pages (not written yet).

use axum::response::Html;

pub async fn rollouts() -> Html<&'static str> {
    Html("not yet")
}
pub async fn rollout() -> Html<&'static str> {
    Html("not yet")
}
pub async fn agents() -> Html<&'static str> {
    Html("not yet")
}
pub async fn control() -> Html<&'static str> {
    Html("not yet")
}
