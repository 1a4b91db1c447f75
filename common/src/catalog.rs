//! Release catalogs and multi-hop upgrade paths.
//!
//! Some products cannot jump straight to a new version: Canopsis asks the
//! operator to apply the release notes of *every* release between the
//! installed one and the target, in order (3.38.0 → 3.39.0 → 3.39.1 →
//! 3.40.0), and some of those notes depend on the edition or on the modules
//! a host runs. A **catalog** (one YAML file per product) writes those notes
//! down as steps; [`path`] computes, for a starting and a target version, the
//! hops to take and the steps of each hop, and [`path_for_host`] does the same
//! for one host, starting from the version it reports and keeping only the
//! steps whose conditions the host meets.
//!
//! This module is pure: functions take source text and return values.
//!
//! # Format
//!
//! ```yaml
//! product: canopsis              # required: the product's name, for display
//! component: canopsis            # required: installed[component] is a host's version
//! skippable_by_default: false    # optional, see "Skipping" below
//! releases:                      # required, ascending order, no duplicates
//!   - version: 3.38.0
//!   - version: 3.39.0
//!     required: true             # never jumped over (documents the default)
//!     notes: https://...         # optional free text, shown by `convoy plan`
//!     when: { edition: pro }     # optional: a condition on every step below
//!     steps:                     # optional: phases, run in this order
//!       pre: [STEP, ...]
//!       upgrade: [STEP, ...]
//!       migrate: [STEP, ...]
//!       post: [STEP, ...]
//!       checks: [CHECK, ...]     # the hop's health gate, after `post`
//!   - version: 3.39.1
//!     skippable: true            # a path may jump over this release
//! downgrades:                    # optional; without an edge a downgrade is refused
//!   - from: 3.40.0
//!     to: 3.39.1
//!     steps: { pre: [...], upgrade: [...] }
//! ```
//!
//! A `STEP` is a plan step (`exec`, `archive`, `file`, with `name`,
//! `timeout`, `rollback`, `capture`, `estimate`) and a `CHECK` a plan check
//! (`http`, `tcp`, `exec`, `file`, with `estimate`), exactly as in a plan's
//! `steps:` and `checks:`, plus an optional `when:`. This module does **not** re-implement that
//! grammar: it keeps each step as a raw YAML value ([`CatalogStep::raw`],
//! `when` removed) with its field path and line, and plan expansion feeds it
//! through the plan's step or check parser (checks are the `checks` phase,
//! see [`Phase::is_check`]; steps of the `migrate` phase are migrations, see
//! `require_backup` in [`crate::plan`]). Here a step must only be a mapping, with a
//! non-empty string `name` if it has one.
//!
//! ## Conditions (`when:`)
//!
//! A mapping; a step applies to a host when every entry holds:
//! - `labels: { KEY: VALUE }`: the host has label KEY with that value;
//! - `facts: { KEY: VALUE }`: the same against the host's facts (what its
//!   agent reports: `hostname`, `os`, `arch` and its `--fact`s; or the
//!   inventory file's `facts:`);
//! - `installed: [COMPONENT, ...]` (or one name): every component is
//!   installed on the host, at any version ("skip what is not installed");
//! - any other `KEY: VALUE` is short for `labels: { KEY: VALUE }`, so
//!   `when: { edition: pro }` reads as written. (A label literally called
//!   `labels`, `facts` or `installed` needs the long form.)
//!
//! A VALUE is a scalar or a list of scalars (any of them matches:
//! `edition: [pro, enterprise]`); scalars are compared as text, so
//! `ha: true` matches the label `ha=true`. `when: {}` always holds. A
//! release's `when` applies to every step of the release, on top of the
//! step's own. A host that meets no condition of a release still passes
//! through it: the hop is in its path, with no steps.
//!
//! ## Templates
//!
//! `{{version}}` (spaces inside the braces allowed) in any string of a
//! catalog step is replaced at parse time by **the release's version** (for
//! a downgrade edge, its `to`), not the plan's target: 3.39.0's upgrade step
//! installs 3.39.0 even in a rollout to 3.40.0. Every other template
//! (`{{host}}`, `{{label.K}}`, `{{installed.C}}`, `{{fact.F}}`,
//! `{{captured.N}}`) is left for plan expansion.
//!
//! ## Captured values
//!
//! An `exec` step may `capture:` a value as in a plan, and any later step of
//! a host's path (the same hop or a later one), or of the group after it,
//! may use `{{captured.NAME}}`. A use that no earlier step of the catalog
//! (releases in ascending order, phases in order) captures is refused when
//! the plan is read, naming the catalog's file and line; because a host's
//! path may skip the capturing step (its `when:` does not hold, or the host
//! starts above that release), expansion checks again per host and names
//! the host. Several releases may capture the same name (the value of the
//! latest run replaces the earlier one); a hook's capture name may not be
//! reused.
//!
//! # Paths
//!
//! - **Upgrade** (`from < to`): one hop per release strictly above `from` up
//!   to and including `to`, in ascending order. A hop carries the steps of
//!   the release it ends on: passing through 3.39.0 applies 3.39.0's notes.
//! - **Skipping**: a release is skippable when it says `skippable: true`, or
//!   when the catalog says `skippable_by_default: true` and the release does
//!   not say `required: true` (nor `skippable: false`). A path jumps over a
//!   skippable release unless it is the target: its steps are **not** run
//!   when passing through it, only when it is the target (the next hop
//!   starts below it and lists it in [`Hop::skipped`]). `required: true`
//!   with `skippable: true` is an error. The default is therefore "apply
//!   every release between, in order", as Canopsis requires.
//! - `from == to`: an empty path (the host is done).
//! - `from` need not be a release: a version between two releases (a hotfix
//!   build) starts from the next release above it; a version below the
//!   oldest release has no path (the catalog does not know what that host
//!   needs). The first hop's `from` is the host's own version.
//! - `to` must be a release of the catalog, even when `from == to`: an
//!   unknown target is most likely a typo in the plan.
//! - **Downgrade** (`to < from`): refused unless the catalog declares
//!   `downgrades:` edges forming a chain from exactly `from` to exactly `to`
//!   (both must be releases, each edge must go down). The chain with the
//!   fewest edges is taken (ties: declaration order); each edge is a hop
//!   carrying the edge's steps. There is no skipping on the way down.
//!
//! # Errors
//!
//! [`parse_catalog`] returns the first problem as a [`PlanError`] naming the
//! file, the line and the field (`releases[2].version`), like plan errors:
//! YAML errors and unknown fields with serde_norway's line, semantic errors
//! (a bad version string, duplicate or unordered releases, a downgrade edge
//! to an unknown release or going up, `required` with `skippable`, a bad
//! `when`) with the line found by scanning the source. [`path`] and
//! [`path_for_host`] return a [`PathError`] naming the host (when there is
//! one), the versions and the reason, e.g. `host app-3: no path from 3.37.0
//! to 3.40.0: 3.37.0 is below the oldest release 3.38.0`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::Deserialize;
use serde_norway::Value;

