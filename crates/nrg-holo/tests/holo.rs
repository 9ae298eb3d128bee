//! The holographic analysis on cases whose answer is known exactly: the free field through a
//! linear hierarchical map (the Haar wavelet flow, whose bulk covariance is `R Σ_x Rᵀ`),
//! bivariate Gaussians for the KSG estimator, and the structural causal cones of the
//! hierarchical flow.

use burn::tensor::{Device, Tensor, TensorData};
use nrg_core::{LatentModel, Lattice};
use nrg_flow::{
    FlowBijector, FlowKind, FlowModel, FlowSpec, HierarchicalFlow, LatentPrior, LatentShape,
    LevelScales,
};
use nrg_holo::correlation::{Moments, bulk_moments};
use nrg_holo::mutual::{gaussian_mi, gaussian_mi_of, ksg};
use nrg_holo::receptive::receptive_fields;
use nrg_holo::repair::{InpaintSettings, cone_latents, inpaint, mix};
use nrg_holo::{BulkGeometry, LatentSamples};
use nrg_lattice::PhiFour;
use nrg_lattice::exact::gaussian::GaussianExact;
use nrg_layers::{BlockBijector, BlockRealNvpConfig, CirculantLinear, HaarBlock};
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

const M2: f64 = 1.0;

/// The Haar wavelet flow on `L × L` (a hierarchical flow of fixed orthogonal 2×2 blocks).
fn haar_flow(l: usize, device: &Device) -> FlowModel {
    let flow = HierarchicalFlow::new(l, 2, None, 1, |_, _| {
        BlockBijector::Haar(HaarBlock::new(device))
    })
    .unwrap();
    let levels: Vec<usize> = flow.bulk_sites().iter().map(|s| s.level).collect();
    let prior = LatentPrior::new(&levels, LatentShape::Gaussian, LevelScales::Fixed, device);
    FlowModel::new(FlowBijector::Hierarchical(flow), prior, false, [1, l, l])
}

/// A hierarchical flow with random (non-zero) block couplings.
fn random_flow(l: usize, device: &Device) -> FlowModel {
    let flow = HierarchicalFlow::new(l, 2, None, 1, |_, _| {
        BlockBijector::RealNvp(
            BlockRealNvpConfig::new(1, 2, 2, vec![4])
                .with_zero_init(false)
                .init(device),
        )
    })
    .unwrap();
    let levels: Vec<usize> = flow.bulk_sites().iter().map(|s| s.level).collect();
    let prior = LatentPrior::new(&levels, LatentShape::Gaussian, LevelScales::Fixed, device);
    FlowModel::new(FlowBijector::Hierarchical(flow), prior, false, [1, l, l])
}

/// The free field's covariance `Σ_x(i, j) = V⁻¹ Σ_k cos(k·(x_i − x_j))/(2λ_k)` and its square
/// root (the same sum with `(2λ_k)^{−½}`), `V × V` row-major.
fn free_field_covariance(l: usize) -> (Vec<f64>, Vec<f64>) {
    let lattice = Lattice::square(l).unwrap();
    let exact = GaussianExact::free_field(lattice, 1, M2).unwrap();
    let v = l * l;
    let kernel = |power: f64| -> Vec<f64> {
        (0..v)
            .map(|r| {
                let (ri, rj) = lattice.coords(r);
                exact
                    .eigenvalues()
                    .iter()
                    .enumerate()
                    .map(|(k, lambda)| {
                        let (k1, k2) = lattice.coords(k);
                        let phase = std::f64::consts::TAU * (k1 * ri + k2 * rj) as f64 / l as f64;
                        (2.0 * lambda).powf(power) * phase.cos()
                    })
                    .sum::<f64>()
                    / v as f64
            })
            .collect()
    };
    let circulant = |k: Vec<f64>| -> Vec<f64> {
        let mut m = vec![0.0; v * v];
        for a in 0..v {
            for b in 0..v {
                let (ai, aj) = lattice.coords(a);
                let (bi, bj) = lattice.coords(b);
                let r = lattice.index(ai as isize - bi as isize, aj as isize - bj as isize);
                m[a * v + b] = k[r];
            }
        }
        m
    };
    (circulant(kernel(-1.0)), circulant(kernel(-0.5)))
}

