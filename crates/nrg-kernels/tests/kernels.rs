//! Every kernel against its brute-force definition in `f64` — values, and gradients
//! against central differences — on every SIMD width and convolution path
//! ([`Exec::all`]), so that a CI machine of any CPU runs every code path; then property
//! tests over random geometries, and the run-to-run reproducibility of the native path.
//!
//! Tolerances: the kernels compute in `f32`. Values of size ~1 that are sums of ≤ 100
//! terms: 1e-5 absolute (f32 rounding ~1e-7 per term). Gradients summed over a batch:
//! 1e-4 relative to `1 + |g|` (or to the largest component, for the nets), against central
//! differences of the `f64` definition with step 1e-6 (truncation ~1e-10); where a test
//! says otherwise it says why (the dense weight gradient sums 1300 rows: 1e-3; the
//! coupling chain composes three couplings: step 1e-5, 2e-4).

use nrg_kernels::{
    Activation, AffineGeometry, ChainGeometry, ConvGeometry, ConvPath, DenseGeometry, Direction,
    Exec, MlpGeometry, SimdWidth, affine_backward, affine_forward, chain_backward, chain_forward,
    conditioning, conditioning_backward, conv_backward, conv_forward, dense_backward,
    dense_forward, mlp_backward, mlp_forward,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::HashSet;

/// The definitions, in `f64`.
mod reference {
    use super::*;

    pub fn act(a: Activation, v: f64) -> f64 {
        match a {
            Activation::Identity => v,
            Activation::LeakyRelu(s) => {
                if v > 0.0 {
                    v
                } else {
                    s as f64 * v
                }
            }
            Activation::Elu => {
                if v > 0.0 {
                    v
                } else {
                    v.exp_m1()
                }
            }
        }
    }

    /// `act(b[o] + Σ_{i,u,v} w[o,i,u,v] x[s,i,(y+u−p) mod H,(x+v−p) mod W])`.
    pub fn conv(g: &ConvGeometry, x: &[f64], w: &[f64], b: &[f64], a: Activation) -> Vec<f64> {
        let (h, wd, k) = (g.rows as isize, g.cols as isize, g.kernel as isize);
        let p = k / 2;
        let mut out = vec![0.0f64; g.batch * g.cout * g.sites()];
        for s in 0..g.batch {
            for o in 0..g.cout {
                for y in 0..h {
                    for xx in 0..wd {
                        let mut acc = b[o];
                        for i in 0..g.cin {
                            for u in 0..k {
                                for v in 0..k {
                                    let sy = (y + u - p).rem_euclid(h) as usize;
                                    let sx = (xx + v - p).rem_euclid(wd) as usize;
                                    let xi = ((s * g.cin + i) * g.rows + sy) * g.cols + sx;
                                    let wi = ((o * g.cin + i) * g.kernel + u as usize) * g.kernel
                                        + v as usize;
                                    acc += w[wi] * x[xi];
                                }
                            }
                        }
                        let oi = ((s * g.cout + o) * g.rows + y as usize) * g.cols + xx as usize;
                        out[oi] = act(a, acc);
                    }
                }
            }
        }
        out
    }

    /// `act(b[t,j] + Σ_i x[min(t, G−1),i,n] w[t,i,j])`, feature-major.
    pub fn dense(g: &DenseGeometry, x: &[f64], w: &[f64], b: &[f64], a: Activation) -> Vec<f64> {
        let (n, fi, fo) = (g.rows, g.input, g.output);
        let mut out = vec![0.0; g.twins * n * fo];
        for t in 0..g.twins {
            let grp = t.min(g.groups_in - 1);
            for r in 0..n {
                for j in 0..fo {
                    let mut acc = b[t * fo + j];
                    for i in 0..fi {
                        acc += x[(grp * fi + i) * n + r] * w[(t * fi + i) * fo + j];
                    }
                    out[(t * fo + j) * n + r] = act(a, acc);
                }
            }
        }
        out
    }

    /// The twin MLP as a chain of dense layers, the first on the shared or per-twin input.
    pub fn mlp(g: &MlpGeometry, x: &[f64], params: &[f64]) -> Vec<f64> {
        let (layout, _) = g.layout();
        let mut h = x.to_vec();
        for (l, w) in g.widths.windows(2).enumerate() {
            let d = DenseGeometry {
                groups_in: if l == 0 { g.groups_in } else { g.twins },
                twins: g.twins,
                rows: g.rows,
                input: w[0],
                output: w[1],
            };
            let (w_off, b_off) = layout[l];
            let b = &params[b_off..b_off + g.twins * w[1]];
            h = dense(&d, &h, &params[w_off..b_off], b, g.act(l));
        }
        h
    }

    /// `z eˢ + f t` (inverse `(z − f t) e^{−s}`), `s = σ_c f tanh ŝ`, `f = 1 − m`, and
    /// `ℓ ± Σ s` per sample, on states `[B, C·V + 1]` (field, then `ℓ`).
    pub fn affine(g: &AffineGeometry, z: &[f64], o: &[f64], m: &[f64], sc: &[f64]) -> Vec<f64> {
        let (c, v) = (g.channels, g.sites);
        let inverse = g.direction == Direction::Inverse;
        let mut out = vec![0.0; g.batch * (c * v + 1)];
        for b in 0..g.batch {
            let mut ld = z[b * (c * v + 1) + c * v];
            for ch in 0..c {
                for site in 0..v {
                    let f = 1.0 - m[ch * v + site];
                    let s = sc[ch] * f * o[(b * 2 * c + ch) * v + site].tanh();
                    let t = f * o[(b * 2 * c + c + ch) * v + site];
                    let zz = z[b * (c * v + 1) + ch * v + site];
                    out[b * (c * v + 1) + ch * v + site] = if inverse {
                        (zz - t) * (-s).exp()
                    } else {
                        zz * s.exp() + t
                    };
                    ld += if inverse { -s } else { s };
                }
            }
            out[b * (c * v + 1) + c * v] = ld;
        }
        out
    }

    /// The coupling chain one column at a time.
    pub fn chain(g: &ChainGeometry, input: &[f64], params: &[f64]) -> Vec<f64> {
        let (h, n, kk) = (g.mlp.widths[0], g.mlp.rows, g.couplings);
        let len = g.mlp.layout().1;
        let inverse = g.direction == Direction::Inverse;
        let one = MlpGeometry {
            rows: 1,
            ..g.mlp.clone()
        };
        let order: Vec<usize> = if inverse {
            (0..kk).rev().collect()
        } else {
            (0..kk).collect()
        };
        let mut out = vec![0.0; (2 * h + 1) * n];
        for col in 0..n {
            let mut halves = [
                (0..h).map(|r| input[r * n + col]).collect::<Vec<_>>(),
                (0..h).map(|r| input[(h + r) * n + col]).collect::<Vec<_>>(),
            ];
            let mut ld = 0.0;
            for &k in &order {
                let (ci, ui) = if k % 2 == 0 { (0, 1) } else { (1, 0) };
                let st = mlp(&one, &halves[ci], &params[k * len..(k + 1) * len]);
                let (shat, t) = st.split_at(h);
                let sigma = params[kk * len + k];
                for r in 0..h {
                    let s = sigma * shat[r].tanh();
                    let a = halves[ui][r];
                    halves[ui][r] = if inverse {
                        (a - t[r]) * (-s).exp()
                    } else {
                        a * s.exp() + t[r]
                    };
                    ld += if inverse { -s } else { s };
                }
            }
            for r in 0..h {
                out[r * n + col] = halves[0][r];
                out[(h + r) * n + col] = halves[1][r];
            }
            out[2 * h * n + col] = ld;
        }
        out
    }
}

fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// `len` values uniform in `[−scale, scale]`.
fn uniform(len: usize, scale: f32, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
    (0..len)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `Σ a ⊙ b`.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Central differences of `loss` along every component of `base` (`step` in `f64`), or
/// along every `stride`-th one.
fn gradient(base: &[f64], stride: usize, step: f64, loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut out = vec![f64::NAN; base.len()];
    for i in (0..base.len()).step_by(stride) {
        let (mut p, mut m) = (base.to_vec(), base.to_vec());
        p[i] += step;
        m[i] -= step;
        out[i] = (loss(&p) - loss(&m)) / (2.0 * step);
    }
    out
}

/// `|got − want| ≤ tol · (1 + |want|)` wherever `want` was computed.
fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&a, &w)) in got.iter().zip(want).enumerate() {
        if !w.is_nan() {
            assert!(
                (a as f64 - w).abs() <= tol * (1.0 + w.abs()),
                "{what}[{i}]: {a} vs {w}"
            );
        }
    }
}

