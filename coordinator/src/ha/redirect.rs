//! What a follower serves: every call of every service is answered with
//! `UNAVAILABLE` and the leader's address in the [`LEADER_HEADER`] metadata
//! (empty while no leader is known), which agents and the CLI follow.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

/// The metadata key that carries the leader's `HOST:PORT`.
pub const LEADER_HEADER: &str = "convoy-leader";

/// A stand-in for the service `S` that redirects every call to the leader.
pub struct Redirect<S> {
    leader: watch::Receiver<Option<String>>,
    _service: PhantomData<fn() -> S>,
}

impl<S> Redirect<S> {
    pub fn new(leader: watch::Receiver<Option<String>>) -> Redirect<S> {
        Redirect { leader, _service: PhantomData }
    }
}

impl<S> Clone for Redirect<S> {
    fn clone(&self) -> Self {
        Redirect { leader: self.leader.clone(), _service: PhantomData }
    }
}

impl<S: NamedService> NamedService for Redirect<S> {
    const NAME: &'static str = S::NAME;
}

/// The answer a follower gives while `leader` leads (or none is known).
pub fn redirect_status(leader: Option<&str>) -> tonic::Status {
    let mut status = match leader {
        Some(l) => tonic::Status::unavailable(format!("this coordinator is a follower; the leader is {l}")),
        None => tonic::Status::unavailable("this coordinator is a follower and no leader is elected yet; retry"),
    };
    if let Some(v) = leader.and_then(|l| l.parse().ok()) {
        status.metadata_mut().insert(LEADER_HEADER, v);
    }
    status
}

impl<S> Service<http::Request<Body>> for Redirect<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<Body>) -> Self::Future {
        let leader = self.leader.borrow().clone();
        std::future::ready(Ok(redirect_status(leader.as_deref()).into_http()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_names_the_leader_in_its_metadata_or_says_none_is_known() {
        let s = redirect_status(Some("10.0.0.2:7443"));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.metadata().get(LEADER_HEADER).unwrap().to_str().unwrap(), "10.0.0.2:7443");
        assert!(s.message().contains("10.0.0.2:7443"));
        let s = redirect_status(None);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.metadata().get(LEADER_HEADER).is_none());
    }
}
