//! Renormalised couplings by maximum pseudo-likelihood (Besag, 1975), a consistent
//! estimator of the couplings of a lattice Hamiltonian from its configurations, applied to
//! block spins.
//!
//! With `−H = Σ_α K_α S_α` (units of `kT`, so `K_nn > 0` is ferromagnetic) over operators
//! [`crate::mcrg::Operator`], each spin's conditional law given the others is
//!
//! ```text
//! P(s_i | rest) = exp(s_i h_i) / (2 cosh h_i),     h_i = Σ_α K_α g_{iα},   g_{iα} = ∂S_α/∂s_i
//! ln PL(K) = Σ_configs Σ_i [s_i h_i − ln 2cosh h_i]                      (concave in K)
//! ∇_α = Σ (s_i − tanh h_i) g_{iα},     H_αβ = −Σ (1 − tanh² h_i) g_{iα} g_{iβ}
//! ```
//!
//! maximised by Newton's method from `K = 0`. The estimate is exact in the limit of many
//! configurations whenever the true Hamiltonian lies in the span of the operators (tested
//! on the nearest-neighbour model itself); for block spins, whose Hamiltonian has every
//! coupling, the truncated fit is the projection that the operator set allows. Errors:
//! jackknife over contiguous blocks of configurations.

use crate::mcrg::Operator;
use nalgebra::{DMatrix, DVector};
use nrg_core::{Estimate, NrgError, Result};

/// Per-configuration sufficient pieces: spins and local fields `g[i][α]`.
struct Features {
    spins: Vec<f64>,
    fields: Vec<Vec<f64>>,
}

fn features(spins: &[f64], rows: usize, cols: usize, ops: &[Operator]) -> Features {
    let mut fields = vec![vec![0.0; spins.len()]; ops.len()];
    for (op, out) in ops.iter().zip(fields.iter_mut()) {
        op.local_field(spins, rows, cols, out);
    }
    Features {
        spins: spins.to_vec(),
        fields,
    }
}

/// Newton's method on `ln PL` over the configurations `use_`. `None` if it does not
/// converge (separable data: e.g. every configuration fully ordered).
fn maximise(f: &[Features], use_: &[usize], m: usize) -> Option<Vec<f64>> {
    let mut k = DVector::<f64>::zeros(m);
    for _ in 0..50 {
        let mut grad = DVector::<f64>::zeros(m);
        let mut hess = DMatrix::<f64>::zeros(m, m);
        for &c in use_ {
            let x = &f[c];
            for i in 0..x.spins.len() {
                let h: f64 = (0..m).map(|a| k[a] * x.fields[a][i]).sum();
                let th = h.tanh();
                let w = 1.0 - th * th;
                for a in 0..m {
                    let ga = x.fields[a][i];
                    grad[a] += (x.spins[i] - th) * ga;
                    for b in 0..=a {
                        hess[(a, b)] += w * ga * x.fields[b][i];
                    }
                }
            }
        }
        for a in 0..m {
            for b in 0..a {
                hess[(b, a)] = hess[(a, b)];
            }
        }
        let step = hess.cholesky()?.solve(&grad);
        k += &step;
        if !k.iter().all(|v| v.is_finite()) {
            return None;
        }
        if step.amax() < 1e-10 * (1.0 + k.amax()) {
            return Some(k.iter().copied().collect());
        }
    }
    None
}

/// The couplings `K_α` of `configurations` (each `±1`, `rows × cols`, periodic; `rows = 1`
/// for a chain) on `operators`, with jackknife errors over `blocks` contiguous blocks.
///
/// Errors: no operators, too few configurations for the blocks, a configuration of the
/// wrong size or not `±1`, a fit that does not converge (e.g. fully ordered configurations,
/// whose couplings are infinite).
pub fn pseudo_likelihood(
    configurations: &[Vec<f64>],
    rows: usize,
    cols: usize,
    operators: &[Operator],
    blocks: usize,
) -> Result<Vec<Estimate>> {
    let n = configurations.len();
    if operators.is_empty() || blocks < 2 || n < 2 * blocks {
        return Err(NrgError::param(
            "pseudo-likelihood",
            format!("need ≥ 1 operator, ≥ 2 blocks and ≥ 2 configurations per block ({n} given)"),
        ));
    }
    if let Some(c) = configurations
        .iter()
        .find(|c| c.len() != rows * cols || c.iter().any(|s| s.abs() != 1.0))
    {
        return Err(NrgError::InvalidData(format!(
            "a configuration of {} values is not {rows}×{cols} spins ±1",
            c.len()
        )));
    }
    let f: Vec<Features> = configurations
        .iter()
        .map(|c| features(c, rows, cols, operators))
        .collect();
    let m = operators.len();
    let diverged = || {
        NrgError::InvalidData(
            "the pseudo-likelihood has no finite maximum (ordered configurations?)".into(),
        )
    };
    let all: Vec<usize> = (0..n).collect();
    let full = maximise(&f, &all, m).ok_or_else(diverged)?;
    let size = n / blocks;
    let mut jack = Vec::with_capacity(blocks);
    for b in 0..blocks {
        let keep: Vec<usize> = (0..n)
            .filter(|i| !(b * size..(b + 1) * size).contains(i))
            .collect();
        jack.push(maximise(&f, &keep, m).ok_or_else(diverged)?);
    }
    Ok((0..m)
        .map(|a| {
            let mean = jack.iter().map(|k| k[a]).sum::<f64>() / blocks as f64;
            let var = jack.iter().map(|k| (k[a] - mean).powi(2)).sum::<f64>();
            Estimate::new(
                full[a],
                ((blocks as f64 - 1.0) / blocks as f64 * var).sqrt(),
            )
        })
        .collect())
}
