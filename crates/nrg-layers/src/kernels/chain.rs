//! Host kernels of a fused chain of affine couplings on the two halves of a block (the
//! arithmetic of [`crate::BlockRealNvp`] in one operation).
//!
//! Input `[2, h, N]`: the halves `u` (row 0) and `v` (row 1), feature-major. Parameters flat,
//! `[net₀, net₁, …, net_{K−1}, σ₀, …, σ_{K−1}]`, each net a twin MLP `h → … → h` (twin 0
//! gives `ŝ`, twin 1 gives `t`) in [`MlpGeometry::layout`]. Coupling `k` conditions on `u`
//! when `k` is even (updating `v`) and on `v` when odd (updating `u`), with `s = σ_k tanh ŝ`:
//!
//! ```text
//! generative (k = 0 … K−1):   upd ← upd ⊙ eˢ + t,          ln|det| += Σ_h s
//! inverse    (k = K−1 … 0):   upd ← (upd − t) ⊙ e^{−s},    ln|det| −= Σ_h s
//! ```
//!
//! Output `[2h + 1, N]`: the two halves, then `ln|det|` as the last row. The backward pass
//! recomputes the chain per column tile, keeping the `K + 1` intermediate states of the
//! tile and every coupling's MLP activations, and walks the couplings back (for the generative direction, with `b` the updated
//! half and `a` its value before):
//!
//! ```text
//! ∂a = ∂b eˢ,   ∂t = ∂b,   ∂s = ∂b (b − t) + ∂ln|det|
//! ∂ŝ = ∂s σ (1 − tanh² ŝ),   ∂σ += Σ ∂s tanh ŝ,   then (∂ŝ, ∂t) through the twin MLP
//! ```
//!
//! and for the inverse direction `∂a = ∂b e^{−s}`, `∂t = −∂a`, `∂s = −∂b b − ∂ln|det|`.
//! `tanh` and `exp` are evaluated on SIMD vectors by the range reduction of the ELU kernel.

use super::host::{
    DENSE_TILE, ExpConsts, MlpGeometry, ORDERED, column_tiles, expm1_f32, expm1_simd,
    gather_columns, mlp_tile_backward, mlp_tile_forward,
};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Geometry of a fused coupling chain.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainGeometry {
    /// The twin MLP of every coupling (`groups_in` 1, `twins` 2, widths `h → … → h`,
    /// `rows` = N).
    pub mlp: MlpGeometry,
    /// Couplings `K`.
    pub couplings: usize,
    /// The inverse direction (`x → z`).
    pub inverse: bool,
}

impl ChainGeometry {
    fn half(&self) -> usize {
        self.mlp.widths[0]
    }

    /// Length of one net's flat parameters.
    fn net_len(&self) -> usize {
        self.mlp.layout().1
    }

    /// Length of the flat parameters: `K` nets and `K` scales.
    pub fn param_len(&self) -> usize {
        self.couplings * (self.net_len() + 1)
    }

    /// The couplings in the order they are applied.
    fn order(&self) -> Vec<usize> {
        if self.inverse {
            (0..self.couplings).rev().collect()
        } else {
            (0..self.couplings).collect()
        }
    }

    /// Row offsets (within a `[2h, cols]` state) of the conditioning and updated halves.
    fn halves(&self, k: usize, cols: usize) -> (usize, usize) {
        let h = self.half() * cols;
        if k.is_multiple_of(2) { (0, h) } else { (h, 0) }
    }

    fn check(&self, input: &[f32], params: &[f32]) {
        let (h, n) = (self.half(), self.mlp.rows);
        assert_eq!(self.mlp.twins, 2, "coupling chain: twin MLPs");
        assert_eq!(self.mlp.groups_in, 1, "coupling chain: one input");
        assert_eq!(self.mlp.output_width(), h, "coupling chain: net widths");
        assert_eq!(input.len(), 2 * h * n, "coupling chain input length");
        assert_eq!(
            params.len(),
            self.param_len(),
            "coupling chain parameter length"
        );
    }
}

