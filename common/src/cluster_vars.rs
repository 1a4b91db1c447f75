//! `{{cluster.…}}` template variables: a cluster's members as templates see them.
//!
//! A step of a `type: cluster` group can name the other members of its
//! cluster, so a switchover can hand the leadership to an upgraded member
//! and a rejoin step can reach the new leader, without a hand-written label
//! on every host. Two kinds:
//!
//! - **Known when the plan is expanded** (filled in by [`crate::plan`]):
//!   `{{cluster.name}}` (the cluster's label value), `{{cluster.members}}`
//!   and `{{cluster.others}}` (ids, comma-separated, in upgrade order; the
//!   second without the host itself), `{{cluster.size}}`, and
//!   `{{cluster.member.ID.label.KEY}}` (a label of a named member).
//! - **Known only while the rollout runs** (kept as written by the
//!   expansion and filled in by the engine when it builds the dispatch, from
//!   its state, so a replay of the log rebuilds the same dispatch):
//!   `{{cluster.upgraded}}` (the members whose upgrade succeeded,
//!   comma-separated, in upgrade order, possibly empty),
//!   `{{cluster.target}}` (the first of them that is not the host itself:
//!   the member a leader hands over to, and, after its switchover, the new
//!   leader it rejoins) and `{{cluster.target.label.KEY}}`.
//!
//! A step that needs `{{cluster.target}}` while no other member is upgraded
//! fails with a message saying so rather than run a half-rendered command.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{RolloutSpec, StepSpec};
use crate::step_strings::kind_strings_mut;

/// One `{{cluster.…}}` variable, parsed from what follows `cluster.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterVar<'a> {
    /// `{{cluster.name}}`: the value of the cluster label.
    Name,
    /// `{{cluster.members}}`: every member, comma-separated.
    Members,
    /// `{{cluster.others}}`: every member but the host itself.
    Others,
    /// `{{cluster.size}}`: how many members.
    Size,
    /// `{{cluster.member.ID.label.KEY}}`: a label of member `ID`.
    MemberLabel { member: &'a str, key: &'a str },
    /// `{{cluster.upgraded}}`: the members upgraded so far (run time).
    Upgraded,
    /// `{{cluster.target}}`: the first upgraded member but the host (run time).
    Target,
    /// `{{cluster.target.label.KEY}}`: a label of the target (run time).
    TargetLabel(&'a str),
}

/// The variables a template may use after `cluster.`, for error messages.
pub const KNOWN: &str = "cluster.name, cluster.members, cluster.others, cluster.size, cluster.member.ID.label.KEY, \
                         cluster.upgraded, cluster.target or cluster.target.label.KEY";

impl<'a> ClusterVar<'a> {
    /// Parse what follows `cluster.` in a template variable.
    pub fn parse(rest: &'a str) -> Option<Self> {
        Some(match rest {
            "name" => ClusterVar::Name,
            "members" => ClusterVar::Members,
            "others" => ClusterVar::Others,
            "size" => ClusterVar::Size,
            "upgraded" => ClusterVar::Upgraded,
            "target" => ClusterVar::Target,
            _ => {
                if let Some(key) = rest.strip_prefix("target.label.") {
                    (!key.is_empty()).then_some(ClusterVar::TargetLabel(key))?
                } else {
                    let (member, key) = rest.strip_prefix("member.")?.rsplit_once(".label.")?;
                    if member.is_empty() || key.is_empty() {
                        return None;
                    }
                    ClusterVar::MemberLabel { member, key }
                }
            }
        })
    }

    /// Whether only the engine knows the value (it depends on the run).
    pub fn at_run_time(&self) -> bool {
        match self {
            ClusterVar::Upgraded | ClusterVar::Target | ClusterVar::TargetLabel(_) => true,
            ClusterVar::Name
            | ClusterVar::Members
            | ClusterVar::Others
            | ClusterVar::Size
            | ClusterVar::MemberLabel { .. } => false,
        }
    }
}

/// The variable as written (`{{cluster.target}}`).
impl fmt::Display for ClusterVar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterVar::Name => f.write_str("{{cluster.name}}"),
            ClusterVar::Members => f.write_str("{{cluster.members}}"),
            ClusterVar::Others => f.write_str("{{cluster.others}}"),
            ClusterVar::Size => f.write_str("{{cluster.size}}"),
            ClusterVar::MemberLabel { member, key } => write!(f, "{{{{cluster.member.{member}.label.{key}}}}}"),
            ClusterVar::Upgraded => f.write_str("{{cluster.upgraded}}"),
            ClusterVar::Target => f.write_str("{{cluster.target}}"),
            ClusterVar::TargetLabel(key) => write!(f, "{{{{cluster.target.label.{key}}}}}"),
        }
    }
}

/// One member as templates see it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub id: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Its upgrade succeeded (only meaningful at run time).
    pub upgraded: bool,
}

