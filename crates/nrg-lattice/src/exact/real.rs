//! The scalar types exact formulas are written over: `f64`, and [`Big`], a binary floating
//! point number of chosen precision (`astro-float`).
//!
//! Thermodynamic derivatives of closed forms cancel catastrophically at the edges of the
//! temperature range: at `K → 0` Kaufman's `∂_K ln Z` is a difference of terms of size
//! `V/K` whose result is `≈ −2KV`; at large `K` the specific heat `≈ 64K²e^{−8K}` is what is
//! left of terms of order one. In `f64` that loses every digit (`L = 4`, `β = 10⁻⁸` gave
//! `u = −7.45·10⁻⁹` for `−2·10⁻⁸`; Onsager's `c` came out negative at `β = 10`). The same
//! formulas evaluated in [`Big`] with the lost bits added back as guard bits give `u` and `c`
//! to full `f64` relative accuracy (see [`evaluate_precise`]).

use astro_float::{BigFloat, Consts, Radix, RoundingMode};
use std::cell::RefCell;
use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A real scalar type with the elementary functions the exact solutions need.
pub trait Real:
    Clone
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// Whether long products must be rescaled to stay in range (`f64`: yes; [`Big`]: its
    /// exponent range is practically unbounded).
    const RESCALE_PRODUCTS: bool;
    /// The value of an `f64` (exact).
    fn from_f64(x: f64) -> Self;
    /// The nearest `f64`.
    fn to_f64(&self) -> f64;
    /// `e^x`
    fn exp(&self) -> Self;
    /// `ln x`
    fn ln(&self) -> Self;
    /// `ln(1 + x)`
    fn ln_1p(&self) -> Self;
    /// `√x`
    fn sqrt(&self) -> Self;
    /// `sin x`
    fn sin(&self) -> Self;
    /// `(sinh x, cosh x)`
    fn sinh_cosh(&self) -> (Self, Self);
    /// `tanh x`
    fn tanh(&self) -> Self;
    /// `|x|`
    fn abs(&self) -> Self;
    /// `π`
    fn pi() -> Self;
    /// The relative rounding unit.
    fn epsilon() -> f64;
}

impl Real for f64 {
    const RESCALE_PRODUCTS: bool = true;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(&self) -> f64 {
        *self
    }
    fn exp(&self) -> Self {
        f64::exp(*self)
    }
    fn ln(&self) -> Self {
        f64::ln(*self)
    }
    fn ln_1p(&self) -> Self {
        f64::ln_1p(*self)
    }
    fn sqrt(&self) -> Self {
        f64::sqrt(*self)
    }
    fn sin(&self) -> Self {
        f64::sin(*self)
    }
    fn sinh_cosh(&self) -> (Self, Self) {
        (f64::sinh(*self), f64::cosh(*self))
    }
    fn tanh(&self) -> Self {
        f64::tanh(*self)
    }
    fn abs(&self) -> Self {
        f64::abs(*self)
    }
    fn pi() -> Self {
        std::f64::consts::PI
    }
    fn epsilon() -> f64 {
        f64::EPSILON
    }
}

const RM: RoundingMode = RoundingMode::ToEven;

thread_local! {
    /// The working precision of [`Big`] arithmetic on this thread, and the constants cache.
    static CONTEXT: RefCell<(usize, Option<Consts>)> = const { RefCell::new((128, None)) };
}

fn precision() -> usize {
    CONTEXT.with(|c| c.borrow().0)
}

fn with_consts<R>(f: impl FnOnce(usize, &mut Consts) -> R) -> R {
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let p = c.0;
        let cc =
            c.1.get_or_insert_with(|| Consts::new().expect("astro-float constants cache"));
        f(p, cc)
    })
}

/// Runs `f` with [`Big`] arithmetic at `bits` bits of mantissa on this thread.
pub fn with_precision<R>(bits: usize, f: impl FnOnce() -> R) -> R {
    let old = CONTEXT.with(|c| std::mem::replace(&mut c.borrow_mut().0, bits));
    let out = f();
    CONTEXT.with(|c| c.borrow_mut().0 = old);
    out
}

/// A binary floating-point number at the thread's working precision ([`with_precision`]).
#[derive(Clone, Debug)]
pub struct Big(BigFloat);

impl Big {
    fn wrap(x: BigFloat) -> Self {
        Big(x)
    }
}

impl PartialEq for Big {
    fn eq(&self, o: &Self) -> bool {
        self.0.cmp(&o.0) == Some(0)
    }
}

impl PartialOrd for Big {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        self.0.cmp(&o.0).map(|c| c.cmp(&0))
    }
}

impl Add for Big {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Big::wrap(self.0.add(&o.0, precision(), RM))
    }
}

impl Sub for Big {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Big::wrap(self.0.sub(&o.0, precision(), RM))
    }
}

impl Mul for Big {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        Big::wrap(self.0.mul(&o.0, precision(), RM))
    }
}

impl Div for Big {
    type Output = Self;
    fn div(self, o: Self) -> Self {
        Big::wrap(self.0.div(&o.0, precision(), RM))
    }
}

impl Neg for Big {
    type Output = Self;
    fn neg(self) -> Self {
        Big::wrap(self.0.neg())
    }
}