// Field paths, sources, their errors and line numbers work exactly as in plans.
use crate::limits::PlanLimits;
use crate::model::InventoryHost;
use crate::plan::PlanError;
use crate::plan::{FieldPath, Src, locate};
use crate::version::Version;

// ---------------------------------------------------------------------------
// The validated catalog

/// A product's release catalog, releases in ascending version order.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    pub file: String,
    /// The text parsed, to locate errors in catalog steps when they are
    /// parsed as plan steps.
    pub source: String,
    pub product: String,
    /// `installed[component]` is a host's current version.
    pub component: String,
    /// Strictly ascending.
    pub releases: Vec<Release>,
    /// Declared downgrade edges, in declaration order.
    pub downgrades: Vec<Downgrade>,
}

/// One release and the steps to apply when a path passes through it.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub version: Version,
    /// Whether a path may jump over this release (see the module docs).
    pub skippable: bool,
    /// Free text (a link to the release notes, a summary).
    pub notes: Option<String>,
    /// Every phase's steps, in phase order then as written.
    pub steps: Vec<CatalogStep>,
    /// 1-based line of the release in the catalog.
    pub line: usize,
}

/// A declared downgrade edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Downgrade {
    pub from: Version,
    pub to: Version,
    pub steps: Vec<CatalogStep>,
    pub line: usize,
}

