//! The hot paths as CubeCL kernels on the cubecl backend (wgpu, and any other cubecl
//! runtime): the periodic convolution (also on the masked field of a coupling stack's
//! state), the affine update of a lattice coupling and the chain of block couplings, forward
//! and backward, each a handful of kernel launches instead of
//! the dozens of burn operations of the composite path. The arithmetic is that of
//! `nrg-kernels` (same layouts, same formulas); the tests compare values and gradients with
//! the composite path (on flex, with the same parameters and inputs).
//!
//! ```text
//! conv forward    one thread per output   y[n,o,i,j] = act(b[o] + Σ_{c,a,d} w[o,c,a,d] x[n,c,i+a−p,j+d−p])
//! conv ∂x         one thread per input    Σ_{o,a,d} δ[n,o,i−a+p,j−d+p] w[o,c,a,d],  δ = ∂y·act′
//! conv ∂w, ∂b     one cube per weight or bias, its threads summing over the batch and the
//!                 lattice, then over the cube (a tree in shared memory); in the same
//!                 launch as ∂x, the cubes after ∂x's
//! conditioning    the convolution of m ⊙ field, the field read from a coupling stack's
//!                 state [B, C·V + 1] through a strided view, the mask applied on the fly;
//!                 its ∂state (m ⊙ ∂x, 0 for ln|det|) written by the ∂x threads
//! affine update   one thread per sample, on the state: x = z eˢ + f t (or its inverse),
//!                 ln|det| += ±Σ s;
//!                 backward ∂z, ∂ŝ, ∂t a thread per sample, and in the same launch a cube
//!                 per channel summing ∂σ over the samples and sites
//! coupling stack  the couplings in order on the state, each as the conditioning, the
//!                 convolutions and the update above with every weight, bias and σ read at
//!                 its offset in the stack's flat parameter; backward the update's, the
//!                 convolutions' and the conditioning's backward launches writing their
//!                 parts of one flat gradient in place, the conditioning's ∂x threads adding
//!                 m ⊙ ∂x to the update's ∂state
//! block layer     the chain, its threads reading their blocks straight from the
//!                 hierarchical flow's state (and writing them out for autodiff to keep);
//!                 then a thread per entry of the new state (block sites from the chain's
//!                 output, the rest copied, a thread per sample summing its blocks'
//!                 ln|det|): two launches. Backward the chain's backward pass, reading its
//!                 cotangent straight from the new state's (its input from the kept
//!                 blocks), the parameters' sums and the scatter: three launches
//! chain forward   one thread per column: the K couplings and their twin MLPs in registers
//! chain backward  one thread per column: the chain recomputed (K + 1 states and every
//!                 tanh ŝ kept, each layer's input a_l written out), the couplings walked
//!                 back reading a_l back (2K net evaluations each way), each layer's output
//!                 cotangent δ_l written out; then one cube per parameter summing
//!                 ∂W_l = Σ_n a_l δ_lᵀ, ∂b_l = Σ_n δ_l, ∂σ_k over the columns, in the
//!                 flat layout
//! ```
//!
//! Indices are periodic (`p = ⌊k/2⌋`); fields and states are read through their strides,
//! parameters (weights, biases, `σ`, a stack's flat vector) made contiguous and read at
//! offsets; outputs are allocated contiguous. Everything is f32 (other float types are
//! cast).

use super::hot::HotOps;
use super::{
    Activation, BlockLayerShape, ChainShape, Direction, StackAffine, StackConv, StackShape,
};
use burn::backend::ops::FloatTensorOps;
use burn::tensor::{DType, FloatDType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::zspace::metadata::Metadata;
use cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};

type Ops = CubeBackend;

/// The activation as a comptime code and its slope: 0 identity, 1 leaky ReLU, 2 ELU.
fn act_code(act: Activation) -> (u32, f32) {
    match act {
        Activation::Identity => (0, 0.0),
        Activation::LeakyRelu(slope) => (1, slope),
        Activation::Elu => (2, 0.0),
    }
}

/// `act(z)` (`nrg_kernels::Activation::apply`). The comptime test selects the code generated;
/// folding it into the runtime one would make the whole condition a runtime branch.
#[cube]
#[allow(clippy::collapsible_if)]
fn activate(z: f32, slope: f32, #[comptime] act: u32) -> f32 {
    let mut y = z;
    if comptime!(act == 1) {
        if z <= 0.0 {
            y = z * slope;
        }
    }
    if comptime!(act == 2) {
        if z <= 0.0 {
            y = z.exp() - 1.0;
        }
    }
    y
}

/// `g · act′(pre)` from the output `y = act(pre)` (comptime and runtime tests apart, as in
/// [`activate`]).
#[cube]
#[allow(clippy::collapsible_if)]
fn act_grad(g: f32, y: f32, slope: f32, #[comptime] act: u32) -> f32 {
    let mut d = g;
    if comptime!(act == 1) {
        if y <= 0.0 {
            d = g * slope;
        }
    }
    if comptime!(act == 2) {
        if y <= 0.0 {
            d = g * (y + 1.0);
        }
    }
    d
}

/// Offset of `t[i0, i1, i2, i3]` through the strides.
#[cube]
fn at4(t: &Tensor<f32>, i0: usize, i1: usize, i2: usize, i3: usize) -> usize {
    i0 * t.stride(0) + i1 * t.stride(1) + i2 * t.stride(2) + i3 * t.stride(3)
}

/// `x[n, c, r, s]`, times the mask `m[mi, c, r, s]` when `masked` (the conditioning
/// convolution, `x` a strided view of the state's field, `mi` the mask plane).
#[cube]
#[allow(clippy::too_many_arguments)]
fn input_at(
    x: &Tensor<f32>,
    m: &Tensor<f32>,
    mi: usize,
    n: usize,
    c: usize,
    r: usize,
    s: usize,
    #[comptime] masked: bool,
) -> f32 {
    let mut v = x[at4(x, n, c, r, s)];
    if comptime!(masked) {
        v *= m[at4(m, mi, c, r, s)];
    }
    v
}

/// Index of `w[o, c, a, d]` in a contiguous weight `[cout, cin, k, k]` starting at `off`.
#[cube]
fn weight_at(off: usize, o: usize, c: usize, a: usize, d: usize, cin: usize, k: usize) -> usize {
    off + ((o * cin + c) * k + a) * k + d
}

/// One thread per output. With `masked`, `x` is the field of a coupling stack's state (a
/// strided view) and is multiplied by mask plane `mi` of `m` on the fly; otherwise `m` is
/// not read. The weight `[cout, cin, k, k]` is read contiguous from `w` at `w_off`, the
/// bias from `b` at `b_off` (a stack's flat parameters, or the tensors themselves at 0).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn conv_forward_kernel(
    x: &Tensor<f32>,
    m: &Tensor<f32>,
    w: &Tensor<f32>,
    b: &Tensor<f32>,
    y: &mut Tensor<f32>,
    w_off: u32,
    b_off: u32,
    kernel: u32,
    mi: u32,
    slope: f32,
    #[comptime] act: u32,
    #[comptime] masked: bool,
) {
    let pos = ABSOLUTE_POS;
    let cout = y.shape(1);
    let rows = y.shape(2);
    let cols = y.shape(3);
    if pos >= y.shape(0) * cout * rows * cols {
        terminate!();
    }
    let j = pos % cols;
    let i = (pos / cols) % rows;
    let o = (pos / (cols * rows)) % cout;
    let n = pos / (cols * rows * cout);
    let k = kernel as usize;
    let p = k / 2;
    let cin = x.shape(1);
    let mut acc = b[b_off as usize + o];
    for c in 0..cin {
        for a in 0..k {
            let r = (i + a + p * rows - p) % rows;
            for d in 0..k {
                let s = (j + d + p * cols - p) % cols;
                let wv = w[weight_at(w_off as usize, o, c, a, d, cin, k)];
                acc += wv * input_at(x, m, mi as usize, n, c, r, s, masked);
            }
        }
    }
    y[pos] = activate(acc, slope, act);
}

/// `∂x[n, c, r, s]` (in range), the weight `[cout, cin, k, k]` read contiguous from `w` at
/// `w_off`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn conv_grad_input(
    w: &Tensor<f32>,
    y: &Tensor<f32>,
    gy: &Tensor<f32>,
    w_off: usize,
    cin: usize,
    k: usize,
    n: usize,
    c: usize,
    r: usize,
    s: usize,
    slope: f32,
    #[comptime] act: u32,
) -> f32 {
    let rows = y.shape(2);
    let cols = y.shape(3);
    let p = k / 2;
    let mut acc = 0.0f32;
    for o in 0..y.shape(1) {
        for a in 0..k {
            let i = (r + p + rows * k - a) % rows;
            for d in 0..k {
                let j = (s + p + cols * k - d) % cols;
                let delta = act_grad(gy[at4(gy, n, o, i, j)], y[at4(y, n, o, i, j)], slope, act);
                acc += delta * w[weight_at(w_off, o, c, a, d, cin, k)];
            }
        }
    }
    acc
}

/// The sum of `acc` over the `size` threads of the cube (a power of two; a tree in shared
/// memory), returned to every thread. Every thread of the cube must call it (it
/// synchronises the cube), and the launch's cube must have exactly `size` threads
/// ([`sum_grid`] with [`SUM_CUBE`]).
#[cube]
fn cube_sum(acc: f32, #[comptime] size: u32) -> f32 {
    let mut shared = Shared::<[f32]>::new_slice(comptime!(size as usize));
    let u = UNIT_POS as usize;
    shared[u] = acc;
    sync_cube();
    #[unroll]
    for level in 0..comptime!(size.trailing_zeros()) {
        let half = comptime!((size >> (level + 1)) as usize);
        if u < half {
            shared[u] += shared[u + half];
        }
        sync_cube();
    }
    shared[0]
}