/// The matrix `R` of a linear map `z = R(x)`, column by column from unit vectors.
fn rg_matrix(model: &FlowModel, l: usize, device: &Device) -> Vec<f64> {
    let v = l * l;
    let mut eye = vec![0f32; v * v];
    for j in 0..v {
        eye[j * v + j] = 1.0;
    }
    let x = Tensor::<4>::from_data(TensorData::new(eye, [v, 1, l, l]), device);
    let (z, _) = model.rg_map(x);
    let cols: Vec<f64> = z.into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
    // column j of R is z(e_j) = cols[j·V .. ]
    let mut r = vec![0.0; v * v];
    for j in 0..v {
        for i in 0..v {
            r[i * v + j] = cols[j * v + i];
        }
    }
    r
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                out[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    out
}

fn transpose(a: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            t[j * n + i] = a[i * n + j];
        }
    }
    t
}

/// Must-show: the free field (L = 8, m² = 1) mapped by the Haar flow. Exact boundary samples
/// `x = Σ_x^{½} ξ` (6000, in 100 jackknife blocks) give latents `z = R(x)` whose
/// correlations `C_ij` must match `R Σ_x Rᵀ` entry by entry: over the 2080 distinct entries
/// the z-scores have mean square within [0.8, 1.25] (it is 1 ± 0.03 for honest errors), at
/// most 1.5 % beyond 3σ (0.27 % expected) and none beyond 5σ. The Gaussian MI of pairs at
/// several levels and distances matches `−½ ln(1 − ρ²)` of the exact covariance within 3σ.
#[test]
fn free_field_bulk_correlations_and_mi_match_the_exact_covariance() {
    let l = 8;
    let v = l * l;
    let device = Device::flex();
    let model = haar_flow(l, &device);
    let (sigma_x, root) = free_field_covariance(l);
    let r = rg_matrix(&model, l, &device);
    let exact = matmul(&matmul(&r, &sigma_x, v), &transpose(&r, v), v);

    let n = 6000;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
    let mut x = vec![0f32; n * v];
    for s in 0..n {
        let xi: Vec<f64> = (0..v).map(|_| rng.sample(StandardNormal)).collect();
        for a in 0..v {
            x[s * v + a] = (0..v).map(|b| root[a * v + b] * xi[b]).sum::<f64>() as f32;
        }
    }
    let samples = LatentSamples::from_boundary(&model, &x, [n, 1, l, l], 1024, &device).unwrap();
    let moments = bulk_moments(&samples, 100, Moments::Raw).unwrap();
    let (mut sum_z2, mut beyond3, mut count, mut worst) = (0.0, 0, 0, 0.0f64);
    for i in 0..v {
        for j in i..v {
            let (c, e) = moments.correlations.at(i, j);
            let z = (c - exact[i * v + j]) / e;
            sum_z2 += z * z;
            beyond3 += usize::from(z.abs() > 3.0);
            count += 1;
            worst = worst.max(z.abs());
        }
    }
    let mean_z2 = sum_z2 / count as f64;
    eprintln!(
        "bulk correlations: {count} entries, ⟨z²⟩ = {mean_z2:.3}, {beyond3} beyond 3σ, max |z| {worst:.2}"
    );
    assert!((0.8..1.25).contains(&mean_z2), "⟨z²⟩ = {mean_z2}");
    assert!((beyond3 as f64) < 0.015 * count as f64);
    assert!(worst < 5.0);

    // Gaussian MI of the pairs whose exact MI is at least 0.005 (|ρ| ≳ 0.1): near zero the
    // MI is ρ²/2 to leading order, so its estimate is biased up by ~1/(2N) and a symmetric
    // error bar (jackknife or delta method) understates its uncertainty; there the
    // correlation itself, tested above, is the quantity with an honest error.
    let geometry = BulkGeometry::of_model(&model).unwrap();
    let mi_exact = |i: usize, j: usize| {
        let cov = [
            exact[i * v + i],
            exact[i * v + j],
            exact[j * v + i],
            exact[j * v + j],
        ];
        gaussian_mi(&cov, 2, 1).unwrap()
    };
    let pairs: Vec<(usize, usize)> = (0..v)
        .flat_map(|i| (i + 1..v).map(move |j| (i, j)))
        .filter(|&(i, j)| mi_exact(i, j) >= 0.005)
        .step_by(3)
        .take(12)
        .collect();
    assert!(pairs.len() >= 8, "{pairs:?}");
    for (i, j) in pairs {
        let cov = [
            exact[i * v + i],
            exact[i * v + j],
            exact[j * v + i],
            exact[j * v + j],
        ];
        let truth = gaussian_mi(&cov, 2, 1).unwrap();
        let est = gaussian_mi_of(&samples, i, j, 100).unwrap();
        let dev = (est.value - truth).abs() / est.error;
        eprintln!(
            "MI({i},{j}) levels {}/{} d = {:.2}: {:.5} ± {:.5} vs exact {truth:.5} ({dev:.2}σ)",
            geometry.sites[i].level,
            geometry.sites[j].level,
            geometry.distance(i, j),
            est.value,
            est.error
        );
        assert!(dev < 3.0, "MI({i},{j})");
    }
}