/// A host's cluster, from that host's point of view.
#[derive(Debug, Clone)]
pub struct ClusterScope<'a> {
    /// The cluster's name (its label value).
    pub name: &'a str,
    /// The members in upgrade order.
    pub members: Vec<Member<'a>>,
    /// The host the step is for.
    pub me: &'a str,
}

impl ClusterScope<'_> {
    /// Check, when the plan is expanded, what a run-time variable will need:
    /// any other member may become the target, so each must have the label.
    pub fn check_run_time(&self, var: ClusterVar<'_>) -> Result<(), String> {
        match var {
            ClusterVar::TargetLabel(key) => {
                match self.members.iter().find(|m| m.id != self.me && !m.labels.contains_key(key)) {
                    Some(m) => Err(format!(
                        "{var}: member {} of cluster {} has no label '{key}' (any other member may be the target)",
                        m.id, self.name
                    )),
                    None => Ok(()),
                }
            }
            ClusterVar::Name
            | ClusterVar::Members
            | ClusterVar::Others
            | ClusterVar::Size
            | ClusterVar::MemberLabel { .. }
            | ClusterVar::Upgraded
            | ClusterVar::Target => Ok(()),
        }
    }

    /// The value of `var` for this host. Run-time variables read
    /// [`Member::upgraded`], so the expansion keeps them as written instead of
    /// asking.
    pub fn value(&self, var: ClusterVar<'_>) -> Result<String, String> {
        let ids = |keep: &dyn Fn(&Member<'_>) -> bool| {
            self.members.iter().filter(|m| keep(m)).map(|m| m.id).collect::<Vec<_>>().join(",")
        };
        let label = |m: &Member<'_>, key: &str| {
            m.labels
                .get(key)
                .cloned()
                .ok_or_else(|| format!("member {} of cluster {} has no label '{key}'", m.id, self.name))
        };
        match var {
            ClusterVar::Name => Ok(self.name.to_string()),
            ClusterVar::Members => Ok(ids(&|_| true)),
            ClusterVar::Others => Ok(ids(&|m| m.id != self.me)),
            ClusterVar::Size => Ok(self.members.len().to_string()),
            ClusterVar::MemberLabel { member, key } => match self.members.iter().find(|m| m.id == member) {
                Some(m) => label(m, key),
                None => Err(format!(
                    "{var}: {member} is not a member of cluster {} (members: {})",
                    self.name,
                    ids(&|_| true)
                )),
            },
            ClusterVar::Upgraded => Ok(ids(&|m| m.upgraded)),
            ClusterVar::Target | ClusterVar::TargetLabel(_) => {
                let Some(target) = self.members.iter().find(|m| m.upgraded && m.id != self.me) else {
                    return Err(format!(
                        "{var} has no value yet: no other member of cluster {} is upgraded (it names the upgraded \
                         member to hand over to; followers are upgraded before the leader)",
                        self.name
                    ));
                };
                match var {
                    ClusterVar::TargetLabel(key) => label(target, key),
                    ClusterVar::Name
                    | ClusterVar::Members
                    | ClusterVar::Others
                    | ClusterVar::Size
                    | ClusterVar::MemberLabel { .. }
                    | ClusterVar::Upgraded
                    | ClusterVar::Target => Ok(target.id.to_string()),
                }
            }
        }
    }
}