/// `|got − want| ≤ tol · max|want| + floor`: for the nets, whose gradients are sums
/// of products of many f32 factors.
fn assert_close_scaled(got: &[f32], want: &[f64], tol: f64, floor: f64, what: &str) {
    let top = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    for (i, (&a, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - w).abs() <= tol * top + floor,
            "{what}[{i}]: {a} vs {w}"
        );
    }
}

/// The executions that apply to a convolution with rows of `cols` sites: a forced direct
/// path only where the rows are whole vectors.
fn conv_execs(cols: usize) -> Vec<Exec> {
    Exec::all()
        .into_iter()
        .filter(|e| e.conv() != ConvPath::Direct || cols.is_multiple_of(e.lanes()))
        .collect()
}

/// One execution per SIMD width (the convolution path does not apply).
fn widths() -> Vec<Exec> {
    SimdWidth::ALL
        .iter()
        .map(|&s| Exec::new(s, ConvPath::Auto))
        .collect()
}

fn conv_geometry(batch: usize, cin: usize, cout: usize, hw: [usize; 2], k: usize) -> ConvGeometry {
    ConvGeometry {
        batch,
        cin,
        cout,
        rows: hw[0],
        cols: hw[1],
        kernel: k,
    }
}

/// Forward against the definition and every gradient component against central
/// differences, on every width and path; both paths run on every width for rows of 16
/// (whole vectors of every width), unfolding only for the ragged ones.
#[test]
fn conv_matches_its_definition_on_every_path() {
    let mut rng = rng(3);
    let cases = [
        (
            conv_geometry(3, 2, 3, [4, 6], 3),
            Activation::LeakyRelu(0.01),
        ),
        (conv_geometry(18, 1, 2, [5, 3], 3), Activation::Identity),
        (conv_geometry(2, 2, 2, [4, 4], 5), Activation::Elu),
        // A partial block of output channels and an odd count of vectors.
        (conv_geometry(3, 2, 5, [3, 8], 3), Activation::Elu),
        (
            conv_geometry(2, 1, 4, [2, 16], 5),
            Activation::LeakyRelu(0.01),
        ),
        (conv_geometry(2, 2, 3, [2, 32], 3), Activation::Elu),
        // A kernel wider than the lattice: the wrap goes round more than once.
        (
            conv_geometry(2, 1, 2, [3, 2], 7),
            Activation::LeakyRelu(0.01),
        ),
    ];
    let (mut direct, mut unfolded) = (HashSet::new(), HashSet::new());
    for (g, act) in cases {
        let x = uniform(g.batch * g.cin * g.sites(), 1.0, &mut rng);
        let w = uniform(g.cout * g.taps(), 1.0, &mut rng);
        let b = uniform(g.cout, 1.0, &mut rng);
        let c = uniform(g.batch * g.cout * g.sites(), 1.0, &mut rng);
        let (x64, w64, b64, c64) = (wide(&x), wide(&w), wide(&b), wide(&c));
        let exact = reference::conv(&g, &x64, &w64, &b64, act);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&reference::conv(&g, x, w, b, act), &c64);
        let gx = gradient(&x64, 1, 1e-6, |x| loss(x, &w64, &b64));
        let gw = gradient(&w64, 1, 1e-6, |w| loss(&x64, w, &b64));
        let gb = gradient(&b64, 1, 1e-6, |b| loss(&x64, &w64, b));
        for exec in conv_execs(g.cols) {
            if exec.direct_convolution(g.cols) {
                direct.insert(exec.simd());
            } else {
                unfolded.insert(exec.simd());
            }
            let what = format!("{g:?} {act:?} {exec:?}");
            let y = conv_forward(exec, &g, &x, &w, &b, act);
            assert_close(&y, &exact, 1e-5, &format!("{what} y"));
            let (ax, aw, ab) = conv_backward(exec, &g, &x, &w, &y, &c, act);
            assert_close(&ax, &gx, 1e-4, &format!("{what} ∂x"));
            assert_close(&aw, &gw, 1e-4, &format!("{what} ∂w"));
            assert_close(&ab, &gb, 1e-4, &format!("{what} ∂b"));
        }
    }
    // Both paths ran on every width (direct on 16 lanes: the rows of 16 and 32).
    let all: HashSet<SimdWidth> = SimdWidth::ALL.into_iter().collect();
    assert_eq!(direct, all, "widths that ran the direct convolution");
    assert_eq!(unfolded, all, "widths that ran the unfolded convolution");
}

