//! Second-order forward-mode automatic differentiation in one variable.
//!
//! A [`Dual2`] carries `(f, f′, f″)` of a function of one parameter (here the coupling
//! `K`). Exact free energies are written once, generically, and evaluated in `Dual2` so that
//! the internal energy `∝ ∂ ln Z/∂K` and the specific heat `∝ ∂² ln Z/∂K²` come out exact to
//! rounding — no finite differences.
//!
//! [`ScaledDual2`] represents `e^s · (f, f′, f″)` for products of many factors (Kaufman's
//! `Π_r 2cosh(Lγ_r/2)` overflows `f64` for `L ≳ 30`); it is renormalised after each product
//! by the largest of its three components, so a factor that vanishes (`sinh` at the
//! critical point) keeps exact derivatives instead of dividing by zero.

use std::ops::{Add, Div, Mul, Neg, Sub};

/// A value with its first and second derivative with respect to one parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dual2 {
    /// `f`
    pub v: f64,
    /// `f′`
    pub d1: f64,
    /// `f″`
    pub d2: f64,
}

impl Dual2 {
    /// A constant.
    pub fn constant(v: f64) -> Self {
        Self {
            v,
            d1: 0.0,
            d2: 0.0,
        }
    }

    /// The independent variable at `v`.
    pub fn variable(v: f64) -> Self {
        Self {
            v,
            d1: 1.0,
            d2: 0.0,
        }
    }

    /// Applies a scalar function given its value and first two derivatives at `self.v`.
    #[inline]
    pub fn chain(self, f: f64, f1: f64, f2: f64) -> Self {
        Self {
            v: f,
            d1: f1 * self.d1,
            d2: f2 * self.d1 * self.d1 + f1 * self.d2,
        }
    }

    /// `e^x`
    pub fn exp(self) -> Self {
        let e = self.v.exp();
        self.chain(e, e, e)
    }

    /// `ln x` (x > 0)
    pub fn ln(self) -> Self {
        self.chain(self.v.ln(), 1.0 / self.v, -1.0 / (self.v * self.v))
    }

    /// `sinh x`
    pub fn sinh(self) -> Self {
        let (s, c) = (self.v.sinh(), self.v.cosh());
        self.chain(s, c, s)
    }

    /// `cosh x`
    pub fn cosh(self) -> Self {
        let (s, c) = (self.v.sinh(), self.v.cosh());
        self.chain(c, s, c)
    }

    /// `tanh x`
    pub fn tanh(self) -> Self {
        let t = self.v.tanh();
        let s2 = 1.0 - t * t;
        self.chain(t, s2, -2.0 * t * s2)
    }

    /// `√x`
    pub fn sqrt(self) -> Self {
        let r = self.v.sqrt();
        self.chain(r, 0.5 / r, -0.25 / (r * self.v))
    }

    /// `1/x`
    pub fn recip(self) -> Self {
        let r = 1.0 / self.v;
        self.chain(r, -r * r, 2.0 * r * r * r)
    }

    /// `ln(2 cosh x)`, stable for large `|x|`.
    pub fn ln_2cosh(self) -> Self {
        let a = self.v.abs();
        let f = a + (-2.0 * a).exp().ln_1p();
        let t = self.v.tanh();
        self.chain(f, t, 1.0 - t * t)
    }

    /// `x²`
    pub fn square(self) -> Self {
        self * self
    }
}

impl Add for Dual2 {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            v: self.v + o.v,
            d1: self.d1 + o.d1,
            d2: self.d2 + o.d2,
        }
    }
}

impl Sub for Dual2 {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            v: self.v - o.v,
            d1: self.d1 - o.d1,
            d2: self.d2 - o.d2,
        }
    }
}

impl Neg for Dual2 {
    type Output = Self;
    fn neg(self) -> Self {
        Self {
            v: -self.v,
            d1: -self.d1,
            d2: -self.d2,
        }
    }
}

impl Mul for Dual2 {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        Self {
            v: self.v * o.v,
            d1: self.d1 * o.v + self.v * o.d1,
            d2: self.d2 * o.v + 2.0 * self.d1 * o.d1 + self.v * o.d2,
        }
    }
}

impl Div for Dual2 {
    type Output = Self;
    #[allow(clippy::suspicious_arithmetic_impl)]
    fn div(self, o: Self) -> Self {
        self * o.recip()
    }
}

impl Add<f64> for Dual2 {
    type Output = Self;
    fn add(self, o: f64) -> Self {
        Self {
            v: self.v + o,
            ..self
        }
    }
}

impl Mul<f64> for Dual2 {
    type Output = Self;
    fn mul(self, o: f64) -> Self {
        Self {
            v: self.v * o,
            d1: self.d1 * o,
            d2: self.d2 * o,
        }
    }
}

/// `e^{scale} · (v, d1, d2)`: a product of many [`Dual2`] factors without overflow.
#[derive(Clone, Copy, Debug)]
pub struct ScaledDual2 {
    /// The normalised dual (largest component of modulus 1, or all zero).
    pub dual: Dual2,
    /// The natural-log scale.
    pub scale: f64,
}

impl ScaledDual2 {
    /// The number one.
    pub fn one() -> Self {
        Self {
            dual: Dual2::constant(1.0),
            scale: 0.0,
        }
    }

    fn normalise(mut self) -> Self {
        let m = self
            .dual
            .v
            .abs()
            .max(self.dual.d1.abs())
            .max(self.dual.d2.abs());
        if m > 0.0 && m.is_finite() {
            self.dual = self.dual * (1.0 / m);
            self.scale += m.ln();
        }
        self
    }

    /// Multiplies by `e^{log_scale} · factor`.
    pub fn mul_scaled(self, factor: Dual2, log_scale: f64) -> Self {
        Self {
            dual: self.dual * factor,
            scale: self.scale + log_scale,
        }
        .normalise()
    }

    /// `Σ_i terms_i`, returned as `ln` of the sum (value and derivatives of the log).
    /// The sum's value must be positive.
    pub fn ln_of_sum(terms: &[ScaledDual2]) -> Dual2 {
        let top = terms
            .iter()
            .filter(|t| t.dual != Dual2::constant(0.0))
            .map(|t| t.scale)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut sum = Dual2::constant(0.0);
        for t in terms {
            if t.dual != Dual2::constant(0.0) {
                sum = sum + t.dual * (t.scale - top).exp();
            }
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