/// Substitute the run-time `{{cluster.…}}` variables of `template`; other
/// text, other variables included, is kept as it is.
pub fn render_run_time(template: &str, scope: Option<&ClusterScope<'_>>) -> Result<String, String> {
    if !template.contains("{{") {
        return Ok(template.to_string());
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let inside = &rest[start + 2..];
        let Some(end) = inside.find("}}") else { break };
        out.push_str(&rest[..start]);
        let var = inside[..end].trim().strip_prefix("cluster.").and_then(ClusterVar::parse);
        match (var, scope) {
            (Some(var), Some(scope)) if var.at_run_time() => out.push_str(&scope.value(var)?),
            (Some(var), None) if var.at_run_time() => {
                return Err(format!("{var} is only known in a group with type: cluster"));
            }
            (Some(_) | None, _) => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &inside[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The cluster of host entry `i` of `spec`, with `upgraded(j)` telling
/// whether entry `j`'s upgrade succeeded; `None` outside `cluster` groups.
pub fn scope_of(spec: &RolloutSpec, i: usize, upgraded: impl Fn(usize) -> bool) -> Option<ClusterScope<'_>> {
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    let plan = spec.hosts.get(i)?;
    let cluster = spec.groups.get(plan.group)?.cluster()?.clusters.iter().find(|c| c.hosts.contains(&i))?;
    Some(ClusterScope {
        name: &cluster.name,
        members: cluster
            .hosts
            .iter()
            .enumerate()
            .map(|(k, &j)| Member {
                id: spec.hosts.get(j).map_or("", |h| h.host.as_str()),
                labels: cluster.labels.get(k).unwrap_or(&NO_LABELS),
                upgraded: upgraded(j),
            })
            .collect(),
        me: &plan.host,
    })
}

/// `step` with its run-time `{{cluster.…}}` variables substituted; `scope`
/// is asked only when one is used.
pub fn render_step<'s>(step: &StepSpec, scope: impl FnOnce() -> Option<ClusterScope<'s>>) -> Result<StepSpec, String> {
    let mut out = step.clone();
    let mut strings = kind_strings_mut(&mut out.kind);
    if !strings.iter().any(|(_, s)| uses_run_time(s)) {
        return Ok(step.clone());
    }
    let scope = scope();
    for (_, s) in &mut strings {
        if uses_run_time(s) {
            **s = render_run_time(s, scope.as_ref())?;
        }
    }
    drop(strings);
    Ok(out)
}

/// Whether `template` uses a run-time `{{cluster.…}}` variable.
pub fn uses_run_time(template: &str) -> bool {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let inside = &rest[start + 2..];
        let Some(end) = inside.find("}}") else { break };
        if inside[..end].trim().strip_prefix("cluster.").and_then(ClusterVar::parse).is_some_and(|v| v.at_run_time()) {
            return true;
        }
        rest = &inside[end + 2..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(port: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("port".to_string(), port.to_string())])
    }

    #[test]
    fn parses_every_form_and_refuses_the_rest() {
        assert_eq!(ClusterVar::parse("target"), Some(ClusterVar::Target));
        assert_eq!(ClusterVar::parse("target.label.port"), Some(ClusterVar::TargetLabel("port")));
        assert_eq!(
            ClusterVar::parse("member.pg-1.example.label.port"),
            Some(ClusterVar::MemberLabel { member: "pg-1.example", key: "port" })
        );
        for bad in ["", "leader", "member.pg-1", "member..label.x", "member.a.label.", "target.label.", "targets"] {
            assert_eq!(ClusterVar::parse(bad), None, "{bad}");
        }
        for written in ["{{cluster.member.a.label.k}}", "{{cluster.target.label.k}}", "{{cluster.upgraded}}"] {
            let inner = written.trim_start_matches("{{cluster.").trim_end_matches("}}");
            assert_eq!(ClusterVar::parse(inner).unwrap().to_string(), written);
        }
    }

    #[test]
    fn values_from_one_member_point_of_view() {
        let (l1, l2, l3) = (labels("5432"), labels("5433"), labels("5434"));
        let mut scope = ClusterScope {
            name: "main",
            members: vec![
                Member { id: "pg-1", labels: &l1, upgraded: false },
                Member { id: "pg-2", labels: &l2, upgraded: false },
                Member { id: "pg-3", labels: &l3, upgraded: false },
            ],
            me: "pg-1",
        };
        assert_eq!(scope.value(ClusterVar::Members).unwrap(), "pg-1,pg-2,pg-3");
        assert_eq!(scope.value(ClusterVar::Others).unwrap(), "pg-2,pg-3");
        assert_eq!(scope.value(ClusterVar::Size).unwrap(), "3");
        assert_eq!(scope.value(ClusterVar::MemberLabel { member: "pg-3", key: "port" }).unwrap(), "5434");
        let err = scope.value(ClusterVar::MemberLabel { member: "pg-9", key: "port" }).unwrap_err();
        assert!(err.contains("pg-9 is not a member of cluster main"), "{err}");
        let err = scope.value(ClusterVar::Target).unwrap_err();
        assert!(err.contains("no other member of cluster main is upgraded"), "{err}");
        assert_eq!(scope.value(ClusterVar::Upgraded).unwrap(), "");
        // pg-1 itself counts among the upgraded, never as its own target.
        scope.members[0].upgraded = true;
        scope.members[2].upgraded = true;
        assert_eq!(scope.value(ClusterVar::Upgraded).unwrap(), "pg-1,pg-3");
        assert_eq!(scope.value(ClusterVar::Target).unwrap(), "pg-3");
        assert_eq!(scope.value(ClusterVar::TargetLabel("port")).unwrap(), "5434");
        let err = scope.value(ClusterVar::TargetLabel("zone")).unwrap_err();
        assert!(err.contains("member pg-3 of cluster main has no label 'zone'"), "{err}");
    }

    #[test]
    fn run_time_rendering_leaves_everything_else() {
        let (l1, l2) = (labels("1"), labels("2"));
        let scope = ClusterScope {
            name: "c",
            members: vec![
                Member { id: "a", labels: &l1, upgraded: false },
                Member { id: "b", labels: &l2, upgraded: true },
            ],
            me: "a",
        };
        let t = "switch --to {{ cluster.target }}:{{cluster.target.label.port}} {{captured.x}} {{cluster.name}}";
        assert!(uses_run_time(t));
        assert_eq!(render_run_time(t, Some(&scope)).unwrap(), "switch --to b:2 {{captured.x}} {{cluster.name}}");
        assert!(!uses_run_time("{{cluster.name}} {{host}}"));
        let err = render_run_time("{{cluster.upgraded}}", None).unwrap_err();
        assert!(err.contains("only known in a group with type: cluster"), "{err}");
        assert_eq!(render_run_time("tail {{", Some(&scope)).unwrap(), "tail {{");
    }
}