/// As for the convolution: a shared and a per-twin input, one of many column tiles (the
/// input gradient sampled every 97th component), on every width.
#[test]
fn dense_matches_its_definition_on_every_width() {
    let mut rng = rng(5);
    for (g, act, stride) in [
        (
            DenseGeometry {
                groups_in: 1,
                twins: 2,
                rows: 1300,
                input: 3,
                output: 4,
            },
            Activation::Elu,
            97,
        ),
        (
            DenseGeometry {
                groups_in: 2,
                twins: 2,
                rows: 7,
                input: 4,
                output: 2,
            },
            Activation::LeakyRelu(0.1),
            1,
        ),
    ] {
        let x = uniform(g.groups_in * g.rows * g.input, 1.0, &mut rng);
        let w = uniform(g.twins * g.input * g.output, 1.0, &mut rng);
        let b = uniform(g.twins * g.output, 1.0, &mut rng);
        let c = uniform(g.twins * g.rows * g.output, 1.0, &mut rng);
        let (x64, w64, b64, c64) = (wide(&x), wide(&w), wide(&b), wide(&c));
        let exact = reference::dense(&g, &x64, &w64, &b64, act);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&reference::dense(&g, x, w, b, act), &c64);
        let gx = gradient(&x64, stride, 1e-6, |x| loss(x, &w64, &b64));
        let gw = gradient(&w64, 1, 1e-6, |w| loss(&x64, w, &b64));
        let gb = gradient(&b64, 1, 1e-6, |b| loss(&x64, &w64, b));
        for exec in widths() {
            let what = format!("{g:?} {exec:?}");
            let y = dense_forward(exec, &g, &x, &w, &b, act);
            assert_close(&y, &exact, 1e-5, &format!("{what} y"));
            let (ax, aw, ab) = dense_backward(exec, &g, &x, &w, &y, &c, act);
            // The weight gradient sums 1300 f32 terms: 1e-3 relative.
            assert_close(&ax, &gx, 1e-4, &format!("{what} ∂x"));
            assert_close(&aw, &gw, 1e-3, &format!("{what} ∂w"));
            assert_close(&ab, &gb, 1e-3, &format!("{what} ∂b"));
        }
    }
}

