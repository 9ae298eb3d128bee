//! What is measured on a run's configurations, and the exact values its estimates are
//! compared with.
//!
//! - The relaxed Ising model: improved estimators of the Ising energy
//!   ([`nrg_samplers::neural::IsingImproved`]); exact values from the Ising solution of the
//!   lattice's dimension (Kaufman's torus in 2D, the transfer matrix in 1D), and for NIS the
//!   Ising `ln Z`, free energy, energy and entropy after the relaxation's exact offset.
//! - The free field: `⟨φ²⟩`, `⟨S⟩/V` and `⟨|M|²⟩` from the Fourier modes.
//! - Otherwise field moments, without exact values.

use crate::sample::{IsingNis, SampleReport, SampleResult};
use nrg_core::stats::ExactComparison;
use nrg_core::{Estimate, Result};
use nrg_lattice::exact::gaussian::GaussianExact;
use nrg_lattice::{ActionSpec, IsingRelaxed, IsingSpins, ModelKind};
use nrg_samplers::neural::{FieldObservables, IsingImproved, Measure, NisSummary};
use std::collections::BTreeMap;

/// What is measured on each configuration of the action `spec` describes.
pub fn measure_for(spec: &ActionSpec) -> Result<Box<dyn Measure>> {
    Ok(match spec.model {
        ModelKind::Ising => Box::new(IsingImproved::new(&spec.lattice()?)),
        _ => Box::new(FieldObservables::new(spec.channels())),
    })
}

/// The exact Ising solution of the lattice `spec` describes (dimension-aware).
fn ising_exact(spec: &ActionSpec) -> Result<nrg_lattice::exact::IsingThermo> {
    IsingSpins::new(spec.lattice()?, spec.beta.unwrap_or(f64::NAN))?.exact()
}

/// What NIS needs from the built action: its exact `ln Z` (where known) and, for the relaxed
/// Ising model, `β` and the offset `ln Z_Ising − ln Z_x`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NisReference {
    /// The action's exact `ln Z`.
    pub exact_ln_z: Option<f64>,
    /// `(β, ln Z_Ising − ln Z_x)` of the relaxed Ising model.
    pub ising_offset: Option<(f64, f64)>,
}

impl NisReference {
    /// The reference of a built action (`ising`: the same action as the relaxed Ising model).
    pub fn of(action: &dyn nrg_core::Action, ising: Option<&IsingRelaxed>) -> Self {
        Self {
            exact_ln_z: action.exact_ln_z(),
            ising_offset: ising.map(|a| (a.beta(), a.ln_z_offset())),
        }
    }
}

/// Fills `report.exact` (and for NIS `free_energy_per_site` and, for the relaxed Ising
/// model, `ising`) from the exact solution of the action `spec` describes, where one exists.
pub fn compare(spec: &ActionSpec, nis: NisReference, report: &mut SampleReport) -> Result<()> {
    let lattice = spec.lattice()?;
    let volume = lattice.volume() as f64;
    let channels = spec.channels();
    let free_field = || GaussianExact::free_field(lattice, channels, spec.m2.unwrap_or(f64::NAN));
    let exact = &mut report.exact;
    match &report.result {
        SampleResult::Chain(s) => {
            let mut values = Vec::new();
            match spec.model {
                ModelKind::Ising => {
                    values.push(("ising_e", ising_exact(spec)?.energy_per_site));
                }
                ModelKind::FreeField => {
                    let t = free_field()?.thermo();
                    values.push(("phi2", t.phi2));
                    values.push(("s", t.action_per_site));
                    values.push(("m2", t.chi / volume));
                }
                _ => {}
            }
            for (name, value) in values {
                if let Some(e) = s.observables.get(name) {
                    exact.insert(name.into(), ExactComparison::new(e.estimate, value));
                }
            }
        }
        SampleResult::Bar(b) => {
            let ln_z = b.bar.ln_z;
            report.free_energy_per_site =
                Some(Estimate::new(-ln_z.value / volume, ln_z.error / volume));
            if let Some(exact_ln_z) = nis.exact_ln_z {
                exact.insert("ln_z".into(), ExactComparison::new(ln_z, exact_ln_z));
            }
            if let (ModelKind::Ising, Some((_, off))) = (spec.model, nis.ising_offset) {
                let ising_ln_z = Estimate::new(ln_z.value + off, ln_z.error);
                if let Ok(k) = ising_exact(spec) {
                    exact.insert(
                        "ising_ln_z".into(),
                        ExactComparison::new(ising_ln_z, k.ln_z),
                    );
                }
            }
        }
        SampleResult::Nis(s) => {
            let out = (exact, &mut report.free_energy_per_site, &mut report.ising);
            importance(spec, nis, s, out)?;
        }
        SampleResult::Ais(a) => {
            let out = (exact, &mut report.free_energy_per_site, &mut report.ising);
            importance(spec, nis, &a.estimates, out)?;
        }
    }
    Ok(())
}