/// When, inside a hop, a step runs. Phases run in the order of [`Phase::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Pre,
    Upgrade,
    Migrate,
    Post,
    /// Health checks gating the hop: plan checks rather than steps.
    Checks,
}

impl Phase {
    pub const ALL: [Phase; 5] = [Phase::Pre, Phase::Upgrade, Phase::Migrate, Phase::Post, Phase::Checks];

    /// The key in the catalog (`pre`, `upgrade`, `migrate`, `post`, `checks`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Upgrade => "upgrade",
            Phase::Migrate => "migrate",
            Phase::Post => "post",
            Phase::Checks => "checks",
        }
    }

    /// Items of this phase are plan checks (parse them with the check grammar).
    pub fn is_check(self) -> bool {
        self == Phase::Checks
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step of a release or downgrade edge, not yet parsed as a plan step.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogStep {
    pub phase: Phase,
    /// The step's `name`, or `<phase>-<n>` (1-based in its phase as written,
    /// so the same on every host). Unique within its release or edge.
    pub name: String,
    /// Conditions that must all hold: the release's `when`, then the step's.
    pub when: Vec<Condition>,
    /// The step as written, without `when`, `{{version}}` already replaced
    /// by the release's version. Feed it to the plan's step (or, for
    /// [`Phase::Checks`], check) parser.
    pub raw: Value,
    /// Field path in the catalog, e.g. `releases[1].steps.migrate[0]`.
    pub field: String,
    /// 1-based line of the step in the catalog.
    pub line: usize,
}

impl CatalogStep {
    /// Whether every condition holds on `host`.
    pub fn applies_to(&self, host: &HostContext<'_>) -> bool {
        self.when.iter().all(|c| c.matches(host))
    }
}

/// A `when:` condition (see the module docs). Empty: always true.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Condition {
    /// Label -> accepted values (any of them).
    pub labels: BTreeMap<String, Vec<String>>,
    /// Fact -> accepted values (any of them).
    pub facts: BTreeMap<String, Vec<String>>,
    /// Components that must all be installed.
    pub installed: Vec<String>,
}

impl Condition {
    pub fn matches(&self, host: &HostContext<'_>) -> bool {
        let has = |map: &BTreeMap<String, String>, k: &String, vals: &Vec<String>| {
            map.get(k).is_some_and(|v| vals.iter().any(|want| want == v))
        };
        self.labels.iter().all(|(k, vals)| has(host.labels, k, vals))
            && self.facts.iter().all(|(k, vals)| has(host.facts, k, vals))
            && self.installed.iter().all(|c| host.installed.contains_key(c))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let show = |vals: &[String]| if vals.len() == 1 { vals[0].clone() } else { format!("[{}]", vals.join(", ")) };
        for (k, v) in &self.labels {
            parts.push(format!("{k}={}", show(v)));
        }
        for (k, v) in &self.facts {
            parts.push(format!("fact {k}={}", show(v)));
        }
        for c in &self.installed {
            parts.push(format!("installed {c}"));
        }
        if parts.is_empty() { f.write_str("always") } else { f.write_str(&parts.join(" and ")) }
    }
}

/// What the path computation needs to know about a host.
#[derive(Debug, Clone, Copy)]
pub struct HostContext<'a> {
    pub id: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Component -> installed version.
    pub installed: &'a BTreeMap<String, String>,
    /// Facts the agent reported, for `when: { facts: ... }`.
    pub facts: &'a BTreeMap<String, String>,
}

impl<'a> HostContext<'a> {
    /// An inventory host, with the facts its agent reported (or its
    /// inventory file's `facts:`).
    pub fn from_inventory(host: &'a InventoryHost) -> HostContext<'a> {
        HostContext { id: &host.id, labels: &host.labels, installed: &host.installed, facts: &host.facts }
    }
}

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upgrade,
    Downgrade,
}