/// `th = tanh x` and `e = exp(scale · th)` on slices: `tanh x = m/(m + 2)` with
/// `m = e^{2x} − 1` (exact in relative terms near 0, ±1 at the clamps), `e = 1 + expm1`.
pub(crate) struct TanhExp<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) scale: f32,
    pub(crate) th: &'a mut [f32],
    pub(crate) e: &'a mut [f32],
}

impl WithSimd for TanhExp<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (xh, xt) = S::as_simd_f32s(self.x);
        let (th, tt) = S::as_mut_simd_f32s(self.th);
        let (eh, et) = S::as_mut_simd_f32s(self.e);
        let k = ExpConsts::new(simd);
        let two = simd.splat_f32s(2.0);
        let scale = simd.splat_f32s(self.scale);
        for ((x, th), e) in xh.iter().zip(th.iter_mut()).zip(eh.iter_mut()) {
            let m = expm1_simd(simd, &k, simd.add_f32s(*x, *x));
            *th = simd.div_f32s(m, simd.add_f32s(m, two));
            *e = simd.add_f32s(expm1_simd(simd, &k, simd.mul_f32s(scale, *th)), k.one);
        }
        for ((x, th), e) in xt.iter().zip(tt.iter_mut()).zip(et.iter_mut()) {
            let m = expm1_f32(2.0 * x);
            *th = m / (m + 2.0);
            *e = expm1_f32(self.scale * *th) + 1.0;
        }
    }
}

/// One coupling's intermediates on a tile: the activation stacks of its two twins (`ŝ`
/// and `t` at their tops), `tanh ŝ` and `e^{±s}`.
struct CouplingTile {
    stack: [Vec<f32>; 2],
    th: Vec<f32>,
    e: Vec<f32>,
}

/// Per-task buffers of a chain tile.
struct ChainScratch {
    /// The `K + 1` states `[2h, cols]` of the tile (the backward keeps them all; the
    /// forward uses the first).
    states: Vec<f32>,
    /// The couplings' intermediates (the backward keeps all `K`; the forward reuses one).
    couplings: Vec<CouplingTile>,
    /// Backward: scratch tiles of the widest layer, `∂t`, the state's cotangent, `∂ln|det|`.
    ga: Vec<f32>,
    gb: Vec<f32>,
    gt: Vec<f32>,
    gstate: Vec<f32>,
    gld: Vec<f32>,
    /// Backward: parameter gradients of this task.
    grads: Vec<f32>,
}

impl ChainScratch {
    /// For the forward (`keep` false: one state, one coupling's intermediates) or the
    /// backward (all `K + 1` states and `K` couplings).
    fn new(g: &ChainGeometry, keep: bool) -> Self {
        let h = g.half();
        let (states, kept) = if keep {
            (g.couplings + 1, g.couplings)
        } else {
            (1, 1)
        };
        let stack = g.mlp.stack_offsets().last().copied().unwrap_or(0);
        let wide = g.mlp.widest();
        // Only the backward needs cotangent tiles and parameter gradients.
        let back = |len: usize| vec![0.0; if keep { len } else { 0 }];
        Self {
            states: vec![0.0; states * 2 * h * DENSE_TILE],
            couplings: (0..kept)
                .map(|_| CouplingTile {
                    stack: [vec![0.0; stack], vec![0.0; stack]],
                    th: vec![0.0; h * DENSE_TILE],
                    e: vec![0.0; h * DENSE_TILE],
                })
                .collect(),
            ga: back(wide * DENSE_TILE),
            gb: back(wide * DENSE_TILE),
            gt: back(h * DENSE_TILE),
            gstate: back(2 * h * DENSE_TILE),
            gld: vec![0.0; DENSE_TILE],
            grads: back(g.param_len()),
        }
    }
}