/// The fused MLP equals the chain of (separately tested) dense layers, forward and
/// backward, with a shared and a per-twin input, over two column tiles and a partial one,
/// on every width (1e-5 on values; 1e-4 on gradients summed over 600 rows).
#[test]
fn mlp_equals_its_chain_of_dense_layers_on_every_width() {
    let mut rng = rng(9);
    for groups_in in [1, 2] {
        let g = MlpGeometry {
            groups_in,
            twins: 2,
            rows: 600,
            widths: vec![3, 5, 4, 2],
            hidden: Activation::Elu,
        };
        let (layout, len) = g.layout();
        let x = uniform(groups_in * g.rows * 3, 1.0, &mut rng);
        let params = uniform(len, 1.0, &mut rng);
        let c = uniform(2 * g.rows * 2, 1.0, &mut rng);
        let y_exact = reference::mlp(&g, &wide(&x), &wide(&params));
        for exec in widths() {
            let layer = |l: usize| {
                let (wi, wo) = (g.widths[l], g.widths[l + 1]);
                let (w_off, b_off) = layout[l];
                let geom = DenseGeometry {
                    groups_in: if l == 0 { groups_in } else { 2 },
                    twins: 2,
                    rows: g.rows,
                    input: wi,
                    output: wo,
                };
                (geom, &params[w_off..b_off], &params[b_off..b_off + 2 * wo])
            };
            let mut hs = vec![x.clone()];
            for l in 0..3 {
                let (geom, w, b) = layer(l);
                hs.push(dense_forward(exec, &geom, &hs[l], w, b, g.act(l)));
            }
            let y = mlp_forward(exec, &g, &x, &params);
            assert_close(&y, &y_exact, 1e-5, &format!("{exec:?} mlp y"));
            assert_close(&y, &wide(&hs[3]), 1e-5, &format!("{exec:?} mlp vs dense"));
            let mut grad = c.clone();
            let mut want = vec![0.0f32; len];
            for l in (0..3).rev() {
                let (geom, w, _) = layer(l);
                let (gx, gw, gb) =
                    dense_backward(exec, &geom, &hs[l], w, &hs[l + 1], &grad, g.act(l));
                let (w_off, b_off) = layout[l];
                want[w_off..b_off].copy_from_slice(&gw);
                want[b_off..b_off + gb.len()].copy_from_slice(&gb);
                grad = gx;
            }
            let (gx, gp) = mlp_backward(exec, &g, &x, &params, &c);
            assert_close(&gx, &wide(&grad), 1e-4, &format!("{exec:?} mlp ∂x"));
            assert_close(&gp, &wide(&want), 1e-4, &format!("{exec:?} mlp ∂params"));
        }
    }
}

/// Values against the definition, the inverse restores the state (field and the log-det
/// so far), and every gradient (field, subnet output, scales) against central differences
/// (1e-4 of the largest gradient): 19 samples of 2 channels × 13 sites — a partial parallel
/// chunk and SIMD tails of every width.
#[test]
fn affine_update_matches_its_definition_on_every_width() {
    let mut rng = rng(9);
    let (b, c, v) = (19, 2, 13);
    let mask: Vec<f32> = (0..c * v).map(|i| ((i * 7 + i / 3) % 2) as f32).collect();
    for direction in [Direction::Forward, Direction::Inverse] {
        let g = AffineGeometry {
            batch: b,
            channels: c,
            sites: v,
            direction,
        };
        let back = AffineGeometry {
            direction: match direction {
                Direction::Forward => Direction::Inverse,
                Direction::Inverse => Direction::Forward,
            },
            ..g
        };
        let z = uniform(b * (c * v + 1), 2.0, &mut rng);
        let o = uniform(2 * b * c * v, 1.5, &mut rng);
        let scale = uniform(c, 1.2, &mut rng);
        let r = uniform(b * (c * v + 1), 1.0, &mut rng);
        let (z64, o64, m64, s64, r64) = (wide(&z), wide(&o), wide(&mask), wide(&scale), wide(&r));
        let exact = reference::affine(&g, &z64, &o64, &m64, &s64);
        let loss =
            |z: &[f64], o: &[f64], s: &[f64]| dot(&reference::affine(&g, z, o, &m64, s), &r64);
        let gz = gradient(&z64, 1, 1e-6, |z| loss(z, &o64, &s64));
        let go = gradient(&o64, 1, 1e-6, |o| loss(&z64, o, &s64));
        let gs = gradient(&s64, 1, 1e-6, |s| loss(&z64, &o64, s));
        for exec in widths() {
            let what = format!("{direction:?} {exec:?}");
            let y = affine_forward(exec, &g, &z, &o, &mask, &scale);
            assert_close(&y, &exact, 1e-5, &format!("{what} y"));
            // the inverse undoes the update, state and log-det
            let zz = affine_forward(exec, &back, &y, &o, &mask, &scale);
            assert_close(&zz, &z64, 1e-5, &format!("{what} round trip"));
            let (az, ao, asig) = affine_backward(exec, &g, &z, &o, &mask, &scale, &r);
            assert_close_scaled(&az, &gz, 1e-4, 1e-5, &format!("{what} ∂z"));
            assert_close_scaled(&ao, &go, 1e-4, 1e-5, &format!("{what} ∂o"));
            assert_close_scaled(&asig, &gs, 1e-4, 1e-5, &format!("{what} ∂σ"));
        }
    }
}