/// One hop of a path: from a version to the next release (or, down, along a
/// declared edge), with the steps to run, by phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    pub from: Version,
    pub to: Version,
    pub direction: Direction,
    /// Skippable releases jumped over by this hop, ascending.
    pub skipped: Vec<Version>,
    /// Non-empty phases in phase order, each with its steps as written.
    pub phases: Vec<(Phase, Vec<CatalogStep>)>,
}

impl Hop {
    fn new(from: Version, to: Version, direction: Direction, skipped: Vec<Version>, steps: &[CatalogStep]) -> Hop {
        let phases = Phase::ALL
            .iter()
            .map(|&p| (p, steps.iter().filter(|s| s.phase == p).cloned().collect::<Vec<_>>()))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        Hop { from, to, direction, skipped, phases }
    }

    /// Every step of the hop, in order.
    pub fn steps(&self) -> impl Iterator<Item = &CatalogStep> {
        self.phases.iter().flat_map(|(_, s)| s)
    }

    /// The hop with only the steps that apply to `host` (phases left empty
    /// are dropped; the hop itself stays).
    pub fn for_host(&self, host: &HostContext<'_>) -> Hop {
        let phases = self
            .phases
            .iter()
            .map(|(p, steps)| (*p, steps.iter().filter(|s| s.applies_to(host)).cloned().collect::<Vec<_>>()))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        Hop { phases, ..self.clone() }
    }

    /// A step name unique over a whole path: `3.39.0/reconfigure` on the way
    /// up, `3.40.0->3.39.1/reconfigure` on the way down.
    pub fn qualified_name(&self, step: &CatalogStep) -> String {
        match self.direction {
            Direction::Upgrade => format!("{}/{}", self.to, step.name),
            Direction::Downgrade => format!("{}->{}/{}", self.from, self.to, step.name),
        }
    }
}

impl Catalog {
    /// The release with this version (by ordering: `1.01` finds `1.1`).
    pub fn release(&self, version: &Version) -> Option<&Release> {
        self.releases.binary_search_by(|r| r.version.cmp(version)).ok().map(|i| &self.releases[i])
    }

    pub fn oldest(&self) -> &Release {
        &self.releases[0]
    }

    pub fn newest(&self) -> &Release {
        &self.releases[self.releases.len() - 1]
    }
}

// ---------------------------------------------------------------------------
// Paths

/// Why there is no path (see [`PathError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPath {
    /// The target is not a release of the catalog.
    UnknownTarget,
    /// The start is below the oldest release.
    BelowOldest { oldest: String },
    /// A downgrade and the catalog declares no downgrade edges at all.
    DowngradeRefused,
    /// A downgrade and no chain of declared edges leads from `from` to `to`.
    NoDowngradeChain { declared: Vec<(String, String)> },
    /// The host does not report the catalog's component.
    NotInstalled { component: String },
    /// The host reports a version that does not parse (the message names
    /// the component and the text).
    BadInstalledVersion { message: String },
}

/// No path between two versions, naming the host when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PathError {
    pub host: Option<String>,
    /// The start (`None` when the host's version is unknown or unreadable).
    pub from: Option<String>,
    pub to: String,
    pub reason: NoPath,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.host {
            write!(f, "host {h}: ")?;
        }
        match &self.from {
            Some(from) => write!(f, "no path from {from} to {}: ", self.to)?,
            None => write!(f, "no path to {}: ", self.to)?,
        }
        let to = &self.to;
        let from = self.from.as_deref().unwrap_or("?");
        match &self.reason {
            NoPath::UnknownTarget => write!(f, "{to} is not a release of the catalog"),
            NoPath::BelowOldest { oldest } => write!(f, "{from} is below the oldest release {oldest}"),
            NoPath::DowngradeRefused => f.write_str("downgrades are refused: the catalog declares no downgrades"),
            NoPath::NoDowngradeChain { declared } => {
                let edges: Vec<String> = declared.iter().map(|(a, b)| format!("{a} -> {b}")).collect();
                write!(
                    f,
                    "downgrades are refused: no chain of declared downgrades leads from {from} to {to} (declared: {})",
                    edges.join(", ")
                )
            }
            NoPath::NotInstalled { component } => {
                write!(f, "{component} is not installed, so the start of the path is unknown")
            }
            NoPath::BadInstalledVersion { message } => f.write_str(message),
        }
    }
}