/// Shared per-call data: the nets' layout and transposed weights.
struct Nets<'a> {
    layout: Vec<(usize, usize)>,
    len: usize,
    wt: Vec<Vec<Vec<Vec<f32>>>>,
    params: &'a [f32],
    h_at: Vec<usize>,
}

impl<'a> Nets<'a> {
    fn new(g: &ChainGeometry, params: &'a [f32]) -> Self {
        let (layout, len) = g.mlp.layout();
        let wt = (0..g.couplings)
            .map(|k| g.mlp.transposed_weights(&params[k * len..(k + 1) * len]))
            .collect();
        Self {
            layout,
            len,
            wt,
            params,
            h_at: g.mlp.stack_offsets(),
        }
    }

    fn net(&self, k: usize) -> &'a [f32] {
        &self.params[k * self.len..(k + 1) * self.len]
    }

    fn sigma(&self, couplings: usize, k: usize) -> f32 {
        self.params[couplings * self.len + k]
    }

    /// Both twins of net `k` on the conditioning half `cond` (`h × cols`): `ŝ` ends in
    /// `stack[0]`, `t` in `stack[1]`, at offset `h_at[L]`.
    fn evaluate(
        &self,
        g: &ChainGeometry,
        arch: Arch,
        k: usize,
        cond: &[f32],
        cols: usize,
        stack: &mut [Vec<f32>; 2],
    ) {
        for (t, hs) in stack.iter_mut().enumerate() {
            hs[..cond.len()].copy_from_slice(cond);
            let (net, wt) = (self.net(k), &self.wt[k]);
            mlp_tile_forward(&g.mlp, arch, &self.layout, wt, net, t, cols, hs, &self.h_at);
        }
    }

    fn output<'s>(&self, g: &ChainGeometry, hs: &'s [f32], cols: usize) -> &'s [f32] {
        &hs[self.h_at[g.mlp.widths.len() - 1]..][..g.half() * cols]
    }
}

/// Applies coupling `k` to the state `[2h, cols]` in place and adds its log-det to `ld`,
/// leaving its intermediates in `c`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn apply_coupling(
    g: &ChainGeometry,
    nets: &Nets,
    arch: Arch,
    k: usize,
    cols: usize,
    state: &mut [f32],
    ld: &mut [f32],
    c: &mut CouplingTile,
) {
    let hc = g.half() * cols;
    let (c_at, u_at) = g.halves(k, cols);
    nets.evaluate(g, arch, k, &state[c_at..c_at + hc], cols, &mut c.stack);
    let sigma = nets.sigma(g.couplings, k);
    let sign = if g.inverse { -1.0 } else { 1.0 };
    let (th, e) = (&mut c.th[..hc], &mut c.e[..hc]);
    let shat = nets.output(g, &c.stack[0], cols);
    arch.dispatch(TanhExp {
        x: shat,
        scale: sign * sigma,
        th: &mut *th,
        e: &mut *e,
    });
    let t = nets.output(g, &c.stack[1], cols);
    let upd = &mut state[u_at..u_at + hc];
    if g.inverse {
        for ((u, &t), &e) in upd.iter_mut().zip(t).zip(&*e) {
            *u = (*u - t) * e;
        }
    } else {
        for ((u, &t), &e) in upd.iter_mut().zip(t).zip(&*e) {
            *u = u.mul_add(e, t);
        }
    }
    let step = sign * sigma;
    for row in th.chunks_exact(cols) {
        for (l, &v) in ld.iter_mut().zip(row) {
            *l += step * v;
        }
    }
}

