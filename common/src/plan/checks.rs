//! One check as written (`http`, `tcp`, `exec`, `file`, `metric`) into a
//! [`StepTemplate`], and the answers of a cluster's leader check.

use std::time::Duration;

use crate::limits::MAX_RETRIES;
use crate::metric::MetricFormat;
use crate::model::{
    CheckPolicy, ExecCheckSpec, FileCheckSpec, HttpCheckSpec, JsonExpect, LeaderAnswers, MetricCheckSpec, MetricSource,
    OutputExpect, RoleMatch, StepKind, StepSpec, TcpCheckSpec, Threshold,
};

use super::duration::{format_duration, parse_duration, positive_duration};
use super::errors::{FieldPath, PlanError, Src, required};
use super::raw::{RawCheck, RawMetric, RawRoleMatch};
use super::steps::{estimate, exec_spec, finish_template, one_kind};
use super::validated::StepTemplate;

/// Margin between a check's deadline and the step timeout the agent enforces.
const CHECK_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

pub(super) fn check(src: Src<'_>, raw: &RawCheck, p: &FieldPath) -> Result<StepTemplate, PlanError> {
    check_inner(src, raw, p, false)
}

/// [`check`]; `leader`: a cluster's leader check, which alone may have
/// `leader_when` and `follower_when` (read by [`leader_answers`]).
pub(super) fn check_inner(
    src: Src<'_>,
    raw: &RawCheck,
    p: &FieldPath,
    leader: bool,
) -> Result<StepTemplate, PlanError> {
    if !leader {
        for (field, set) in [("leader_when", raw.leader_when.is_some()), ("follower_when", raw.follower_when.is_some())]
        {
            if set {
                return Err(src.err(&p.key(field), "only allowed in a cluster strategy's 'leader' check"));
            }
        }
    }
    let kind = one_kind(
        src,
        &[
            ("http", raw.http.is_some()),
            ("tcp", raw.tcp.is_some()),
            ("exec", raw.exec.is_some()),
            ("file", raw.file.is_some()),
            ("metric", raw.metric.is_some()),
        ],
        p,
        "check",
    )?;
    let kp = p.key(kind);
    let output = output_expect(src, raw, p)?;
    let defaults = CheckPolicy::default();
    let deadline = match (&raw.deadline, &raw.healthy_deadline) {
        (Some(_), Some(_)) => {
            return Err(src.err(&p.key("healthy_deadline"), "give either 'deadline' or 'healthy_deadline', not both"));
        }
        (Some(s), None) => positive_duration(src, s, &p.key("deadline"))?,
        (None, Some(s)) => positive_duration(src, s, &p.key("healthy_deadline"))?,
        (None, None) => defaults.deadline,
    };
    let min_healthy = match &raw.min_healthy_time {
        Some(s) => {
            let mp = p.key("min_healthy_time");
            let d = parse_duration(s).map_err(|m| src.err(&mp, m))?;
            if d >= deadline {
                return Err(src.err(
                    &mp,
                    format!(
                        "{} is not shorter than the check's deadline ({}): the check could never pass",
                        format_duration(d),
                        format_duration(deadline)
                    ),
                ));
            }
            d
        }
        None => defaults.min_healthy,
    };
    let retries = raw.retries.unwrap_or(defaults.retries);
    if retries > MAX_RETRIES {
        return Err(src.err(&p.key("retries"), format!("{retries} retries, more than the limit of {MAX_RETRIES}")));
    }
    let policy = CheckPolicy {
        retries,
        interval: match &raw.interval {
            Some(s) => positive_duration(src, s, &p.key("interval"))?,
            None => defaults.interval,
        },
        deadline,
        min_healthy,
    };
    let kind = match (&raw.http, &raw.tcp, &raw.exec, &raw.file) {
        _ if raw.metric.is_some() => metric_check(src, raw.metric.as_ref().expect("checked"), &kp, policy)?,
        (Some(h), _, _, _) => {
            let expect_status = h.status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                return Err(src.err(&kp.key("status"), format!("invalid HTTP status {expect_status}")));
            }
            StepKind::HttpCheck(HttpCheckSpec {
                url: required(src, h.url.clone(), &kp.key("url"))?,
                expect_status,
                body_contains: h.body_contains.clone(),
                json: match &h.json {
                    None => None,
                    Some(j) => {
                        let jp = kp.key("json");
                        let path = required(src, j.path.clone(), &jp.key("path"))?;
                        crate::capture::check_json_path(&path).map_err(|e| src.err(&jp.key("path"), e))?;
                        Some(JsonExpect { path, equals: required(src, j.equals.clone(), &jp.key("equals"))? })
                    }
                },
                policy,
            })
        }
        (_, Some(t), _, _) => {
            StepKind::TcpCheck(TcpCheckSpec { address: required(src, t.address.clone(), &kp.key("address"))?, policy })
        }
        (_, _, Some(e), _) => StepKind::ExecCheck(ExecCheckSpec { exec: exec_spec(src, e, &kp)?, policy, output }),
        (_, _, _, Some(f)) => StepKind::FileCheck(FileCheckSpec {
            path: required(src, f.path.clone(), &kp.key("path"))?,
            contains: f.contains.clone(),
            policy,
        }),
        (None, None, None, None) => unreachable!("one_kind found a kind"),
    };
    let timeout = policy.deadline.saturating_add(CHECK_TIMEOUT_MARGIN);
    let mut t = finish_template(
        src,
        raw.name.as_deref(),
        p,
        StepSpec { name: String::new(), timeout, kind, rerun_safe: false },
    )?;
    t.estimate = estimate(src, raw.estimate.as_deref(), p)?;
    Ok(t)
}