/// Thread `u`'s share (of a cube of `size`) of entry `q` of `∂w` (`q < cout·cin·k·k`) or
/// of `∂b` (`q − cout·cin·k·k`): the sum over the positions `u, u + size, …` of the
/// flattened `(n, i, j)`, consecutive threads on consecutive columns.
#[cube]
#[allow(clippy::too_many_arguments)]
fn conv_grad_weight(
    x: &Tensor<f32>,
    m: &Tensor<f32>,
    y: &Tensor<f32>,
    gy: &Tensor<f32>,
    mi: usize,
    q: usize,
    kernel: u32,
    slope: f32,
    #[comptime] act: u32,
    #[comptime] masked: bool,
    #[comptime] size: u32,
) -> f32 {
    let k = kernel as usize;
    let cin = x.shape(1);
    let cout = y.shape(1);
    let nw = cout * cin * k * k;
    let rows = x.shape(2);
    let cols = x.shape(3);
    let plane = rows * cols;
    let positions = x.shape(0) * plane;
    let mut t = UNIT_POS as usize;
    let mut acc = 0.0f32;
    if q < nw {
        let d = q % k;
        let a = (q / k) % k;
        let c = (q / (k * k)) % cin;
        let o = q / (k * k * cin);
        let p = k / 2;
        while t < positions {
            let n = t / plane;
            let i = (t / cols) % rows;
            let j = t % cols;
            let r = (i + a + p * rows - p) % rows;
            let s = (j + d + p * cols - p) % cols;
            let delta = act_grad(gy[at4(gy, n, o, i, j)], y[at4(y, n, o, i, j)], slope, act);
            acc += delta * input_at(x, m, mi, n, c, r, s, masked);
            t += comptime!(size as usize);
        }
    } else {
        let o = q - nw;
        while t < positions {
            let n = t / plane;
            let i = (t / cols) % rows;
            let j = t % cols;
            acc += act_grad(gy[at4(gy, n, o, i, j)], y[at4(y, n, o, i, j)], slope, act);
            t += comptime!(size as usize);
        }
    }
    acc
}

/// The convolution's backward pass in one launch of cubes of `size` threads: the first
/// `⌈|gx| / size⌉` cubes compute `∂x`, a thread per input ([`conv_grad_input`]); each cube
/// after them one entry of `∂w` or `∂b`, summed over the batch and the lattice by its
/// threads ([`conv_grad_weight`], [`cube_sum`]). Neither reads what the other writes.
/// With `masked` (the conditioning convolution), `gx` is the state's cotangent
/// `[B, C·V + 1]`: `m ⊙ ∂x` per sample (mask plane `mi`), then 0 for the ln|det| column;
/// with `accumulate` as well, both are added to what `gx` holds (a coupling stack's other
/// cotangent of the state, through its update). With `flat`, `∂w` and `∂b` are written
/// into `gw` (a stack's flat gradient) at `w_off` and `b_off`, and `gb` is not touched;
/// otherwise into `gw` and `gb` from 0. The weight is read from `w` at `w_off` either way.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn conv_backward_kernel(
    x: &Tensor<f32>,
    m: &Tensor<f32>,
    w: &Tensor<f32>,
    y: &Tensor<f32>,
    gy: &Tensor<f32>,
    gx: &mut Tensor<f32>,
    gw: &mut Tensor<f32>,
    gb: &mut Tensor<f32>,
    w_off: u32,
    b_off: u32,
    kernel: u32,
    mi: u32,
    slope: f32,
    #[comptime] act: u32,
    #[comptime] masked: bool,
    #[comptime] accumulate: bool,
    #[comptime] flat: bool,
    #[comptime] size: u32,
) {
    let cin = x.shape(1);
    let rows = x.shape(2);
    let cols = x.shape(3);
    let v = cin * rows * cols;
    let k = kernel as usize;
    let mut nx = x.shape(0) * v;
    if comptime!(masked) {
        nx = x.shape(0) * (v + 1);
    }
    let x_cubes = nx.div_ceil(comptime!(size as usize));
    let cube = CUBE_POS;
    if cube < x_cubes {
        let pos = cube * comptime!(size as usize) + UNIT_POS as usize;
        if pos < nx {
            if comptime!(masked) {
                let q = pos % (v + 1);
                let n = pos / (v + 1);
                let mut g = 0.0f32;
                if q < v {
                    let s = q % cols;
                    let r = (q / cols) % rows;
                    let c = q / (cols * rows);
                    let gi =
                        conv_grad_input(w, y, gy, w_off as usize, cin, k, n, c, r, s, slope, act);
                    g = gi * m[at4(m, mi as usize, c, r, s)];
                }
                if comptime!(accumulate) {
                    g += gx[pos];
                }
                gx[pos] = g;
            } else {
                let s = pos % cols;
                let r = (pos / cols) % rows;
                let c = (pos / (cols * rows)) % cin;
                let n = pos / v;
                gx[pos] = conv_grad_input(w, y, gy, w_off as usize, cin, k, n, c, r, s, slope, act);
            }
        }
    } else {
        let q = cube - x_cubes;
        let cout = y.shape(1);
        let nw = cout * cin * k * k;
        if q < nw + cout {
            let acc = conv_grad_weight(
                x,
                m,
                y,
                gy,
                mi as usize,
                q,
                kernel,
                slope,
                act,
                masked,
                size,
            );
            let total = cube_sum(acc, size);
            if UNIT_POS == 0 {
                if comptime!(flat) {
                    if q < nw {
                        gw[w_off as usize + q] = total;
                    } else {
                        gw[b_off as usize + q - nw] = total;
                    }
                } else if q < nw {
                    gw[q] = total;
                } else {
                    gb[q - nw] = total;
                }
            }
        }
    }
}

/// One thread per sample: `x = z eˢ + f t` (inverse `(z − f t) e^{−s}`) with `f = 1 − m`,
/// `s = σ_c f tanh ŝ`, from row `n` of the state `z [B, C·V + 1]` into row `n` of `y`, and
/// `ℓ' = ℓ ± Σ s`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn affine_forward_kernel(
    z: &Tensor<f32>,
    o: &Tensor<f32>,
    m: &Tensor<f32>,
    sigma: &Tensor<f32>,
    y: &mut Tensor<f32>,
    s_off: u32,
    mi: u32,
    #[comptime] inverse: bool,
) {
    let n = ABSOLUTE_POS;
    if n >= z.shape(0) {
        terminate!();
    }
    let channels = m.shape(1);
    let rows = m.shape(2);
    let cols = m.shape(3);
    let row = channels * rows * cols + 1;
    let z0 = n * z.stride(0);
    let mut ld = 0.0f32;
    for c in 0..channels {
        let sg = sigma[s_off as usize + c];
        for i in 0..rows {
            for j in 0..cols {
                let f = 1.0 - m[at4(m, mi as usize, c, i, j)];
                let s = sg * f * o[at4(o, n, c, i, j)].tanh();
                let ft = f * o[at4(o, n, c + channels, i, j)];
                let k = (c * rows + i) * cols + j;
                let zz = z[z0 + k * z.stride(1)];
                if comptime!(inverse) {
                    y[n * row + k] = (zz - ft) * (0.0 - s).exp();
                } else {
                    y[n * row + k] = zz * s.exp() + ft;
                }
                ld += s;
            }
        }
    }
    if comptime!(inverse) {
        ld = 0.0 - ld;
    }
    y[n * row + row - 1] = z[z0 + (row - 1) * z.stride(1)] + ld;
}

/// `∂s` of one site of the affine update from its input `zz`, its output's cotangent `gb`,
/// `e = e^{±s}`, `f = 1 − m`, the shift `t` and the cotangent `gld` of the ln|det|:
/// forward `gb e zz + gld`; inverse (`b` the output) `−gb b − gld`, `b = (zz − f t) e`.
#[cube]
fn affine_grad_s(
    zz: f32,
    gb: f32,
    e: f32,
    f: f32,
    t: f32,
    gld: f32,
    #[comptime] inverse: bool,
) -> f32 {
    let mut gs = gb * e * zz + gld;
    if comptime!(inverse) {
        gs = 0.0 - gb * ((zz - f * t) * e) - gld;
    }
    gs
}

/// `e^{s}` (forward) or `e^{−s}` (inverse).
#[cube]
fn affine_exp(s: f32, #[comptime] inverse: bool) -> f32 {
    let mut e = s.exp();
    if comptime!(inverse) {
        e = (0.0 - s).exp();
    }
    e
}

/// The backward pass of [`affine_forward_kernel`] from its cotangent `gy [B, C·V + 1]`, in
/// one launch of cubes of `size` threads: the first `⌈B / size⌉` cubes a thread per sample,
/// writing the state's `∂z [B, C·V + 1]` and `∂o [B, 2C, H, W]` (`∂ŝ`, then `∂t`); then a
/// cube per channel `c`, its threads summing `∂σ_c = Σ_{n, sites} ∂s f tanh ŝ` over the
/// samples and sites ([`cube_sum`]) into `gsigma [1, C, 1, 1]`
/// (`nrg_kernels::affine_backward`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn affine_backward_kernel(
    z: &Tensor<f32>,
    o: &Tensor<f32>,
    m: &Tensor<f32>,
    sigma: &Tensor<f32>,
    gy: &Tensor<f32>,
    gz: &mut Tensor<f32>,
    go: &mut Tensor<f32>,
    gsigma: &mut Tensor<f32>,
    s_off: u32,
    mi: u32,
    #[comptime] inverse: bool,
    #[comptime] size: u32,
) {
    let batch = z.shape(0);
    let channels = m.shape(1);
    let rows = m.shape(2);
    let cols = m.shape(3);
    let v = rows * cols;
    let row = channels * v + 1;
    let sample_cubes = batch.div_ceil(comptime!(size as usize));
    let cube = CUBE_POS;
    if cube < sample_cubes {
        let n = cube * comptime!(size as usize) + UNIT_POS as usize;
        if n < batch {
            let z0 = n * z.stride(0);
            let g0 = n * gy.stride(0);
            let gld = gy[g0 + channels * v * gy.stride(1)];
            gz[n * row + channels * v] = gld;
            for c in 0..channels {
                let sg = sigma[s_off as usize + c];
                for i in 0..rows {
                    for j in 0..cols {
                        let f = 1.0 - m[at4(m, mi as usize, c, i, j)];
                        let th = o[at4(o, n, c, i, j)].tanh();
                        let t = o[at4(o, n, c + channels, i, j)];
                        let site = i * cols + j;
                        let zz = z[z0 + (c * v + site) * z.stride(1)];
                        let gb = gy[g0 + (c * v + site) * gy.stride(1)];
                        // ∂z = ∂b e^{±s}; ∂t = f ∂b forward, −f ∂z inverse
                        let e = affine_exp(sg * f * th, inverse);
                        let gza = gb * e;
                        let mut gt = f * gb;
                        if comptime!(inverse) {
                            gt = 0.0 - f * gza;
                        }
                        let gs = affine_grad_s(zz, gb, e, f, t, gld, inverse);
                        gz[n * row + c * v + site] = gza;
                        go[(n * 2 * channels + c) * v + site] = gs * sg * f * (1.0 - th * th);
                        go[(n * 2 * channels + channels + c) * v + site] = gt;
                    }
                }
            }
        }
    } else {
        let c = cube - sample_cubes;
        if c < channels {
            let sg = sigma[s_off as usize + c];
            let mut acc = 0.0f32;
            let mut p = UNIT_POS as usize;
            while p < batch * v {
                let n = p / v;
                let site = p % v;
                let i = site / cols;
                let j = site % cols;
                let f = 1.0 - m[at4(m, mi as usize, c, i, j)];
                let th = o[at4(o, n, c, i, j)].tanh();
                let t = o[at4(o, n, c + channels, i, j)];
                let g0 = n * gy.stride(0);
                let gld = gy[g0 + channels * v * gy.stride(1)];
                let zz = z[n * z.stride(0) + (c * v + site) * z.stride(1)];
                let gb = gy[g0 + (c * v + site) * gy.stride(1)];
                let e = affine_exp(sg * f * th, inverse);
                acc += affine_grad_s(zz, gb, e, f, t, gld, inverse) * f * th;
                p += comptime!(size as usize);
            }
            let total = cube_sum(acc, size);
            if UNIT_POS == 0 {
                gsigma[s_off as usize + c] = total;
            }
        }
    }
}