/// The NIS-weighted path: flow samples of a linear flow 20 % too wide (the Haar flow followed
/// by a circulant layer that maps N(0, 1) onto 1.2× the free field), reweighted to the
/// free field, give the same bulk correlations (z-score mean square within [0.75, 1.35] over
/// the 136 entries, which are correlated: measured 1.21 with 100 blocks; with 20 blocks the
/// jackknife errors of weighted second moments scatter by a factor 2 between equivalent
/// entries and the mean square was 1.44 — use ≥ 50 blocks for independent samples).
#[test]
fn reweighted_flow_samples_give_the_exact_bulk_correlations() {
    let l = 4;
    let v = l * l;
    let device = Device::flex();
    device.seed(3);
    let mut model = haar_flow(l, &device);
    let (sigma_x, root) = free_field_covariance(l);
    // circulant kernel 1.2 Σ_x^{½}: its first row
    let kernel: Vec<f32> = (0..v).map(|b| (1.2 * root[b]) as f32).collect();
    model.circulant = Some(
        CirculantLinear::new(1, l, l, &device)
            .with_kernel(Tensor::from_data(TensorData::new(kernel, [1, v]), &device)),
    );
    let r = rg_matrix(&model, l, &device);
    let exact = matmul(&matmul(&r, &sigma_x, v), &transpose(&r, v), v);
    let action = PhiFour::free_field(Lattice::square(l).unwrap(), 1, M2).unwrap();
    let samples = LatentSamples::from_flow(&model, &action, 40_000, 4096, &device).unwrap();
    let ess = samples.ess();
    let moments = bulk_moments(&samples, 100, Moments::Raw).unwrap();
    let (mut sum_z2, mut count) = (0.0, 0);
    for i in 0..v {
        for j in i..v {
            let (c, e) = moments.correlations.at(i, j);
            let z = (c - exact[i * v + j]) / e;
            if std::env::var("HOLO_DEBUG").is_ok() {
                eprintln!(
                    "{i} {j}: {c:.5} ± {e:.5} vs {:.5} z {z:.2}",
                    exact[i * v + j]
                );
            }
            sum_z2 += z * z;
            count += 1;
        }
    }
    let mean_z2 = sum_z2 / count as f64;
    eprintln!("NIS bulk correlations: ESS {ess:.3}, ⟨z²⟩ = {mean_z2:.3} over {count}");
    assert!(ess > 0.05 && ess < 0.999, "{ess}");
    assert!((0.75..1.35).contains(&mean_z2), "⟨z²⟩ = {mean_z2}");
}