/// The chain's output `[2h + 1, N]` (see the module docs).
pub fn chain_forward(g: &ChainGeometry, input: &[f32], params: &[f32]) -> Vec<f32> {
    g.check(input, params);
    let (h, n) = (g.half(), g.mlp.rows);
    let nets = Nets::new(g, params);
    let order = g.order();
    let mut out = vec![0.0f32; (2 * h + 1) * n];
    let arch = Arch::new();
    column_tiles(&mut out, 2 * h + 1, n, DENSE_TILE)
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || ChainScratch::new(g, false),
            |s, (tile, mut segs)| {
                let (c0, cols) = (tile * DENSE_TILE, segs[0].len());
                arch.dispatch(|| {
                    let mut state = std::mem::take(&mut s.states);
                    let mut ld = std::mem::take(&mut s.gld);
                    gather_columns(input, 2 * h, n, c0, cols, &mut state[..2 * h * cols]);
                    ld[..cols].fill(0.0);
                    for &k in &order {
                        apply_coupling(
                            g,
                            &nets,
                            arch,
                            k,
                            cols,
                            &mut state[..2 * h * cols],
                            &mut ld[..cols],
                            &mut s.couplings[0],
                        );
                    }
                    for (seg, row) in segs.iter_mut().zip(
                        state[..2 * h * cols]
                            .chunks_exact(cols)
                            .chain(std::iter::once(&ld[..cols])),
                    ) {
                        seg.copy_from_slice(row);
                    }
                    s.states = state;
                    s.gld = ld;
                })
            },
        );
    out
}