/// `(weight offset, bias offset)` of every layer of a twin MLP (two twins) in its flat
/// parameters, and their length ([`nrg_kernels::twin_layout`]).
fn net_layout(widths: &[usize]) -> (Vec<(usize, usize)>, usize) {
    nrg_kernels::twin_layout(2, widths)
}

/// The widest layer.
fn widest(widths: &[usize]) -> usize {
    widths.iter().copied().max().unwrap_or(0)
}

/// `Σ_{m < l} widths[m]`: where layer `l`'s input starts in the activations.
fn input_offset(widths: &[usize], l: usize) -> usize {
    widths[..l].iter().sum()
}

/// `Σ_{m < l} widths[m + 1]`: where layer `l`'s output cotangent starts.
fn delta_offset(widths: &[usize], l: usize) -> usize {
    widths[1..=l].iter().sum()
}

/// One twin of coupling `k`'s MLP on the activations' first `widths[0]` entries (the
/// conditioning half): the hidden activations stay in `acts`, the output lands in `out`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn twin_forward(
    p: &Tensor<f32>,
    acts: &mut Array<f32>,
    out: &mut Array<f32>,
    slope: f32,
    #[comptime] widths: Vec<usize>,
    #[comptime] base: usize,
    #[comptime] twin: usize,
    #[comptime] act: u32,
) {
    let layers = comptime!(widths.len() - 1);
    #[unroll]
    for l in 0..layers {
        let wi = comptime!(widths[l]);
        let wo = comptime!(widths[l + 1]);
        let in_at = comptime!(input_offset(&widths, l));
        let out_at = comptime!(input_offset(&widths, l + 1));
        let w_at = comptime!(base + net_layout(&widths).0[l].0 + twin * widths[l] * widths[l + 1]);
        let b_at = comptime!(base + net_layout(&widths).0[l].1 + twin * widths[l + 1]);
        for o in 0..wo {
            let mut acc = p[b_at + o];
            for i in 0..wi {
                acc += p[w_at + i * wo + o] * acts[in_at + i];
            }
            if comptime!(l + 1 < layers) {
                acts[out_at + o] = activate(acc, slope, act);
            } else {
                out[o] = acc;
            }
        }
    }
}

/// The conditioning half `state[cond_at … cond_at + h]` into the activations.
#[cube]
fn load_condition(state: &Array<f32>, acts: &mut Array<f32>, from: usize, #[comptime] h: usize) {
    for i in 0..h {
        acts[i] = state[from + i];
    }
}

/// Both twins of one coupling's MLP on the conditioning half `state[from … from + h]`:
/// `ŝ` into `shat`, `t` into `shift`; `acts` is left holding twin 1's activations.
#[cube]
#[allow(clippy::too_many_arguments)]
fn coupling_nets(
    p: &Tensor<f32>,
    state: &Array<f32>,
    from: usize,
    acts: &mut Array<f32>,
    shat: &mut Array<f32>,
    shift: &mut Array<f32>,
    slope: f32,
    #[comptime] widths: Vec<usize>,
    #[comptime] base: usize,
    #[comptime] act: u32,
) {
    load_condition(state, acts, from, comptime!(widths[0]));
    twin_forward(
        p,
        acts,
        shat,
        slope,
        comptime!(widths.clone()),
        base,
        comptime!(0usize),
        act,
    );
    twin_forward(p, acts, shift, slope, widths, base, comptime!(1usize), act);
}

/// The chain's input: `[2, h, N]`, or with `blocks` a state `[B, C·L² + 1]` read through
/// [`block_site`] (column `n = s·m² + blk`); with `saved`, the blocks read also written
/// there, `[2h, N]` (what autodiff keeps of a hierarchical layer).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn chain_forward_kernel(
    x: &Tensor<f32>,
    p: &Tensor<f32>,
    y: &mut Tensor<f32>,
    saved: ComptimeOption<&mut Tensor<f32>>,
    blocks: ComptimeOption<Blocks>,
    slope: f32,
    #[comptime] widths: Vec<usize>,
    #[comptime] couplings: usize,
    #[comptime] inverse: bool,
    #[comptime] act: u32,
) {
    let n = ABSOLUTE_POS;
    let cols = y.shape(1);
    if n >= cols {
        terminate!();
    }
    let h = comptime!(widths[0]);
    let net_len = comptime!(net_layout(&widths).1);
    let mut state = Array::<f32>::new(comptime!(2 * widths[0]));
    #[comptime]
    match &blocks {
        ComptimeOption::Some(g) => {
            let mm = blocks_per_sample(g);
            let at = (n / mm) * x.stride(0);
            let blk = n % mm;
            for r in 0..comptime!(2 * widths[0]) {
                state[r] = x[at + block_site(g, r, blk) * x.stride(1)];
            }
        }
        ComptimeOption::None => {
            for r in 0..comptime!(2 * widths[0]) {
                state[r] = x[(r / h) * x.stride(0) + (r % h) * x.stride(1) + n * x.stride(2)];
            }
        }
    }
    #[comptime]
    if let ComptimeOption::Some(xs) = saved {
        for r in 0..comptime!(2 * widths[0]) {
            xs[r * cols + n] = state[r];
        }
    }
    let mut acts = Array::<f32>::new(comptime!(input_offset(&widths, widths.len() - 1)));
    let mut shat = Array::<f32>::new(h);
    let mut shift = Array::<f32>::new(h);
    let mut ld = 0.0f32;
    #[unroll]
    for j in 0..couplings {
        let k = comptime!(if inverse { couplings - 1 - j } else { j });
        let cond = comptime!(if k % 2 == 0 { 0 } else { widths[0] });
        let upd = comptime!(if k % 2 == 0 { widths[0] } else { 0 });
        coupling_nets(
            p,
            &state,
            cond,
            &mut acts,
            &mut shat,
            &mut shift,
            slope,
            comptime!(widths.clone()),
            comptime!(k * net_len),
            act,
        );
        let sigma = p[comptime!(couplings * net_len + k)];
        for o in 0..h {
            let s = sigma * shat[o].tanh();
            if comptime!(inverse) {
                state[upd + o] = (state[upd + o] - shift[o]) * (0.0 - s).exp();
                ld -= s;
            } else {
                state[upd + o] = state[upd + o] * s.exp() + shift[o];
                ld += s;
            }
        }
    }
    for r in 0..comptime!(2 * widths[0]) {
        y[r * cols + n] = state[r];
    }
    y[comptime!(2 * widths[0]) * cols + n] = ld;
}

/// Every layer's input `a_l` of one twin of coupling `k`'s MLP (its activations in `acts`,
/// as [`twin_forward`] left them) to the global buffer, slot `2k + twin`, column `n`: what
/// [`chain_grad_params_kernel`] sums into `∂W_l`, and what [`twin_backward`] reads back for
/// the activations' slopes.
#[cube]
#[allow(clippy::too_many_arguments)]
fn save_acts(
    acts: &Array<f32>,
    acts_out: &mut Tensor<f32>,
    n: usize,
    cols: usize,
    #[comptime] widths: Vec<usize>,
    #[comptime] couplings: usize,
    #[comptime] k: usize,
    #[comptime] twin: usize,
) {
    let slot = comptime!(2 * k + twin);
    #[unroll]
    for l in 0..comptime!(widths.len() - 1) {
        let wi = comptime!(widths[l]);
        let in_at = comptime!(input_offset(&widths, l));
        let a_base = comptime!(2 * couplings * input_offset(&widths, l)) * cols;
        for i in 0..wi {
            acts_out[a_base + (slot * wi + i) * cols + n] = acts[in_at + i];
        }
    }
}

/// Back through one twin of coupling `k`'s MLP from the output cotangent `dout`, its
/// activations read back from `acts_out` (slot `2k + twin`, column `n`, as [`save_acts`]
/// wrote them): every layer's output cotangent `δ_{l+1}` written to `deltas`, the
/// cotangent of the conditioning half added to `grad[cond_at …]`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn twin_backward(
    p: &Tensor<f32>,
    dout: &Array<f32>,
    grad: &mut Array<f32>,
    cond_at: usize,
    da: &mut Array<f32>,
    db: &mut Array<f32>,
    acts_out: &mut Tensor<f32>,
    deltas: &mut Tensor<f32>,
    n: usize,
    cols: usize,
    slope: f32,
    #[comptime] widths: Vec<usize>,
    #[comptime] couplings: usize,
    #[comptime] k: usize,
    #[comptime] twin: usize,
    #[comptime] act: u32,
) {
    let layers = comptime!(widths.len() - 1);
    let base = comptime!(k * net_layout(&widths).1);
    let slot = comptime!(2 * k + twin);
    for o in 0..comptime!(widths[widths.len() - 1]) {
        da[o] = dout[o];
    }
    #[unroll]
    for ll in 0..layers {
        let l = comptime!(layers - 1 - ll);
        let wi = comptime!(widths[l]);
        let wo = comptime!(widths[l + 1]);
        let w_at = comptime!(base + net_layout(&widths).0[l].0 + twin * widths[l] * widths[l + 1]);
        let a_base = comptime!(2 * couplings * input_offset(&widths, l)) * cols;
        let d_base = comptime!(2 * couplings * delta_offset(&widths, l)) * cols;
        for o in 0..wo {
            deltas[d_base + (slot * wo + o) * cols + n] = da[o];
        }
        for i in 0..wi {
            let mut g = 0.0f32;
            for o in 0..wo {
                g += p[w_at + i * wo + o] * da[o];
            }
            if comptime!(l > 0) {
                db[i] = act_grad(g, acts_out[a_base + (slot * wi + i) * cols + n], slope, act);
            } else {
                grad[cond_at + i] += g;
            }
        }
        if comptime!(l > 0) {
            for i in 0..wi {
                da[i] = db[i];
            }
        }
    }
}