/// Must-show: KSG on bivariate Gaussians (N = 1500, k = 3, 10 blocks) within 3σ of
/// `−½ ln(1 − ρ²)`, for ρ = 0, 0.5, 0.9 and two seeds each.
#[test]
fn ksg_recovers_gaussian_mutual_information() {
    for (rho, seed) in [(0.0, 1), (0.0, 2), (0.5, 3), (0.5, 4), (0.9, 5), (0.9, 6)] {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        let n = 1500;
        let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (u, w): (f64, f64) = (rng.sample(StandardNormal), rng.sample(StandardNormal));
            a.push(u);
            b.push(rho * u + (1.0 - rho * rho).sqrt() * w);
        }
        let est = ksg(&a, 1, &b, 1, 3, 10).unwrap();
        let exact = -0.5 * (1.0 - rho * rho).ln();
        let dev = (est.value - exact).abs() / est.error;
        eprintln!(
            "KSG ρ = {rho}: {:.4} ± {:.4} vs {exact:.4} ({dev:.2}σ)",
            est.value, est.error
        );
        assert!(dev < 3.0, "ρ = {rho} seed {seed}");
        assert!(est.error < 0.05);
    }
}

/// Must-show: for a flow of block layers (no circulant layer) every receptive field vanishes
/// exactly outside its latent's structural cone, and the radii grow with the level; a
/// circulant layer makes the fields global (no cone, fields non-zero everywhere).
#[test]
fn receptive_fields_follow_the_causal_cones() {
    let l = 8;
    let device = Device::flex().autodiff();
    device.seed(9);
    let model = random_flow(l, &device);
    let geometry = BulkGeometry::of_model(&model).unwrap();
    let z = model.sample_latent(6, &device);
    let zs: Vec<f32> = z.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let fields = receptive_fields(&model, &geometry, &zs, &device).unwrap();
    assert!(!fields.global);
    assert_eq!(fields.outside_cone_max, Some(0.0));
    let radii: Vec<f64> = fields.levels.iter().map(|l| l.radius.value).collect();
    eprintln!("radii per level: {:?}", fields.levels);
    for w in radii.windows(2) {
        assert!(w[1] > w[0], "radii must grow with the level: {radii:?}");
    }
    for m in &fields.maps {
        let cone = m.cone.as_ref().unwrap();
        assert!(m.field.iter().zip(cone).all(|(f, &c)| c || *f == 0.0));
        assert!(m.field.iter().any(|f| *f > 0.0));
    }

    let mut global = random_flow(l, &device);
    global = global.with_circulant(&device);
    let k = Tensor::<2>::random(
        [1, l * l],
        burn::tensor::Distribution::Normal(0.0, 0.05),
        &device,
    ) + Tensor::<2>::ones([1, 1], &device).pad((0, l * l - 1, 0, 0), 0.0);
    global.circulant = global.circulant.map(|c| c.with_kernel(k));
    let fields = receptive_fields(&global, &geometry, &zs, &device).unwrap();
    assert!(fields.global && fields.outside_cone_max.is_none());
    assert!(fields.maps.iter().all(|m| m.field.iter().all(|f| *f > 0.0)));
}

/// Must-show: inpainting resamples only the latents whose cone meets the region — every
/// other latent of a repaired configuration equals the corrupted configuration's (to f32
/// rounding of G∘R) — and for a fixed 2×2 region their number grows like log L, far below
/// L² (counted for L = 8 … 64).
#[test]
fn inpainting_touches_only_cone_latents() {
    let device = Device::flex();
    device.seed(4);
    let mut counts = Vec::new();
    for l in [8, 16, 32, 64] {
        let model = haar_flow(l, &device);
        let region = [0, 1, l, l + 1];
        let latents = cone_latents(&model, &region).unwrap().unwrap();
        counts.push((l, latents.len()));
    }
    eprintln!("cone latents of a 2×2 region: {counts:?}");
    for w in counts.windows(2) {
        // each doubling of L adds a bounded number of latents (one more level)
        assert!(w[1].1 > w[0].1 && w[1].1 - w[0].1 <= 32, "{counts:?}");
    }
    assert!(counts[3].1 < 64 * 64 / 20);

    let l = 8;
    let v = l * l;
    let model = random_flow(l, &device);
    let action = PhiFour::free_field(Lattice::square(l).unwrap(), 1, M2).unwrap();
    let x0 = model.sample(1, &device).x;
    let x0: Vec<f32> = x0.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let region = [27, 28, 35, 36];
    let settings = InpaintSettings {
        burn_in: 40,
        updates: 60,
        keep_every: 20,
        delta: 0.5,
        seed: 1,
    };
    let out = inpaint(&model, &action, &x0, &region, &settings, &device).unwrap();
    assert_eq!(out.configurations.len(), 3);
    assert!(out.latents.len() < v && out.acceptance > 0.0);
    let latents_of = |x: &[f32]| -> Vec<f32> {
        let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [1, 1, l, l]), &device);
        model
            .rg_map(t)
            .0
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let z0 = latents_of(&x0);
    for x in &out.configurations {
        let z = latents_of(x);
        for s in 0..v {
            if !out.latents.contains(&s) {
                assert!((z[s] - z0[s]).abs() < 1e-4, "latent {s} moved");
            }
        }
    }
}