/// The subnet's input from a state is the masked field (exactly: products by 0 and 1), and
/// [`conditioning_backward`] is its adjoint: `⟨cond(z), g⟩ = ⟨z, cond_back(g)⟩` (1e-5 of
/// the sum's scale, f32 sums of 3·2·5 products per sample).
#[test]
fn conditioning_is_the_masked_field_and_its_adjoint() {
    let mut rng = rng(21);
    let (b, c, v) = (3, 2, 5);
    let g = AffineGeometry {
        batch: b,
        channels: c,
        sites: v,
        direction: Direction::Forward,
    };
    let mask: Vec<f32> = (0..c * v).map(|i| ((i * 3 + 1) % 2) as f32).collect();
    let z = uniform(b * (c * v + 1), 1.0, &mut rng);
    let x = conditioning(&g, &z, &mask);
    for n in 0..b {
        for k in 0..c * v {
            assert_eq!(x[n * c * v + k], z[n * (c * v + 1) + k] * mask[k]);
        }
    }
    let gr = uniform(b * c * v, 1.0, &mut rng);
    let back = conditioning_backward(&g, &mask, &gr);
    assert_eq!(back.len(), z.len());
    for n in 0..b {
        assert_eq!(back[n * (c * v + 1) + c * v], 0.0, "no gradient to ℓ");
    }
    let lhs: f64 = x.iter().zip(&gr).map(|(a, b)| f64::from(a * b)).sum();
    let rhs: f64 = z.iter().zip(&back).map(|(a, b)| f64::from(a * b)).sum();
    assert!(
        (lhs - rhs).abs() < 1e-5 * (1.0 + lhs.abs()),
        "{lhs} vs {rhs}"
    );
}

fn chain_geometry(n: usize, direction: Direction) -> ChainGeometry {
    ChainGeometry {
        mlp: MlpGeometry {
            groups_in: 1,
            twins: 2,
            rows: n,
            widths: vec![2, 5, 5, 2],
            hidden: Activation::Elu,
        },
        couplings: 3,
        direction,
    }
}

/// Forward equals the definition (to 1e-5 of the values' scale) over a full column tile
/// and a partial one, and the inverse undoes it with the opposite log-det, on every width.
#[test]
fn chain_matches_its_definition_and_inverts_on_every_width() {
    let mut rng = rng(3);
    let n = 300;
    let g = chain_geometry(n, Direction::Forward);
    let gi = chain_geometry(n, Direction::Inverse);
    let x = uniform(4 * n, 2.0, &mut rng);
    let p = uniform(g.param_len(), 0.7, &mut rng);
    let want = reference::chain(&g, &wide(&x), &wide(&p));
    for exec in widths() {
        let y = chain_forward(exec, &g, &x, &p);
        assert_close(&y, &want, 1e-5, &format!("{exec:?} chain"));
        let z = chain_forward(exec, &gi, &y[..4 * n], &p);
        assert_close(
            &z[..4 * n],
            &wide(&x),
            1e-5,
            &format!("{exec:?} round trip"),
        );
        let minus: Vec<f64> = y[4 * n..].iter().map(|&v| -(v as f64)).collect();
        assert_close(&z[4 * n..], &minus, 1e-5, &format!("{exec:?} log-dets"));
    }
}

/// Both directions' gradients (input and every parameter, the scales σ included) against
/// central differences of the definition for `L = Σ r ⊙ output`, on every width. Step 1e-5
/// in f64; the kernel is f32: 2e-4 of the largest gradient plus 1e-4.
#[test]
fn chain_gradients_match_finite_differences_on_every_width() {
    let mut rng = rng(5);
    let n = 37;
    for direction in [Direction::Forward, Direction::Inverse] {
        let g = chain_geometry(n, direction);
        let x = uniform(4 * n, 1.5, &mut rng);
        let p = uniform(g.param_len(), 0.7, &mut rng);
        let r = uniform(5 * n, 1.0, &mut rng);
        let (x64, p64, r64) = (wide(&x), wide(&p), wide(&r));
        let want_x = gradient(&x64, 1, 1e-5, |x| dot(&reference::chain(&g, x, &p64), &r64));
        let want_p = gradient(&p64, 1, 1e-5, |p| dot(&reference::chain(&g, &x64, p), &r64));
        for exec in widths() {
            let (gx, gp) = chain_backward(exec, &g, &x, &p, &r);
            let what = format!("{direction:?} {exec:?}");
            assert_close_scaled(&gx, &want_x, 2e-4, 1e-4, &format!("{what} ∂input"));
            assert_close_scaled(&gp, &want_p, 2e-4, 1e-4, &format!("{what} ∂params"));
        }
    }
}

