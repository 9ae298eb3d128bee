//! Every layer: identity at initialisation, invertibility `‖G(R(x)) − x‖∞ < 1e-4` (f32), and
//! the log-determinant equal to `ln|det J|` of the full Jacobian computed by autodiff on a
//! 4×4 lattice (to 1e-3).

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use nrg_core::Bijector;
use nrg_layers::{AffineCouplingConfig, CouplingStack, MaskKind};

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

/// All layers under test, on `device`, with random (not zero) last layers.
fn layers(device: &Device) -> Vec<(String, Box<dyn Bijector>, usize)> {
    let mut out: Vec<(String, Box<dyn Bijector>, usize)> = Vec::new();
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
            out.push((name, Box::new(config(c, additive).init(mask, device)), c));
        }
    }
    out.push((
        "stack of 4 affine".into(),
        Box::new(CouplingStack::checkerboard(&config(1, false), 4, device)),
        1,
    ));
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
    let layer = AffineCouplingConfig::new(1, 4, 4, vec![8])
        .init(MaskKind::Checkerboard { parity: 0 }, &dev);
    let z = Tensor::<4>::random([3, 1, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
    let (x, ld) = layer.forward(z.clone());
    assert_eq!(to_vec(x), to_vec(z));
    assert!(to_vec(ld).iter().all(|v| *v == 0.0));
}

#[test]
fn layers_are_invertible() {
    let dev = Device::flex();
    for (name, layer, c) in layers(&dev) {
        let x = Tensor::<4>::random([5, c, 4, 4], Distribution::Normal(0.0, 1.5), &dev);
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

/// `ln|det|` of a dense matrix by LU with partial pivoting, in f64.
fn ln_abs_det(mut a: Vec<f64>, n: usize) -> f64 {
    let mut ln = 0.0;
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| a[i * n + k].abs().total_cmp(&a[j * n + k].abs()))
            .unwrap();
        if p != k {
            for j in 0..n {
                a.swap(k * n + j, p * n + j);
            }
        }
        let pivot = a[k * n + k];
        ln += pivot.abs().ln();
        for i in k + 1..n {
            let f = a[i * n + k] / pivot;
            for j in k..n {
                a[i * n + j] -= f * a[k * n + j];
            }
        }
    }
    ln
}

#[test]
fn log_det_equals_autodiff_jacobian() {
    let dev = ad_device();
    for (name, layer, c) in layers(&dev) {
        let d = c * 16;
        let z0 = Tensor::<4>::random([1, c, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let (_, ld) = layer.forward(z0.clone());
        let ld = to_vec(ld)[0] as f64;
        // Row b of the Jacobian from copy b of the input: Σ_b x_b[b] has gradient J[b, :].
        let z = z0.clone().detach().repeat_dim(0, d).require_grad();
        let (x, _) = layer.forward(z.clone());
        let eye: Vec<f32> = (0..d * d)
            .map(|i| if i / d == i % d { 1.0 } else { 0.0 })
            .collect();
        let eye = Tensor::<2>::from_data(TensorData::new(eye, [d, d]), &dev);
        let picked = (x.reshape([d, d]) * eye).sum();
        let grads = picked.backward();
        let jac: Vec<f64> = to_vec(z.grad(&grads).unwrap())
            .iter()
            .map(|v| *v as f64)
            .collect();
        let exact = ln_abs_det(jac, d);
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
