//! Second-order forward-mode automatic differentiation in one variable.
//!
//! A [`Dual2`] carries `(f, f′, f″)` of a function of one parameter (here the coupling
//! `K`). Exact free energies are written once, generically over the scalar type
//! ([`Real`]: `f64` or the extended-precision [`super::real::Big`]), and evaluated in
//! `Dual2` so that the internal energy `∝ ∂ ln Z/∂K` and the specific heat `∝ ∂² ln Z/∂K²`
//! come out exact to rounding — no finite differences.
//!
//! [`ScaledDual2`] represents `e^s · (f, f′, f″)` for products of many factors (Kaufman's
//! `Π_r 2cosh(Lγ_r/2)` overflows `f64` for `L ≳ 30`); in `f64` it is renormalised after each
//! product by the largest of its three components, so a factor that vanishes (`sinh` at the
//! critical point) keeps exact derivatives instead of dividing by zero.

use super::real::Real;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A value with its first and second derivative with respect to one parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dual2<T = f64> {
    /// `f`
    pub v: T,
    /// `f′`
    pub d1: T,
    /// `f″`
    pub d2: T,
}

impl<T: Real> Dual2<T> {
    /// A constant.
    pub fn constant(v: T) -> Self {
        Self {
            v,
            d1: T::from_f64(0.0),
            d2: T::from_f64(0.0),
        }
    }

    /// The independent variable at `v`.
    pub fn variable(v: T) -> Self {
        Self {
            v,
            d1: T::from_f64(1.0),
            d2: T::from_f64(0.0),
        }
    }

    /// Applies a scalar function given its value and first two derivatives at `self.v`.
    #[inline]
    pub fn chain(self, f: T, f1: T, f2: T) -> Self {
        Self {
            v: f,
            d1: f1.clone() * self.d1.clone(),
            d2: f2 * self.d1.clone() * self.d1 + f1 * self.d2,
        }
    }

    /// `e^x`
    pub fn exp(self) -> Self {
        let e = self.v.exp();
        self.chain(e.clone(), e.clone(), e)
    }

    /// `ln x` (x > 0)
    pub fn ln(self) -> Self {
        let r = T::from_f64(1.0) / self.v.clone();
        let f = self.v.ln();
        self.chain(f, r.clone(), -(r.clone() * r))
    }

    /// `ln(1 + x)` (x > −1)
    pub fn ln_1p(self) -> Self {
        let r = T::from_f64(1.0) / (T::from_f64(1.0) + self.v.clone());
        let f = self.v.ln_1p();
        self.chain(f, r.clone(), -(r.clone() * r))
    }

    /// `sinh x`
    pub fn sinh(self) -> Self {
        let (s, c) = self.v.sinh_cosh();
        self.chain(s.clone(), c, s)
    }

    /// `cosh x`
    pub fn cosh(self) -> Self {
        let (s, c) = self.v.sinh_cosh();
        self.chain(c.clone(), s, c)
    }

    /// `tanh x`, with `sech² x = 1/cosh² x` (not `1 − tanh²`, which cancels for large `|x|`).
    pub fn tanh(self) -> Self {
        let t = self.v.tanh();
        let (_, c) = self.v.sinh_cosh();
        let s2 = T::from_f64(1.0) / (c.clone() * c);
        let d2 = T::from_f64(-2.0) * t.clone() * s2.clone();
        self.chain(t, s2, d2)
    }

    /// `√x`
    pub fn sqrt(self) -> Self {
        let r = self.v.sqrt();
        let d1 = T::from_f64(0.5) / r.clone();
        let d2 = T::from_f64(-0.25) / (r.clone() * self.v.clone());
        self.chain(r, d1, d2)
    }

    /// `1/x`
    pub fn recip(self) -> Self {
        let r = T::from_f64(1.0) / self.v.clone();
        let r2 = r.clone() * r.clone();
        self.chain(r.clone(), -r2.clone(), T::from_f64(2.0) * r2 * r)
    }