/// The native path gives the same bits from call to call, with rayon's threads summing
/// the partial gradients of many tasks (13 chunks of the convolution, 12 column tiles).
#[test]
fn native_results_repeat_to_the_bit() {
    let mut rng = rng(17);
    let exec = Exec::native();
    let g = conv_geometry(200, 2, 3, [8, 8], 3);
    let x = uniform(g.batch * g.cin * g.sites(), 1.0, &mut rng);
    let w = uniform(g.cout * g.taps(), 1.0, &mut rng);
    let b = uniform(g.cout, 1.0, &mut rng);
    let c = uniform(g.batch * g.cout * g.sites(), 1.0, &mut rng);
    let y = conv_forward(exec, &g, &x, &w, &b, Activation::Elu);
    let first = conv_backward(exec, &g, &x, &w, &y, &c, Activation::Elu);
    for _ in 0..3 {
        assert_eq!(
            conv_backward(exec, &g, &x, &w, &y, &c, Activation::Elu),
            first
        );
    }
    let m = MlpGeometry {
        groups_in: 1,
        twins: 2,
        rows: 3000,
        widths: vec![2, 8, 2],
        hidden: Activation::Elu,
    };
    let xm = uniform(2 * 3000, 1.0, &mut rng);
    let pm = uniform(m.layout().1, 1.0, &mut rng);
    let cm = uniform(2 * 2 * 3000, 1.0, &mut rng);
    let first = mlp_backward(exec, &m, &xm, &pm, &cm);
    for _ in 0..3 {
        assert_eq!(mlp_backward(exec, &m, &xm, &pm, &cm), first);
    }
    let d = DenseGeometry {
        groups_in: 1,
        twins: 2,
        rows: 3000,
        input: 3,
        output: 4,
    };
    let xd = uniform(3 * 3000, 1.0, &mut rng);
    let wd = uniform(2 * 3 * 4, 1.0, &mut rng);
    let bd = uniform(2 * 4, 1.0, &mut rng);
    let yd = dense_forward(exec, &d, &xd, &wd, &bd, Activation::Elu);
    let cd = uniform(yd.len(), 1.0, &mut rng);
    let first = dense_backward(exec, &d, &xd, &wd, &yd, &cd, Activation::Elu);
    for _ in 0..3 {
        assert_eq!(
            dense_backward(exec, &d, &xd, &wd, &yd, &cd, Activation::Elu),
            first
        );
    }
    let g = chain_geometry(3000, Direction::Forward);
    let half = g.mlp.widths[0];
    let xc = uniform(2 * half * 3000, 1.0, &mut rng);
    let pc = uniform(g.param_len(), 0.5, &mut rng);
    let cc = uniform((2 * half + 1) * 3000, 1.0, &mut rng);
    let first = chain_backward(exec, &g, &xc, &pc, &cc);
    for _ in 0..3 {
        assert_eq!(chain_backward(exec, &g, &xc, &pc, &cc), first);
    }
    let a = AffineGeometry {
        batch: 3000,
        channels: 2,
        sites: 5,
        direction: Direction::Forward,
    };
    let za = uniform(3000 * 11, 1.0, &mut rng);
    let oa = uniform(2 * 3000 * 10, 1.0, &mut rng);
    let mask: Vec<f32> = (0..10).map(|i| (i % 2) as f32).collect();
    let scale = uniform(2, 1.0, &mut rng);
    let ca = uniform(3000 * 11, 1.0, &mut rng);
    let first = affine_backward(exec, &a, &za, &oa, &mask, &scale, &ca);
    for _ in 0..3 {
        assert_eq!(
            affine_backward(exec, &a, &za, &oa, &mask, &scale, &ca),
            first
        );
    }
}

/// A fixed seed, no files: the property tests are the same on every run and leave
/// nothing in the source tree.
fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x006e_7267),
        failure_persistence: None,
        ..Config::default()
    }
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::LeakyRelu(0.2)),
        Just(Activation::Elu),
    ]
}

/// `⟨∇L, d⟩` of the kernel against the central difference of the definition along `d`
/// (step 1e-6), for `L = Σ c ⊙ y`: relative to `Σ |∂L_i d_i|` (1e-4) plus 1e-6.
fn check_direction(analytic: &[(&[f32], &[f64])], numeric: f64, what: &str) {
    let (mut sum, mut scale) = (0.0f64, 0.0f64);
    for (g, d) in analytic {
        for (&gi, &di) in g.iter().zip(*d) {
            sum += gi as f64 * di;
            scale += (gi as f64 * di).abs();
        }
    }
    assert!(
        (sum - numeric).abs() <= 1e-4 * scale + 1e-6,
        "{what}: ⟨∇L, d⟩ = {sum}, finite difference {numeric}"
    );
}

