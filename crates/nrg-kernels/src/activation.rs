//! The activations fused into the layers, and the vectorised `expm1` and `tanh` they and
//! the couplings are built on.
//!
//! ```text
//! identity:    y = x
//! LeakyReLU:   y = x (x > 0),  slope·x (x ≤ 0)
//! ELU:         y = x (x > 0),  eˣ − 1 (x ≤ 0)
//! expm1(x) = 2ⁿ q(r) + (2ⁿ − 1),   x = n ln 2 + r,  |r| ≤ ln 2 / 2,  q the degree-7 Taylor
//!            polynomial of eʳ − 1 (truncation < 6e-9 relative)
//! tanh(x) = m / (m + 2),   m = expm1(2x)
//! ```
//!
//! Both non-linear activations are increasing, so their derivative is recovered from the
//! output alone (`y > 0 ⇔ x > 0`, and `elu′(x) = eˣ = y + 1` for `x ≤ 0`): the layers store
//! no pre-activations.

use crate::exec::Exec;
use pulp::{Simd, WithSimd};

/// The activation fused into a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `y = x`.
    Identity,
    /// `y = x` for `x > 0`, `slope · x` otherwise (`slope > 0`).
    LeakyRelu(f32),
    /// `y = x` for `x > 0`, `eˣ − 1` otherwise.
    Elu,
}

impl Activation {
    /// The activation of one value (ELU through [`expm1`]).
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::LeakyRelu(slope) => {
                if v > 0.0 {
                    v
                } else {
                    slope * v
                }
            }
            Activation::Elu => {
                if v > 0.0 {
                    v
                } else {
                    expm1_nonpositive(v)
                }
            }
        }
    }

    /// `y ← act(y)` on a slice (the match outside the loop, so that the loop vectorises;
    /// ELU on whole SIMD vectors of `exec`'s width, the tail by [`Activation::apply`] with
    /// the same arithmetic, so a value's result does not depend on its position).
    #[inline(always)]
    pub fn apply_slice(self, exec: Exec, ys: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::LeakyRelu(slope) => {
                for v in ys.iter_mut() {
                    *v = if *v > 0.0 { *v } else { slope * *v };
                }
            }
            Activation::Elu => exec.dispatch(EluSlice(ys)),
        }
    }

    /// `d = g ⊙ act′(pre)` from the outputs `y = act(pre)` and their cotangents `g` (all
    /// three slices of one length).
    #[inline(always)]
    pub fn chain_slice(self, d: &mut [f32], ys: &[f32], gs: &[f32]) {
        assert!(
            d.len() == ys.len() && ys.len() == gs.len(),
            "chain_slice: d, y and g have {}, {} and {} entries",
            d.len(),
            ys.len(),
            gs.len()
        );
        match self {
            Activation::Identity => d.copy_from_slice(gs),
            Activation::LeakyRelu(slope) => {
                for ((d, &y), &g) in d.iter_mut().zip(ys).zip(gs) {
                    *d = if y > 0.0 { g } else { slope * g };
                }
            }
            Activation::Elu => {
                for ((d, &y), &g) in d.iter_mut().zip(ys).zip(gs) {
                    *d = if y > 0.0 { g } else { (y + 1.0) * g };
                }
            }
        }
    }
}

/// `log₂ e`, and `ln 2` split into a part exact in `f32` products and a remainder.
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// `1.5 · 2²³`: adding it rounds an `f32` of magnitude < 2²² to an integer, which then sits
/// in the low mantissa bits (`bits(MAGIC + n) = MAGIC_BITS + n`).
const MAGIC: f32 = 12_582_912.0;
const MAGIC_BITS: u32 = 0x4B40_0000;
/// Taylor coefficients `1/k!`, `k = 2 … 7`, of `(eʳ − 1)/r − 1`.
const EXPM1_C: [f32; 6] = [
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];

/// `eˣ − 1`, branch-free so that it vectorises, for `x` clamped to `[−87, 88]` (`2ⁿ` stays
/// a normal `f32` for `n ∈ [−126, 127]`): `x = n ln 2 + r` with `|r| ≤ ln 2 / 2`,
/// `eʳ − 1 = q(r)` by its degree-7 Taylor polynomial (truncation < 6e-9 relative),
/// `eˣ − 1 = 2ⁿ q + (2ⁿ − 1)`, which keeps full relative accuracy near 0 (there `n = 0` and
/// the result is `q`). Below −87 the result is −1 to `f32` precision. Relative error a few
/// `f32` ulps (≤ 3e-7, tested against `f64::exp_m1`).
#[inline(always)]
pub fn expm1(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = EXPM1_C[5];
    for &c in EXPM1_C[..5].iter().rev() {
        p = p.mul_add(r, c);
    }
    let q = r * p.mul_add(r, 1.0);
    let scale = f32::from_bits(t.to_bits().wrapping_add(127u32.wrapping_sub(MAGIC_BITS)) << 23);
    scale.mul_add(q, scale - 1.0)
}

