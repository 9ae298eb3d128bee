//! Reverse-KL training of a flat coupling flow on the free field (L = 4, m² = 1).
//!
//! What this short run (600 steps × 256, ~40 s) must show: the variational bound
//! `F_q ≥ −ln Z` holds, `F_q` falls from the identity flow's value to within 5 % of the exact
//! `−ln Z`, and the ESS exceeds 0.5. (Measured: F_q = 2.937 ± 0.004 vs −ln Z = 2.858, 2.8 %,
//! ESS 0.83. The 0.1 % target needs a longer schedule and is not claimed here.)

use burn::tensor::Device;
use nrg_core::{Action, Lattice};
use nrg_flow::train::{ReverseKl, train_reverse_kl, weight_stats};
use nrg_flow::{Flow, GaussianPrior};
use nrg_lattice::PhiFour;
use nrg_layers::{AffineCouplingConfig, CouplingStack};

#[test]
fn free_field_flow_trains_towards_exact_ln_z() {
    let device = Device::flex().autodiff();
    device.seed(7);
    let lattice = Lattice::square(4).unwrap();
    let action = PhiFour::free_field(lattice, 1, 1.0).unwrap();
    let exact = action.exact_ln_z().unwrap();
    let config = AffineCouplingConfig::new(1, 4, 4, vec![8]);
    let model = CouplingStack::checkerboard(&config, 8, &device);
    let settings = ReverseKl {
        steps: 600,
        batch: 256,
        lr: 3e-3,
    };
    let mut first = None;
    let mut last = None;
    let model = train_reverse_kl(model, GaussianPrior, &action, settings, &device, |s| {
        first.get_or_insert(*s);
        last = Some(*s)
    })
    .unwrap();
    let (first, last) = (first.unwrap(), last.unwrap());
    // Evaluate on a large fresh sample.
    let flow = Flow {
        bijector: &model,
        prior: GaussianPrior,
        shape: [1, 4, 4],
    };
    let sample = flow.sample(8192, &device);
    let s = action.action(sample.x.clone());
    let log_w: Vec<f64> = (s + sample.log_q)
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .unwrap()
        .iter()
        .map(|v| -v)
        .collect();
    let (f_q, f_err, ess) = weight_stats(&log_w);
    let rel = (f_q + exact).abs() / exact.abs();
    eprintln!("exact ln Z {exact}, F_q {f_q} ± {f_err}, rel {rel:e}, ESS {ess}");
    eprintln!("first {first:?}\nlast {last:?}");
    // variational bound (up to 3σ of noise)
    assert!(f_q > -exact - 3.0 * f_err, "F_q below −ln Z");
    let initial_gap = first.free_energy + exact;
    assert!(
        initial_gap > 0.5,
        "the identity flow should be far off: {initial_gap}"
    );
    assert!(rel < 0.05, "F_q misses −ln Z by {rel:e}");
    assert!(ess > 0.5, "ESS {ess}");
}