/// The `stdout_*` conditions of the check at `p` (exec checks only).
fn output_expect(src: Src<'_>, raw: &RawCheck, p: &FieldPath) -> Result<OutputExpect, PlanError> {
    let output = OutputExpect {
        equals: raw.stdout_equals.clone(),
        contains: raw.stdout_contains.clone(),
        matches: raw.stdout_matches.clone(),
    };
    let fields = [
        ("stdout_equals", output.equals.is_some()),
        ("stdout_contains", output.contains.is_some()),
        ("stdout_matches", output.matches.is_some()),
    ];
    if raw.exec.is_none()
        && let Some((field, _)) = fields.iter().find(|(_, set)| *set)
    {
        return Err(src.err(&p.key(field), "only an 'exec' check has a stdout to compare"));
    }
    if output.contains.as_deref().is_some_and(str::is_empty) {
        return Err(src.err(&p.key("stdout_contains"), "must not be empty"));
    }
    if let Some(pattern) = &output.matches {
        output_regex(src, pattern, &p.key("stdout_matches"))?;
    }
    Ok(output)
}

/// Refuse an output regex that would not compile (or is too large) at `fp`.
fn output_regex(src: Src<'_>, pattern: &str, fp: &FieldPath) -> Result<(), PlanError> {
    crate::output::compile(pattern).map(|_| ()).map_err(|e| src.err(fp, e))
}

/// The kind of a `metric` check written at `kp`.
fn metric_check(src: Src<'_>, m: &RawMetric, kp: &FieldPath, policy: CheckPolicy) -> Result<StepKind, PlanError> {
    let source = match (&m.url, &m.command) {
        (Some(url), None) => MetricSource::Http { url: url.clone() },
        (None, Some(c)) => MetricSource::Command(exec_spec(src, c, &kp.key("command"))?),
        (Some(_), Some(_)) => return Err(src.err(&kp.key("command"), "give either 'url' or 'command', not both")),
        (None, None) => return Err(src.err(kp, "a metric check needs a 'url' or a 'command'")),
    };
    let format = match (&m.prometheus, &m.json) {
        (Some(name), None) => MetricFormat::Prometheus { name: name.clone(), labels: m.labels.clone() },
        (None, Some(path)) => {
            crate::capture::check_json_path(path).map_err(|e| src.err(&kp.key("json"), e))?;
            MetricFormat::Json { path: path.clone() }
        }
        (Some(_), Some(_)) => return Err(src.err(&kp.key("json"), "give either 'prometheus' or 'json', not both")),
        (None, None) if !m.labels.is_empty() => {
            return Err(src.err(&kp.key("labels"), "labels select Prometheus samples: add 'prometheus: NAME'"));
        }
        (None, None) => MetricFormat::Plain,
    };
    let threshold = |v: Option<f64>, field: &str| -> Result<Option<Threshold>, PlanError> {
        match v {
            Some(x) if !x.is_finite() => Err(src.err(&kp.key(field), format!("{x} is not a finite number"))),
            other => Ok(other.map(Threshold)),
        }
    };
    let (below, above) = (threshold(m.below, "below")?, threshold(m.above, "above")?);
    if below.is_none() && above.is_none() {
        return Err(src.err(kp, "a metric check needs 'below' and/or 'above'"));
    }
    if let (Some(b), Some(a)) = (below, above)
        && a.0 >= b.0
    {
        return Err(src.err(&kp.key("above"), format!("no value is above {} and below {}", a.0, b.0)));
    }
    Ok(StepKind::MetricCheck(MetricCheckSpec { source, format, below, above, policy }))
}

/// Default pause between two asks of a leader check that could not tell.
const LEADER_INTERVAL: Duration = Duration::from_secs(1);