/// `eˣ − 1` for `x ≤ 0` (ELU's negative branch); positive inputs are clamped to 0.
#[inline(always)]
fn expm1_nonpositive(x: f32) -> f32 {
    expm1(x.min(0.0))
}

/// ELU in place on a slice, `y = x` for `x > 0` and `eˣ − 1` otherwise, with [`expm1`]'s
/// arithmetic on whole SIMD vectors ([`expm1_simd`]) and the scalar formula on the tail.
struct EluSlice<'a>(&'a mut [f32]);

impl WithSimd for EluSlice<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (head, tail) = S::as_mut_simd_f32s(self.0);
        let k = ExpConsts::new(simd);
        let zero = simd.splat_f32s(0.0);
        for v in head.iter_mut() {
            let em1 = expm1_simd(simd, &k, simd.min_f32s(*v, zero));
            *v = simd.select_f32s(simd.greater_than_f32s(*v, zero), *v, em1);
        }
        for v in tail.iter_mut() {
            *v = Activation::Elu.apply(*v);
        }
    }
}

/// The constants of the vectorised `expm1`, splatted once per call.
struct ExpConsts<S: Simd> {
    lo: S::f32s,
    hi: S::f32s,
    log2e: S::f32s,
    magic: S::f32s,
    ln2_hi: S::f32s,
    ln2_lo: S::f32s,
    coef: [S::f32s; 6],
    one: S::f32s,
    bias: S::u32s,
    shift: S::u32s,
}

impl<S: Simd> ExpConsts<S> {
    #[inline(always)]
    fn new(simd: S) -> Self {
        Self {
            lo: simd.splat_f32s(-87.0),
            hi: simd.splat_f32s(88.0),
            log2e: simd.splat_f32s(LOG2E),
            magic: simd.splat_f32s(MAGIC),
            ln2_hi: simd.splat_f32s(-LN2_HI),
            ln2_lo: simd.splat_f32s(-LN2_LO),
            coef: EXPM1_C.map(|c| simd.splat_f32s(c)),
            one: simd.splat_f32s(1.0),
            bias: simd.splat_u32s(127u32.wrapping_sub(MAGIC_BITS)),
            shift: simd.splat_u32s(23),
        }
    }
}

/// [`expm1`] on a SIMD vector (a generic function, not a closure, so that it is inlined
/// into the caller's target-feature context).
#[inline(always)]
fn expm1_simd<S: Simd>(simd: S, k: &ExpConsts<S>, x: S::f32s) -> S::f32s {
    let x = simd.min_f32s(simd.max_f32s(x, k.lo), k.hi);
    let t = simd.mul_add_e_f32s(x, k.log2e, k.magic);
    let n = simd.sub_f32s(t, k.magic);
    let r = simd.mul_add_e_f32s(n, k.ln2_lo, simd.mul_add_e_f32s(n, k.ln2_hi, x));
    let mut p = k.coef[5];
    for &c in k.coef[..5].iter().rev() {
        p = simd.mul_add_e_f32s(p, r, c);
    }
    let q = simd.mul_f32s(r, simd.mul_add_e_f32s(p, r, k.one));
    let bits = simd.add_u32s(simd.transmute_u32s_f32s(t), k.bias);
    let s = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(bits, k.shift));
    simd.mul_add_e_f32s(s, q, simd.sub_f32s(s, k.one))
}

/// `th = tanh x` and `e = exp(scale · th)` elementwise (slices of one length): `tanh x =
/// m/(m + 2)` with `m = expm1(2x)` (exact in relative terms near 0, ±1 at the clamps),
/// `e = 1 + expm1(scale · th)`; whole vectors of `exec`'s width, the tail in scalar code
/// with the same arithmetic. The scale factors of an affine coupling, `s = scale · tanh ŝ`.
#[inline(always)]
pub fn tanh_exp(exec: Exec, x: &[f32], scale: f32, th: &mut [f32], e: &mut [f32]) {
    assert!(
        x.len() == th.len() && x.len() == e.len(),
        "tanh_exp: x, tanh and exp have {}, {} and {} entries",
        x.len(),
        th.len(),
        e.len()
    );
    exec.dispatch(TanhExp { x, scale, th, e });
}

