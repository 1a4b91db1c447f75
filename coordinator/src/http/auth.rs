//! Who calls the HTTPS listener, and what they may do.
//!
//! Every page, stream and `/metrics` needs an operator token (the same named
//! tokens as the gRPC API, `convoy-coordinator token create`): a **viewer**
//! reads, an **operator** also acts. Two ways to present one:
//! - `Authorization: Bearer TOKEN` (Prometheus' `authorization` setting,
//!   curl, scripts). No cookie is involved, so no CSRF token is needed.
//! - The login form (`/login`): the token is posted once and checked; the
//!   answer sets a session cookie (`HttpOnly; Secure; SameSite=Strict`,
//!   random, 12 hours). The session keeps the token in memory only and
//!   checks it again on every request, so a revoked or expired token stops
//!   working at once. Sessions do not survive a coordinator restart.
//!
//! Action posts from a session carry the session's CSRF token in a hidden
//! form field (compared in constant time); without it they are refused and
//! counted (`convoy_requests_refused_total{reason="csrf"}`). The cookie's
//! `SameSite=Strict` is the second fence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{HttpState, Peer, render};
use crate::error::CoordinatorError;
use crate::metrics::RefusalReason;
use crate::operators::{Caller, Role};

/// The session cookie's name.
pub const COOKIE: &str = "convoy_session";
/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// At most this many live sessions (the oldest is dropped past it).
pub const MAX_SESSIONS: usize = 1024;

struct Session {
    bearer: String,
    csrf: String,
    expires: Instant,
}

/// Live dashboard sessions, in memory.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn create(&self, bearer: &str) -> String {
        let id = crate::tls::random_token();
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let session =
            Session { bearer: bearer.to_string(), csrf: crate::tls::random_token(), expires: now + SESSION_TTL };
        map.insert(id.clone(), session);
        id
    }

    /// The token and CSRF token of a live session.
    fn get(&self, id: &str) -> Option<(String, String)> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some((s.bearer.clone(), s.csrf.clone())),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    fn remove(&self, id: &str) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// An authenticated caller of the HTTPS listener.
#[derive(Debug, Clone)]
pub struct Authed {
    pub caller: Caller,
    /// The session's CSRF token; `None` for a bearer-token caller.
    pub csrf: Option<String>,
}

impl Authed {
    pub fn can_act(&self) -> bool {
        self.caller.role >= Role::Operator
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The caller a request proves, from its bearer header or its session cookie.
pub fn identify(state: &HttpState, headers: &HeaderMap) -> Result<Authed, CoordinatorError> {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = bearer {
        return Ok(Authed { caller: state.auth.authenticate(token.trim())?, csrf: None });
    }
    let Some(id) = cookie(headers, COOKIE) else {
        return Err(CoordinatorError::Unauthenticated { message: "operator token missing".into() });
    };
    let (token, csrf) = state
        .sessions
        .get(id)
        .ok_or_else(|| CoordinatorError::Unauthenticated { message: "session unknown or expired".into() })?;
    Ok(Authed { caller: state.auth.authenticate(&token)?, csrf: Some(csrf) })
}

/// How a refusal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A page: an unauthenticated browser is sent to the login form.
    Page,
    /// `/metrics` and streams: 401 with `WWW-Authenticate: Bearer`.
    Api,
}

/// The caller if its role allows `needed`, else the answer to send (the
/// refusal is logged with the peer and counted).
pub fn require(
    state: &HttpState,
    headers: &HeaderMap,
    peer: Peer,
    needed: Role,
    what: &str,
    answer: Answer,
) -> Result<Authed, Box<Response>> {
    match identify(state, headers) {
        Ok(a) if a.caller.role >= needed => Ok(a),
        Ok(a) => {
            state.metrics.refused(RefusalReason::Role);
            tracing::warn!(peer = %peer.0, name = %a.caller.name, role = %a.caller.role, what, "https call refused: role too low");
            let msg = format!("{what} needs the {needed} role; this token is a {}", a.caller.role);
            Err(Box::new((StatusCode::FORBIDDEN, msg).into_response()))
        }
        Err(e) => {
            state.metrics.refused(RefusalReason::OperatorToken);
            tracing::warn!(peer = %peer.0, error = %e, what, "https call refused");
            Err(Box::new(match answer {
                Answer::Page => Redirect::to("/login").into_response(),
                Answer::Api => {
                    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], e.to_string()).into_response()
                }
            }))
        }
    }
}

/// True if a post from `authed` carries the right CSRF token (bearer callers
/// need none: a browser never sends that header by itself).
pub fn csrf_ok(state: &HttpState, authed: &Authed, sent: &str, peer: Peer) -> bool {
    let ok = match &authed.csrf {
        None => true,
        Some(expected) => {
            expected.len() == sent.len() && expected.bytes().zip(sent.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
        }
    };
    if !ok {
        state.metrics.refused(RefusalReason::Csrf);
        tracing::warn!(peer = %peer.0, name = %authed.caller.name, "dashboard post without its CSRF token refused");
    }
    ok
}

/// `GET /login`.
pub async fn login_form() -> Html<String> {
    Html(login_page(None))
}

fn login_page(error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\">{}</p>", render::esc(e))).unwrap_or_default();
    render::layout(
        "Sign in",
        None,
        &format!(
            "<h1>Sign in</h1>{error}<form method=\"post\" action=\"/login\" class=\"login\">\
             <label>Operator token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required></label>\
             <button type=\"submit\" id=\"sign-in\">Sign in</button></form>\
             <p class=\"hint\">A viewer token reads; an operator token also acts. \
             Tokens: <code>convoy-coordinator token create --name NAME --role viewer</code>.</p>"
        ),
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: check the token, then set the session cookie.
pub async fn login(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim();
    if token.len() > 512 {
        return (StatusCode::BAD_REQUEST, Html(login_page(Some("token too long")))).into_response();
    }
    match state.auth.authenticate(token) {
        Ok(caller) => {
            let id = state.sessions.create(token);
            tracing::info!(peer = %peer.0, name = %caller.name, role = %caller.role, "dashboard sign-in");
            let cookie =
                format!("{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs());
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(e) => {
            state.metrics.refused(RefusalReason::OperatorToken);
            tracing::warn!(peer = %peer.0, error = %e, "dashboard sign-in refused");
            (StatusCode::UNAUTHORIZED, Html(login_page(Some("That token is unknown, revoked or expired."))))
                .into_response()
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: end the session.
pub async fn logout(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Ok(authed) = identify(&state, &headers)
        && csrf_ok(&state, &authed, &form.csrf, peer)
        && let Some(id) = cookie(&headers, COOKIE)
    {
        state.sessions.remove(id);
    }
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; convoy_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let s = Sessions::default();
        let id = s.create("tok");
        assert_eq!(s.get(&id).map(|(t, _)| t), Some("tok".to_string()));
        for _ in 0..MAX_SESSIONS + 5 {
            s.create("x");
        }
        assert!(s.inner.lock().unwrap().len() <= MAX_SESSIONS);
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }
}
