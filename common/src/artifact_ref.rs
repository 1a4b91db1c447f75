//! Artifact references in step sources (`artifact:NAME@VERSION`) and the
//! steps whose sha256 the coordinator's artifact store supplies.
//!
//! An `archive` or `dpkg` step whose source names an artifact may leave its
//! sha256 out of the plan: the plan then carries an empty digest, which the
//! coordinator fills in from its artifact store when the plan is submitted,
//! so a stored rollout always carries one for the agent to check. It fills
//! in the artifact's signature, when one was loaded with it, the same way.

use crate::model::{HostPlan, Signing, StepSpec};

/// The prefix of a step source naming an artifact.
pub const SOURCE_PREFIX: &str = "artifact:";

/// An artifact as plans name it: `NAME@VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    pub name: String,
    pub version: String,
}

impl std::fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Whether `source` names an artifact rather than a path on the host.
pub fn is_artifact(source: &str) -> bool {
    source.trim().starts_with(SOURCE_PREFIX)
}

/// `None` when `source` is not an artifact reference (a path); otherwise the
/// reference, or why `artifact:…` is malformed.
pub fn parse_source(source: &str) -> Option<Result<ArtifactRef, String>> {
    let rest = source.trim().strip_prefix(SOURCE_PREFIX)?;
    Some(match rest.split_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() && !version.contains('@') => {
            Ok(ArtifactRef { name: name.to_string(), version: version.to_string() })
        }
        _ => Err(format!("source {source:?} must be artifact:NAME@VERSION")),
    })
}

/// A step of a host entry that installs an artifact.
#[derive(Debug)]
pub struct ArtifactStep<'a> {
    /// The step's name.
    pub step: &'a str,
    pub artifact: Result<ArtifactRef, String>,
    /// Lower-case hex; empty when the plan left it to the artifact store.
    pub sha256: &'a mut String,
    /// Whether the plan requires a signature, and the signature the artifact
    /// store fills in.
    pub signing: &'a mut Signing,
}

/// Every step of `plan` (its steps, undos, rollback steps, leader check and
/// switchover) whose source names an artifact.
pub fn artifact_steps(plan: &mut HostPlan) -> Vec<ArtifactStep<'_>> {
    let HostPlan { steps, undo, rollback_steps, leader_check, switchover, .. } = plan;
    steps
        .iter_mut()
        .chain(undo.iter_mut().flatten())
        .chain(rollback_steps.iter_mut())
        .chain(leader_check.iter_mut())
        .chain(switchover.iter_mut())
        .filter_map(|s: &mut StepSpec| {
            let (source, sha256, signing) = s.kind.staged_source_mut()?;
            let artifact = parse_source(source)?;
            Some(ArtifactStep { step: &s.name, artifact, sha256, signing })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            parse_source("artifact:demo-service@1.0.0"),
            Some(Ok(ArtifactRef { name: "demo-service".into(), version: "1.0.0".into() }))
        );
        for bad in ["artifact:demo", "artifact:@1", "artifact:demo@", "artifact:a@b@c"] {
            assert!(matches!(parse_source(bad), Some(Err(_))), "{bad}");
        }
        assert_eq!(parse_source("/srv/demo.tar.gz"), None);
        assert!(is_artifact("artifact:x@1") && !is_artifact("/srv/artifact:x@1"));
    }
}