/// Mixing with the linear Haar flow: `h = 0` decodes A, `h = depth + 1` decodes B, and every
/// mixture is the sum of the two partial decodes (linearity).
#[test]
fn mixing_of_scales() {
    let l = 8;
    let v = l * l;
    let device = Device::flex();
    device.seed(2);
    let model = haar_flow(l, &device);
    let geometry = BulkGeometry::of_model(&model).unwrap();
    let z = model.sample_latent(2, &device);
    let zs: Vec<f32> = z.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let (a, b) = (&zs[..v], &zs[v..]);
    let mixes = mix(&model, &geometry, a, b, &device).unwrap();
    assert_eq!(mixes.len(), geometry.depth + 2);
    let decode = |z: &[f32]| -> Vec<f32> {
        let t = Tensor::<4>::from_data(TensorData::new(z.to_vec(), [1, 1, l, l]), &device);
        model
            .generate_with_log_det(t)
            .0
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    };
    for (h, m) in mixes.iter().enumerate() {
        let part_a: Vec<f32> = (0..v)
            .map(|s| {
                if geometry.sites[s].level >= h {
                    a[s]
                } else {
                    0.0
                }
            })
            .collect();
        let part_b: Vec<f32> = (0..v)
            .map(|s| {
                if geometry.sites[s].level < h {
                    b[s]
                } else {
                    0.0
                }
            })
            .collect();
        let (xa, xb) = (decode(&part_a), decode(&part_b));
        for s in 0..v {
            assert!((m[s] - xa[s] - xb[s]).abs() < 1e-5, "h = {h}");
        }
    }
    assert_eq!(mixes[0], decode(a));
    assert_eq!(mixes[geometry.depth + 1], decode(b));
}

/// The whole analysis on the Haar free field: the boundary `G(r)` against the exact free
/// field's (3.5σ), every organised table filled, fits made, KSG beside the Gaussian MI for
/// the anchors' partners (both estimate the same MI of a Gaussian bulk: within 4σ combined).
#[test]
fn analysis_of_the_haar_free_field() {
    use nrg_holo::analysis::{AnalysisOptions, analyse};
    let l = 8;
    let v = l * l;
    let device = Device::flex();
    let model = haar_flow(l, &device);
    let (_, root) = free_field_covariance(l);
    let n = 3000;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11);
    let mut x = vec![0f32; n * v];
    for s in 0..n {
        let xi: Vec<f64> = (0..v).map(|_| rng.sample(StandardNormal)).collect();
        for a in 0..v {
            x[s * v + a] = (0..v).map(|b| root[a * v + b] * xi[b]).sum::<f64>() as f32;
        }
    }
    let samples = LatentSamples::from_boundary(&model, &x, [n, 1, l, l], 1024, &device).unwrap();
    let geometry = BulkGeometry::of_model(&model).unwrap();
    let options = AnalysisOptions {
        ksg_samples: 1000,
        ..AnalysisOptions::default()
    };
    let a = analyse(&geometry, &samples, &options, &mut |_| {}).unwrap();
    let exact = GaussianExact::free_field(Lattice::square(l).unwrap(), 1, M2)
        .unwrap()
        .thermo()
        .two_point;
    let b = a.boundary.as_ref().unwrap();
    for (r, g) in b.g.iter().enumerate() {
        let dev = (g.value - exact[r]).abs() / g.error;
        assert!(dev < 3.5, "G({r}) = {g:?} vs {} ({dev:.2}σ)", exact[r]);
    }
    assert_eq!(a.pairs.len(), v * (v - 1) / 2);
    assert_eq!(a.latents_per_level, vec![48, 12, 3, 1]);
    assert!(!a.same_level.is_empty() && a.vertical.len() == 3);
    assert!(
        a.emergent_same_level.is_some() && a.emergent_cross_level.is_some(),
        "{:?}",
        a.notes
    );
    let with_ksg: Vec<_> = a
        .mutual_information
        .iter()
        .filter(|m| m.ksg.is_some())
        .collect();
    assert!(with_ksg.len() >= 4);
    for m in with_ksg {
        let k = m.ksg.unwrap();
        let dev = (k.value - m.gaussian.value).abs() / (k.error.hypot(m.gaussian.error));
        eprintln!("({}, {}): Gaussian {:?} KSG {:?}", m.i, m.j, m.gaussian, k);
        assert!(dev < 4.0, "({}, {})", m.i, m.j);
    }
}