/// The output's cotangent `gy`: `[2h + 1, N]`, or with `blocks` the cotangent of a
/// hierarchical layer's new state `[B, C·L² + 1]`, read through [`block_site`] (row `2h`
/// from the sample's ln|det| entry).
///
/// One pass forward recomputes the chain, keeping its `K + 1` states and every coupling's
/// `tanh ŝ` in registers and writing both twins' activations to `acts_out`; one pass back
/// walks the couplings from the last, reading the activations back: `2K` net evaluations
/// forward and `2K` backward. (For the generative direction `∂s = ∂b (b − t) + ∂ln|det|`
/// is computed as `∂a · a + ∂ln|det|`, `b − t = a eˢ`, so `t` need not be kept.)
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn chain_backward_kernel(
    x: &Tensor<f32>,
    p: &Tensor<f32>,
    gy: &Tensor<f32>,
    gx: &mut Tensor<f32>,
    acts_out: &mut Tensor<f32>,
    deltas: &mut Tensor<f32>,
    gsigma: &mut Tensor<f32>,
    blocks: ComptimeOption<Blocks>,
    slope: f32,
    #[comptime] widths: Vec<usize>,
    #[comptime] couplings: usize,
    #[comptime] inverse: bool,
    #[comptime] act: u32,
) {
    let n = ABSOLUTE_POS;
    let cols = x.shape(2);
    if n >= cols {
        terminate!();
    }
    let h = comptime!(widths[0]);
    let h2 = comptime!(2 * widths[0]);
    let wide = comptime!(widest(&widths));
    let net_len = comptime!(net_layout(&widths).1);
    // The K + 1 states of the chain, in the order the couplings are applied, and every
    // coupling's tanh ŝ.
    let mut states = Array::<f32>::new(comptime!((couplings + 1) * 2 * widths[0]));
    let mut ths = Array::<f32>::new(comptime!(couplings * widths[0]));
    for r in 0..h2 {
        states[r] = x[(r / h) * x.stride(0) + (r % h) * x.stride(1) + n * x.stride(2)];
    }
    let mut acts = Array::<f32>::new(comptime!(input_offset(&widths, widths.len() - 1)));
    let mut shat = Array::<f32>::new(h);
    let mut shift = Array::<f32>::new(h);
    #[unroll]
    for j in 0..couplings {
        let k = comptime!(if inverse { couplings - 1 - j } else { j });
        let cond = comptime!(j * 2 * widths[0] + if k % 2 == 0 { 0 } else { widths[0] });
        let upd = comptime!(if k % 2 == 0 { widths[0] } else { 0 });
        let before = comptime!(j * 2 * widths[0]);
        let after = comptime!((j + 1) * 2 * widths[0]);
        load_condition(&states, &mut acts, cond, h);
        twin_forward(
            p,
            &mut acts,
            &mut shat,
            slope,
            comptime!(widths.clone()),
            comptime!(k * net_len),
            comptime!(0usize),
            act,
        );
        save_acts(
            &acts,
            acts_out,
            n,
            cols,
            comptime!(widths.clone()),
            couplings,
            k,
            comptime!(0usize),
        );
        twin_forward(
            p,
            &mut acts,
            &mut shift,
            slope,
            comptime!(widths.clone()),
            comptime!(k * net_len),
            comptime!(1usize),
            act,
        );
        save_acts(
            &acts,
            acts_out,
            n,
            cols,
            comptime!(widths.clone()),
            couplings,
            k,
            comptime!(1usize),
        );
        let sigma = p[comptime!(couplings * net_len + k)];
        for r in 0..h2 {
            states[after + r] = states[before + r];
        }
        for o in 0..h {
            let th = shat[o].tanh();
            let s = sigma * th;
            ths[comptime!(j * widths[0]) + o] = th;
            if comptime!(inverse) {
                states[after + upd + o] = (states[before + upd + o] - shift[o]) * (0.0 - s).exp();
            } else {
                states[after + upd + o] = states[before + upd + o] * s.exp() + shift[o];
            }
        }
    }
    // Cotangents of the last state and of ln|det|.
    let mut grad = Array::<f32>::new(h2);
    #[comptime]
    let gld = match &blocks {
        ComptimeOption::Some(g) => {
            let mm = blocks_per_sample(g);
            let at = (n / mm) * gy.stride(0);
            let blk = n % mm;
            for r in 0..h2 {
                grad[r] = gy[at + block_site(g, r, blk) * gy.stride(1)];
            }
            let l = g.size as usize;
            gy[at + g.channels as usize * l * l * gy.stride(1)]
        }
        ComptimeOption::None => {
            for r in 0..h2 {
                grad[r] = gy[r * gy.stride(0) + n * gy.stride(1)];
            }
            gy[h2 * gy.stride(0) + n * gy.stride(1)]
        }
    };
    let mut gshat = Array::<f32>::new(h);
    let mut gshift = Array::<f32>::new(h);
    let mut da = Array::<f32>::new(wide);
    let mut db = Array::<f32>::new(wide);
    #[unroll]
    for jj in 0..couplings {
        let j = comptime!(couplings - 1 - jj);
        let k = comptime!(if inverse { couplings - 1 - j } else { j });
        let cond_half = comptime!(if k % 2 == 0 { 0 } else { widths[0] });
        let upd = comptime!(if k % 2 == 0 { widths[0] } else { 0 });
        let before = comptime!(j * 2 * widths[0]);
        let after = comptime!((j + 1) * 2 * widths[0]);
        let sigma = p[comptime!(couplings * net_len + k)];
        let mut gsig = 0.0f32;
        for o in 0..h {
            let th = ths[comptime!(j * widths[0]) + o];
            let s = sigma * th;
            let gb = grad[upd + o];
            let mut ga = gb;
            let mut gs = gld;
            if comptime!(inverse) {
                ga *= (0.0 - s).exp();
                gshift[o] = 0.0 - ga;
                gs = 0.0 - gb * states[after + upd + o] - gld;
            } else {
                ga *= s.exp();
                gshift[o] = gb;
                gs += ga * states[before + upd + o];
            }
            grad[upd + o] = ga;
            gshat[o] = gs * sigma * (1.0 - th * th);
            gsig += gs * th;
        }
        gsigma[comptime!(k) * cols + n] = gsig;
        twin_backward(
            p,
            &gshift,
            &mut grad,
            cond_half,
            &mut da,
            &mut db,
            acts_out,
            deltas,
            n,
            cols,
            slope,
            comptime!(widths.clone()),
            couplings,
            k,
            comptime!(1usize),
            act,
        );
        twin_backward(
            p,
            &gshat,
            &mut grad,
            cond_half,
            &mut da,
            &mut db,
            acts_out,
            deltas,
            n,
            cols,
            slope,
            comptime!(widths.clone()),
            couplings,
            k,
            comptime!(0usize),
            act,
        );
    }
    for r in 0..h2 {
        gx[r * cols + n] = grad[r];
    }
}

/// Every parameter's gradient of the chain in its flat layout (`gp [K·net + K]`, see
/// [`net_layout`]), a cube of `size` threads per parameter summing over the columns
/// ([`cube_sum`]), from the per-column factors [`chain_backward_kernel`] wrote:
/// `∂W_l[k, twin, i, o] = Σ_n a_l[2k + twin, i, n] δ_l[2k + twin, o, n]`,
/// `∂b_l[k, twin, o] = Σ_n δ_l[2k + twin, o, n]`, `∂σ_k = Σ_n gσ[k, n]`.
#[cube(launch)]
fn chain_grad_params_kernel(
    acts: &Tensor<f32>,
    deltas: &Tensor<f32>,
    gsigma: &Tensor<f32>,
    gp: &mut Tensor<f32>,
    #[comptime] widths: Vec<usize>,
    #[comptime] couplings: usize,
    #[comptime] size: u32,
) {
    let net_len = comptime!(net_layout(&widths).1);
    let row = comptime!(couplings * (net_layout(&widths).1 + 1));
    let q = CUBE_POS;
    if q >= row {
        terminate!();
    }
    let cols = gsigma.shape(1);
    let step = comptime!(size as usize);
    let mut n = UNIT_POS as usize;
    let mut acc = 0.0f32;
    if q >= comptime!(couplings * net_layout(&widths).1) {
        let at = (q - comptime!(couplings * net_layout(&widths).1)) * cols;
        while n < cols {
            acc += gsigma[at + n];
            n += step;
        }
    } else {
        let k = q / net_len;
        let r = q % net_len;
        #[unroll]
        for l in 0..comptime!(widths.len() - 1) {
            let wi = comptime!(widths[l]);
            let wo = comptime!(widths[l + 1]);
            let w0 = comptime!(net_layout(&widths).0[l].0);
            let b0 = comptime!(net_layout(&widths).0[l].1);
            let a_base = comptime!(2 * couplings * input_offset(&widths, l)) * cols;
            let d_base = comptime!(2 * couplings * delta_offset(&widths, l)) * cols;
            if r >= w0 && r < b0 {
                let e = r - w0;
                let slot = 2 * k + e / comptime!(widths[l] * widths[l + 1]);
                let a_at = a_base + (slot * wi + (e / wo) % wi) * cols;
                let d_at = d_base + (slot * wo + e % wo) * cols;
                while n < cols {
                    acc += acts[a_at + n] * deltas[d_at + n];
                    n += step;
                }
            } else if r >= b0 && r < comptime!(net_layout(&widths).0[l].1 + 2 * widths[l + 1]) {
                let e = r - b0;
                let d_at = d_base + ((2 * k + e / wo) * wo + e % wo) * cols;
                while n < cols {
                    acc += deltas[d_at + n];
                    n += step;
                }
            }
        }
    }
    let total = cube_sum(acc, size);
    if UNIT_POS == 0 {
        gp[q] = total;
    }
}