proptest! {
    #![proptest_config(config(40))]

    /// Random convolutions on a random execution: values against the definition, and the
    /// backward pass against a directional derivative of the definition.
    #[test]
    fn conv_property(
        batch in 1usize..5, cin in 1usize..4, cout in 1usize..6,
        rows in 1usize..6, cols in 1usize..20, half in 0usize..3,
        act in activation(), pick in 0usize..15, seed in any::<u64>(),
    ) {
        let g = conv_geometry(batch, cin, cout, [rows, cols], 2 * half + 1);
        let execs = conv_execs(cols);
        let exec = execs[pick % execs.len()];
        let mut rng = rng(seed);
        let x = uniform(batch * cin * g.sites(), 1.0, &mut rng);
        let w = uniform(cout * g.taps(), 1.0, &mut rng);
        let b = uniform(cout, 1.0, &mut rng);
        let c = uniform(batch * cout * g.sites(), 1.0, &mut rng);
        let (x64, w64, b64, c64) = (wide(&x), wide(&w), wide(&b), wide(&c));
        let d: Vec<Vec<f64>> = [x.len(), w.len(), b.len()]
            .iter()
            .map(|&n| wide(&uniform(n, 1.0, &mut rng)))
            .collect();
        let y = conv_forward(exec, &g, &x, &w, &b, act);
        assert_close(&y, &reference::conv(&g, &x64, &w64, &b64, act), 1e-5, "y");
        let (gx, gw, gb) = conv_backward(exec, &g, &x, &w, &y, &c, act);
        let at = |t: f64| {
            let shift = |v: &[f64], d: &[f64]| -> Vec<f64> {
                v.iter().zip(d).map(|(a, b)| a + t * b).collect()
            };
            let (xs, ws, bs) = (shift(&x64, &d[0]), shift(&w64, &d[1]), shift(&b64, &d[2]));
            dot(&reference::conv(&g, &xs, &ws, &bs, act), &c64)
        };
        let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
        let what = format!("{g:?} {act:?} {exec:?}");
        check_direction(&[(&gx, &d[0]), (&gw, &d[1]), (&gb, &d[2])], numeric, &what);
    }

    /// Random twin MLPs (one layer is a dense layer) on a random width: values against the
    /// definition and the backward pass along a random direction.
    #[test]
    fn mlp_property(
        twins in 1usize..4, shared in any::<bool>(), rows in 1usize..700,
        widths in proptest::collection::vec(1usize..7, 2..5),
        hidden in activation(), pick in 0usize..5, seed in any::<u64>(),
    ) {
        let g = MlpGeometry {
            groups_in: if shared { 1 } else { twins },
            twins,
            rows,
            widths,
            hidden,
        };
        let exec = widths_pick(pick);
        let mut rng = rng(seed);
        let len = g.layout().1;
        let x = uniform(g.groups_in * rows * g.widths[0], 1.0, &mut rng);
        let p = uniform(len, 1.0, &mut rng);
        let c = uniform(twins * g.output_width() * rows, 1.0, &mut rng);
        let (dx, dp) = (wide(&uniform(x.len(), 1.0, &mut rng)), wide(&uniform(len, 1.0, &mut rng)));
        let (x64, p64, c64) = (wide(&x), wide(&p), wide(&c));
        let y = mlp_forward(exec, &g, &x, &p);
        assert_close(&y, &reference::mlp(&g, &x64, &p64), 1e-4, "y");
        let (gx, gp) = mlp_backward(exec, &g, &x, &p, &c);
        let at = |t: f64| {
            let xs: Vec<f64> = x64.iter().zip(&dx).map(|(a, b)| a + t * b).collect();
            let ps: Vec<f64> = p64.iter().zip(&dp).map(|(a, b)| a + t * b).collect();
            dot(&reference::mlp(&g, &xs, &ps), &c64)
        };
        let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
        check_direction(&[(&gx, &dx), (&gp, &dp)], numeric, &format!("{g:?} {exec:?}"));
    }

    /// Random affine updates (random 0/1 masks, both directions) on a random width.
    #[test]
    fn affine_property(
        batch in 1usize..40, channels in 1usize..4, sites in 1usize..40,
        inverse in any::<bool>(), pick in 0usize..5, seed in any::<u64>(),
    ) {
        let direction = if inverse { Direction::Inverse } else { Direction::Forward };
        let g = AffineGeometry { batch, channels, sites, direction };
        let exec = widths_pick(pick);
        let mut rng = rng(seed);
        let v = channels * sites;
        let mask: Vec<f32> = (0..v).map(|_| f32::from(rng.random::<bool>())).collect();
        let z = uniform(batch * (v + 1), 2.0, &mut rng);
        let o = uniform(2 * batch * v, 1.5, &mut rng);
        let s = uniform(channels, 1.2, &mut rng);
        let r = uniform(batch * (v + 1), 1.0, &mut rng);
        let d: Vec<Vec<f64>> = [z.len(), o.len(), s.len()]
            .iter()
            .map(|&n| wide(&uniform(n, 1.0, &mut rng)))
            .collect();
        let (z64, o64, m64, s64, r64) = (wide(&z), wide(&o), wide(&mask), wide(&s), wide(&r));
        let exact = reference::affine(&g, &z64, &o64, &m64, &s64);
        let y = affine_forward(exec, &g, &z, &o, &mask, &s);
        assert_close(&y, &exact, 1e-5, "y");
        let (gz, go, gs) = affine_backward(exec, &g, &z, &o, &mask, &s, &r);
        let at = |t: f64| {
            let shift = |v: &[f64], d: &[f64]| -> Vec<f64> {
                v.iter().zip(d).map(|(a, b)| a + t * b).collect()
            };
            let (zs, os, ss) = (shift(&z64, &d[0]), shift(&o64, &d[1]), shift(&s64, &d[2]));
            dot(&reference::affine(&g, &zs, &os, &m64, &ss), &r64)
        };
        let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
        check_direction(&[(&gz, &d[0]), (&go, &d[1]), (&gs, &d[2])], numeric, &format!("{g:?} {exec:?}"));
    }

    /// Random coupling chains (couplings, half widths, hidden layers, both directions) on a
    /// random width: values against the definition and the backward pass along a direction.
    #[test]
    fn chain_property(
        couplings in 1usize..5, half in 1usize..4,
        hidden in proptest::collection::vec(1usize..7, 0..3),
        rows in 1usize..300, inverse in any::<bool>(), pick in 0usize..5, seed in any::<u64>(),
    ) {
        let mut widths = vec![half];
        widths.extend(hidden);
        widths.push(half);
        let g = ChainGeometry {
            mlp: MlpGeometry { groups_in: 1, twins: 2, rows, widths, hidden: Activation::Elu },
            couplings,
            direction: if inverse { Direction::Inverse } else { Direction::Forward },
        };
        let exec = widths_pick(pick);
        let mut rng = rng(seed);
        let x = uniform(2 * half * rows, 1.5, &mut rng);
        let p = uniform(g.param_len(), 0.5, &mut rng);
        let r = uniform((2 * half + 1) * rows, 1.0, &mut rng);
        let (dx, dp) = (wide(&uniform(x.len(), 1.0, &mut rng)), wide(&uniform(p.len(), 1.0, &mut rng)));
        let (x64, p64, r64) = (wide(&x), wide(&p), wide(&r));
        let y = chain_forward(exec, &g, &x, &p);
        assert_close(&y, &reference::chain(&g, &x64, &p64), 1e-4, "y");
        let (gx, gp) = chain_backward(exec, &g, &x, &p, &r);
        let at = |t: f64| {
            let xs: Vec<f64> = x64.iter().zip(&dx).map(|(a, b)| a + t * b).collect();
            let ps: Vec<f64> = p64.iter().zip(&dp).map(|(a, b)| a + t * b).collect();
            dot(&reference::chain(&g, &xs, &ps), &r64)
        };
        let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
        check_direction(&[(&gx, &dx), (&gp, &dp)], numeric, &format!("{g:?} {exec:?}"));
    }
}