/// A flat flow has no bulk: a clear error, not a made-up geometry.
#[test]
fn a_flat_flow_has_no_bulk() {
    let device = Device::flex();
    let spec = FlowSpec {
        kind: FlowKind::Flat,
        ..FlowSpec::default()
    };
    let flat = spec.build(1, 8, &device).unwrap();
    let err = BulkGeometry::of_model(&flat).unwrap_err();
    assert!(err.to_string().contains("no bulk"), "{err}");
}

/// Completion through the bulk on the Haar flow, whose density is `N(0, I)` on the boundary
/// (an orthogonal `G` of a standard normal prior). The cone latents reach the masked sites
/// through orthonormal rows of `G`, so (a) maximising `ln q` of the completed picture sends
/// the masked sites to 0, and (b) resampling the cone latents at temperature `T` gives masked
/// sites distributed exactly as `N(0, T²)`; the observed sites are kept in both.
#[test]
fn completion_on_the_haar_flow_is_exact() {
    use nrg_holo::complete::{Completion, LatentSet, complete, free_latents, masked_mse};
    let dev = Device::flex().autodiff();
    let l = 8;
    let model = haar_flow(l, &dev);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
    let n = 300;
    let y: Vec<f32> = (0..n * l * l)
        .map(|_| rng.sample::<f64, _>(StandardNormal) as f32)
        .collect();
    let mut mask = vec![false; l * l];
    for (r, c) in [(2, 2), (2, 3), (3, 2), (3, 3), (5, 6)] {
        mask[r * l + c] = true;
    }
    let cone = free_latents(&model, &mask, LatentSet::Cone).unwrap();
    let count = cone.iter().filter(|&&b| b).count();
    assert!(count > 5 && count < l * l, "{count} cone latents");
    let zeros = vec![0.0f32; n * l * l];
    // (a) the most likely completion: 0 on the masked sites
    let opt = complete(
        &model,
        &y,
        &mask,
        LatentSet::Cone,
        Completion::Optimise {
            steps: 300,
            lr: 0.05,
        },
        &dev,
    )
    .unwrap();
    let worst = masked_mse(&opt, &zeros, &mask, 1)
        .into_iter()
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "masked sites not at the optimum: mse {worst}");
    // (b) resampled at T = 0.7: masked sites ~ N(0, 0.49); 1500 values, σ(var) = T²√(2/1500)
    let t = 0.7;
    let res = complete(
        &model,
        &y,
        &mask,
        LatentSet::Cone,
        Completion::Resample { temperature: t },
        &dev,
    )
    .unwrap();
    let m = masked_mse(&res, &zeros, &mask, 1);
    let var = m.iter().sum::<f64>() / n as f64;
    let sigma = t * t * (2.0 / (n * 5) as f64).sqrt();
    assert!(
        (var - t * t).abs() < 4.0 * sigma,
        "variance {var}, expected {}",
        t * t
    );
    for (out, inp) in [(&opt, &y), (&res, &y)] {
        for k in 0..n * l * l {
            if !mask[k % (l * l)] {
                assert_eq!(out[k], inp[k], "an observed site changed");
            }
        }
    }
}
