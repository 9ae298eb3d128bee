//! A chain of affine couplings on the two halves of a block (RealNVP with twin-MLP
//! subnets, as in NeuralRG's block bijectors) as one operation, forward and backward.
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
//! tile and every coupling's MLP activations, and walks the couplings back (for the
//! generative direction, with `b` the updated half and `a` its value before):
//!
//! ```text
//! ∂a = ∂b eˢ,   ∂t = ∂b,   ∂s = ∂b (b − t) + ∂ln|det|
//! ∂ŝ = ∂s σ (1 − tanh² ŝ),   ∂σ += Σ ∂s tanh ŝ,   then (∂ŝ, ∂t) through the twin MLP
//! ```
//!
//! and for the inverse direction `∂a = ∂b e^{−s}`, `∂t = −∂a`, `∂s = −∂b b − ∂ln|det|`.
//! `tanh` and `exp` are evaluated on SIMD vectors ([`crate::activation::tanh_exp`]).

use crate::Direction;
use crate::activation::tanh_exp;
use crate::exec::Exec;
use crate::mlp::{MlpGeometry, TileMlp};
use crate::parallel::{
    COLUMN_TILE, ORDERED, add, column_tiles, flush, gather_columns, negligible_floor,
};
use rayon::prelude::*;

/// Geometry of a fused coupling chain.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainGeometry {
    /// The twin MLP of every coupling (`groups_in` 1, `twins` 2, widths `h → … → h`,
    /// `rows` = N).
    pub mlp: MlpGeometry,
    /// Couplings `K`.
    pub couplings: usize,
    /// The direction: forward (generative, `z → x`) or inverse (`x → z`, the couplings
    /// undone from the last).
    pub direction: Direction,
}

impl ChainGeometry {
    fn inverse(&self) -> bool {
        self.direction == Direction::Inverse
    }

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
        if self.inverse() {
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
            states: vec![0.0; states * 2 * h * COLUMN_TILE],
            couplings: (0..kept)
                .map(|_| CouplingTile {
                    stack: [vec![0.0; stack], vec![0.0; stack]],
                    th: vec![0.0; h * COLUMN_TILE],
                    e: vec![0.0; h * COLUMN_TILE],
                })
                .collect(),
            ga: back(wide * COLUMN_TILE),
            gb: back(wide * COLUMN_TILE),
            gt: back(h * COLUMN_TILE),
            gstate: back(2 * h * COLUMN_TILE),
            gld: vec![0.0; COLUMN_TILE],
            grads: back(g.param_len()),
        }
    }
}

/// Shared per-call data: the geometry, where to run, and every coupling's twin MLP ready
/// for tiles.
struct Nets<'a> {
    g: &'a ChainGeometry,
    exec: Exec,
    /// Length of one net's flat parameters.
    len: usize,
    nets: Vec<TileMlp<'a>>,
    params: &'a [f32],
}

impl<'a> Nets<'a> {
    fn new(exec: Exec, g: &'a ChainGeometry, params: &'a [f32]) -> Self {
        let len = g.net_len();
        let nets = (0..g.couplings)
            .map(|k| TileMlp::new(exec, &g.mlp, &params[k * len..(k + 1) * len]))
            .collect();
        Self {
            g,
            exec,
            len,
            nets,
            params,
        }
    }

    fn sigma(&self, k: usize) -> f32 {
        self.params[self.g.couplings * self.len + k]
    }

    /// Both twins of net `k` on the conditioning half `cond` (`h × cols`): `ŝ` ends in
    /// `stack[0]`, `t` in `stack[1]`, as the nets' outputs.
    fn evaluate(&self, k: usize, cond: &[f32], cols: usize, stack: &mut [Vec<f32>; 2]) {
        for (t, hs) in stack.iter_mut().enumerate() {
            hs[..cond.len()].copy_from_slice(cond);
            self.nets[k].forward(t, cols, hs);
        }
    }

