//! Health checks on the wire: the retry policy and the http, tcp, exec, file
//! and metric checks, in both directions.
//!
//! A missing `CheckPolicy` means [`CheckPolicy::default`] and a zero
//! `expect_status` means 200 (proto3 has no "unset" for scalars).

use std::time::Duration;

use convoy_common::metric::MetricFormat;
use convoy_common::model::{
    CheckPolicy, ExecCheckSpec, FileCheckSpec, HttpCheckSpec, JsonExpect, MetricCheckSpec, MetricSource, OutputExpect,
    TcpCheckSpec, Threshold,
};
use convoy_proto::v1 as pb;

use crate::error::{WireError, required};
use crate::step::{exec_from_proto, exec_to_proto};
use crate::{millis, non_empty};

pub(crate) fn policy_from_proto(p: Option<&pb::CheckPolicy>) -> CheckPolicy {
    match p {
        None => CheckPolicy::default(),
        Some(p) => CheckPolicy {
            retries: p.retries,
            interval: Duration::from_millis(p.interval_ms),
            deadline: Duration::from_millis(p.deadline_ms),
            min_healthy: Duration::from_millis(p.min_healthy_ms),
        },
    }
}

pub(crate) fn policy_to_proto(p: &CheckPolicy) -> pb::CheckPolicy {
    pb::CheckPolicy {
        retries: p.retries,
        interval_ms: millis(p.interval),
        deadline_ms: millis(p.deadline),
        min_healthy_ms: millis(p.min_healthy),
    }
}

pub(crate) fn http_from_proto(h: &pb::HttpCheck) -> Result<HttpCheckSpec, WireError> {
    let expect_status = match h.expect_status {
        0 => 200,
        s => u16::try_from(s).ok().filter(|s| (100..=999).contains(s)).ok_or_else(|| {
            WireError::invalid("http_check.expect_status", format!("http check expects impossible status {s}"))
        })?,
    };
    Ok(HttpCheckSpec {
        url: h.url.clone(),
        expect_status,
        body_contains: non_empty(&h.body_contains),
        json: (!h.json_path.is_empty())
            .then(|| JsonExpect { path: h.json_path.clone(), equals: h.json_equals.clone() }),
        policy: policy_from_proto(h.policy.as_ref()),
    })
}

pub(crate) fn http_to_proto(h: &HttpCheckSpec) -> pb::HttpCheck {
    pb::HttpCheck {
        url: h.url.clone(),
        expect_status: u32::from(h.expect_status),
        body_contains: h.body_contains.clone().unwrap_or_default(),
        policy: Some(policy_to_proto(&h.policy)),
        json_path: h.json.as_ref().map(|j| j.path.clone()).unwrap_or_default(),
        json_equals: h.json.as_ref().map(|j| j.equals.clone()).unwrap_or_default(),
    }
}

pub(crate) fn tcp_from_proto(t: &pb::TcpCheck) -> Result<TcpCheckSpec, WireError> {
    required("tcp_check.address", &t.address)?;
    Ok(TcpCheckSpec { address: t.address.clone(), policy: policy_from_proto(t.policy.as_ref()) })
}

pub(crate) fn tcp_to_proto(t: &TcpCheckSpec) -> pb::TcpCheck {
    pb::TcpCheck { address: t.address.clone(), policy: Some(policy_to_proto(&t.policy)) }
}

pub(crate) fn exec_check_from_proto(c: &pb::ExecCheck) -> Result<ExecCheckSpec, WireError> {
    let exec = c.exec.as_ref().ok_or(WireError::empty("exec_check.exec"))?;
    if let Some(pattern) = &c.stdout_matches {
        convoy_common::output::compile(pattern).map_err(|e| WireError::invalid("exec_check.stdout_matches", e))?;
    }
    Ok(ExecCheckSpec {
        exec: exec_from_proto(exec, "exec_check.exec.command")?,
        policy: policy_from_proto(c.policy.as_ref()),
        output: OutputExpect {
            equals: c.stdout_equals.clone(),
            contains: c.stdout_contains.clone(),
            matches: c.stdout_matches.clone(),
        },
    })
}