/// Where a hierarchical layer's blocks sit on the lattice (a [`BlockLayerShape`] without its
/// chain), as the kernels read it: `C`, `L`, `d`, `b`, `o`.
#[derive(CubeType, CubeLaunch)]
struct Blocks {
    channels: u32,
    size: u32,
    dilation: u32,
    block: u32,
    offset: u32,
}

/// The blocks per sample `m²`, `m = L/(d·b)`.
#[cube]
fn blocks_per_sample(g: &Blocks) -> usize {
    let m = g.size as usize / (g.dilation as usize * g.block as usize);
    m * m
}

/// The field site `c·L² + row·L + col` of chain row `r < 2h` of block `blk` of a sample
/// (`nrg_kernels::BlockGeometry::site`): block entry `e = 2(r mod h) + ⌊r/h⌋`, the
/// entries `[C, b, b]` of the block at `(⌊blk/m⌋, blk mod m)` on the dilated sublattice
/// shifted by `o`, periodically.
#[cube]
fn block_site(g: &Blocks, r: usize, blk: usize) -> usize {
    let (l, b, d) = (g.size as usize, g.block as usize, g.dilation as usize);
    let m = l / (d * b);
    let h = g.channels as usize * b * b / 2;
    let e = 2 * (r % h) + r / h;
    let c = e / (b * b);
    let row = ((blk / m * b + (e / b) % b) * d + g.offset as usize) % l;
    let cl = ((blk % m * b + e % b) * d + g.offset as usize) % l;
    (c * l + row) * l + cl
}

/// One thread per entry of the state `[B, C·L² + 1]`: a block site from `values`
/// `[R, N]` (`nrg_kernels::BlockGeometry::slot`), any other site and the ln|det| from
/// `base`; with `add_logdet`, the sum of `values`' row `2h` over the sample's `m²` blocks
/// added to the ln|det|.
#[cube(launch)]
fn block_scatter_kernel(
    base: &Tensor<f32>,
    values: &Tensor<f32>,
    out: &mut Tensor<f32>,
    g: Blocks,
    #[comptime] add_logdet: bool,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let (l, b, d) = (g.size as usize, g.block as usize, g.dilation as usize);
    let m = l / (d * b);
    let mm = m * m;
    let h = g.channels as usize * b * b / 2;
    let cols = values.shape(1);
    let w = out.shape(1);
    let s = pos / w;
    let q = pos % w;
    let mut v = base[s * base.stride(0) + q * base.stride(1)];
    if q + 1 == w {
        if comptime!(add_logdet) {
            let at = 2 * h * cols + s * mm;
            for blk in 0..mm {
                v += values[at + blk];
            }
        }
    } else {
        let c = q / (l * l);
        let o = g.offset as usize % l;
        let rr = ((q / l) % l + l - o) % l;
        let cc = (q % l + l - o) % l;
        let ri = rr / d;
        let ci = cc / d;
        if ri * d == rr && ci * d == cc {
            let e = (c * b + ri % b) * b + ci % b;
            let r = (e % 2) * h + e / 2;
            v = values[r * cols + s * mm + (ri / b) * m + ci / b];
        }
    }
    out[pos] = v;
}

/// The kernels' [`Blocks`] of a layer's geometry.
fn blocks_arg(g: &nrg_kernels::BlockGeometry) -> BlocksLaunch {
    BlocksLaunch::new(
        g.channels as u32,
        g.size as u32,
        g.dilation as u32,
        g.block as u32,
        g.offset as u32,
    )
}

/// The tensor as f32.
fn f32_tensor(t: CubeTensor) -> CubeTensor {
    if t.dtype == DType::F32 {
        t
    } else {
        Ops::float_cast(t, FloatDType::F32)
    }
}

/// A result back in the float type of the input it belongs to (what the fusion metadata
/// declares, and what the composite path returns).
fn as_dtype(t: CubeTensor, dtype: DType) -> CubeTensor {
    match dtype {
        DType::F64 => Ops::float_cast(t, FloatDType::F64),
        DType::F16 => Ops::float_cast(t, FloatDType::F16),
        DType::BF16 => Ops::float_cast(t, FloatDType::BF16),
        _ => t,
    }
}

/// The flat parameters, f32 and contiguous (the kernels index them directly).
fn flat_params(p: CubeTensor) -> CubeTensor {
    burn_cubecl::kernel::into_contiguous(f32_tensor(p))
}

/// `t` f32, contiguous over its whole buffer and not shared: a tensor a kernel may write in
/// place (a copy where needed, e.g. when autodiff still holds it).
fn owned(t: CubeTensor) -> CubeTensor {
    let t = flat_params(t);
    if t.can_mut() && t.is_contiguous_buffer() {
        t
    } else {
        t.copy()
    }
}

/// Where a convolution's kernels read its weight `[cout, cin, k, k]` (contiguous, at
/// `w_off` of `w`) and bias `[cout]` (at `b_off` of `b`): the layer's own tensors at 0, or
/// a coupling stack's flat parameters at the layer's offsets.
struct ConvParams {
    w: CubeTensor,
    b: CubeTensor,
    w_off: usize,
    b_off: usize,
    cout: usize,
    kernel: usize,
}

impl ConvParams {
    /// A layer's own (contiguous f32) weight and bias.
    fn separate(w: CubeTensor, b: CubeTensor) -> Self {
        let ws = w.meta.shape().clone();
        Self {
            w,
            b,
            w_off: 0,
            b_off: 0,
            cout: ws[0],
            kernel: ws[2],
        }
    }
}

/// A contiguous f32 tensor of `shape` on `like`'s device (uninitialised).
fn empty(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let handle = like.client.empty(shape.num_elements() * size_of::<f32>());
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        DType::F32,
    )
}

/// Cubes of `dim` threads covering `units` work items.
fn grid(t: &CubeTensor, units: usize, dim: CubeDim) -> CubeCount {
    calculate_cube_count_elemwise(&t.client, units, dim)
}

/// The threads per cube of the chain kernels: each holds the chain's states and a twin
/// MLP's activations, so cubes are kept small.
const CHAIN_CUBE: u32 = 64;

/// The threads per cube of the kernels that sum within a cube ([`cube_sum`]): a power of
/// two, and within the 256 invocations per workgroup every WebGPU device allows.
const SUM_CUBE: u32 = 256;

/// At least `cubes` cubes of [`SUM_CUBE`] threads (the kernels that index by `CUBE_POS`
/// leave the extra ones idle, uniformly per cube).
fn sum_grid(t: &CubeTensor, cubes: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(SUM_CUBE);
    (grid(t, cubes * SUM_CUBE as usize, dim), dim)
}

fn check_conv(x: &CubeTensor, w: &CubeTensor) -> [usize; 4] {
    let (xs, ws) = (x.meta.shape(), w.meta.shape());
    assert_eq!(
        xs.num_dims(),
        4,
        "periodic_conv2d: input must be [B, C, H, W]"
    );
    assert_eq!(
        ws.num_dims(),
        4,
        "periodic_conv2d: weight must be [cout, cin, k, k]"
    );
    assert_eq!(
        xs[1], ws[1],
        "periodic_conv2d: input channels differ from the weight's"
    );
    assert!(
        ws[2] == ws[3] && ws[2] % 2 == 1,
        "periodic_conv2d: kernel must be odd and square"
    );
    assert!(
        ws[0] >= 1 && ws[1] >= 1,
        "periodic_conv2d: at least one input and one output channel"
    );
    [xs[0], ws[0], xs[2], xs[3]]
}

/// `t` has `shape` (the bias, the output and its cotangent of a convolution, the
/// cotangent of a chain).
fn check_shape(t: &CubeTensor, shape: &[usize], what: &str) {
    assert_eq!(t.meta.shape().as_slice(), shape, "{what}: wrong shape");
}

/// The columns `N` of a chain's input `[2, h, N]`.
fn check_chain_input(x: &CubeTensor, shape: &ChainShape) -> usize {
    let xs = x.meta.shape();
    assert!(
        xs.num_dims() == 3 && xs[0] == 2,
        "coupling_chain: input must be [2, h, N]"
    );
    assert_eq!(
        Some(&xs[1]),
        shape.widths.first(),
        "coupling_chain: half width differs"
    );
    xs[2]
}

/// A hierarchical layer's state (or its cotangent) `[B, C·L² + 1]` and its chain's half
/// width `C·b²/2`: the chain kernels index the state by the geometry, so a mismatch would
/// read and write out of bounds (`BlockLayerShape::check` is the caller's guard; this one
/// is the kernels').
fn check_blocks(state: &CubeTensor, shape: &BlockLayerShape, g: &nrg_kernels::BlockGeometry) {
    check_shape(state, &[g.batch, g.width()], "block_layer state");
    assert_eq!(
        shape.chain.widths.first(),
        Some(&g.half()),
        "block_layer: the chain's half width is not C·b²/2"
    );
}

/// The chain's widths and its flat parameters' length.
fn check_chain_params(p: &CubeTensor, shape: &ChainShape) {
    assert!(
        shape.widths.len() >= 2,
        "coupling_chain: at least an input and an output width"
    );
    assert_eq!(
        shape.widths.last(),
        Some(&shape.widths[0]),
        "coupling_chain: net widths"
    );
    let len = shape.couplings * (net_layout(&shape.widths).1 + 1);
    assert_eq!(
        p.meta.shape().num_elements(),
        len,
        "coupling chain parameter length"
    );
}

/// `[B, C, H, W]` of a state `[B, C·H·W + 1]` under the masks `[M, C, H, W]` (`M = 1`
/// for a single coupling).
fn check_state(z: &CubeTensor, m: &CubeTensor) -> [usize; 4] {
    let (zs, ms) = (z.meta.shape(), m.meta.shape());
    assert!(
        ms.num_dims() == 4 && ms[0] >= 1,
        "coupling state: masks must be [M, C, H, W]"
    );
    let [c, h, w] = [ms[1], ms[2], ms[3]];
    assert!(
        zs.num_dims() == 2 && zs[1] == c * h * w + 1,
        "coupling state: state must be [B, C·H·W + 1]"
    );
    [zs[0], c, h, w]
}

