//! Every layer: identity at initialisation, invertibility `‖G(R(x)) − x‖∞ < 1e-4` (f32), and
//! the log-determinant equal to `ln|det J|` of the full Jacobian computed by autodiff on a
//! 4×4 lattice (to 1e-3).

use burn::tensor::{Device, Distribution, Tensor};
use nrg_core::Bijector;
use nrg_layers::CirculantLinear;
use nrg_layers::check::forward_log_det_vs_autodiff;
use nrg_layers::{
    AffineCouplingConfig, BlockOdeConfig, BlockRealNvpConfig, CouplingStack, HaarBlock, MaskKind,
};

fn ad_device() -> Device {
    Device::flex().autodiff()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn config(channels: usize, additive: bool) -> AffineCouplingConfig {
    AffineCouplingConfig::new(channels, 4, 4, vec![8, 8])
        .with_additive(additive)
        .with_zero_init(false)
}

/// All layers under test, on `device`, with random (not zero) last layers, and the shape
/// `[C, rows, cols]` of their input.
fn layers(device: &Device) -> Vec<(String, Box<dyn Bijector>, [usize; 3])> {
    let mut out: Vec<(String, Box<dyn Bijector>, [usize; 3])> = Vec::new();
    for additive in [false, true] {
        for (mask, c) in [
            (MaskKind::Checkerboard { parity: 0 }, 1),
            (MaskKind::Checkerboard { parity: 1 }, 2),
            (MaskKind::RandomHalf { seed: 7 }, 1),
            (MaskKind::ChannelSplit { first: true }, 2),
        ] {
            let name = format!(
                "{} {mask:?} C={c}",
                if additive { "additive" } else { "affine" }
            );
            out.push((
                name,
                Box::new(config(c, additive).init(mask, device)),
                [c, 4, 4],
            ));
        }
    }
    out.push((
        "stack of 4 affine".into(),
        Box::new(CouplingStack::checkerboard(&config(1, false), 4, device)),
        [1, 4, 4],
    ));
    // composed from burn's operations on slices of the flat parameter (no fused path)
    out.push((
        "stack of 3 additive, 2 channels".into(),
        Box::new(CouplingStack::checkerboard(&config(2, true), 3, device)),
        [2, 4, 4],
    ));
    for (c, b, residual, additive) in [
        (1, 2, false, false),
        (2, 2, false, false),
        (1, 4, false, false),
        (1, 4, true, false),
        (1, 2, false, true),
    ] {
        let block = BlockRealNvpConfig::new(c, b, 4, vec![6, 6])
            .with_residual(residual)
            .with_additive(additive)
            .with_zero_init(false)
            .init(device);
        out.push((
            format!("block RealNVP C={c} b={b} residual={residual} additive={additive}"),
            Box::new(block),
            [c, b, b],
        ));
    }
    // Square tori of both parities of L/2 and the chain (rows = 1) of the 1D lattices.
    for (c, rows, cols) in [(1, 4, 4), (2, 4, 4), (1, 6, 6), (1, 1, 8)] {
        let v = rows * cols;
        let circ = CirculantLinear::new(c, rows, cols, device);
        // Move it off the identity: a random kernel dominated by its centre. Off-centre
        // entries of scale 0.05 keep every Fourier mode |K̂| ≥ 1 − (V−1)·0.05·|ξ| away from 0
        // in practice (σ of the off-centre sum 0.19 at V = 16); at scale 0.2 (σ 0.77) a mode
        // came near zero about once in eight runs and the round trip lost precision.
        let scale = 0.05 * (15.0 / (v - 1) as f64).sqrt();
        let k = Tensor::<2>::random([c, v], Distribution::Normal(0.0, scale), device)
            + Tensor::<2>::ones([c, 1], device).pad((0, v - 1, 0, 0), 0.0);
        let circ = circ.with_kernel(k);
        out.push((
            format!("circulant C={c} {rows}×{cols}"),
            Box::new(circ),
            [c, rows, cols],
        ));
    }
    // RK4 with 16 steps: round trip and log-det exact up to O(h⁴) ≈ 1.5e-5 × (Lipschitz
    // constant)⁵, well inside the 1e-4 / 1e-3 tolerances for these weights. No hidden
    // layer is a linear velocity field, whose Jacobian does not depend on the sample.
    for (c, b, hidden) in [(1, 2, vec![8]), (1, 4, vec![8]), (1, 2, vec![])] {
        let name = format!("neural ODE C={c} b={b} hidden={hidden:?}");
        let ode = BlockOdeConfig::new(c, b, hidden)
            .with_steps(16)
            .with_zero_init(false)
            .init(device);
        out.push((name, Box::new(ode), [c, b, b]));
    }
    for c in [1, 2] {
        out.push((
            format!("Haar C={c}"),
            Box::new(HaarBlock::new(device)),
            [c, 2, 2],
        ));
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn fresh_couplings_are_the_identity() {
    let dev = Device::flex();
    let fresh: Vec<Box<dyn Bijector>> = vec![
        Box::new(
            AffineCouplingConfig::new(1, 4, 4, vec![8])
                .init(MaskKind::Checkerboard { parity: 0 }, &dev),
        ),
        Box::new(BlockRealNvpConfig::new(1, 4, 3, vec![8]).init(&dev)),
        Box::new(BlockOdeConfig::new(1, 4, vec![8]).init(&dev)),
    ];
    for layer in fresh {
        let z = Tensor::<4>::random([3, 1, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let (x, ld) = layer.forward(z.clone());
        assert_eq!(to_vec(x), to_vec(z));
        assert!(to_vec(ld).iter().all(|v| *v == 0.0));
    }
}

#[test]
fn layers_are_invertible() {
    let dev = Device::flex();
    for (name, layer, [c, r, w]) in layers(&dev) {
        let x = Tensor::<4>::random([5, c, r, w], Distribution::Normal(0.0, 1.5), &dev);
        let (z, ld_inv) = layer.inverse(x.clone());
        let (x2, ld_fwd) = layer.forward(z.clone());
        assert!(
            max_abs_diff(&to_vec(x2), &to_vec(x)) < 1e-4,
            "{name}: G(R(x)) ≠ x"
        );
        let (z2, _) = layer.inverse(layer.forward(z.clone()).0);
        assert!(
            max_abs_diff(&to_vec(z2), &to_vec(z)) < 1e-4,
            "{name}: R(G(z)) ≠ z"
        );
        let sum: Vec<f32> = to_vec(ld_inv + ld_fwd);
        assert!(
            sum.iter().all(|v| v.abs() < 1e-4),
            "{name}: log-dets do not cancel"
        );
    }
}

#[test]
fn log_det_equals_autodiff_jacobian() {
    let dev = ad_device();
    for (name, layer, [c, r, w]) in layers(&dev) {
        let z0 = Tensor::<4>::random([1, c, r, w], Distribution::Normal(0.0, 1.0), &dev);
        let (ld, exact) = forward_log_det_vs_autodiff(layer.as_ref(), z0.clone());
        assert!(
            (ld - exact).abs() < 1e-3,
            "{name}: log-det {ld} vs autodiff {exact}"
        );

        // The inverse's log-det is the negative, at the image point.
        let (x0, _) = layer.forward(z0);
        let (_, ld_inv) = layer.inverse(x0);
        assert!(
            (to_vec(ld_inv)[0] as f64 + exact).abs() < 1e-3,
            "{name}: inverse log-det"
        );
    }
}