impl Real for Big {
    const RESCALE_PRODUCTS: bool = false;
    fn from_f64(x: f64) -> Self {
        Big::wrap(BigFloat::from_f64(x, precision().max(64)))
    }
    /// Through the shortest exact decimal string of the value, parsed with correct rounding.
    fn to_f64(&self) -> f64 {
        if self.0.is_nan() {
            return f64::NAN;
        }
        if self.0.is_inf_pos() {
            return f64::INFINITY;
        }
        if self.0.is_inf_neg() {
            return f64::NEG_INFINITY;
        }
        with_consts(|_, cc| self.0.format(Radix::Dec, RM, cc))
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    }
    fn exp(&self) -> Self {
        Big::wrap(with_consts(|p, cc| self.0.exp(p, RM, cc)))
    }
    fn ln(&self) -> Self {
        Big::wrap(with_consts(|p, cc| self.0.ln(p, RM, cc)))
    }
    fn ln_1p(&self) -> Self {
        (Self::from_f64(1.0) + self.clone()).ln()
    }
    fn sqrt(&self) -> Self {
        Big::wrap(self.0.sqrt(precision(), RM))
    }
    fn sin(&self) -> Self {
        Big::wrap(with_consts(|p, cc| self.0.sin(p, RM, cc)))
    }
    fn sinh_cosh(&self) -> (Self, Self) {
        with_consts(|p, cc| {
            (
                Big::wrap(self.0.sinh(p, RM, cc)),
                Big::wrap(self.0.cosh(p, RM, cc)),
            )
        })
    }
    fn tanh(&self) -> Self {
        Big::wrap(with_consts(|p, cc| self.0.tanh(p, RM, cc)))
    }
    fn abs(&self) -> Self {
        Big::wrap(self.0.abs())
    }
    fn pi() -> Self {
        Big::wrap(with_consts(|p, cc| cc.pi(p, RM)))
    }
    fn epsilon() -> f64 {
        (-(precision() as f64)).exp2()
    }
}

/// Evaluates `f` (a computation in [`Big`] returning `f64` results) at `bits` of precision
/// and at twice that, doubling until the two agree to `4ε` of `f64` (relative) in every
/// component or `max_bits` is reached. Returns the more precise evaluation and whether the
/// two agreed.
///
/// Rounding noise differs between precisions, so a short guard-bit estimate shows up as a
/// disagreement; but two evaluations that both lost every digit to an *exact* cancellation
/// (`(1 + x) − 1` with `x` below both precisions) agree on zero. Callers therefore start
/// from an estimate of the bits the formula loses, and the check guards that estimate.
pub fn evaluate_precise<const N: usize>(
    bits: usize,
    max_bits: usize,
    f: impl Fn() -> [f64; N],
) -> ([f64; N], bool) {
    let mut bits = bits.max(64);
    loop {
        let a = with_precision(bits, &f);
        let b = with_precision(2 * bits, &f);
        let agree = a.iter().zip(&b).all(|(x, y)| {
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * y.abs() || (x.is_nan() && y.is_nan())
        });
        if agree || 2 * bits >= max_bits {
            return (b, agree);
        }
        bits *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_arithmetic_and_functions() {
        with_precision(256, || {
            let x = Big::from_f64(0.3);
            let one = Big::from_f64(1.0);
            assert_eq!((x.clone() + one.clone()).to_f64(), 1.3);
            assert_eq!(x.exp().ln().to_f64(), 0.3);
            assert_eq!(x.sin().to_f64(), 0.3f64.sin());
            assert_eq!(x.tanh().to_f64(), 0.3f64.tanh());
            assert_eq!(Big::from_f64(2.0).sqrt().to_f64(), 2f64.sqrt());
            assert_eq!(Big::pi().to_f64(), std::f64::consts::PI);
            assert_eq!((-x.clone()).abs().to_f64(), 0.3);
            assert!(x < one && x == Big::from_f64(0.3));
            assert!(one.partial_cmp(&x) == Some(std::cmp::Ordering::Greater));
            // 1 + 10⁻³⁰ − 1 keeps its digits at 256 bits
            let tiny = Big::from_f64(1e-30);
            let back = (one.clone() + tiny) - one;
            assert!((back.to_f64() / 1e-30 - 1.0).abs() < 1e-15);
            // values far outside the f64 range round-trip through products
            let big = Big::from_f64(1000f64.exp2());
            let small = Big::from_f64((-1000f64).exp2());
            let prod = big.clone() * big.clone() * small.clone() * small;
            assert_eq!(prod.to_f64(), 1.0);
            assert_eq!(Big::from_f64(-2.5e-300).to_f64(), -2.5e-300);
        });
    }

    #[test]
    fn precise_evaluation_adds_guard_bits_until_stable() {
        // (1 + x) − 1 at x = 2⁻²⁰⁰ needs more than 200 bits: 128 and 256 disagree, 256 and
        // 512 agree
        let f = || {
            let x = Big::from_f64((-200f64).exp2());
            [((Big::from_f64(1.0) + x) - Big::from_f64(1.0)).to_f64()]
        };
        let (v, ok) = evaluate_precise(128, 4096, f);
        assert!(ok);
        assert_eq!(v[0], (-200f64).exp2());
    }
}