/// A single coupling's mask: `[1, C, H, W]` (`what` names the operation).
fn check_single_mask(m: &CubeTensor, what: &str) {
    assert_eq!(m.meta.shape()[0], 1, "{what}: mask must be [1, C, H, W]");
}

/// `(B, C, H, W)` of an affine update, its subnet output, mask and scales checked.
fn check_affine(z: &CubeTensor, o: &CubeTensor, m: &CubeTensor, s: &CubeTensor) -> [usize; 4] {
    let [b, c, h, w] = check_state(z, m);
    check_single_mask(m, "affine_update");
    check_shape(o, &[b, 2 * c, h, w], "affine_update subnet output");
    check_shape(s, &[1, c, 1, 1], "affine_update scales");
    [b, c, h, w]
}

/// The operations in f32 (the wrappers in [`HotOps`] cast in and out).
struct F32;

impl F32 {
    fn periodic_conv2d(
        input: CubeTensor,
        weight: CubeTensor,
        bias: CubeTensor,
        act: Activation,
    ) -> CubeTensor {
        let x = f32_tensor(input);
        let w = flat_params(weight);
        let dims = check_conv(&x, &w);
        let b = flat_params(bias);
        check_shape(&b, &[dims[1]], "periodic_conv2d bias");
        let conv = ConvParams::separate(w, b);
        Self::conv_forward(x, None, &conv, act)
    }

    /// The forward launch of the convolution of `x` `[B, cin, H, W]` (times mask plane
    /// `mask.1` of `mask.0` on the fly where given: then `x` is the field view of a state).
    fn conv_forward(
        x: CubeTensor,
        mask: Option<(CubeTensor, usize)>,
        conv: &ConvParams,
        act: Activation,
    ) -> CubeTensor {
        let xs = x.meta.shape().clone();
        let dims = [xs[0], conv.cout, xs[2], xs[3]];
        let y = empty(&x, Shape::new(dims));
        let units = dims.iter().product::<usize>();
        if units == 0 {
            return y;
        }
        let (code, slope) = act_code(act);
        let dim = CubeDim::new(&x.client, units);
        let masked = mask.is_some();
        // without a mask, `m` is not read
        let (m, mi) = mask.unwrap_or_else(|| (x.clone(), 0));
        conv_forward_kernel::launch(
            &x.client.clone(),
            grid(&x, units, dim),
            dim,
            x.into_tensor_arg(),
            m.into_tensor_arg(),
            conv.w.clone().into_tensor_arg(),
            conv.b.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            conv.w_off as u32,
            conv.b_off as u32,
            conv.kernel as u32,
            mi as u32,
            slope,
            code,
            masked,
        );
        y
    }

    fn periodic_conv2d_backward(
        input: CubeTensor,
        weight: CubeTensor,
        output: CubeTensor,
        grad_output: CubeTensor,
        act: Activation,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let x = f32_tensor(input);
        let w = flat_params(weight);
        check_conv(&x, &w);
        let gx = empty(&x, x.meta.shape().clone());
        let b = w.clone(); // not read backward
        let conv = ConvParams::separate(w, b);
        let (gx, gw, gb) =
            Self::conv_backward(x, None, gx, false, &conv, None, output, grad_output, act);
        (gx, gw, gb.expect("separate ∂b"))
    }

