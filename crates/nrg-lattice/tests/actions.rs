//! Behaviour of the tensor actions: the analytic gradient equals autodiff, the tensor and
//! host (f64) forms agree, the parameterisations are related as documented, and the
//! relaxed Ising offset reproduces the Ising partition function.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use nrg_core::action::{HostAction, with_analytic_gradient};
use nrg_core::{Action, Lattice, OnLattice};
use nrg_lattice::exact::ising2d;
use nrg_lattice::{IsingRelaxed, PhiFour};

fn device() -> Device {
    Device::flex()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn actions(dev: &Device) -> Vec<Box<dyn TestAction>> {
    let sq4 = Lattice::square(4).unwrap();
    let ch6 = Lattice::chain(6).unwrap();
    vec![
        Box::new(IsingRelaxed::new(sq4, 0.44, dev).unwrap()),
        Box::new(IsingRelaxed::new(ch6, 0.7, dev).unwrap()),
        Box::new(PhiFour::lattice_form(sq4, 1, -4.0, 8.0).unwrap()),
        Box::new(PhiFour::hopping_form(sq4, 1, 0.25, 0.5).unwrap()),
        Box::new(PhiFour::complex_form(sq4, 0.3, 0.2, 0.7).unwrap()),
        Box::new(PhiFour::lattice_form(sq4, 3, 0.5, 1.0).unwrap()),
        Box::new(PhiFour::free_field(ch6, 1, 0.5).unwrap()),
        // L = 2, where a site's forward and backward neighbours coincide, and two channels
        Box::new(PhiFour::lattice_form(Lattice::square(2).unwrap(), 2, 0.5, 1.0).unwrap()),
        Box::new(PhiFour::hopping_form(ch6, 2, 0.3, 0.4).unwrap()),
    ]
}

/// Both trait views of one action.
trait TestAction: Action + HostAction {}
impl<T: Action + HostAction> TestAction for T {}

fn random_field(a: &dyn TestAction, batch: usize, dev: &Device) -> Tensor<4> {
    let lat = OnLattice::lattice(a);
    Tensor::random(
        [batch, OnLattice::channels(a), lat.rows(), lat.cols()],
        Distribution::Normal(0.0, 1.0),
        dev,
    )
}

/// `∂S/∂x` (analytic) equals the autodiff gradient of `Σ_batch S`, to f32 precision
/// (relative 1e-4 of the gradient's scale: the entries are sums of O(10) terms of O(1)).
#[test]
fn gradient_matches_autodiff() {
    let dev = device();
    let ad = dev.clone().autodiff();
    for a in actions(&dev) {
        let x = random_field(a.as_ref(), 3, &dev);
        let analytic = to_vec(Action::grad(a.as_ref(), x.clone()));
        let xa = Tensor::<4>::from_data(x.to_data(), &ad).require_grad();
        let s = a.action(xa.clone()).sum();
        let grads = s.backward();
        let auto = to_vec(xa.grad(&grads).expect("gradient"));
        let scale = analytic.iter().fold(1.0f32, |m, g| m.max(g.abs()));
        for (g1, g2) in analytic.iter().zip(&auto) {
            assert!(
                (g1 - g2).abs() < 1e-4 * scale,
                "{}: analytic {g1} vs autodiff {g2}",
                a.describe()
            );
        }
    }
}

/// `action_and_grad` equals `action` and `grad` computed apart (1e-5 relative: φ⁴ sums its
/// bonds from both ends there, a different rounding of the same sum).
#[test]
fn action_and_grad_together_equal_them_apart() {
    let dev = device();
    for a in actions(&dev) {
        let x = random_field(a.as_ref(), 3, &dev);
        let (s, g) = a.action_and_grad(x.clone());
        let (s2, g2) = (
            to_vec(a.action(x.clone())),
            to_vec(Action::grad(a.as_ref(), x)),
        );
        for (v1, v2) in to_vec(s).iter().zip(&s2) {
            assert!(
                (v1 - v2).abs() < 1e-5 * (1.0 + v2.abs()),
                "{}: S",
                a.describe()
            );
        }
        let scale = g2.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (v1, v2) in to_vec(g).iter().zip(&g2) {
            assert!((v1 - v2).abs() < 1e-5 * scale, "{}: ∂S", a.describe());
        }
    }
}

/// The training form of every action ([`with_analytic_gradient`]) has the value of
/// `action_and_grad` bit for bit (what is added is an exact 0), and the gradient of
/// `Σ_batch S` by autodiff through the action's expression (1e-4 of the gradient's scale,
/// as above).
#[test]
fn training_form_has_the_value_and_the_autodiff_gradient() {
    let dev = device();
    let ad = dev.clone().autodiff();
    for a in actions(&dev) {
        let x = random_field(a.as_ref(), 3, &dev);
        let x1 = Tensor::<4>::from_data(x.to_data(), &ad).require_grad();
        let x2 = Tensor::<4>::from_data(x.to_data(), &ad).require_grad();
        let s1 = with_analytic_gradient(a.as_ref(), x1.clone());
        let s2 = a.action(x2.clone());
        let (together, _) = a.action_and_grad(x.clone());
        assert_eq!(to_vec(s1.clone()), to_vec(together), "{}", a.describe());
        let g1 = to_vec(x1.grad(&s1.sum().backward()).expect("gradient"));
        let g2 = to_vec(x2.grad(&s2.sum().backward()).expect("gradient"));
        let scale = g2.iter().fold(1.0f32, |m, g| m.max(g.abs()));
        for (a1, a2) in g1.iter().zip(&g2) {
            assert!(
                (a1 - a2).abs() < 1e-4 * scale,
                "{}: training form {a1} vs autodiff {a2}",
                a.describe()
            );
        }
    }
}

/// φ⁴ with its gradient doubled: a deliberately wrong `grad`.
struct DoubledGradient(PhiFour);

impl OnLattice for DoubledGradient {
    fn space(&self) -> nrg_core::FieldSpace {
        self.0.space()
    }
}

impl Action for DoubledGradient {
    fn action(&self, x: Tensor<4>) -> Tensor<1> {
        self.0.action(x)
    }
    fn grad(&self, x: Tensor<4>) -> Tensor<4> {
        Action::grad(&self.0, x).mul_scalar(2.0)
    }
    fn describe(&self) -> String {
        "phi4 with a doubled gradient".into()
    }
    fn to_device(&self, _: &Device) -> Box<dyn Action> {
        Box::new(DoubledGradient(self.0.clone()))
    }
}

/// The training form's gradient is the action's analytic one, not autodiff's through the
/// expression: with `grad` doubled, the gradient doubles (1e-4 of its scale).
#[test]
fn training_form_differentiates_through_grad() {
    let dev = device();
    let ad = dev.clone().autodiff();
    let a =
        DoubledGradient(PhiFour::hopping_form(Lattice::square(4).unwrap(), 1, 0.25, 0.5).unwrap());
    let x = Tensor::<4>::random([2, 1, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
    let x1 = Tensor::<4>::from_data(x.to_data(), &ad).require_grad();
    let x2 = Tensor::<4>::from_data(x.to_data(), &ad).require_grad();
    let g1 = to_vec(
        x1.grad(&with_analytic_gradient(&a, x1.clone()).sum().backward())
            .unwrap(),
    );
    let g2 = to_vec(x2.grad(&a.action(x2.clone()).sum().backward()).unwrap());
    let scale = g2.iter().fold(1.0f32, |m, g| m.max(g.abs()));
    for (a1, a2) in g1.iter().zip(&g2) {
        assert!((a1 - 2.0 * a2).abs() < 2e-4 * scale, "{a1} vs 2 × {a2}");
    }
}

/// The tensor action (f32) equals the host action (f64) configuration by configuration,
/// and likewise the gradients.
#[test]
fn tensor_and_host_forms_agree() {
    let dev = device();
    for a in actions(&dev) {
        let batch = 4;
        let x = random_field(a.as_ref(), batch, &dev);
        let xs: Vec<f64> = to_vec(x.clone()).iter().map(|v| *v as f64).collect();
        let s = to_vec(a.action(x.clone()));
        let g = to_vec(Action::grad(a.as_ref(), x));
        let per = xs.len() / batch;
        for b in 0..batch {
            let field = &xs[b * per..(b + 1) * per];
            let sh = a.action_host(field);
            assert!(
                (sh - s[b] as f64).abs() < 1e-5 * sh.abs().max(10.0),
                "{}: host {sh} vs tensor {}",
                a.describe(),
                s[b]
            );
            let mut gh = vec![0.0; per];
            a.grad_host(field, &mut gh);
            for (x1, x2) in gh.iter().zip(&g[b * per..(b + 1) * per]) {
                assert!((x1 - *x2 as f64).abs() < 1e-4 * x1.abs().max(1.0));
            }
        }
    }
}

/// The lattice and hopping forms are one theory: `S_lat(√κ φ) = S_hop(φ)` with
/// `m² = (1−2λ̂)/κ − 2d`, `λ = λ̂/κ²` (the design notes' reference point κ = 0.25, λ̂ = 0.5
/// is `m² = −4`, `λ = 8`), so `Z_hop = ∫dφ e^{−S_lat(√κ φ)} = κ^{−V/2} Z_lat`: for a free
/// field, `ln Z_hop = ln Z_lat − (V/2) ln κ`.
#[test]
fn lattice_and_hopping_forms_are_related() {
    let lat = Lattice::square(4).unwrap();
    let (kappa, lambda_hat) = (0.25, 0.5);
    let m2 = (1.0 - 2.0 * lambda_hat) / kappa - 4.0;
    let lambda = lambda_hat / (kappa * kappa);
    assert_eq!((m2, lambda), (-4.0, 8.0));
    let hop = PhiFour::hopping_form(lat, 1, kappa, lambda_hat).unwrap();
    let latf = PhiFour::lattice_form(lat, 1, m2, lambda).unwrap();
    let phi: Vec<f64> = (0..16).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect();
    let scaled: Vec<f64> = phi.iter().map(|p| p * kappa.sqrt()).collect();
    let (a, b) = (hop.action_host(&phi), latf.action_host(&scaled));
    assert!((a - b).abs() < 1e-12 * a.abs().max(1.0), "{a} vs {b}");

    // free field: κ = 0.2, λ̂ = 0 ⇔ m² = 1/κ − 4 = 1
    let hop0 = PhiFour::hopping_form(lat, 1, 0.2, 0.0).unwrap();
    let lat0 = PhiFour::lattice_form(lat, 1, 1.0, 0.0).unwrap();
    let (zh, zl) = (hop0.exact_ln_z().unwrap(), lat0.exact_ln_z().unwrap());
    assert!(
        (zh - (zl - 8.0 * 0.2f64.ln())).abs() < 1e-10,
        "{zh} vs {zl}"
    );
}

/// The complex (t, μ, λ) form is the hopping form with φ a 2-vector, t = κ, μ = 1 − 2λ̂,
/// λ = λ̂.
#[test]
fn complex_form_is_the_o2_hopping_form() {
    let lat = Lattice::square(4).unwrap();
    let (kappa, lambda_hat) = (0.3, 0.4);
    let c = PhiFour::complex_form(lat, kappa, 1.0 - 2.0 * lambda_hat, lambda_hat).unwrap();
    let h = PhiFour::hopping_form(lat, 2, kappa, lambda_hat).unwrap();
    let phi: Vec<f64> = (0..32).map(|i| ((i * 5 % 13) as f64 - 6.0) / 4.0).collect();
    assert!((c.action_host(&phi) - h.action_host(&phi)).abs() < 1e-12);
}

/// The relaxed action's exact ln Z_x plus the documented offset is Kaufman's ln Z. The
/// offset itself is checked independently: for L = 2 (four variables) ln Z_x is integrated
/// numerically — x = C y with M = C Cᵀ turns ∫ e^{−S} into a Gaussian expectation of
/// Π cosh((Cy)_i), computed with 24-point Gauss–Hermite quadrature per dimension (the
/// integrand is entire, so the rule converges to ~1e-12).
#[test]
fn relaxed_ising_offset_is_exact() {
    let dev = device();
    let beta = 0.44;
    let lat = Lattice::square(2).unwrap();
    let a = IsingRelaxed::new(lat, beta, &dev).unwrap();
    let kaufman = ising2d::kaufman(2, beta).unwrap().ln_z;
    assert!((a.exact_ln_z().unwrap() + a.ln_z_offset() - kaufman).abs() < 1e-12);

    // M = K A + α for the 2×2 torus: each site has its two distinct neighbours twice.
    let alpha = a.alpha();
    let v = 4;
    let mut m = vec![vec![0.0; v]; v];
    for (x, row) in m.iter_mut().enumerate() {
        row[x] = alpha;
        let (i, j) = lat.coords(x);
        for y in [
            lat.index(i as isize, j as isize + 1),
            lat.index(i as isize + 1, j as isize),
        ] {
            row[y] += 2.0 * beta;
        }
    }
    // Cholesky M = C Cᵀ
    let mut c = vec![vec![0.0; v]; v];
    for i in 0..v {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| c[i][k] * c[j][k]).sum();
            c[i][j] = if i == j {
                (m[i][i] - s).sqrt()
            } else {
                (m[i][j] - s) / c[j][j]
            };
        }
    }
    let det_c: f64 = (0..v).map(|i| c[i][i]).product();
    let (nodes, weights) = gauss_hermite_probabilists(24);
    let mut integral = 0.0;
    let n = nodes.len();
    for a0 in 0..n {
        for a1 in 0..n {
            for a2 in 0..n {
                for a3 in 0..n {
                    let y = [nodes[a0], nodes[a1], nodes[a2], nodes[a3]];
                    let w = weights[a0] * weights[a1] * weights[a2] * weights[a3];
                    let mut prod = 1.0;
                    for i in 0..v {
                        let xi: f64 = (0..=i).map(|k| c[i][k] * y[k]).sum();
                        prod *= xi.cosh();
                    }
                    integral += w * prod;
                }
            }
        }
    }
    // ∫dx e^{−½xᵀM⁻¹x} Π cosh x = (2π)^{V/2} det C · E_y[Π cosh (Cy)]
    let ln_zx = 0.5 * v as f64 * std::f64::consts::TAU.ln() + det_c.ln() + integral.ln();
    let exact = a.exact_ln_z().unwrap();
    assert!(
        (ln_zx - exact).abs() < 1e-9,
        "quadrature {ln_zx} vs formula {exact}"
    );
}

/// Nodes and weights of Gauss–Hermite quadrature for the standard normal weight
/// (weights sum to 1), by Newton iteration on the physicists' Hermite polynomials.
fn gauss_hermite_probabilists(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    let pi4 = std::f64::consts::PI.powf(-0.25);
    let mut z = 0.0f64;
    for i in 0..n.div_ceil(2) {
        // Initial guesses (Numerical Recipes, gauher).
        z = match i {
            0 => (2.0 * n as f64 + 1.0).sqrt() - 1.85575 * (2.0 * n as f64 + 1.0).powf(-1.0 / 6.0),
            1 => z - 1.14 * (n as f64).powf(0.426) / z,
            2 => 1.86 * z - 0.86 * nodes[0] * std::f64::consts::SQRT_2.recip(),
            3 => 1.91 * z - 0.91 * nodes[2] * std::f64::consts::SQRT_2.recip(),
            _ => 2.0 * z - nodes[2 * i - 4] * std::f64::consts::SQRT_2.recip(),
        };
        let mut pp = 0.0;
        for _ in 0..100 {
            let mut p1 = pi4;
            let mut p2 = 0.0;
            for j in 0..n {
                let p3 = p2;
                p2 = p1;
                p1 = z * (2.0 / (j as f64 + 1.0)).sqrt() * p2
                    - (j as f64 / (j as f64 + 1.0)).sqrt() * p3;
            }
            pp = (2.0 * n as f64).sqrt() * p2;
            let dz = p1 / pp;
            z -= dz;
            if dz.abs() < 1e-15 {
                break;
            }
        }
        let w = 2.0 / (pp * pp);
        // physicists' node z and weight w for e^{−z²} → probabilists' x = √2 z, weight w/√π
        nodes.push(z * std::f64::consts::SQRT_2);
        weights.push(w / std::f64::consts::PI.sqrt());
        if 2 * i + 1 != n {
            nodes.push(-z * std::f64::consts::SQRT_2);
            weights.push(w / std::f64::consts::PI.sqrt());
        }
    }
    (nodes, weights)
}

/// The relaxed action and its gradient are usable on an autodiff device after `to_device`.
#[test]
fn relaxed_ising_moves_between_devices() {
    let dev = device();
    let a = IsingRelaxed::new(Lattice::square(4).unwrap(), 0.3, &dev).unwrap();
    let moved = a.to_device(&dev.clone().autodiff());
    let x = Tensor::<4>::from_data(TensorData::new(vec![0.5f32; 16], [1, 1, 4, 4]), &dev);
    let s1 = to_vec(a.action(x.clone()))[0];
    let s2 = to_vec(moved.action(x))[0];
    assert!((s1 - s2).abs() < 1e-6);
}

/// `FieldGivenSpins` holds `M = K·A + α` and its square root: unit spins give the columns of
/// `M` (α on the diagonal, `K` on the bonds), unit noise the columns of `M^{1/2}`, whose
/// square is `M` (to 1e-12; f64 sums of 16–36 terms of order 1).
#[test]
fn field_given_spins_holds_m_and_its_root() {
    let dev = device();
    for (lat, beta) in [
        (Lattice::square(4).unwrap(), 0.44),
        (Lattice::chain(6).unwrap(), 0.7),
    ] {
        let a = IsingRelaxed::new(lat, beta, &dev).unwrap();
        let f = a.field_given_spins();
        let v = lat.volume();
        assert_eq!(f.volume(), v);
        let zero = vec![0.0; v];
        let column = |spins: bool, j: usize| {
            let mut e = vec![0.0; v];
            e[j] = 1.0;
            let mut x = vec![0.0; v];
            if spins {
                f.sample(&e, &zero, &mut x);
            } else {
                f.sample(&zero, &e, &mut x);
            }
            x
        };
        let nbrs = lat.all_neighbours();
        let d2 = 2 * lat.dim();
        let m: Vec<Vec<f64>> = (0..v).map(|j| column(true, j)).collect();
        let r: Vec<Vec<f64>> = (0..v).map(|j| column(false, j)).collect();
        for j in 0..v {
            for i in 0..v {
                let bonds = nbrs[j * d2..(j + 1) * d2]
                    .iter()
                    .filter(|&&n| n == i)
                    .count();
                let want = if i == j { a.alpha() } else { 0.0 } + beta * bonds as f64;
                assert!(
                    (m[j][i] - want).abs() < 1e-12,
                    "M[{i},{j}] = {} vs {want}",
                    m[j][i]
                );
                let rr: f64 = (0..v).map(|k| r[k][i] * r[j][k]).sum();
                assert!(
                    (rr - want).abs() < 1e-12,
                    "(M^½)²[{i},{j}] = {rr} vs {want}"
                );
            }
        }
    }
}

/// Exact spins (L = 4 by enumeration, β = 0.44) pushed through `x | s ∼ N(Ms, M)` are exact
/// samples of the relaxed action: they satisfy its Stein identities `E[x_i ∂_iS] = 1` and
/// `E[(∂_iS)²] = E[∂²_iS] = E[(M⁻¹)_ii − sech² x_i]` (site averages; 20000 draws, 4σ of the
/// sample's own spread).
#[test]
fn field_given_exact_spins_samples_the_relaxed_action() {
    use rand::{RngExt, SeedableRng, rngs::StdRng};
    let dev = device();
    let lat = Lattice::square(4).unwrap();
    let beta = 0.44;
    let a = IsingRelaxed::new(lat, beta, &dev).unwrap();
    let f = a.field_given_spins();
    let v = lat.volume();
    let fwd = lat.forward_neighbours();
    let weights: Vec<f64> = (0..1u32 << v)
        .map(|c| {
            let s = |i: usize| if c >> i & 1 == 1 { 1.0 } else { -1.0 };
            let e: f64 = (0..v)
                .map(|i| s(i) * (s(fwd[2 * i]) + s(fwd[2 * i + 1])))
                .sum();
            (beta * e).exp()
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let minv_diag: Vec<f64> = (0..v)
        .map(|i| {
            let mut e = vec![0.0; v];
            e[i] = 1.0;
            let mut g = vec![0.0; v];
            a.grad_host(&e, &mut g);
            g[i] + 1f64.tanh()
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(11);
    let n = 20_000;
    let (mut t1, mut t2) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut spins, mut noise, mut x, mut g) =
        (vec![0.0; v], vec![0.0; v], vec![0.0; v], vec![0.0; v]);
    for _ in 0..n {
        let u: f64 = rng.random();
        let c = cdf.partition_point(|&p| p < u).min(cdf.len() - 1);
        for (i, s) in spins.iter_mut().enumerate() {
            *s = if c >> i & 1 == 1 { 1.0 } else { -1.0 };
        }
        for z in noise.iter_mut() {
            // Box–Muller.
            let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
            *z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        }
        f.sample(&spins, &noise, &mut x);
        a.grad_host(&x, &mut g);
        t1.push((0..v).map(|i| x[i] * g[i]).sum::<f64>() / v as f64);
        t2.push(
            (0..v)
                .map(|i| g[i] * g[i] - minv_diag[i] + 1.0 / x[i].cosh().powi(2))
                .sum::<f64>()
                / v as f64,
        );
    }
    for (name, t, want) in [("E[x ∂S]", &t1, 1.0), ("E[(∂S)² − ∂²S]", &t2, 0.0)] {
        let mean = t.iter().sum::<f64>() / n as f64;
        let var = t.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sigma = (var / n as f64).sqrt();
        assert!(
            (mean - want).abs() < 4.0 * sigma,
            "{name} = {mean} ± {sigma}, want {want}"
        );
    }
}
