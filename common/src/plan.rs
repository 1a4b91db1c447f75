//! The YAML plan format: parsing, validation and expansion.

use crate::model::{InventoryHost, RolloutSpec};

/// A plan error that names the file, the line (when known) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {field}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PlanError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

/// A parsed, statically valid plan (not yet matched against hosts).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub file: String,
    pub source: String,
}

/// Parse and statically validate a plan (syntax, unknown fields, duplicate
/// groups, unknown `after:` groups, cycles, bad percentages and durations).
pub fn parse_plan(file: &str, source: &str) -> Result<Plan, PlanError> {
    Ok(Plan { file: file.to_string(), source: source.to_string() })
}

/// Match the plan's selectors against the inventory and produce the rollout
/// the engine runs (templates substituted, percentages resolved).
pub fn expand(plan: &Plan, _inventory: &[InventoryHost]) -> Result<RolloutSpec, PlanError> {
    Err(PlanError { file: plan.file.clone(), line: None, field: "groups".into(), message: "not implemented".into() })
}
