//! Release catalogs in a plan: each step of a catalog the plan uses, read
//! once through the plan's step and check grammar, and a host's path
//! through a catalog as steps at expansion.

use std::collections::HashMap;

use crate::catalog::{Catalog, CatalogStep, HostContext, Phase, path_for_host};
use crate::model::InventoryHost;
use crate::version::Version;

use super::checks::check;
use super::errors::{FieldPath, PlanError, Src, yaml_error};
use super::expansion::HopDetail;
use super::raw::{RawCheck, RawStep};
use super::steps::step;
use super::validated::{Plan, PlanGroup, StepTemplate};
use super::vars::refuse_vars;

/// A catalog a plan uses, with every step parsed once as a plan step/check.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PlanCatalog {
    /// The name the plan gives it (`release: { catalog: NAME }`).
    pub(super) name: String,
    pub(super) catalog: Catalog,
    /// The plan's `version` as a release of the catalog.
    target: Version,
    /// Parsed steps by their field in the catalog ([`CatalogStep::field`]),
    /// named with [`CatalogStep::name`] (qualified per hop at expansion).
    pub(super) steps: HashMap<String, StepTemplate>,
}

impl PlanCatalog {
    pub(super) fn src(&self) -> Src<'_> {
        Src { file: &self.catalog.file, source: &self.catalog.source }
    }

    /// The parsed steps of every release, releases ascending, each in phase order.
    pub(super) fn release_steps(&self) -> impl Iterator<Item = &StepTemplate> {
        self.catalog.releases.iter().flat_map(|r| &r.steps).filter_map(|cs| self.steps.get(&cs.field))
    }

    /// The parsed steps of every downgrade edge, in declaration order.
    pub(super) fn downgrade_steps(&self) -> impl Iterator<Item = &StepTemplate> {
        self.catalog.downgrades.iter().flat_map(|d| &d.steps).filter_map(|cs| self.steps.get(&cs.field))
    }

    /// [`PlanCatalog::release_steps`], then [`PlanCatalog::downgrade_steps`].
    pub(super) fn ordered_steps(&self) -> impl Iterator<Item = &StepTemplate> {
        self.release_steps().chain(self.downgrade_steps())
    }
}

/// Parse every step of `catalog` as a plan step or check, and check that
/// the plan's `version` is one of its releases (`at`: the group's
/// `release.catalog` field, for that error).
pub(super) fn plan_catalog(
    src: Src<'_>,
    catalog: &Catalog,
    version: &str,
    at: &FieldPath,
    name: &str,
) -> Result<PlanCatalog, PlanError> {
    let target: Version = version.parse().map_err(|e: crate::version::VersionError| {
        src.err(at, format!("the plan's version '{version}' is not a version catalog '{name}' understands: {e}"))
    })?;
    if catalog.release(&target).is_none() {
        let known: Vec<String> = catalog.releases.iter().map(|r| r.version.to_string()).collect();
        return Err(src.err(
            at,
            format!(
                "the plan's version {version} is not a release of catalog '{name}' ({}; releases: {})",
                catalog.file,
                known.join(", ")
            ),
        ));
    }
    let csrc = Src { file: &catalog.file, source: &catalog.source };
    let mut steps = HashMap::new();
    let all = catalog.releases.iter().flat_map(|r| &r.steps).chain(catalog.downgrades.iter().flat_map(|d| &d.steps));
    for cs in all {
        let t = catalog_step(csrc, cs)?;
        steps.insert(cs.field.clone(), t);
    }
    Ok(PlanCatalog { name: name.to_string(), catalog: catalog.clone(), target, steps })
}

/// One catalog step through the plan's step (or check) grammar.
fn catalog_step(csrc: Src<'_>, cs: &CatalogStep) -> Result<StepTemplate, PlanError> {
    let p = FieldPath::parse(&cs.field);
    // Through YAML text, as a plan step is read: a catalog's `timeout: 30`
    // must read as the plan's does (a value would refuse the integer), and
    // serde's error then names the field, which is located in the catalog.
    let text = serde_norway::to_string(&cs.raw).map_err(|e| csrc.err(&p, e.to_string()))?;
    let bad = |e: serde_norway::Error| {
        let e = yaml_error("", &e);
        let at = if e.field == "(yaml)" { p.clone() } else { p.join(&FieldPath::parse(&e.field)) };
        csrc.err(&at, e.message)
    };
    let mut t = if cs.phase.is_check() {
        let raw: RawCheck = serde_norway::from_str(&text).map_err(bad)?;
        check(csrc, &raw, &p)?
    } else {
        let raw: RawStep = serde_norway::from_str(&text).map_err(bad)?;
        step(csrc, &raw, &p)?
    };
    refuse_vars(csrc, &mut t)?;
    // Captured values are checked with the plan's hooks (`check_captures`)
    // and per host at expansion (`check_path_captures`).
    t.spec.name = cs.name.clone();
    if cs.phase == Phase::Migrate && t.migration.is_none() {
        t.migration = Some(p);
    }
    Ok(t)
}

/// Steps of a host's release path, each with the file it was written in.
type PathSteps<'p> = Vec<(Src<'p>, StepTemplate)>;

/// The steps of `host`'s path through the catalog `name` to the plan's
/// version: per hop, the applicable steps in phase order, named
/// `<hop>/<step>` ([`crate::catalog::Hop::qualified_name`]), each with the
/// catalog's file to report errors in; and the hops.
pub(super) fn catalog_steps<'p>(
    src: Src<'_>,
    plan: &'p Plan,
    g: &PlanGroup,
    name: &str,
    host: &InventoryHost,
) -> Result<(PathSteps<'p>, Vec<HopDetail>), PlanError> {
    let rp = g.path.key("release");
    let pc = plan.catalogs.get(name).ok_or_else(|| src.err(&rp.key("catalog"), format!("unknown catalog '{name}'")))?;
    let hops = path_for_host(&pc.catalog, &HostContext::from_inventory(host), &pc.target)
        .map_err(|e| src.err(&rp, format!("{e} (catalog '{name}', group '{}')", g.name)))?;
    let mut out = Vec::new();
    let mut details = Vec::with_capacity(hops.len());
    for hop in &hops {
        let before = out.len();
        for cs in hop.steps() {
            let mut t = pc.steps.get(&cs.field).cloned().ok_or_else(|| {
                pc.src().err(&FieldPath::parse(&cs.field), "internal error: catalog step not parsed with the plan")
            })?;
            t.spec.name = hop.qualified_name(cs);
            out.push((pc.src(), t));
        }
        // Once a hop's steps are done, the host runs the hop's release.
        if let Some((_, last)) = out.get_mut(before..).and_then(<[_]>::last_mut)
            && last.installs.is_none()
        {
            last.installs = Some((Some(pc.catalog.component.clone()), hop.to.to_string()));
        }
        details.push(HopDetail {
            from: hop.from.to_string(),
            to: hop.to.to_string(),
            skipped: hop.skipped.iter().map(ToString::to_string).collect(),
            downgrade: hop.direction == crate::catalog::Direction::Downgrade,
            steps: out.len() - before,
        });
    }
    Ok((out, details))
}
