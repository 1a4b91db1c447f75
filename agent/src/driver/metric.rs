//! The `metric` check: read a number from an HTTP endpoint (Prometheus text
//! or JSON) or a command's output, and compare it with a threshold. The
//! reading and judging are pure and live in `convoy_common::metric`; this
//! module only fetches the text. Retries, interval, deadline and
//! `min_healthy` come from the shared check loop.

use std::path::PathBuf;
use std::time::Duration;

use convoy_common::metric;
use convoy_common::model::{MetricCheckSpec, MetricSource};

use super::check::Observed;
use super::{exec, http};

/// One attempt: fetch, read, judge.
pub(crate) async fn metric_attempt(
    spec: &MetricCheckSpec,
    workdir: Option<PathBuf>,
    budget: Duration,
) -> Result<Observed, Observed> {
    let (text, from) = match &spec.source {
        MetricSource::Http { url } => {
            let parsed = http::parse_url(url).map_err(Observed::detail)?;
            let resp = tokio::time::timeout(budget, http::get(&parsed))
                .await
                .map_err(|_| Observed::detail(format!("{url}: no answer within {budget:?}")))?
                .map_err(|e| Observed::detail(format!("{url}: {e}")))?;
            if !(200..300).contains(&resp.status) {
                return Err(Observed::detail(format!("{url}: status {}", resp.status)));
            }
            (resp.body, url.clone())
        }
        MetricSource::Command(e) => {
            let run = exec::run_command(e, workdir, Some(budget)).await;
            let shown = exec::describe(e);
            if !run.success() {
                return Err(Observed {
                    detail: exec::ended_message(&shown, &run.ended),
                    exit_code: run.exit_code(),
                    stdout_tail: run.stdout_tail,
                    stderr_tail: run.stderr_tail,
                    http_status: None,
                });
            }
            (run.stdout_tail, shown)
        }
    };
    let value = metric::read_value(&spec.format, &text).map_err(|e| Observed::detail(format!("{from}: {e}")))?;
    let below = spec.below.map(|t| t.0);
    let above = spec.above.map(|t| t.0);
    metric::judge(value, below, above)
        .map(|d| Observed::detail(format!("{from}: {d}")))
        .map_err(|d| Observed::detail(format!("{from}: {d}")))
}