    /// `ln(2 cosh x)`, stable for large `|x|`: `|x| + ln(1 + e^{−2|x|})`, with derivatives
    /// `tanh x` and `sech² x = 4e^{−2|x|}/(1 + e^{−2|x|})²`.
    pub fn ln_2cosh(self) -> Self {
        let a = self.v.abs();
        let q = (T::from_f64(-2.0) * a.clone()).exp();
        let one_q = T::from_f64(1.0) + q.clone();
        let f = a + q.ln_1p();
        let t = self.v.tanh();
        let sech2 = T::from_f64(4.0) * q / (one_q.clone() * one_q);
        self.chain(f, t, sech2)
    }

    /// `x²`
    pub fn square(self) -> Self {
        self.clone() * self
    }
}

impl<T: Real> Add for Dual2<T> {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            v: self.v + o.v,
            d1: self.d1 + o.d1,
            d2: self.d2 + o.d2,
        }
    }
}

impl<T: Real> Sub for Dual2<T> {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            v: self.v - o.v,
            d1: self.d1 - o.d1,
            d2: self.d2 - o.d2,
        }
    }
}

impl<T: Real> Neg for Dual2<T> {
    type Output = Self;
    fn neg(self) -> Self {
        Self {
            v: -self.v,
            d1: -self.d1,
            d2: -self.d2,
        }
    }
}

impl<T: Real> Mul for Dual2<T> {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        Self {
            v: self.v.clone() * o.v.clone(),
            d1: self.d1.clone() * o.v.clone() + self.v.clone() * o.d1.clone(),
            d2: self.d2 * o.v + T::from_f64(2.0) * self.d1 * o.d1 + self.v * o.d2,
        }
    }
}

impl<T: Real> Div for Dual2<T> {
    type Output = Self;
    #[allow(clippy::suspicious_arithmetic_impl)]
    fn div(self, o: Self) -> Self {
        self * o.recip()
    }
}

impl<T: Real> Add<f64> for Dual2<T> {
    type Output = Self;
    fn add(self, o: f64) -> Self {
        Self {
            v: self.v + T::from_f64(o),
            ..self
        }
    }
}

impl<T: Real> Mul<f64> for Dual2<T> {
    type Output = Self;
    fn mul(self, o: f64) -> Self {
        let o = T::from_f64(o);
        Self {
            v: self.v * o.clone(),
            d1: self.d1 * o.clone(),
            d2: self.d2 * o,
        }
    }
}

/// `e^{scale} · (v, d1, d2)`: a product of many [`Dual2`] factors without overflow.
#[derive(Clone, Debug)]
pub struct ScaledDual2<T = f64> {
    /// The dual (in `f64` normalised: largest component of modulus 1, or all zero).
    pub dual: Dual2<T>,
    /// The natural-log scale.
    pub scale: T,
}

impl<T: Real> ScaledDual2<T> {
    /// The number one.
    pub fn one() -> Self {
        Self {
            dual: Dual2::constant(T::from_f64(1.0)),
            scale: T::from_f64(0.0),
        }
    }

    fn normalise(mut self) -> Self {
        if !T::RESCALE_PRODUCTS {
            return self;
        }
        let m = self.largest().to_f64();
        if m > 0.0 && m.is_finite() {
            self.dual = self.dual * (1.0 / m);
            self.scale = self.scale + T::from_f64(m.ln());
        }
        self
    }

    fn largest(&self) -> T {
        let mut m = self.dual.v.abs();
        for c in [self.dual.d1.abs(), self.dual.d2.abs()] {
            if c > m {
                m = c;
            }
        }
        m
    }

    fn is_zero(&self) -> bool {
        self.largest().to_f64() == 0.0
    }

    /// Multiplies by `e^{log_scale} · factor`.
    pub fn mul_scaled(self, factor: Dual2<T>, log_scale: T) -> Self {
        Self {
            dual: self.dual * factor,
            scale: self.scale + log_scale,
        }
        .normalise()
    }