    /// The backward launch of the convolution of `x` (times mask plane `mask.1` on the fly
    /// where given: then `x` is the field view of a state and `gx` the state's cotangent,
    /// added to what it holds with `accumulate`); `gx` is allocated by the caller. With
    /// `flat`, `∂w` and `∂b` are written into that flat gradient at `conv`'s offsets and it
    /// is returned in place of `∂w` (no separate `∂b`); otherwise `(∂x, ∂w, Some(∂b))`.
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        x: CubeTensor,
        mask: Option<(CubeTensor, usize)>,
        gx: CubeTensor,
        accumulate: bool,
        conv: &ConvParams,
        flat: Option<CubeTensor>,
        output: CubeTensor,
        grad_output: CubeTensor,
        act: Activation,
    ) -> (CubeTensor, CubeTensor, Option<CubeTensor>) {
        let (y, gy) = (f32_tensor(output), f32_tensor(grad_output));
        let xs = x.meta.shape().clone();
        let [batch, cin, rows, cols] = [xs[0], xs[1], xs[2], xs[3]];
        let (cout, k) = (conv.cout, conv.kernel);
        check_shape(&y, &[batch, cout, rows, cols], "periodic_conv2d output");
        check_shape(&gy, &[batch, cout, rows, cols], "periodic_conv2d cotangent");
        let (code, slope) = act_code(act);
        let client = x.client.clone();
        let units = gx.meta.shape().num_elements();
        // `∂x` (a thread per input) and `∂w`, `∂b` (a cube per entry) in one launch, each
        // into its own buffer or into the flat gradient at their offsets: slicing one row of
        // both would copy wherever the device's buffer-offset alignment (≥ 64 bytes on
        // NVIDIA) does not divide the pieces' offsets.
        let is_flat = flat.is_some();
        let (gw, gb) = match flat {
            Some(gp) => (gp, empty(&x, Shape::new([1]))),
            None => (
                empty(&x, Shape::new([cout, cin, k, k])),
                empty(&x, Shape::new([cout])),
            ),
        };
        if batch * cin * rows * cols == 0 {
            // (a coupling stack sends an empty batch to its composite path)
            assert!(!is_flat, "coupling_stack: empty batch");
            let zeros = |shape: Shape| Ops::float_zeros(shape, &x.device, FloatDType::F32);
            let gx = zeros(gx.meta.shape().clone());
            return (
                gx,
                zeros(Shape::new([cout, cin, k, k])),
                Some(zeros(Shape::new([cout]))),
            );
        }
        let cubes = units.div_ceil(SUM_CUBE as usize) + cout * cin * k * k + cout;
        let (count, dim) = sum_grid(&x, cubes);
        let masked = mask.is_some();
        // without a mask, `m` is not read
        let (m, mi) = mask.unwrap_or_else(|| (x.clone(), 0));
        conv_backward_kernel::launch(
            &client,
            count,
            dim,
            x.into_tensor_arg(),
            m.into_tensor_arg(),
            conv.w.clone().into_tensor_arg(),
            y.into_tensor_arg(),
            gy.into_tensor_arg(),
            gx.clone().into_tensor_arg(),
            gw.clone().into_tensor_arg(),
            gb.clone().into_tensor_arg(),
            conv.w_off as u32,
            conv.b_off as u32,
            k as u32,
            mi as u32,
            slope,
            code,
            masked,
            accumulate,
            is_flat,
            SUM_CUBE,
        );
        (gx, gw, (!is_flat).then_some(gb))
    }

    /// The field of a state `[B, C·H·W + 1]` as a `[B, C, H, W]` view of the same buffer
    /// (strides `[s₀, H·W·s₁, W·s₁, s₁]`; no copy), the shapes checked against the masks'.
    fn field_view(state: CubeTensor, mask: &CubeTensor) -> CubeTensor {
        let z = burn_cubecl::kernel::untile(state);
        let [b, c, h, w] = check_state(&z, mask);
        let st = z.meta.strides();
        let strides = [st[0], h * w * st[1], w * st[1], st[1]];
        CubeTensor::new(
            z.client.clone(),
            z.handle.clone(),
            Metadata::new(Shape::new([b, c, h, w]), strides),
            z.device.clone(),
            z.dtype,
        )
    }

    fn conditioning_conv2d(
        state: CubeTensor,
        mask: CubeTensor,
        weight: CubeTensor,
        bias: CubeTensor,
        act: Activation,
    ) -> CubeTensor {
        let m = f32_tensor(mask);
        let x = Self::field_view(f32_tensor(state), &m);
        check_single_mask(&m, "conditioning_conv2d");
        let w = flat_params(weight);
        let dims = check_conv(&x, &w);
        let b = flat_params(bias);
        check_shape(&b, &[dims[1]], "periodic_conv2d bias");
        let conv = ConvParams::separate(w, b);
        Self::conv_forward(x, Some((m, 0)), &conv, act)
    }

    fn conditioning_conv2d_backward(
        state: CubeTensor,
        mask: CubeTensor,
        weight: CubeTensor,
        output: CubeTensor,
        grad_output: CubeTensor,
        act: Activation,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let m = f32_tensor(mask);
        let z = f32_tensor(state);
        let gz = empty(&z, z.meta.shape().clone());
        let x = Self::field_view(z, &m);
        check_single_mask(&m, "conditioning_conv2d");
        let w = flat_params(weight);
        check_conv(&x, &w);
        let conv = ConvParams::separate(w.clone(), w);
        let (gz, gw, gb) = Self::conv_backward(
            x,
            Some((m, 0)),
            gz,
            false,
            &conv,
            None,
            output,
            grad_output,
            act,
        );
        (gz, gw, gb.expect("separate ∂b"))
    }

    /// The launch of [`affine_forward_kernel`] with `σ` at `s_off` of `sigma` and mask plane
    /// `mi`.
    fn affine_launch(
        z: CubeTensor,
        o: CubeTensor,
        m: CubeTensor,
        sigma: CubeTensor,
        (s_off, mi): (usize, usize),
        direction: Direction,
    ) -> CubeTensor {
        let b = z.meta.shape()[0];
        let y = empty(&z, z.meta.shape().clone());
        if b == 0 {
            return y;
        }
        let dim = CubeDim::new(&z.client, b);
        affine_forward_kernel::launch(
            &z.client.clone(),
            grid(&z, b, dim),
            dim,
            z.into_tensor_arg(),
            o.into_tensor_arg(),
            m.into_tensor_arg(),
            sigma.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            s_off as u32,
            mi as u32,
            direction == Direction::Inverse,
        );
        y
    }

    fn affine_update(
        state: CubeTensor,
        subnet: CubeTensor,
        mask: CubeTensor,
        scale: CubeTensor,
        direction: Direction,
    ) -> CubeTensor {
        let (z, o) = (f32_tensor(state), f32_tensor(subnet));
        let (m, s) = (f32_tensor(mask), flat_params(scale));
        check_affine(&z, &o, &m, &s);
        Self::affine_launch(z, o, m, s, (0, 0), direction)
    }

    /// The launch of [`affine_backward_kernel`]: `(∂z, ∂o)`, and `∂σ` written into `gs` at
    /// `s_off` (the update's own `[1, C, 1, 1]` at 0, or a stack's flat gradient).
    #[allow(clippy::too_many_arguments)]
    fn affine_backward_launch(
        z: CubeTensor,
        o: CubeTensor,
        m: CubeTensor,
        sigma: CubeTensor,
        gy: CubeTensor,
        gs: CubeTensor,
        (s_off, mi): (usize, usize),
        direction: Direction,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let zs = z.meta.shape().clone();
        let ms = m.meta.shape().clone();
        let (b, c) = (zs[0], ms[1]);
        check_shape(&gy, &[b, zs[1]], "affine_update cotangent");
        let gz = empty(&z, zs);
        let go = empty(&z, Shape::new([b, 2 * c, ms[2], ms[3]]));
        let (count, dim) = sum_grid(&z, b.div_ceil(SUM_CUBE as usize) + c);
        affine_backward_kernel::launch(
            &z.client.clone(),
            count,
            dim,
            z.into_tensor_arg(),
            o.into_tensor_arg(),
            m.into_tensor_arg(),
            sigma.into_tensor_arg(),
            gy.into_tensor_arg(),
            gz.clone().into_tensor_arg(),
            go.clone().into_tensor_arg(),
            gs.clone().into_tensor_arg(),
            s_off as u32,
            mi as u32,
            direction == Direction::Inverse,
            SUM_CUBE,
        );
        (gz, go, gs)
    }

    fn affine_update_backward(
        state: CubeTensor,
        subnet: CubeTensor,
        mask: CubeTensor,
        scale: CubeTensor,
        grad_output: CubeTensor,
        direction: Direction,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (z, o) = (f32_tensor(state), f32_tensor(subnet));
        let (m, s, gy) = (
            f32_tensor(mask),
            flat_params(scale),
            f32_tensor(grad_output),
        );
        let [b, c, h, w] = check_affine(&z, &o, &m, &s);
        if b == 0 {
            let gz = empty(&z, z.meta.shape().clone());
            let go = empty(&z, Shape::new([b, 2 * c, h, w]));
            let zeros = Ops::float_zeros(Shape::new([1, c, 1, 1]), &z.device, FloatDType::F32);
            return (gz, go, zeros);
        }
        let gs = empty(&z, Shape::new([1, c, 1, 1]));
        Self::affine_backward_launch(z, o, m, s, gy, gs, (0, 0), direction)
    }

    /// A stack's convolution `layer`'s weights in the flat parameters `p`.
    fn stack_params(p: &CubeTensor, layer: &StackConv) -> ConvParams {
        ConvParams {
            w: p.clone(),
            b: p.clone(),
            w_off: layer.weight,
            b_off: layer.bias,
            cout: layer.cout,
            kernel: layer.kernel,
        }
    }

    fn stack_conv(
        input: CubeTensor,
        params: CubeTensor,
        masks: CubeTensor,
        layer: StackConv,
    ) -> CubeTensor {
        let p = flat_params(params);
        let conv = Self::stack_params(&p, &layer);
        if input.meta.shape().num_dims() == 2 {
            let m = f32_tensor(masks);
            let x = Self::field_view(f32_tensor(input), &m);
            Self::conv_forward(x, Some((m, layer.mask)), &conv, layer.act)
        } else {
            Self::conv_forward(f32_tensor(input), None, &conv, layer.act)
        }
    }

    fn stack_conv_backward(
        input: CubeTensor,
        params: CubeTensor,
        output: CubeTensor,
        grad_output: CubeTensor,
        grad_params: CubeTensor,
        layer: StackConv,
    ) -> (CubeTensor, CubeTensor) {
        let x = f32_tensor(input);
        let p = flat_params(params);
        let conv = Self::stack_params(&p, &layer);
        let gx = empty(&x, x.meta.shape().clone());
        let gp = owned(grad_params);
        let (gx, gp, _) = Self::conv_backward(
            x,
            None,
            gx,
            false,
            &conv,
            Some(gp),
            output,
            grad_output,
            layer.act,
        );
        (gx, gp)
    }

    #[allow(clippy::too_many_arguments)]
    fn stack_conditioning_backward(
        state: CubeTensor,
        params: CubeTensor,
        masks: CubeTensor,
        output: CubeTensor,
        grad_output: CubeTensor,
        grad_state: CubeTensor,
        grad_params: CubeTensor,
        layer: StackConv,
    ) -> (CubeTensor, CubeTensor) {
        let m = f32_tensor(masks);
        let x = Self::field_view(f32_tensor(state), &m);
        let p = flat_params(params);
        let conv = Self::stack_params(&p, &layer);
        let gz = owned(grad_state);
        let gp = owned(grad_params);
        let (gz, gp, _) = Self::conv_backward(
            x,
            Some((m, layer.mask)),
            gz,
            true,
            &conv,
            Some(gp),
            output,
            grad_output,
            layer.act,
        );
        (gz, gp)
    }

    fn stack_affine(
        state: CubeTensor,
        subnet: CubeTensor,
        params: CubeTensor,
        masks: CubeTensor,
        layer: StackAffine,
    ) -> CubeTensor {
        let (z, o) = (f32_tensor(state), f32_tensor(subnet));
        let (m, p) = (f32_tensor(masks), flat_params(params));
        check_state(&z, &m);
        let at = (layer.sigma, layer.mask);
        Self::affine_launch(z, o, m, p, at, layer.direction)
    }

    #[allow(clippy::too_many_arguments)]
    fn stack_affine_backward(
        state: CubeTensor,
        subnet: CubeTensor,
        params: CubeTensor,
        masks: CubeTensor,
        grad_output: CubeTensor,
        grad_params: CubeTensor,
        layer: StackAffine,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (z, o) = (f32_tensor(state), f32_tensor(subnet));
        let (m, p, gy) = (
            f32_tensor(masks),
            flat_params(params),
            f32_tensor(grad_output),
        );
        check_state(&z, &m);
        let gp = owned(grad_params);
        let at = (layer.sigma, layer.mask);
        Self::affine_backward_launch(z, o, m, p, gy, gp, at, layer.direction)
    }

    /// `base` `[B, C·L² + 1]` with its block sites from `values` `[R, N]` (contiguous) and,
    /// with `add_logdet`, the blocks' ln|det| added ([`block_scatter_kernel`]).
    fn block_scatter(
        base: CubeTensor,
        values: CubeTensor,
        shape: &BlockLayerShape,
        add_logdet: bool,
    ) -> CubeTensor {
        let g = shape.geometry(base.meta.shape()[0]);
        let out = empty(&base, base.meta.shape().clone());
        let units = g.batch * g.width();
        if units == 0 {
            return out;
        }
        let dim = CubeDim::new(&base.client, units);
        block_scatter_kernel::launch(
            &base.client.clone(),
            grid(&base, units, dim),
            dim,
            base.into_tensor_arg(),
            values.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            blocks_arg(&g),
            add_logdet,
        );
        out
    }

    /// The new state and, with `save`, the layer's blocks `[2, h, N]` (the chain's input):
    /// the chain reads its blocks from the state and writes them as it reads them, then the
    /// scatter (two launches).
    fn block_layer_forward(
        state: CubeTensor,
        params: CubeTensor,
        shape: BlockLayerShape,
        save: bool,
    ) -> (CubeTensor, Option<CubeTensor>) {
        let z = f32_tensor(state);
        let g = shape.geometry(z.meta.shape()[0]);
        check_blocks(&z, &shape, &g);
        let saved = save.then(|| empty(&z, Shape::new([2, g.half(), g.columns()])));
        let y = Self::chain_launch(
            z.clone(),
            params,
            &shape.chain,
            g.columns(),
            Some(&g),
            saved.clone(),
        );
        (Self::block_scatter(z, y, &shape, true), saved)
    }

    fn block_layer_backward(
        blocks: CubeTensor,
        params: CubeTensor,
        grad_output: CubeTensor,
        shape: BlockLayerShape,
    ) -> (CubeTensor, CubeTensor) {
        let (x, gy) = (f32_tensor(blocks), f32_tensor(grad_output));
        let g = shape.geometry(gy.meta.shape()[0]);
        check_blocks(&gy, &shape, &g);
        check_shape(&x, &[2, g.half(), g.columns()], "block_layer blocks");
        let (gx, gp) =
            Self::chain_backward_launch(x, params, gy.clone(), shape.chain.clone(), Some(&g));
        let gx = Ops::float_reshape(gx, Shape::new([2 * g.half(), g.columns()]));
        (Self::block_scatter(gy, gx, &shape, false), gp)
    }

    fn coupling_chain(input: CubeTensor, params: CubeTensor, shape: ChainShape) -> CubeTensor {
        let x = f32_tensor(input);
        let cols = check_chain_input(&x, &shape);
        Self::chain_launch(x, params, &shape, cols, None, None)
    }

    /// The chain on `cols` columns `[2h + 1, cols]` ([`chain_forward_kernel`]): of `x`
    /// `[2, h, cols]`, or with `blocks` of the blocks of the state `x`, written to `saved`
    /// as read where given.
    fn chain_launch(
        x: CubeTensor,
        params: CubeTensor,
        shape: &ChainShape,
        cols: usize,
        blocks: Option<&nrg_kernels::BlockGeometry>,
        saved: Option<CubeTensor>,
    ) -> CubeTensor {
        let p = flat_params(params);
        check_chain_params(&p, shape);
        let h = shape.widths[0];
        let y = empty(&x, Shape::new([2 * h + 1, cols]));
        if cols == 0 {
            return y;
        }
        let (code, slope) = act_code(shape.hidden);
        let dim = CubeDim::new_1d(CHAIN_CUBE);
        chain_forward_kernel::launch(
            &x.client.clone(),
            grid(&x, cols, dim),
            dim,
            x.into_tensor_arg(),
            p.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            saved.map(|t| t.into_tensor_arg()).into(),
            blocks.map(blocks_arg).into(),
            slope,
            shape.widths.clone(),
            shape.couplings,
            shape.direction == Direction::Inverse,
            code,
        );
        y
    }

    fn coupling_chain_backward(
        input: CubeTensor,
        params: CubeTensor,
        grad_output: CubeTensor,
        shape: ChainShape,
    ) -> (CubeTensor, CubeTensor) {
        let (x, gy) = (f32_tensor(input), f32_tensor(grad_output));
        let cols = check_chain_input(&x, &shape);
        check_shape(
            &gy,
            &[2 * shape.widths[0] + 1, cols],
            "coupling_chain cotangent",
        );
        Self::chain_backward_launch(x, params, gy, shape, None)
    }

    /// `(∂x [2, h, N], ∂params)` of the chain on `x` `[2, h, N]`, from the output's
    /// cotangent `[2h + 1, N]` or, with `blocks`, from that of the hierarchical layer's new
    /// state ([`chain_backward_kernel`], then [`chain_grad_params_kernel`]).
    fn chain_backward_launch(
        x: CubeTensor,
        params: CubeTensor,
        gy: CubeTensor,
        shape: ChainShape,
        blocks: Option<&nrg_kernels::BlockGeometry>,
    ) -> (CubeTensor, CubeTensor) {
        let p = flat_params(params);
        check_chain_params(&p, &shape);
        let cols = x.meta.shape()[2];
        let widths = &shape.widths;
        let (h, kk, layers) = (widths[0], shape.couplings, widths.len() - 1);
        let gx = empty(&x, Shape::new([2, h, cols]));
        if cols == 0 {
            let len = p.meta.shape().num_elements();
            return (
                gx,
                Ops::float_zeros(Shape::new([len]), &x.device, FloatDType::F32),
            );
        }
        let acts_len = 2 * kk * input_offset(widths, layers) * cols;
        let deltas_len = 2 * kk * delta_offset(widths, layers) * cols;
        let acts = empty(&x, Shape::new([acts_len]));
        let deltas = empty(&x, Shape::new([deltas_len]));
        let gsigma = empty(&x, Shape::new([kk, cols]));
        let (code, slope) = act_code(shape.hidden);
        let dim = CubeDim::new_1d(CHAIN_CUBE);
        chain_backward_kernel::launch(
            &x.client.clone(),
            grid(&x, cols, dim),
            dim,
            x.into_tensor_arg(),
            p.clone().into_tensor_arg(),
            gy.into_tensor_arg(),
            gx.clone().into_tensor_arg(),
            acts.clone().into_tensor_arg(),
            deltas.clone().into_tensor_arg(),
            gsigma.clone().into_tensor_arg(),
            blocks.map(blocks_arg).into(),
            slope,
            widths.clone(),
            kk,
            shape.direction == Direction::Inverse,
            code,
        );
        // Every parameter's gradient, in the flat layout: a cube per parameter.
        let row = kk * (net_layout(widths).1 + 1);
        let gp = empty(&gsigma, Shape::new([row]));
        let (count, dim) = sum_grid(&gsigma, row);
        chain_grad_params_kernel::launch(
            &gsigma.client.clone(),
            count,
            dim,
            acts.into_tensor_arg(),
            deltas.into_tensor_arg(),
            gsigma.into_tensor_arg(),
            gp.clone().into_tensor_arg(),
            widths.clone(),
            kk,
            SUM_CUBE,
        );
        (gx, gp)
    }
}