/// The hops from `from` to `to`, with every step (unfiltered); see the
/// module docs for the rules.
pub fn path(catalog: &Catalog, from: &Version, to: &Version) -> Result<Vec<Hop>, PathError> {
    let fail = |reason| PathError { host: None, from: Some(from.to_string()), to: to.to_string(), reason };
    let Some(target) = catalog.release(to) else { return Err(fail(NoPath::UnknownTarget)) };
    if from == to {
        return Ok(Vec::new());
    }
    if from < to {
        let oldest = catalog.oldest();
        if *from < oldest.version {
            return Err(fail(NoPath::BelowOldest { oldest: oldest.version.to_string() }));
        }
        let mut hops = Vec::new();
        let mut current = from.clone();
        let mut skipped = Vec::new();
        for r in catalog.releases.iter().filter(|r| r.version > *from && r.version <= target.version) {
            if r.skippable && r.version != target.version {
                skipped.push(r.version.clone());
                continue;
            }
            hops.push(Hop::new(current, r.version.clone(), Direction::Upgrade, std::mem::take(&mut skipped), &r.steps));
            current = r.version.clone();
        }
        return Ok(hops);
    }
    if catalog.downgrades.is_empty() {
        return Err(fail(NoPath::DowngradeRefused));
    }
    // Breadth-first over the edges (they all go down, so there is no cycle):
    // the fewest edges, ties to declaration order.
    let mut via: Vec<Option<usize>> = vec![None; catalog.downgrades.len()];
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut seen: Vec<&Version> = vec![from];
    for (i, e) in catalog.downgrades.iter().enumerate() {
        if e.from == *from && !seen.contains(&&e.to) {
            seen.push(&e.to);
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        if catalog.downgrades[i].to == *to {
            let mut chain = vec![i];
            while let Some(prev) = via[*chain.last().unwrap_or(&i)] {
                chain.push(prev);
            }
            chain.reverse();
            return Ok(chain
                .into_iter()
                .map(|j| {
                    let e = &catalog.downgrades[j];
                    Hop::new(e.from.clone(), e.to.clone(), Direction::Downgrade, Vec::new(), &e.steps)
                })
                .collect());
        }
        let at = &catalog.downgrades[i].to;
        for (j, e) in catalog.downgrades.iter().enumerate() {
            if e.from == *at && !seen.contains(&&e.to) {
                seen.push(&e.to);
                via[j] = Some(i);
                queue.push_back(j);
            }
        }
    }
    let declared = catalog.downgrades.iter().map(|e| (e.from.to_string(), e.to.to_string())).collect();
    Err(fail(NoPath::NoDowngradeChain { declared }))
}

/// The path of one host, from the version of `catalog.component` it reports
/// to `to`, each hop keeping only the steps that apply to the host.
pub fn path_for_host(catalog: &Catalog, host: &HostContext<'_>, to: &Version) -> Result<Vec<Hop>, PathError> {
    let fail =
        |from: Option<String>, reason| PathError { host: Some(host.id.to_string()), from, to: to.to_string(), reason };
    let Some(raw) = host.installed.get(&catalog.component) else {
        return Err(fail(None, NoPath::NotInstalled { component: catalog.component.clone() }));
    };
    let from: Version = raw.parse().map_err(|e: crate::version::VersionError| {
        fail(None, NoPath::BadInstalledVersion { message: format!("installed {}: {e}", catalog.component) })
    })?;
    let hops = path(catalog, &from, to).map_err(|e| PathError { host: Some(host.id.to_string()), ..e })?;
    Ok(hops.iter().map(|h| h.for_host(host)).collect())
}

// ---------------------------------------------------------------------------
// Parsing

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    product: Option<String>,
    component: Option<String>,
    skippable_by_default: Option<bool>,
    releases: Option<Vec<RawRelease>>,
    downgrades: Option<Vec<RawDowngrade>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    version: Option<String>,
    required: Option<bool>,
    skippable: Option<bool>,
    notes: Option<String>,
    when: Option<Value>,
    steps: Option<RawPhases>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDowngrade {
    from: Option<String>,
    to: Option<String>,
    steps: Option<RawPhases>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhases {
    pre: Option<Vec<Value>>,
    upgrade: Option<Vec<Value>>,
    migrate: Option<Vec<Value>>,
    post: Option<Vec<Value>>,
    checks: Option<Vec<Value>>,
}

impl RawPhases {
    fn get(&self, p: Phase) -> &[Value] {
        let list = match p {
            Phase::Pre => &self.pre,
            Phase::Upgrade => &self.upgrade,
            Phase::Migrate => &self.migrate,
            Phase::Post => &self.post,
            Phase::Checks => &self.checks,
        };
        list.as_deref().unwrap_or_default()
    }
}

impl Src<'_> {
    fn required(&self, value: Option<String>, path: &FieldPath) -> Result<String, PlanError> {
        match value {
            Some(v) if !v.trim().is_empty() => Ok(v),
            Some(_) => Err(self.err(path, "must not be empty")),
            None => Err(self.err(path, "missing required field")),
        }
    }

    fn version(&self, value: Option<String>, path: &FieldPath) -> Result<Version, PlanError> {
        let text = self.required(value, path)?;
        text.parse().map_err(|e: crate::version::VersionError| self.err(path, e.to_string()))
    }
}

/// Parse and validate a catalog (see the module docs). Returns the first error.
pub fn parse_catalog(file: &str, source: &str) -> Result<Catalog, PlanError> {
    parse_catalog_with_limits(file, source, &PlanLimits::default())
}

/// [`parse_catalog`] under `limits`: the text's size and nesting are checked
/// before it is parsed (see [`crate::limits`]).
pub fn parse_catalog_with_limits(file: &str, source: &str, limits: &PlanLimits) -> Result<Catalog, PlanError> {
    let source = crate::limits::strip_bom(source);
    crate::limits::check_text(file, source, limits)?;
    let src = Src { file, source };
    // One locator for every release and step: see `locate::Locator`.
    let locator = locate::Locator::new(source);
    let raw: RawCatalog = serde_norway::from_str(source).map_err(|e| yaml_error(file, &e))?;
    let root = FieldPath::default();
    let product = src.required(raw.product, &root.key("product"))?;
    let component = src.required(raw.component, &root.key("component"))?;
    let skippable_by_default = raw.skippable_by_default.unwrap_or(false);

    let rpath = root.key("releases");
    let raw_releases = raw.releases.ok_or_else(|| src.err(&rpath, "missing required field"))?;
    if raw_releases.is_empty() {
        return Err(src.err(&rpath, "a catalog needs at least one release"));
    }
    let mut releases: Vec<Release> = Vec::with_capacity(raw_releases.len());
    for (i, r) in raw_releases.into_iter().enumerate() {
        let p = rpath.idx(i);
        let vp = p.key("version");
        let version = src.version(r.version, &vp)?;
        if let Some(prev) = releases.last() {
            match prev.version.cmp(&version) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    let first = releases.iter().position(|x| x.version == version).unwrap_or(i - 1);
                    return Err(src.err(
                        &vp,
                        format!("duplicate release {version} (same version as releases[{first}]: {})", prev.version),
                    ));
                }
                std::cmp::Ordering::Greater => {
                    return Err(src.err(
                        &vp,
                        format!(
                            "releases must be listed in ascending order: {version} comes after {} (releases[{}])",
                            prev.version,
                            i - 1
                        ),
                    ));
                }
            }
        }
        let required = r.required.unwrap_or(false);
        if required && r.skippable == Some(true) {
            return Err(src.err(&p.key("skippable"), "a required release cannot be skippable"));
        }
        let skippable = r.skippable.unwrap_or(skippable_by_default && !required);
        let release_when = match &r.when {
            Some(w) => vec![condition(src, w, &p.key("when"))?],
            None => Vec::new(),
        };
        check_step_count(src, r.steps.as_ref(), &p.key("steps"), limits)?;
        let steps = phases(src, &locator, r.steps.as_ref(), &p.key("steps"), version.as_str(), &release_when)?;
        releases.push(Release { version, skippable, notes: r.notes, steps, line: locator.line_of(&p.0) });
    }

    let dpath = root.key("downgrades");
    let mut downgrades: Vec<Downgrade> = Vec::new();
    for (i, d) in raw.downgrades.unwrap_or_default().into_iter().enumerate() {
        let p = dpath.idx(i);
        let known = |field: &str, v: Option<String>| -> Result<Version, PlanError> {
            let fp = p.key(field);
            let v = src.version(v, &fp)?;
            if releases.iter().any(|r| r.version == v) {
                Ok(v)
            } else {
                Err(src.err(&fp, format!("unknown release {v}: not in releases")))
            }
        };
        let from = known("from", d.from)?;
        let to = known("to", d.to)?;
        if to >= from {
            return Err(src.err(&p.key("to"), format!("a downgrade must go down: {to} is not below {from}")));
        }
        if let Some(j) = downgrades.iter().position(|e| e.from == from && e.to == to) {
            return Err(src.err(&p, format!("duplicate downgrade {from} -> {to} (also downgrades[{j}])")));
        }
        check_step_count(src, d.steps.as_ref(), &p.key("steps"), limits)?;
        let steps = phases(src, &locator, d.steps.as_ref(), &p.key("steps"), to.as_str(), &[])?;
        downgrades.push(Downgrade { from, to, steps, line: locator.line_of(&p.0) });
    }

    Ok(Catalog { file: file.to_string(), source: source.to_string(), product, component, releases, downgrades })
}