/// The `pick`-th SIMD width.
fn widths_pick(pick: usize) -> Exec {
    widths()[pick % SimdWidth::ALL.len()]
}

/// Cotangents negligible beside the largest (here 10⁻³⁰ against 1) are flushed to zero on
/// the way into the coupling chain's backward pass, so they never become subnormal floats
/// (a hundredfold slowdown on x86): the gradients equal, to the bit, those with the tiny
/// columns zeroed, and no gradient is subnormal. Inside the MLP's backward pass the same
/// holds for cotangents below 2⁻¹⁰⁰ whatever the largest (a whole MLP cotangent of 10⁻³⁵).
#[test]
fn negligible_cotangents_are_flushed_in_the_chain() {
    let mut rng = rng(23);
    let n = 300;
    for direction in [Direction::Forward, Direction::Inverse] {
        let g = chain_geometry(n, direction);
        let half = g.mlp.widths[0];
        let x = uniform(2 * half * n, 1.0, &mut rng);
        let p = uniform(g.param_len(), 0.5, &mut rng);
        let mut tiny = uniform((2 * half + 1) * n, 1.0, &mut rng);
        let mut zeroed = tiny.clone();
        for (i, (t, z)) in tiny.iter_mut().zip(zeroed.iter_mut()).enumerate() {
            if (i % n) % 3 == 0 {
                *t *= 1e-30;
                *z = 0.0;
            }
        }
        for exec in widths() {
            let (gx, gp) = chain_backward(exec, &g, &x, &p, &tiny);
            let (zx, zp) = chain_backward(exec, &g, &x, &p, &zeroed);
            assert_eq!(gp, zp, "{direction:?} {exec:?}: parameter gradients");
            assert_eq!(gx, zx, "{direction:?} {exec:?}: input gradients");
            assert!(
                gx.iter().chain(&gp).all(|v| !v.is_subnormal()),
                "{direction:?} {exec:?}: a subnormal gradient"
            );
        }
    }
    let m = MlpGeometry {
        groups_in: 1,
        twins: 2,
        rows: 200,
        widths: vec![2, 8, 8, 2],
        hidden: Activation::Elu,
    };
    let xm = uniform(2 * 200, 1.0, &mut rng);
    let pm = uniform(m.layout().1, 1.0, &mut rng);
    let tiny: Vec<f32> = uniform(2 * 2 * 200, 1.0, &mut rng)
        .iter()
        .map(|v| v * 1e-35)
        .collect();
    for exec in widths() {
        let (gx, gp) = mlp_backward(exec, &m, &xm, &pm, &tiny);
        assert!(
            gx.iter().chain(&gp).all(|v| *v == 0.0),
            "{exec:?}: cotangents of 1e-35 must flush to zero"
        );
    }
}
