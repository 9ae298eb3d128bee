//! Observables of lattice configurations.
//!
//! Fields are host arrays `field[c·V + site]` of `n` components (`site` row-major on the
//! lattice, as in [`crate::Lattice`]). Per configuration:
//!
//! - magnetisation `M_c = V⁻¹ Σ_x φ_{c,x}`, `|M|`, `M² = Σ_c M_c²`;
//! - the two-point function along the axes,
//!   `G(r) = (d V)⁻¹ Σ_x Σ_μ φ_x · φ_{x + r μ̂}`, `r = 0 … ⌊L/2⌋`;
//! - the power at the smallest non-zero momentum,
//!   `F = (d V)⁻¹ Σ_μ |Σ_x φ_x e^{i p x_μ}|²`, `p = 2π/L`.
//!
//! Estimators built from their averages (use [`crate::stats`] for the error bars):
//! susceptibility `χ = V⟨M²⟩`, connected `χ_c = V(⟨M²⟩ − ⟨|M|⟩²)`, Binder cumulant
//! `U₄ = 1 − ⟨M⁴⟩/(3⟨M²⟩²)`, and the second-moment correlation length
//! `ξ₂ = √(χ/F − 1) / (2 sin(π/L))`.

use crate::lattice::Lattice;

/// Magnetisation per component, `M_c = V⁻¹ Σ_x φ_{c,x}`.
pub fn magnetisation(field: &[f64], channels: usize) -> Vec<f64> {
    let v = field.len() / channels;
    field
        .chunks_exact(v)
        .map(|c| c.iter().sum::<f64>() / v as f64)
        .collect()
}

/// `V⁻¹ Σ_x |φ_x|²`.
pub fn mean_square(field: &[f64], channels: usize) -> f64 {
    let v = field.len() / channels;
    field.iter().map(|f| f * f).sum::<f64>() / v as f64
}

/// Two-point function along the axes, `G(r)` for `r = 0 … ⌊L/2⌋`.
pub fn two_point_axes(field: &[f64], channels: usize, lattice: &Lattice) -> Vec<f64> {
    let v = lattice.volume();
    let rows = lattice.rows();
    let cols = lattice.cols();
    let d = lattice.dim();
    let rmax = lattice.l() / 2;
    let mut g = vec![0.0; rmax + 1];
    for c in 0..channels {
        let f = &field[c * v..(c + 1) * v];
        for i in 0..rows {
            for j in 0..cols {
                let x = f[i * cols + j];
                for (r, acc) in g.iter_mut().enumerate() {
                    let mut s = f[i * cols + (j + r) % cols];
                    if d == 2 {
                        s += f[((i + r) % rows) * cols + j];
                    }
                    *acc += x * s;
                }
            }
        }
    }
    let norm = (d * v) as f64;
    g.iter_mut().for_each(|x| *x /= norm);
    g
}

/// `F = (d V)⁻¹ Σ_μ |Σ_x φ_x e^{2πi x_μ/L}|²`, summed over components.
pub fn lowest_momentum_power(field: &[f64], channels: usize, lattice: &Lattice) -> f64 {
    let v = lattice.volume();
    let rows = lattice.rows();
    let cols = lattice.cols();
    let d = lattice.dim();
    let tau = std::f64::consts::TAU;
    let (cos_c, sin_c): (Vec<f64>, Vec<f64>) = (0..cols)
        .map(|j| {
            let a = tau * j as f64 / cols as f64;
            (a.cos(), a.sin())
        })
        .unzip();
    let mut power = 0.0;
    for c in 0..channels {
        let f = &field[c * v..(c + 1) * v];
        // along the columns: project each column sum
        let (mut re, mut im) = (0.0, 0.0);
        let (mut re_r, mut im_r) = (0.0, 0.0);
        for i in 0..rows {
            let row = &f[i * cols..(i + 1) * cols];
            let row_sum: f64 = row.iter().sum();
            for j in 0..cols {
                re += row[j] * cos_c[j];
                im += row[j] * sin_c[j];
            }
            if d == 2 {
                // rows == cols == L in 2D
                re_r += row_sum * cos_c[i];
                im_r += row_sum * sin_c[i];
            }
        }
        power += re * re + im * im;
        if d == 2 {
            power += re_r * re_r + im_r * im_r;
        }
    }
    power / (d * v) as f64
}

/// Binder cumulant `U₄ = 1 − ⟨M⁴⟩/(3⟨M²⟩²)` from the averages.
pub fn binder(m2: f64, m4: f64) -> f64 {
    1.0 - m4 / (3.0 * m2 * m2)
}

/// Second-moment correlation length `ξ₂ = √(χ/F − 1) / (2 sin(π/L))` from the averages
/// `χ = V⟨M²⟩` and `F` ([`lowest_momentum_power`]). NaN when `χ ≤ F` (no correlation).
pub fn second_moment_xi(chi: f64, f: f64, l: usize) -> f64 {
    ((chi / f - 1.0).sqrt()) / (2.0 * (std::f64::consts::PI / l as f64).sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_field() {
        let lat = Lattice::square(4).unwrap();
        let field = vec![2.0; 16];
        assert_eq!(magnetisation(&field, 1), vec![2.0]);
        assert_eq!(mean_square(&field, 1), 4.0);
        let g = two_point_axes(&field, 1, &lat);
        assert!(g.iter().all(|x| (x - 4.0).abs() < 1e-12));
        assert!(lowest_momentum_power(&field, 1, &lat).abs() < 1e-20);
    }

    /// A plane wave at the lowest momentum puts all its power in F, none in χ, and has
    /// G(r) = ½ cos(2πr/L) (brute-force check of the Fourier sums).
    #[test]
    fn plane_wave() {
        let l = 8;
        let lat = Lattice::square(l).unwrap();
        let mut field = vec![0.0; 64];
        for i in 0..l {
            for j in 0..l {
                field[i * l + j] = (std::f64::consts::TAU * j as f64 / l as f64).cos();
            }
        }
        let f = lowest_momentum_power(&field, 1, &lat);
        // column mode: |Σ cos² |² = (V/2)², row mode: 0, divided by dV = 128
        assert!((f - 32.0 * 32.0 / 128.0).abs() < 1e-9, "{f}");
        let g = two_point_axes(&field, 1, &lat);
        for (r, gr) in g.iter().enumerate() {
            // along columns: ½cos(2πr/L); along rows: ½ (a constant in i); average of both
            let expect = 0.5 * (0.5 * (std::f64::consts::TAU * r as f64 / l as f64).cos() + 0.5);
            assert!((gr - expect).abs() < 1e-12, "r={r}: {gr} vs {expect}");
        }
    }

    #[test]
    fn binder_of_gaussian_is_zero_and_ordered_is_two_thirds() {
        assert!((binder(1.0, 3.0)).abs() < 1e-15);
        assert!((binder(1.0, 1.0) - 2.0 / 3.0).abs() < 1e-15);
    }
}