    /// `Σ_i terms_i`, returned as `ln` of the sum (value and derivatives of the log).
    /// The sum's value must be positive.
    pub fn ln_of_sum(terms: &[ScaledDual2<T>]) -> Dual2<T> {
        let mut top: Option<T> = None;
        for t in terms.iter().filter(|t| !t.is_zero()) {
            if top.as_ref().is_none_or(|m| t.scale > *m) {
                top = Some(t.scale.clone());
            }
        }
        let top = top.unwrap_or(T::from_f64(0.0));
        let mut sum = Dual2::constant(T::from_f64(0.0));
        for t in terms.iter().filter(|t| !t.is_zero()) {
            let w = (t.scale.clone() - top.clone()).exp();
            sum = sum
                + Dual2 {
                    v: t.dual.v.clone() * w.clone(),
                    d1: t.dual.d1.clone() * w.clone(),
                    d2: t.dual.d2.clone() * w,
                };
        }
        let ln = sum.ln();
        Dual2 {
            v: ln.v + top,
            ..ln
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::real::{Big, with_precision};
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    /// Every primitive against central finite differences.
    #[test]
    fn derivatives_match_finite_differences() {
        type Primitive = fn(Dual2) -> Dual2;
        let funcs: Vec<(&str, Primitive)> = vec![
            ("exp", Dual2::exp),
            ("ln", Dual2::ln),
            ("ln_1p", Dual2::ln_1p),
            ("sinh", Dual2::sinh),
            ("cosh", Dual2::cosh),
            ("tanh", Dual2::tanh),
            ("sqrt", Dual2::sqrt),
            ("recip", Dual2::recip),
            ("ln_2cosh", Dual2::ln_2cosh),
            ("square", Dual2::square),
        ];
        for (name, f) in funcs {
            for x in [0.3, 0.9, 2.5] {
                let h = 1e-4;
                let val = |x: f64| f(Dual2::constant(x)).v;
                let d = f(Dual2::variable(x));
                let d1 = (val(x + h) - val(x - h)) / (2.0 * h);
                let d2 = (val(x + h) - 2.0 * val(x) + val(x - h)) / (h * h);
                // central differences with h = 1e-4 are accurate to ~h²f‴/6 ≈ 1e-6 here
                assert!(close(d.d1, d1, 1e-6), "{name}'({x}) {} vs {d1}", d.d1);
                assert!(close(d.d2, d2, 1e-5), "{name}''({x}) {} vs {d2}", d.d2);
            }
        }
    }

    /// The same primitives in 256-bit [`Big`] agree with `f64` to rounding.
    #[test]
    fn big_duals_agree_with_f64() {
        with_precision(256, || {
            for x in [0.3, 2.5] {
                let a = Dual2::variable(x).ln_2cosh().tanh().sqrt().exp();
                let b = Dual2::variable(Big::from_f64(x))
                    .ln_2cosh()
                    .tanh()
                    .sqrt()
                    .exp();
                for (u, w) in [(a.v, b.v), (a.d1, b.d1), (a.d2, b.d2)] {
                    assert!(close(u, w.to_f64(), 1e-14), "{u} vs {w:?}");
                }
            }
        });
    }

    /// `ln 2cosh` keeps its curvature `sech² x` to relative accuracy at large `x` (in f64,
    /// `1 − tanh² x` is zero beyond x ≈ 19).
    #[test]
    fn ln_2cosh_curvature_is_relative() {
        let x = 30.0;
        let d = Dual2::variable(x).ln_2cosh();
        let exact = 1.0 / x.cosh().powi(2);
        assert!((d.d2 / exact - 1.0).abs() < 1e-14, "{} vs {exact}", d.d2);
        let t = Dual2::variable(x).tanh();
        assert!((t.d1 / exact - 1.0).abs() < 1e-14);
    }

    #[test]
    fn scaled_product_does_not_overflow() {
        let x = Dual2::variable(3.0);
        let mut p = ScaledDual2::one();
        for _ in 0..1000 {
            p = p.mul_scaled(x.cosh() * 1e200, 0.0);
        }
        let ln = ScaledDual2::ln_of_sum(&[p]);
        // ln Π = 1000 (ln cosh 3 + 200 ln 10), derivative 1000 tanh 3
        let expect = 1000.0 * (3f64.cosh().ln() + 200.0 * 10f64.ln());
        assert!(close(ln.v, expect, 1e-12));
        assert!(close(ln.d1, 1000.0 * 3f64.tanh(), 1e-12));
        assert!(close(ln.d2, 1000.0 * (1.0 - 3f64.tanh().powi(2)), 1e-9));
    }
}