impl HotOps for CubeBackend {
    fn coupling_stack(
        state: CubeTensor,
        params: CubeTensor,
        masks: CubeTensor,
        shape: StackShape,
        direction: Direction,
    ) -> CubeTensor {
        let dtype = state.dtype;
        let (y, _) = super::hot::stack_forward::<Self>(
            f32_tensor(state),
            flat_params(params),
            f32_tensor(masks),
            &shape,
            direction,
            false,
        );
        as_dtype(y, dtype)
    }

    fn stack_conv(
        input: CubeTensor,
        params: CubeTensor,
        masks: CubeTensor,
        layer: StackConv,
    ) -> CubeTensor {
        let dtype = input.dtype;
        as_dtype(F32::stack_conv(input, params, masks, layer), dtype)
    }

    fn stack_conv_backward(
        input: CubeTensor,
        params: CubeTensor,
        output: CubeTensor,
        grad_output: CubeTensor,
        grad_params: CubeTensor,
        layer: StackConv,
    ) -> (CubeTensor, CubeTensor) {
        let (dx, dp) = (input.dtype, grad_params.dtype);
        let (gx, gp) =
            F32::stack_conv_backward(input, params, output, grad_output, grad_params, layer);
        (as_dtype(gx, dx), as_dtype(gp, dp))
    }

    fn stack_conditioning_backward(
        state: CubeTensor,
        params: CubeTensor,
        masks: CubeTensor,
        output: CubeTensor,
        grad_output: CubeTensor,
        grad_state: CubeTensor,
        grad_params: CubeTensor,
        layer: StackConv,
    ) -> (CubeTensor, CubeTensor) {
        let (dz, dp) = (grad_state.dtype, grad_params.dtype);
        let (gz, gp) = F32::stack_conditioning_backward(
            state,
            params,
            masks,
            output,
            grad_output,
            grad_state,
            grad_params,
            layer,
        );
        (as_dtype(gz, dz), as_dtype(gp, dp))
    }

    fn stack_affine(
        state: CubeTensor,
        subnet: CubeTensor,
        params: CubeTensor,
        masks: CubeTensor,
        layer: StackAffine,
    ) -> CubeTensor {
        let dtype = state.dtype;
        as_dtype(
            F32::stack_affine(state, subnet, params, masks, layer),
            dtype,
        )
    }

    fn stack_affine_backward(
        state: CubeTensor,
        subnet: CubeTensor,
        params: CubeTensor,
        masks: CubeTensor,
        grad_output: CubeTensor,
        grad_params: CubeTensor,
        layer: StackAffine,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (dz, do_, dp) = (state.dtype, subnet.dtype, grad_params.dtype);
        let (gz, go, gp) = F32::stack_affine_backward(
            state,
            subnet,
            params,
            masks,
            grad_output,
            grad_params,
            layer,
        );
        (as_dtype(gz, dz), as_dtype(go, do_), as_dtype(gp, dp))
    }

    fn block_layer(state: CubeTensor, params: CubeTensor, shape: BlockLayerShape) -> CubeTensor {
        let dtype = state.dtype;
        as_dtype(
            F32::block_layer_forward(state, params, shape, false).0,
            dtype,
        )
    }

    fn block_layer_saving(
        state: CubeTensor,
        params: CubeTensor,
        shape: BlockLayerShape,
    ) -> (CubeTensor, CubeTensor) {
        let dtype = state.dtype;
        let (y, x) = F32::block_layer_forward(state, params, shape, true);
        let x = x.expect("the blocks are saved");
        (as_dtype(y, dtype), as_dtype(x, dtype))
    }

    fn block_layer_backward(
        blocks: CubeTensor,
        params: CubeTensor,
        grad_output: CubeTensor,
        shape: BlockLayerShape,
    ) -> (CubeTensor, CubeTensor) {
        let (dz, dp) = (grad_output.dtype, params.dtype);
        let (gz, gp) = F32::block_layer_backward(blocks, params, grad_output, shape);
        (as_dtype(gz, dz), as_dtype(gp, dp))
    }

    fn periodic_conv2d(
        input: CubeTensor,
        weight: CubeTensor,
        bias: CubeTensor,
        act: Activation,
    ) -> CubeTensor {
        let dtype = input.dtype;
        as_dtype(F32::periodic_conv2d(input, weight, bias, act), dtype)
    }

    fn periodic_conv2d_backward(
        input: CubeTensor,
        weight: CubeTensor,
        output: CubeTensor,
        grad_output: CubeTensor,
        act: Activation,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (dx, dw) = (input.dtype, weight.dtype);
        let (gx, gw, gb) = F32::periodic_conv2d_backward(input, weight, output, grad_output, act);
        (as_dtype(gx, dx), as_dtype(gw, dw), as_dtype(gb, dw))
    }

    fn coupling_chain(input: CubeTensor, params: CubeTensor, shape: ChainShape) -> CubeTensor {
        let dtype = input.dtype;
        as_dtype(F32::coupling_chain(input, params, shape), dtype)
    }

    fn coupling_chain_backward(
        input: CubeTensor,
        params: CubeTensor,
        grad_output: CubeTensor,
        shape: ChainShape,
    ) -> (CubeTensor, CubeTensor) {
        let (dx, dp) = (input.dtype, params.dtype);
        let (gx, gp) = F32::coupling_chain_backward(input, params, grad_output, shape);
        (as_dtype(gx, dx), as_dtype(gp, dp))
    }

    fn affine_update(
        state: CubeTensor,
        subnet: CubeTensor,
        mask: CubeTensor,
        scale: CubeTensor,
        direction: Direction,
    ) -> CubeTensor {
        let dtype = state.dtype;
        as_dtype(
            F32::affine_update(state, subnet, mask, scale, direction),
            dtype,
        )
    }

    fn affine_update_backward(
        state: CubeTensor,
        subnet: CubeTensor,
        mask: CubeTensor,
        scale: CubeTensor,
        grad_output: CubeTensor,
        direction: Direction,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (dz, do_, ds) = (state.dtype, subnet.dtype, scale.dtype);
        let (gz, go, gs) =
            F32::affine_update_backward(state, subnet, mask, scale, grad_output, direction);
        (as_dtype(gz, dz), as_dtype(go, do_), as_dtype(gs, ds))
    }

    fn conditioning_conv2d(
        state: CubeTensor,
        mask: CubeTensor,
        weight: CubeTensor,
        bias: CubeTensor,
        act: Activation,
    ) -> CubeTensor {
        let dtype = state.dtype;
        as_dtype(
            F32::conditioning_conv2d(state, mask, weight, bias, act),
            dtype,
        )
    }

    fn conditioning_conv2d_backward(
        state: CubeTensor,
        mask: CubeTensor,
        weight: CubeTensor,
        output: CubeTensor,
        grad_output: CubeTensor,
        act: Activation,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (dz, dw) = (state.dtype, weight.dtype);
        let (gz, gw, gb) =
            F32::conditioning_conv2d_backward(state, mask, weight, output, grad_output, act);
        (as_dtype(gz, dz), as_dtype(gw, dw), as_dtype(gb, dw))
    }
}
