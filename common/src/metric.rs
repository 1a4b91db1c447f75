//! Reading a number out of a metrics endpoint or a command's output, and
//! judging it against a threshold: the logic behind `metric` checks, e.g.
//! "wait until the broker's queue backlog is below 1,000" after restarting
//! consumers (the Canopsis procedure in `shared/seeds/000`).
//!
//! Decisions:
//! - Prometheus text format: the value is the **sum** of every sample of the
//!   metric whose labels include the requested ones (a backlog spread over
//!   several queues is judged as a whole; name labels to narrow it down). No
//!   matching sample is an error, not zero: a metric that vanished must not
//!   read as "drained".
//! - JSON: a dot path (`queues.0.messages`) to a number, or a string holding one.
//! - Plain: the first token of the output parsed as a number.
//! - Thresholds are strict: `below: 1000` passes at 999, fails at 1000.
//!   NaN never passes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where in the text the number is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricFormat {
    /// Prometheus text exposition format: sum of the matching samples.
    Prometheus { name: String, labels: BTreeMap<String, String> },
    /// A JSON document and a dot path to the number.
    Json { path: String },
    /// The whole output is a number (surrounding whitespace ignored).
    Plain,
}

/// The number `format` reads from `text`, or why there is none.
pub fn read_value(format: &MetricFormat, text: &str) -> Result<f64, String> {
    match format {
        MetricFormat::Prometheus { name, labels } => prometheus_sum(text, name, labels),
        MetricFormat::Json { path } => {
            let value: serde_json::Value =
                serde_json::from_str(text.trim()).map_err(|e| format!("the output is not JSON ({e})"))?;
            let at = crate::capture::json_lookup(&value, path)?;
            match at {
                serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| format!("'{path}' is not a finite number")),
                serde_json::Value::String(s) => {
                    s.trim().parse().map_err(|_| format!("'{path}' is the string {s:?}, not a number"))
                }
                other => Err(format!("'{path}' is {other}, not a number")),
            }
        }
        MetricFormat::Plain => {
            let tok = text.split_whitespace().next().ok_or("the output is empty")?;
            tok.parse().map_err(|_| format!("the output starts with {tok:?}, not a number"))
        }
    }
}

/// `Ok(description)` when `value` is strictly below `below` and strictly
/// above `above` (each optional), else `Err(description)`.
pub fn judge(value: f64, below: Option<f64>, above: Option<f64>) -> Result<String, String> {
    let mut parts = Vec::new();
    let mut ok = !value.is_nan();
    if let Some(b) = below {
        ok &= value < b;
        parts.push(format!("below {b}"));
    }
    if let Some(a) = above {
        ok &= value > a;
        parts.push(format!("above {a}"));
    }
    let want = if parts.is_empty() { "any value".to_string() } else { parts.join(" and ") };
    let d = format!("value {value} (wanted {want})");
    if ok { Ok(d) } else { Err(d) }
}

fn prometheus_sum(text: &str, name: &str, want: &BTreeMap<String, String>) -> Result<f64, String> {
    let mut sum = 0.0;
    let mut matched = 0usize;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (sample_name, labels, rest) =
            parse_sample(line).map_err(|e| format!("metrics line {}: {e}: {line:?}", n + 1))?;
        if sample_name != name || !want.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let value = rest.split_whitespace().next().ok_or_else(|| format!("metrics line {}: no value", n + 1))?;
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| format!("metrics line {}: bad value {v:?}", n + 1))?,
        };
        sum += v;
        matched += 1;
    }
    if matched == 0 {
        let sel = if want.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", want.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(","))
        };
        return Err(format!("metric {name}{sel} not found"));
    }
    Ok(sum)
}