/// Refuse a release or downgrade with more steps than `limits.max_steps`,
/// before they are validated (names are compared pairwise).
fn check_step_count(
    src: Src<'_>,
    raw: Option<&RawPhases>,
    p: &FieldPath,
    limits: &PlanLimits,
) -> Result<(), PlanError> {
    let n: usize = raw.map_or(0, |r| Phase::ALL.iter().map(|&ph| r.get(ph).len()).sum());
    if n > limits.max_steps {
        return Err(src.err(p, format!("{n} steps, more than the limit of {}", limits.max_steps)));
    }
    Ok(())
}

/// The steps of every phase, in phase order.
fn phases(
    src: Src<'_>,
    locator: &locate::Locator<'_>,
    raw: Option<&RawPhases>,
    p: &FieldPath,
    version: &str,
    inherited: &[Condition],
) -> Result<Vec<CatalogStep>, PlanError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let mut steps: Vec<CatalogStep> = Vec::new();
    for phase in Phase::ALL {
        for (i, value) in raw.get(phase).iter().enumerate() {
            let sp = p.key(phase.as_str()).idx(i);
            let Value::Mapping(map) = value else {
                return Err(src.err(&sp, "a step must be a mapping"));
            };
            let mut map = map.clone();
            let mut when = inherited.to_vec();
            if let Some(w) = map.remove("when") {
                when.push(condition(src, &w, &sp.key("when"))?);
            }
            let name = match map.get("name") {
                None => format!("{phase}-{}", i + 1),
                Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
                Some(_) => return Err(src.err(&sp.key("name"), "must be a non-empty string")),
            };
            if let Some(other) = steps.iter().find(|s| s.name == name) {
                return Err(src.err(
                    &sp.key("name"),
                    format!("duplicate step name '{name}' in this release (also {})", other.field),
                ));
            }
            let mut raw = Value::Mapping(map);
            substitute_version(&mut raw, version);
            steps.push(CatalogStep { phase, name, when, raw, field: sp.to_string(), line: locator.line_of(&sp.0) });
        }
    }
    Ok(steps)
}