/// The three answers of a cluster's leader check written at `lp` (see
/// [`LeaderAnswers`]).
pub(super) fn leader_answers(src: Src<'_>, l: &RawCheck, lp: &FieldPath) -> Result<LeaderAnswers, PlanError> {
    let exec = l.exec.is_some();
    if !exec && l.http.is_none() {
        let kind = [("tcp", l.tcp.is_some()), ("file", l.file.is_some()), ("metric", l.metric.is_some())]
            .into_iter()
            .find(|(_, set)| *set)
            .map_or("check", |(k, _)| k);
        return Err(src.err(
            &lp.key(kind),
            "a leader check asks a member its role: use 'exec' (exit code, output) or 'http' (status, body)",
        ));
    }
    let role = |raw: &RawRoleMatch, field: &str| -> Result<RoleMatch, PlanError> {
        let fp = lp.key(field);
        match (exec, raw.exit_code, raw.status) {
            (false, Some(_), _) => {
                return Err(src.err(&fp.key("exit_code"), "an http leader check has no exit code: use 'status'"));
            }
            (true, _, Some(_)) => {
                return Err(src.err(&fp.key("status"), "an exec leader check has no HTTP status: use 'exit_code'"));
            }
            (false, None, Some(st)) if !(100..=599).contains(&st) => {
                return Err(src.err(&fp.key("status"), format!("invalid HTTP status {st}")));
            }
            _ => {}
        }
        if !exec {
            for (field, set) in
                [("stdout_equals", raw.stdout_equals.is_some()), ("stdout_matches", raw.stdout_matches.is_some())]
            {
                if set {
                    return Err(
                        src.err(&fp.key(field), "an http leader check has no stdout: use 'output_contains' (the body)")
                    );
                }
            }
        }
        if raw.output_contains.as_deref().is_some_and(str::is_empty) {
            return Err(src.err(&fp.key("output_contains"), "must not be empty"));
        }
        if let Some(pattern) = &raw.stdout_matches {
            output_regex(src, pattern, &fp.key("stdout_matches"))?;
        }
        let text = raw.output_contains.is_some() || raw.stdout_equals.is_some() || raw.stdout_matches.is_some();
        if raw.exit_code.is_none() && raw.status.is_none() && !text {
            return Err(src.err(
                &fp,
                if exec {
                    "give 'exit_code', 'output_contains' or both (or 'stdout_equals', 'stdout_matches')"
                } else {
                    "give 'status', 'output_contains' or both"
                },
            ));
        }
        Ok(RoleMatch {
            exit_code: raw.exit_code,
            status: raw.status,
            output_contains: raw.output_contains.clone(),
            stdout_equals: raw.stdout_equals.clone(),
            stdout_matches: raw.stdout_matches.clone(),
        })
    };
    let Some(raw_follower) = &l.follower_when else {
        return Err(src.err(
            &lp.key("follower_when"),
            "a leader check needs 'follower_when': how a follower answers (e.g. follower_when: { exit_code: 1 }, \
             or { stdout_equals: t }, or { output_contains: slave }). A failing check no longer means 'follower': an answer that is \
             neither 'leader_when' (default: the check passes) nor 'follower_when' is unknown, asked again \
             until 'deadline', then the host fails untouched",
        ));
    };
    let follower = role(raw_follower, "follower_when")?;
    let leader = match &l.leader_when {
        Some(r) => role(r, "leader_when")?,
        None => RoleMatch::default(),
    };
    // What each answer needs of the code and the text, to refuse answers
    // that one outcome could give both.
    let expected_status = l.http.as_ref().and_then(|h| h.status).unwrap_or(200);
    let code = |m: &RoleMatch| match (m.exit_code, m.status) {
        (Some(c), _) => i64::from(c),
        (None, Some(st)) => i64::from(st),
        (None, None) if exec => 0,
        (None, None) => i64::from(expected_status),
    };
    // The text conditions of an answer, one per kind (contains, equals,
    // matches); the default leader answer is the check's own.
    let texts = |m: &RoleMatch, own: bool| -> [Option<String>; 3] {
        let own_of = |o: &Option<String>| if own { o.clone() } else { None };
        let body = l.http.as_ref().and_then(|h| own_of(&h.body_contains));
        [
            m.output_contains.clone().or(body).or_else(|| own_of(&l.stdout_contains)),
            m.stdout_equals.clone().or_else(|| own_of(&l.stdout_equals)).map(|t| t.trim_end().to_string()),
            m.stdout_matches.clone().or_else(|| own_of(&l.stdout_matches)),
        ]
    };
    let leader_default = l.leader_when.is_none();
    let (lt, ft) = (texts(&leader, leader_default), texts(&follower, false));
    let apart =
        code(&leader) != code(&follower) || lt.iter().zip(&ft).any(|pair| matches!(pair, (Some(a), Some(b)) if a != b));
    if !apart {
        let field = if leader_default { "follower_when" } else { "leader_when" };
        return Err(src.err(
            &lp.key(field),
            "the leader's and the follower's answers can be the same (same exit code or status, and no \
             different output_contains, stdout_equals or stdout_matches on both): one answer could not be told \
             apart; give 'leader_when' and 'follower_when' different codes, or a different output condition each",
        ));
    }
    let interval = match &l.interval {
        Some(s) => positive_duration(src, s, &lp.key("interval"))?,
        None => LEADER_INTERVAL,
    };
    let deadline = match (&l.deadline, &l.healthy_deadline) {
        (Some(s), _) => positive_duration(src, s, &lp.key("deadline"))?,
        (None, Some(s)) => positive_duration(src, s, &lp.key("healthy_deadline"))?,
        (None, None) => CheckPolicy::default().deadline,
    };
    Ok(LeaderAnswers { leader, follower, interval, deadline })
}