pub(crate) fn exec_check_to_proto(c: &ExecCheckSpec) -> pb::ExecCheck {
    pb::ExecCheck {
        exec: Some(exec_to_proto(&c.exec)),
        policy: Some(policy_to_proto(&c.policy)),
        stdout_equals: c.output.equals.clone(),
        stdout_contains: c.output.contains.clone(),
        stdout_matches: c.output.matches.clone(),
    }
}

pub(crate) fn file_check_from_proto(f: &pb::FileCheck) -> Result<FileCheckSpec, WireError> {
    required("file_check.path", &f.path)?;
    Ok(FileCheckSpec {
        path: f.path.clone(),
        contains: non_empty(&f.contains),
        policy: policy_from_proto(f.policy.as_ref()),
    })
}

pub(crate) fn file_check_to_proto(f: &FileCheckSpec) -> pb::FileCheck {
    pb::FileCheck {
        path: f.path.clone(),
        contains: f.contains.clone().unwrap_or_default(),
        policy: Some(policy_to_proto(&f.policy)),
    }
}

pub(crate) fn metric_from_proto(m: &pb::MetricCheck) -> Result<MetricCheckSpec, WireError> {
    let source = match (m.url.is_empty(), &m.command) {
        (false, None) => MetricSource::Http { url: m.url.clone() },
        (true, Some(c)) => MetricSource::Command(exec_from_proto(c, "metric_check.command.command")?),
        (false, Some(_)) => {
            return Err(WireError::invalid("metric_check.url", "metric check has both a url and a command"));
        }
        (true, None) => {
            return Err(WireError::invalid("metric_check.url", "metric check has neither a url nor a command"));
        }
    };
    let format = match (m.prometheus.is_empty(), m.json_path.is_empty()) {
        (false, true) => MetricFormat::Prometheus {
            name: m.prometheus.clone(),
            labels: m.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        },
        (true, false) => MetricFormat::Json { path: m.json_path.clone() },
        (true, true) => MetricFormat::Plain,
        (false, false) => {
            return Err(WireError::invalid(
                "metric_check.prometheus",
                "metric check has both a prometheus name and a json path",
            ));
        }
    };
    let threshold = |field, v: Option<f64>| -> Result<Option<Threshold>, WireError> {
        match v {
            Some(x) if !x.is_finite() => Err(WireError::invalid(field, format!("metric threshold {x} is not finite"))),
            other => Ok(other.map(Threshold)),
        }
    };
    let (below, above) = (threshold("metric_check.below", m.below)?, threshold("metric_check.above", m.above)?);
    if below.is_none() && above.is_none() {
        return Err(WireError::invalid("metric_check.below", "metric check has no threshold"));
    }
    Ok(MetricCheckSpec { source, format, below, above, policy: policy_from_proto(m.policy.as_ref()) })
}

pub(crate) fn metric_to_proto(m: &MetricCheckSpec) -> pb::MetricCheck {
    let (url, command) = match &m.source {
        MetricSource::Http { url } => (url.clone(), None),
        MetricSource::Command(e) => (String::new(), Some(exec_to_proto(e))),
    };
    let (prometheus, labels, json_path) = match &m.format {
        MetricFormat::Prometheus { name, labels } => {
            (name.clone(), labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(), String::new())
        }
        MetricFormat::Json { path } => (String::new(), Default::default(), path.clone()),
        MetricFormat::Plain => (String::new(), Default::default(), String::new()),
    };
    pb::MetricCheck {
        url,
        command,
        prometheus,
        labels,
        json_path,
        below: m.below.map(|t| t.0),
        above: m.above.map(|t| t.0),
        policy: Some(policy_to_proto(&m.policy)),
    }
}