/// Replace `{{version}}` (any spacing inside) in every string of `value`.
fn substitute_version(value: &mut Value, version: &str) {
    match value {
        Value::String(s) => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let inside = &rest[start + 2..];
                match inside.find("}}") {
                    Some(end) if inside[..end].trim() == "version" => {
                        out.push_str(&rest[..start]);
                        out.push_str(version);
                        rest = &inside[end + 2..];
                    }
                    _ => {
                        out.push_str(&rest[..start + 2]);
                        rest = inside;
                    }
                }
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| substitute_version(v, version)),
        Value::Mapping(map) => map.values_mut().for_each(|v| substitute_version(v, version)),
        Value::Tagged(t) => substitute_version(&mut t.value, version),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A scalar or a non-empty list of scalars.
fn values(src: Src<'_>, v: &Value, p: &FieldPath) -> Result<Vec<String>, PlanError> {
    let list = match v {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| scalar_text(x).ok_or_else(|| src.err(&p.idx(i), "expected a scalar value")))
            .collect::<Result<Vec<_>, _>>()?,
        other => vec![scalar_text(other).ok_or_else(|| src.err(p, "expected a value or a list of values"))?],
    };
    if list.is_empty() {
        return Err(src.err(p, "an empty list matches nothing"));
    }
    Ok(list)
}