/// See [`tanh_exp`].
struct TanhExp<'a> {
    x: &'a [f32],
    scale: f32,
    th: &'a mut [f32],
    e: &'a mut [f32],
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
            let m = expm1(2.0 * x);
            *th = m / (m + 2.0);
            *e = expm1(self.scale * *th) + 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::SimdWidth;
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// Arguments across the whole negative range: tiny ones where `eˣ − 1` cancels, the
    /// reduction's boundaries `±ln 2 / 2`, the clamp at −87 and beyond, zero, positives.
    fn arguments() -> Vec<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut xs: Vec<f32> = vec![0.0, -0.0, 1e-30, -1e-30, -1e-7, -3e-4, -0.3465, -0.3466];
        xs.extend([
            -1.0,
            -10.0,
            -20.0,
            -86.9,
            -87.0,
            -87.5,
            -200.0,
            f32::MIN,
            2.5,
            1e6,
        ]);
        for _ in 0..1001 {
            let e: f32 = rng.random::<f32>() * 8.0 - 7.0;
            xs.push(-(10f32.powf(e)) * rng.random::<f32>());
        }
        xs
    }

    /// The SIMD ELU (whole vectors and the scalar tail) of every width against f64
    /// `exp_m1`: relative error ≤ 4e-7 (a few f32 ulps; the polynomial truncates at 6e-9),
    /// positives passed through exactly. Vectors of more than one lane — native (AVX2 + FMA,
    /// NEON) and pulp's portable 4/8/16 lanes alike — fuse their multiply-adds, as
    /// `f32::mul_add` in the tail does, so they equal the scalar formula to the bit and a
    /// value's result does not depend on its position; pulp's one-lane `Scalar` multiplies
    /// and adds in two roundings, so there the two agree to one ulp.
    #[test]
    fn elu_is_accurate_on_vectors_and_tails() {
        let xs = arguments();
        for simd in SimdWidth::ALL {
            let exec = Exec::new(simd, Default::default());
            let fused = exec.lanes() > 1;
            let mut ys = xs.clone();
            Activation::Elu.apply_slice(exec, &mut ys);
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = if x > 0.0 {
                    x as f64
                } else {
                    (x as f64).exp_m1()
                };
                let err = (y as f64 - want).abs();
                assert!(
                    err <= 4e-7 * want.abs(),
                    "{simd:?}: elu({x}) = {y}, want {want}"
                );
                let scalar = Activation::Elu.apply(x);
                if fused {
                    assert_eq!(scalar, y, "{simd:?}: scalar and vector ELU differ at {x}");
                } else {
                    // One-lane vectors multiply and add in two roundings.
                    let ulp = f32::EPSILON * scalar.abs();
                    assert!(
                        (scalar - y).abs() <= ulp,
                        "{simd:?}: ELU at {x}: {y} vs {scalar}"
                    );
                }
            }
        }
    }

    /// `expm1` to 3e-7 relative over its range (f64 `exp_m1` of the clamped argument), and
    /// `tanh_exp` of every width against f64 `tanh` and `exp` (4e-7 relative on `tanh`;
    /// `exp(scale·th)` to 1e-6 relative with `|scale| ≤ 2`).
    #[test]
    fn expm1_and_tanh_exp_match_f64() {
        for v in [
            -100.0f32, -3.0, -0.2, -1e-4, 0.0, 1e-4, 0.3, 2.0, 30.0, 100.0,
        ] {
            let e = expm1(v) as f64;
            let want = (v.clamp(-87.0, 88.0) as f64).exp_m1();
            assert!(
                (e - want).abs() <= 3e-7 * want.abs().max(1e-30),
                "expm1({v}) = {e}"
            );
        }
        let xs: Vec<f32> = (0..203).map(|i| (i as f32 - 101.0) * 0.07).collect();
        for simd in SimdWidth::ALL {
            let (mut th, mut e) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
            tanh_exp(
                Exec::new(simd, Default::default()),
                &xs,
                -1.7,
                &mut th,
                &mut e,
            );
            for ((&x, &t), &ee) in xs.iter().zip(&th).zip(&e) {
                let want = (x as f64).tanh();
                assert!(
                    (t as f64 - want).abs() <= 4e-7 * want.abs() + 1e-38,
                    "tanh {x}"
                );
                let want_e = (-1.7 * t as f64).exp();
                assert!((ee as f64 - want_e).abs() <= 1e-6 * want_e, "exp {x}");
            }
        }
    }
}