/// Gradients of [`chain_forward`]: `(∂L/∂input [2, h, N], ∂L/∂params)` from the input, the
/// parameters and the output's cotangent `[2h + 1, N]`.
pub fn chain_backward(
    g: &ChainGeometry,
    input: &[f32],
    params: &[f32],
    grad_output: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    g.check(input, params);
    let (h, n, kk) = (g.half(), g.mlp.rows, g.couplings);
    assert_eq!(
        grad_output.len(),
        (2 * h + 1) * n,
        "coupling chain cotangent"
    );
    let nets = Nets::new(g, params);
    let order = g.order();
    let len = nets.len;
    let mut grad_input = vec![0.0f32; 2 * h * n];
    let arch = Arch::new();
    let grad_params = column_tiles(&mut grad_input, 2 * h, n, DENSE_TILE)
        .into_par_iter()
        .enumerate()
        .with_max_len(ORDERED)
        .fold(
            || ChainScratch::new(g, true),
            |mut s, (tile, mut segs)| {
                let (c0, cols) = (tile * DENSE_TILE, segs[0].len());
                let (hc, sc) = (h * cols, 2 * h * cols);
                arch.dispatch(|| {
                    // Recompute the chain, keeping every state and every coupling's
                    // intermediates (cheaper than evaluating the nets a third time).
                    let mut states = std::mem::take(&mut s.states);
                    let mut gld = std::mem::take(&mut s.gld);
                    gather_columns(input, 2 * h, n, c0, cols, &mut states[..sc]);
                    for (j, &k) in order.iter().enumerate() {
                        let (done, rest) = states.split_at_mut((j + 1) * sc);
                        rest[..sc].copy_from_slice(&done[j * sc..]);
                        let (state, ld) = (&mut rest[..sc], &mut gld[..cols]);
                        apply_coupling(g, &nets, arch, k, cols, state, ld, &mut s.couplings[j]);
                    }
                    gather_columns(grad_output, 2 * h, n, c0, cols, &mut s.gstate[..sc]);
                    gather_columns(&grad_output[2 * h * n..], 1, n, c0, cols, &mut gld[..cols]);
                    for (j, &k) in order.iter().enumerate().rev() {
                        let after = &states[(j + 1) * sc..(j + 2) * sc];
                        let (c_at, u_at) = g.halves(k, cols);
                        let sigma = nets.sigma(kk, k);
                        let ct = &s.couplings[j];
                        // Cotangents of ŝ (into ga) and t (into gt); ∂a replaces ∂b.
                        let b = &after[u_at..u_at + hc];
                        let t = nets.output(g, &ct.stack[1], cols);
                        let gupd = &mut s.gstate[u_at..u_at + hc];
                        let mut gsigma = 0.0f32;
                        for r in 0..h {
                            let row = r * cols..(r + 1) * cols;
                            for c in row {
                                let (gb_, th, e) = (gupd[c], ct.th[c], ct.e[c]);
                                let gl = gld[c - r * cols];
                                let (ga_, gt, gs) = if g.inverse {
                                    let ga_ = gb_ * e;
                                    (ga_, -ga_, -gb_ * b[c] - gl)
                                } else {
                                    (gb_ * e, gb_, gb_ * (b[c] - t[c]) + gl)
                                };
                                gupd[c] = ga_;
                                gsigma += gs * th;
                                s.ga[c] = gs * sigma * (1.0 - th * th);
                                s.gt[c] = gt;
                            }
                        }
                        s.grads[kk * len + k] += gsigma;
                        // Through the twins; their input cotangent adds to the condition's.
                        let (net, grads) = (nets.net(k), &mut s.grads[k * len..(k + 1) * len]);
                        let gcond = &mut s.gstate[c_at..c_at + hc];
                        for (twin, hs) in ct.stack.iter().enumerate() {
                            if twin == 1 {
                                s.ga[..hc].copy_from_slice(&s.gt[..hc]);
                            }
                            mlp_tile_backward(
                                &g.mlp,
                                arch,
                                &nets.layout,
                                net,
                                twin,
                                cols,
                                hs,
                                &nets.h_at,
                                (&mut s.ga[..], &mut s.gb[..]),
                                grads,
                                gcond,
                            );
                        }
                    }
                    for (seg, row) in segs.iter_mut().zip(s.gstate[..sc].chunks_exact(cols)) {
                        seg.copy_from_slice(row);
                    }
                    s.states = states;
                    s.gld = gld;
                });
                s
            },
        )
        .map(|s| s.grads)
        .reduce(
            || vec![0.0f32; g.param_len()],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        );
    (grad_input, grad_params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Activation;
    use crate::test_util::{rng, uniform as random, wide};

    /// The chain in f64 straight from the definition, one column at a time.
    fn reference(g: &ChainGeometry, input: &[f64], params: &[f64]) -> Vec<f64> {
        let (h, n, kk) = (g.half(), g.mlp.rows, g.couplings);
        let (layout, len) = g.mlp.layout();
        let elu = |x: f64| if x > 0.0 { x } else { x.exp_m1() };
        let mut out = vec![0.0; (2 * h + 1) * n];
        for col in 0..n {
            let mut halves = [
                (0..h).map(|r| input[r * n + col]).collect::<Vec<_>>(),
                (0..h).map(|r| input[(h + r) * n + col]).collect::<Vec<_>>(),
            ];
            let mut ld = 0.0;
            for k in g.order() {
                let (ci, ui) = if k % 2 == 0 { (0, 1) } else { (1, 0) };
                let p = &params[k * len..(k + 1) * len];
                let net = |twin: usize| {
                    let mut x = halves[ci].clone();
                    for (l, w) in g.mlp.widths.windows(2).enumerate() {
                        let (wi, wo) = (w[0], w[1]);
                        let (w_off, b_off) = layout[l];
                        x = (0..wo)
                            .map(|j| {
                                let pre = p[b_off + twin * wo + j]
                                    + (0..wi)
                                        .map(|i| x[i] * p[w_off + twin * wi * wo + i * wo + j])
                                        .sum::<f64>();
                                if l + 2 < g.mlp.widths.len() {
                                    elu(pre)
                                } else {
                                    pre
                                }
                            })
                            .collect();
                    }
                    x
                };
                let (shat, t) = (net(0), net(1));
                let sigma = params[kk * len + k];
                for r in 0..h {
                    let s = sigma * shat[r].tanh();
                    let a = halves[ui][r];
                    halves[ui][r] = if g.inverse {
                        (a - t[r]) * (-s).exp()
                    } else {
                        a * s.exp() + t[r]
                    };
                    ld += if g.inverse { -s } else { s };
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

    fn geometry(n: usize, inverse: bool) -> ChainGeometry {
        ChainGeometry {
            mlp: MlpGeometry {
                groups_in: 1,
                twins: 2,
                rows: n,
                widths: vec![2, 5, 5, 2],
                hidden: Activation::Elu,
            },
            couplings: 3,
            inverse,
        }
    }

    /// Forward equals the f64 definition (to f32 rounding: 1e-5 of the values' scale), the
    /// inverse undoes it with the opposite log-det, and the scalar `tanh`/`exp` of the
    /// SIMD tails agree with f64 to a few ulp.
    #[test]
    fn chain_matches_the_definition_and_inverts() {
        let mut rng = rng(3);
        // 300 columns: one full tile of 256, one of 44 (SIMD vectors and scalar tails).
        let n = 300;
        let g = geometry(n, false);
        let x = random(2 * 2 * n, 2.0, &mut rng);
        let p = random(g.param_len(), 0.7, &mut rng);
        let y = chain_forward(&g, &x, &p);
        let want = reference(&g, &wide(&x), &wide(&p));
        for (a, b) in y.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let gi = geometry(n, true);
        let z = chain_forward(&gi, &y[..4 * n], &p);
        for (a, b) in z[..4 * n].iter().zip(&x) {
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        for (a, b) in z[4 * n..].iter().zip(&y[4 * n..]) {
            assert!(
                (a + b).abs() < 1e-5 * (1.0 + b.abs()),
                "log-dets {a} vs {b}"
            );
        }
        for v in [
            -100.0f32, -3.0, -0.2, -1e-4, 0.0, 1e-4, 0.3, 2.0, 30.0, 100.0,
        ] {
            let e = expm1_f32(v) as f64;
            let want = (v.clamp(-87.0, 88.0) as f64).exp_m1();
            assert!(
                (e - want).abs() <= 3e-7 * want.abs().max(1e-30),
                "expm1({v}) = {e}"
            );
        }
    }

    /// Both directions' gradients (input and every parameter, the scales σ included) against
    /// f64 central differences of the definition, for `L = Σ r ⊙ output` with random `r`.
    /// Step 1e-5 in f64: truncation ~1e-10; the kernel is f32, so 2e-4 of the largest
    /// gradient plus 1e-4 absolute.
    #[test]
    fn chain_gradients_match_finite_differences() {
        let mut rng = rng(5);
        let n = 37;
        for inverse in [false, true] {
            let g = geometry(n, inverse);
            let x = random(4 * n, 1.5, &mut rng);
            let p = random(g.param_len(), 0.7, &mut rng);
            let r = random(5 * n, 1.0, &mut rng);
            let (gx, gp) = chain_backward(&g, &x, &p, &r);
            let (x64, p64, r64) = (wide(&x), wide(&p), wide(&r));
            let loss = |x: &[f64], p: &[f64]| -> f64 {
                reference(&g, x, p)
                    .iter()
                    .zip(&r64)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let eps = 1e-5;
            let fd = |which: usize, i: usize| {
                let (mut xa, mut pa) = (x64.clone(), p64.clone());
                let (mut xb, mut pb) = (x64.clone(), p64.clone());
                if which == 0 {
                    xa[i] += eps;
                    xb[i] -= eps;
                } else {
                    pa[i] += eps;
                    pb[i] -= eps;
                }
                (loss(&xa, &pa) - loss(&xb, &pb)) / (2.0 * eps)
            };
            let want_x: Vec<f64> = (0..x.len()).map(|i| fd(0, i)).collect();
            let want_p: Vec<f64> = (0..p.len()).map(|i| fd(1, i)).collect();
            for (got, want, what) in [(&gx, &want_x, "input"), (&gp, &want_p, "params")] {
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (*a as f64 - b).abs() < 2e-4 * scale + 1e-4,
                        "inverse {inverse}: ∂{what}[{i}] = {a}, finite differences {b}"
                    );
                }
            }
        }
    }
}
