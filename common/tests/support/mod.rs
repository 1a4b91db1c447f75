//! Helpers shared by the plan and catalog error tests.

use convoy_common::model::InventoryHost;
use convoy_common::plan::PlanError;

/// `e` names `file`, `line` and `field`, its message contains `message`, and
/// it prints as `file:line: field: ...`.
#[track_caller]
#[allow(dead_code)]
pub fn check_error(e: &PlanError, file: &str, line: usize, field: &str, message: &str) {
    let shown = e.to_string();
    assert_eq!(e.file, file, "{shown}");
    assert_eq!(e.line, Some(line), "{shown}");
    assert_eq!(e.field, field, "{shown}");
    assert!(e.message.contains(message), "{shown:?} should contain {message:?}");
    assert!(shown.starts_with(&format!("{file}:{line}: {field}: ")), "{shown}");
}

/// An inventory host with these labels and installed versions.
#[allow(dead_code)]
pub fn inventory_host(id: &str, labels: &[(&str, &str)], installed: &[(&str, &str)]) -> InventoryHost {
    let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    InventoryHost { id: id.to_string(), labels: map(labels), installed: map(installed), ..Default::default() }
}