    /// Applies coupling `k` to the state `[2h, cols]` in place and adds its log-det to
    /// `ld`, leaving its intermediates in `c`.
    #[inline(always)]
    fn apply(
        &self,
        k: usize,
        cols: usize,
        state: &mut [f32],
        ld: &mut [f32],
        c: &mut CouplingTile,
    ) {
        let g = self.g;
        let hc = g.half() * cols;
        let (c_at, u_at) = g.halves(k, cols);
        self.evaluate(k, &state[c_at..c_at + hc], cols, &mut c.stack);
        let sigma = self.sigma(k);
        let sign = if g.inverse() { -1.0 } else { 1.0 };
        let (th, e) = (&mut c.th[..hc], &mut c.e[..hc]);
        let shat = self.nets[k].output(&c.stack[0], cols);
        tanh_exp(self.exec, shat, sign * sigma, th, e);
        let t = self.nets[k].output(&c.stack[1], cols);
        let upd = &mut state[u_at..u_at + hc];
        if g.inverse() {
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
}

/// The chain's output `[2h + 1, N]` (see the module docs). Parallel over column tiles.
///
/// # Panics
///
/// If a slice's length does not match `g`, or the nets are not twin MLPs `h → … → h` of
/// one shared input.
pub fn chain_forward(exec: Exec, g: &ChainGeometry, input: &[f32], params: &[f32]) -> Vec<f32> {
    g.check(input, params);
    let (h, n) = (g.half(), g.mlp.rows);
    let nets = Nets::new(exec, g, params);
    let order = g.order();
    let mut out = vec![0.0f32; (2 * h + 1) * n];
    column_tiles(&mut out, 2 * h + 1, n, COLUMN_TILE)
        .into_par_iter()
        .enumerate()
        .for_each_init(
            || ChainScratch::new(g, false),
            |s, (tile, mut segs)| {
                let (c0, cols) = (tile * COLUMN_TILE, segs[0].len());
                exec.dispatch(|| {
                    let mut state = std::mem::take(&mut s.states);
                    let mut ld = std::mem::take(&mut s.gld);
                    gather_columns(input, 2 * h, n, c0, cols, &mut state[..2 * h * cols]);
                    ld[..cols].fill(0.0);
                    for &k in &order {
                        let (state, ld) = (&mut state[..2 * h * cols], &mut ld[..cols]);
                        nets.apply(k, cols, state, ld, &mut s.couplings[0]);
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
/// parameters and the output's cotangent `[2h + 1, N]`; parameter gradients summed in
/// `f32` per parallel task first, in a fixed order.
///
/// # Panics
///
/// As [`chain_forward`].
pub fn chain_backward(
    exec: Exec,
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
    let nets = Nets::new(exec, g, params);
    let order = g.order();
    let len = nets.len;
    // Negligible cotangents flushed to zero on the way in and after every coupling, before
    // they turn subnormal (see `parallel::NEGLIGIBLE`).
    let floor = negligible_floor(grad_output);
    let mut grad_input = vec![0.0f32; 2 * h * n];
    let grad_params = column_tiles(&mut grad_input, 2 * h, n, COLUMN_TILE)
        .into_par_iter()
        .enumerate()
        .with_max_len(ORDERED)
        .fold(
            || ChainScratch::new(g, true),
            |mut s, (tile, mut segs)| {
                let (c0, cols) = (tile * COLUMN_TILE, segs[0].len());
                let (hc, sc) = (h * cols, 2 * h * cols);
                exec.dispatch(|| {
                    // Recompute the chain, keeping every state and every coupling's
                    // intermediates (cheaper than evaluating the nets a third time).
                    let mut states = std::mem::take(&mut s.states);
                    let mut gld = std::mem::take(&mut s.gld);
                    gather_columns(input, 2 * h, n, c0, cols, &mut states[..sc]);
                    for (j, &k) in order.iter().enumerate() {
                        let (done, rest) = states.split_at_mut((j + 1) * sc);
                        rest[..sc].copy_from_slice(&done[j * sc..]);
                        let (state, ld) = (&mut rest[..sc], &mut gld[..cols]);
                        nets.apply(k, cols, state, ld, &mut s.couplings[j]);
                    }
                    gather_columns(grad_output, 2 * h, n, c0, cols, &mut s.gstate[..sc]);
                    gather_columns(&grad_output[2 * h * n..], 1, n, c0, cols, &mut gld[..cols]);
                    for v in s.gstate[..sc].iter_mut().chain(gld[..cols].iter_mut()) {
                        *v = flush(*v, floor);
                    }
                    for (j, &k) in order.iter().enumerate().rev() {
                        let after = &states[(j + 1) * sc..(j + 2) * sc];
                        let (c_at, u_at) = g.halves(k, cols);
                        let sigma = nets.sigma(k);
                        let ct = &s.couplings[j];
                        // Cotangents of ŝ (into ga) and t (into gt); ∂a replaces ∂b.
                        let b = &after[u_at..u_at + hc];
                        let t = nets.nets[k].output(&ct.stack[1], cols);
                        let gupd = &mut s.gstate[u_at..u_at + hc];
                        let mut gsigma = 0.0f32;
                        for r in 0..h {
                            let row = r * cols..(r + 1) * cols;
                            for c in row {
                                let (gb_, th, e) = (gupd[c], ct.th[c], ct.e[c]);
                                let gl = gld[c - r * cols];
                                let (ga_, gt, gs) = if g.inverse() {
                                    let ga_ = gb_ * e;
                                    (ga_, -ga_, -gb_ * b[c] - gl)
                                } else {
                                    (gb_ * e, gb_, gb_ * (b[c] - t[c]) + gl)
                                };
                                gupd[c] = flush(ga_, floor);
                                gsigma += gs * th;
                                s.ga[c] = flush(gs * sigma * (1.0 - th * th), floor);
                                s.gt[c] = flush(gt, floor);
                            }
                        }
                        s.grads[kk * len + k] += gsigma;
                        // Through the twins; their input cotangent adds to the condition's.
                        let grads = &mut s.grads[k * len..(k + 1) * len];
                        let gcond = &mut s.gstate[c_at..c_at + hc];
                        for (twin, hs) in ct.stack.iter().enumerate() {
                            if twin == 1 {
                                s.ga[..hc].copy_from_slice(&s.gt[..hc]);
                            }
                            let bufs = (&mut s.ga[..], &mut s.gb[..]);
                            nets.nets[k].backward(twin, cols, hs, bufs, grads, gcond);
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
        .reduce(|| vec![0.0f32; g.param_len()], add);
    (grad_input, grad_params)
}