/// Where [`importance`] writes: the exact comparisons, the free energy per site, the Ising
/// quantities.
type ImportanceOut<'a> = (
    &'a mut BTreeMap<String, ExactComparison>,
    &'a mut Option<Estimate>,
    &'a mut Option<IsingNis>,
);

/// The comparisons of importance-sampling estimates (NIS, AIS, SMC) with the exact solution.
fn importance(
    spec: &ActionSpec,
    nis: NisReference,
    s: &NisSummary,
    (exact, free_energy_per_site, ising_out): ImportanceOut,
) -> Result<()> {
    let lattice = spec.lattice()?;
    let volume = lattice.volume() as f64;
    let channels = spec.channels();
    let free_field = || GaussianExact::free_field(lattice, channels, spec.m2.unwrap_or(f64::NAN));

    *free_energy_per_site = Some(Estimate::new(-s.ln_z.value / volume, s.ln_z.error / volume));
    if let Some(ln_z) = nis.exact_ln_z {
        exact.insert("ln_z".into(), ExactComparison::new(s.ln_z, ln_z));
    }
    match (spec.model, nis.ising_offset) {
        (ModelKind::Ising, Some((beta, off))) => {
            let err = s.ln_z.error;
            let ln_z = Estimate::new(s.ln_z.value + off, err);
            let e = s.observables["ising_e"];
            let ent = s.derived["ising_ln_z_plus_beta_e"];
            let ising = IsingNis {
                ln_z,
                free_energy_per_site: Estimate::new(
                    -ln_z.value / (beta * volume),
                    err / (beta * volume),
                ),
                energy_per_site: e,
                entropy_per_site: Estimate::new((ent.value + off) / volume, ent.error / volume),
            };
            if let Ok(k) = ising_exact(spec) {
                exact.insert("ising_ln_z".into(), ExactComparison::new(ln_z, k.ln_z));
                exact.insert(
                    "ising_energy_per_site".into(),
                    ExactComparison::new(e, k.energy_per_site),
                );
                let s_exact = k.ln_z / volume + beta * k.energy_per_site;
                exact.insert(
                    "ising_entropy_per_site".into(),
                    ExactComparison::new(ising.entropy_per_site, s_exact),
                );
            }
            *ising_out = Some(ising);
        }
        (ModelKind::FreeField, _) => {
            let t = free_field()?.thermo();
            let phi2 = s.observables["phi2"];
            exact.insert("phi2".into(), ExactComparison::new(phi2, t.phi2));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nrg_samplers::neural::{ChainEstimate, ChainSummary};
    use std::collections::BTreeMap;

    fn chain_report(name: &str, value: f64) -> SampleReport {
        let mut observables = BTreeMap::new();
        observables.insert(
            name.to_string(),
            ChainEstimate {
                estimate: Estimate::new(value, 0.01),
                effective_per_second: 1.0,
            },
        );
        SampleReport {
            run: "run".into(),
            method: crate::sample::SampleMethod::Hmc,
            symmetry: None,
            action: String::new(),
            result: SampleResult::Chain(ChainSummary {
                method: "hmc".into(),
                chains: 1,
                updates: 100,
                thermalisation: 10,
                acceptance: 0.8,
                step_size: None,
                seconds: 1.0,
                observables,
            }),
            free_energy_per_site: None,
            ising: None,
            exact: BTreeMap::new(),
            seed: None,
            device: None,
        }
    }

    /// The exact Ising energy follows the lattice's dimension: a chain of 8 sites gets the
    /// transfer matrix's (before, Kaufman's 8×8 torus was used whatever the dimension).
    #[test]
    fn exact_ising_values_follow_the_dimension() {
        for (dim, expected) in [
            (1, nrg_lattice::exact::ising1d::chain(8, 0.5).unwrap()),
            (2, nrg_lattice::exact::ising2d::kaufman(8, 0.5).unwrap()),
        ] {
            let mut spec = ActionSpec::ising(8, 0.5);
            spec.dim = Some(dim);
            let mut report = chain_report("ising_e", -1.0);
            compare(&spec, NisReference::default(), &mut report).unwrap();
            let c = report.exact["ising_e"];
            assert_eq!(c.exact, expected.energy_per_site, "dim {dim}");
        }
    }

    #[test]
    fn free_field_chains_are_compared_with_the_fourier_modes() {
        let spec = ActionSpec::free_field(4, 1.0);
        let mut report = chain_report("phi2", 0.13);
        compare(&spec, NisReference::default(), &mut report).unwrap();
        let c = report.exact["phi2"];
        assert!((c.exact - 0.131746031746).abs() < 1e-11, "{c:?}");
        assert!((c.deviation_sigma - (0.13 - c.exact).abs() / 0.01).abs() < 1e-12);
    }
}