fn matches_map(
    src: Src<'_>,
    v: &Value,
    p: &FieldPath,
    out: &mut BTreeMap<String, Vec<String>>,
) -> Result<(), PlanError> {
    let Value::Mapping(map) = v else { return Err(src.err(p, "expected a mapping of KEY: VALUE")) };
    for (k, val) in map {
        let Some(key) = scalar_text(k) else { return Err(src.err(p, "keys must be scalars")) };
        let vals = values(src, val, &p.key(&key))?;
        out.insert(key, vals);
    }
    Ok(())
}

fn condition(src: Src<'_>, v: &Value, p: &FieldPath) -> Result<Condition, PlanError> {
    let Value::Mapping(map) = v else {
        return Err(src.err(p, "expected a mapping (labels, facts, installed, or LABEL: VALUE)"));
    };
    let mut c = Condition::default();
    for (k, val) in map {
        let Some(key) = scalar_text(k) else { return Err(src.err(p, "keys must be scalars")) };
        let kp = p.key(&key);
        match key.as_str() {
            "labels" => matches_map(src, val, &kp, &mut c.labels)?,
            "facts" => matches_map(src, val, &kp, &mut c.facts)?,
            "installed" => c.installed.extend(values(src, val, &kp)?),
            _ => {
                let vals = values(src, val, &kp)?;
                c.labels.insert(key, vals);
            }
        }
    }
    Ok(c)
}

fn yaml_error(file: &str, err: &serde_norway::Error) -> PlanError {
    let line = err.location().map_or(1, |l| l.line());
    let mut text = err.to_string();
    while let Some(start) = text.find(" at line ") {
        let tail = &text[start + " at line ".len()..];
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        let Some(after_col) = tail[digits..].strip_prefix(" column ") else { break };
        let col_digits = after_col.chars().take_while(char::is_ascii_digit).count();
        let end = text.len() - after_col.len() + col_digits;
        text.replace_range(start..end, "");
    }
    let text = text.replace("struct RawCatalog", "a mapping").replace("struct RawRelease", "a mapping");
    let text = text.replace("struct RawDowngrade", "a mapping").replace("struct RawPhases", "a mapping");
    let is_path =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    let (path, message) = match text.split_once(": ") {
        Some((path, message)) if is_path(path) => (path.to_string(), message.to_string()),
        _ => (String::new(), text.clone()),
    };
    let unknown = message.strip_prefix("unknown field `").and_then(|r| r.split_once('`')).map(|(n, _)| n.to_string());
    let field = match (unknown, path.is_empty()) {
        (Some(name), true) => name,
        (Some(name), false) => format!("{path}.{name}"),
        (None, false) => path,
        (None, true) => "(yaml)".to_string(),
    };
    PlanError { file: file.to_string(), line: Some(line), field, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_templates_are_replaced_and_others_kept() {
        let mut v = Value::String("a {{version}} b {{ version }} {{label.x}} {{host}} {{ versions }} {{".into());
        substitute_version(&mut v, "3.39.0");
        assert_eq!(v, Value::String("a 3.39.0 b 3.39.0 {{label.x}} {{host}} {{ versions }} {{".into()));
    }

    #[test]
    fn conditions_display() {
        let mut c = Condition::default();
        assert_eq!(c.to_string(), "always");
        c.labels.insert("edition".into(), vec!["pro".into()]);
        c.installed.push("webhook".into());
        assert_eq!(c.to_string(), "edition=pro and installed webhook");
    }
}