/// `name{a="x",b="y"} rest` -> (name, labels, rest).
fn parse_sample(line: &str) -> Result<(&str, BTreeMap<String, String>, &str), String> {
    let end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value")?;
    let (name, rest) = line.split_at(end);
    let Some(body) = rest.strip_prefix('{') else { return Ok((name, BTreeMap::new(), rest)) };
    enum At {
        Key,
        Quote,
        Value { escaped: bool },
        Sep,
    }
    let mut labels = BTreeMap::new();
    let (mut key, mut value, mut at) = (String::new(), String::new(), At::Key);
    for (i, c) in body.char_indices() {
        at = match (at, c) {
            (At::Key | At::Sep, '}') => return Ok((name, labels, &body[i + 1..])),
            (At::Key | At::Sep, ',') => At::Key,
            (At::Key, '=') => At::Quote,
            (At::Key, c) => {
                if !c.is_whitespace() {
                    key.push(c);
                }
                At::Key
            }
            (At::Sep, c) if c.is_whitespace() => At::Sep,
            (At::Sep, c) => return Err(format!("unexpected {c:?} after a label value")),
            (At::Quote, '"') => At::Value { escaped: false },
            (At::Quote, _) => return Err("label value not quoted".into()),
            (At::Value { escaped: true }, c) => {
                value.push(if c == 'n' { '\n' } else { c });
                At::Value { escaped: false }
            }
            (At::Value { escaped: false }, '\\') => At::Value { escaped: true },
            (At::Value { escaped: false }, '"') => {
                labels.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                At::Sep
            }
            (At::Value { escaped: false }, c) => {
                value.push(c);
                At::Value { escaped: false }
            }
        };
    }
    Err("unclosed '{'".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RABBIT: &str = r#"# HELP rabbitmq_queue_messages Messages ready and unacknowledged
# TYPE rabbitmq_queue_messages gauge
rabbitmq_queue_messages{vhost="canopsis",queue="Engine_che"} 1200
rabbitmq_queue_messages{vhost="canopsis",queue="Engine_axe"} 300 1700000000000
rabbitmq_queue_messages{vhost="other",queue="x, \"quoted\" {brace}"} 5
rabbitmq_queue_messages_total 9
"#;

    fn prom(name: &str, labels: &[(&str, &str)]) -> MetricFormat {
        MetricFormat::Prometheus {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn prometheus_sums_matching_samples_and_respects_labels() {
        assert_eq!(read_value(&prom("rabbitmq_queue_messages", &[]), RABBIT), Ok(1505.0));
        assert_eq!(read_value(&prom("rabbitmq_queue_messages", &[("vhost", "canopsis")]), RABBIT), Ok(1500.0));
        assert_eq!(read_value(&prom("rabbitmq_queue_messages", &[("queue", "Engine_axe")]), RABBIT), Ok(300.0));
        assert_eq!(
            read_value(&prom("rabbitmq_queue_messages", &[("queue", "x, \"quoted\" {brace}")]), RABBIT),
            Ok(5.0)
        );
        assert_eq!(read_value(&prom("rabbitmq_queue_messages_total", &[]), RABBIT), Ok(9.0));
        let err = read_value(&prom("rabbitmq_queue_messages", &[("queue", "nope")]), RABBIT).unwrap_err();
        assert!(err.contains("not found") && err.contains("queue=\"nope\""), "{err}");
        let err = read_value(&prom("m", &[]), "m{a=\"1\" 3\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn json_and_plain_values() {
        let doc = r#"{"queues":[{"name":"a","messages":12},{"name":"b","messages":"7"}],"ok":true}"#;
        assert_eq!(read_value(&MetricFormat::Json { path: "queues.0.messages".into() }, doc), Ok(12.0));
        assert_eq!(read_value(&MetricFormat::Json { path: "queues.1.messages".into() }, doc), Ok(7.0));
        assert!(read_value(&MetricFormat::Json { path: "ok".into() }, doc).unwrap_err().contains("not a number"));
        assert!(read_value(&MetricFormat::Json { path: "queues.5".into() }, doc).unwrap_err().contains("not found"));
        assert_eq!(read_value(&MetricFormat::Plain, "  42.5\n"), Ok(42.5));
        assert!(read_value(&MetricFormat::Plain, "").is_err());
        assert!(read_value(&MetricFormat::Plain, "n/a").is_err());
    }

    #[test]
    fn thresholds_are_strict_and_nan_never_passes() {
        assert!(judge(999.0, Some(1000.0), None).is_ok());
        assert!(judge(1000.0, Some(1000.0), None).is_err());
        assert!(judge(5.0, Some(10.0), Some(1.0)).is_ok());
        assert!(judge(0.5, Some(10.0), Some(1.0)).is_err());
        assert!(judge(f64::NAN, Some(10.0), None).is_err());
        assert!(judge(f64::NAN, None, None).is_err());
        assert_eq!(judge(3.0, None, Some(1.0)), Ok("value 3 (wanted above 1)".into()));
    }
}
