//! The whole holographic analysis of one model on one set of bulk samples.
//!
//! 1. **Bulk correlations** `C_ij` of every pair of latent sites with jackknife errors
//!    ([`crate::correlation`]) — connected, `⟨z_i·z_j⟩ − ⟨z_i⟩·⟨z_j⟩`, which is `⟨z_i·z_j⟩`
//!    for a bulk that keeps the field's symmetry and otherwise removes the constant that a
//!    non-odd RG map's latent means add; the raw `⟨z_i·z_j⟩` is listed beside it and the
//!    mean `|⟨z⟩|` per level reported — listed with the pair's levels and H³ distance, and organised
//!    as same-level correlation against distance (averaged over pairs at equal distance),
//!    and between levels along the vertical (each latent and the latent straight above it).
//! 2. **Emergent distance** ([`crate::fit::emergent_distance`]): `d = d₀ − ξ ln|C|`, fitted
//!    separately to same-level and cross-level pairs, and the same with the Gaussian mutual
//!    information in place of `|C|`.
//! 3. **Mutual information** of the pairs of one anchor latent per level (the one nearest
//!    the lattice centre) with every other latent: Gaussian with jackknife errors, and KSG
//!    for the anchors' nearest same-level and vertical partners.
//! 4. **The boundary** two-point function `G(r)` (axes, summed over components) with
//!    errors, and both its power-law exponent `η` and its correlation length: at
//!    criticality the first describes it, off criticality the second.
//! 5. **The bound on the bulk's total correlation**: for flow samples the KL divergence
//!    `KL(q‖p) = F_q + ln Z` between the flow and the target, estimated from the weights
//!    (`F_q = −⟨ln w⟩_q`, `ln Z` by NIS).
//!
//! Receptive fields, mixing and inpainting are separate calls ([`crate::receptive`],
//! [`crate::repair`]); the run-level pipeline (`nrg-run`'s `holo`) puts it all together.

use crate::correlation::{BulkMoments, Moments, bulk_moments};
use crate::fit::{EmergentDistance, LineFit, emergent_distance, exponential, power_law};
use crate::geometry::BulkGeometry;
use crate::mutual::{gaussian_mi, gaussian_mi_of, ksg, resample};
use crate::samples::LatentSamples;
use nrg_core::observables::two_point_axes;
use nrg_core::{Estimate, Lattice, NrgError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Options of [`analyse`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalysisOptions {
    /// Jackknife blocks (≥ 50 for independent samples; blocks ≫ τ_int for chains).
    pub blocks: usize,
    /// Samples used by the KSG estimator (resampled by weight when weighted).
    pub ksg_samples: usize,
    /// KSG neighbours `k`.
    pub ksg_neighbours: usize,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        Self {
            blocks: 50,
            ksg_samples: 1500,
            ksg_neighbours: 3,
            seed: 1,
        }
    }
}

/// A latent pair's correlation.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PairCorrelation {
    /// The raw second moment `⟨z_i · z_j⟩` (value only).
    pub raw: f64,
    /// First site.
    pub i: usize,
    /// Second site.
    pub j: usize,
    /// Level of `i`.
    pub level_i: usize,
    /// Level of `j`.
    pub level_j: usize,
    /// H³ distance.
    pub distance: f64,
    /// The connected correlation `⟨z_i · z_j⟩ − ⟨z_i⟩·⟨z_j⟩` with its error.
    pub correlation: Estimate,
}

/// Same-level correlations at one distance, averaged over the pairs at that distance.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct DistanceClass {
    /// The level.
    pub level: usize,
    /// H³ distance.
    pub distance: f64,
    /// Pairs averaged.
    pub pairs: usize,
    /// Mean `C` with the error of the mean (errors of the pairs combined in quadrature,
    /// divided by the count: an upper bound, the pairs being correlated positively or not).
    pub correlation: Estimate,
}

/// Correlation between a level and the level above, straight up.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct VerticalClass {
    /// The lower level.
    pub level: usize,
    /// Pairs (latent, latent above it) averaged.
    pub pairs: usize,
    /// Mean H³ distance of the pairs.
    pub distance: f64,
    /// Mean `C`.
    pub correlation: Estimate,
}

/// Mutual information of a pair.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PairInformation {
    /// First site.
    pub i: usize,
    /// Second site.
    pub j: usize,
    /// Level of `i`.
    pub level_i: usize,
    /// Level of `j`.
    pub level_j: usize,
    /// H³ distance.
    pub distance: f64,
    /// Gaussian MI with its jackknife error.
    pub gaussian: Estimate,
    /// KSG MI, for the pairs it was computed for.
    pub ksg: Option<Estimate>,
}

/// The boundary two-point function and its fits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoundaryCorrelation {
    /// `G(r)`, `r = 0 … L/2`.
    pub g: Vec<Estimate>,
    /// `η` from `G ∝ r^{−η}` on `1 ≤ r ≤ L/4`, with the fit.
    pub eta: Option<(Estimate, LineFit)>,
    /// `ξ` from `G ∝ e^{−r/ξ}` on `1 ≤ r ≤ L/4`, with the fit.
    pub correlation_length: Option<(Estimate, LineFit)>,
}

/// What [`analyse`] finds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Analysis {
    /// Lattice side.
    pub size: usize,
    /// RG levels.
    pub depth: usize,
    /// Latent sites per level.
    pub latents_per_level: Vec<usize>,
    /// Samples, and their ESS per sample (1 when unweighted).
    pub samples: usize,
    /// `|⟨z_i⟩|` averaged over the latents of each level (0 for a map that keeps the field's
    /// symmetry): `(level, mean norm)`.
    pub latent_means: Vec<(usize, f64)>,
    /// ESS per sample.
    pub ess: f64,
    /// Every pair `i < j` (for the CSV; not in JSON summaries).
    #[serde(skip)]
    pub pairs: Vec<PairCorrelation>,
    /// The Gaussian MI of every pair from the second moments, `V × V` row-major (values
    /// only, for a heat map; not in JSON summaries).
    #[serde(skip)]
    pub mi_matrix: Vec<f64>,
    /// Same-level correlation against distance.
    pub same_level: Vec<DistanceClass>,
    /// Correlation along the vertical.
    pub vertical: Vec<VerticalClass>,
    /// `d = d₀ − ξ ln|C|` over same-level pairs.
    pub emergent_same_level: Option<EmergentDistance>,
    /// The same over cross-level pairs.
    pub emergent_cross_level: Option<EmergentDistance>,
    /// `d = d₀ − ξ ln I` over same-level anchor pairs (Gaussian MI).
    pub emergent_mi_same_level: Option<EmergentDistance>,
    /// The same over cross-level anchor pairs.
    pub emergent_mi_cross_level: Option<EmergentDistance>,
    /// Mutual information of the anchors' pairs.
    pub mutual_information: Vec<PairInformation>,
    /// The boundary's `G(r)`.
    pub boundary: Option<BoundaryCorrelation>,
    /// Notes on what could not be fitted, and why.
    pub notes: Vec<String>,
}

/// The anchor latent of each level: the one whose block centre is nearest the lattice
/// centre (ties: the lowest site).
pub fn anchors(geometry: &BulkGeometry) -> Vec<usize> {
    let mid = (geometry.size as f64 - 1.0) / 2.0;
    (0..=geometry.depth)
        .filter_map(|level| {
            (0..geometry.len())
                .filter(|&s| geometry.sites[s].level == level)
                .min_by(|&a, &b| {
                    let d = |s: usize| {
                        let p = geometry.points[s];
                        (p.x - mid).powi(2) + (p.y - mid).powi(2)
                    };
                    d(a).total_cmp(&d(b)).then(a.cmp(&b))
                })
        })
        .collect()
}

/// The latent site straight above `s` (the one of the next level whose block contains it),
/// if any.
fn above(geometry: &BulkGeometry, s: usize) -> Option<usize> {
    let level = geometry.sites[s].level;
    if level >= geometry.depth {
        return None;
    }
    let p = geometry.points[s];
    (0..geometry.len())
        .filter(|&t| geometry.sites[t].level == level + 1)
        .min_by(|&a, &b| {
            let d = |t: usize| {
                let (dx, dy) = geometry.separation(&geometry.points[t], &p);
                dx * dx + dy * dy
            };
            d(a).total_cmp(&d(b)).then(a.cmp(&b))
        })
}

fn fit_or_note(
    what: &str,
    points: &[(f64, Estimate)],
    notes: &mut Vec<String>,
) -> Option<EmergentDistance> {
    let d: Vec<f64> = points.iter().map(|p| p.0).collect();
    let c: Vec<f64> = points.iter().map(|p| p.1.value).collect();
    let s: Vec<f64> = points.iter().map(|p| p.1.error).collect();
    match emergent_distance(&d, &c, &s) {
        Ok(fit) => Some(fit),
        Err(e) => {
            notes.push(format!("{what}: no fit ({e})"));
            None
        }
    }
}

/// The boundary `G(r)` of configurations `x` (`[N, C, V]`) with weights, and its fits.
pub fn boundary_correlation(
    x: &[f32],
    channels: usize,
    lattice: &Lattice,
    weights: &[f64],
    blocks: usize,
    notes: &mut Vec<String>,
) -> Result<BoundaryCorrelation> {
    let v = lattice.volume();
    let n = weights.len();
    if x.len() != n * channels * v || n < blocks || blocks < 2 {
        return Err(NrgError::InvalidData(
            "boundary correlation: configurations do not fit".into(),
        ));
    }
    let per: Vec<Vec<f64>> = (0..n)
        .map(|k| {
            let f: Vec<f64> = x[k * channels * v..(k + 1) * channels * v]
                .iter()
                .map(|v| *v as f64)
                .collect();
            two_point_axes(&f, channels, lattice)
        })
        .collect();
    let rs = per.first().map_or(0, |g| g.len());
    let ranges: Vec<(usize, usize)> = (0..blocks)
        .map(|b| (b * n / blocks, (b + 1) * n / blocks))
        .collect();
    let g: Vec<Estimate> = (0..rs)
        .map(|r| {
            let sums: Vec<(f64, f64)> = ranges
                .iter()
                .map(|&(s, e)| {
                    (s..e).fold((0.0, 0.0), |(a, w), k| {
                        (a + weights[k] * per[k][r], w + weights[k])
                    })
                })
                .collect();
            let (ta, tw) = sums.iter().fold((0.0, 0.0), |(a, w), s| (a + s.0, w + s.1));
            let loo: Vec<f64> = sums.iter().map(|s| (ta - s.0) / (tw - s.1)).collect();
            let bf = blocks as f64;
            let m = loo.iter().sum::<f64>() / bf;
            let var = (bf - 1.0) / bf * loo.iter().map(|v| (v - m).powi(2)).sum::<f64>();
            Estimate::new(ta / tw, var.sqrt())
        })
        .collect();
    let upto = (lattice.l() / 4).max(3).min(rs.saturating_sub(1));
    let (r, gv, gs): (Vec<f64>, Vec<f64>, Vec<f64>) =
        (1..=upto).map(|r| (r as f64, g[r].value, g[r].error)).fold(
            (vec![], vec![], vec![]),
            |(mut a, mut b, mut c), (x, y, z)| {
                a.push(x);
                b.push(y);
                c.push(z);
                (a, b, c)
            },
        );
    let eta = power_law(&r, &gv, &gs)
        .map_err(|e| notes.push(format!("boundary power law: no fit ({e})")))
        .ok();
    let correlation_length = exponential(&r, &gv, &gs)
        .map_err(|e| notes.push(format!("boundary correlation length: no fit ({e})")))
        .ok();
    Ok(BoundaryCorrelation {
        g,
        eta,
        correlation_length,
    })
}

/// Runs steps 1–4 of the module docs on `samples` (and on their boundary configurations,
/// when they carry them), for a model with `geometry`.
pub fn analyse(
    geometry: &BulkGeometry,
    samples: &LatentSamples,
    options: &AnalysisOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Analysis> {
    let v = geometry.len();
    if samples.sites != v {
        return Err(NrgError::InvalidData(
            "the samples do not fit the bulk geometry".into(),
        ));
    }
    let mut notes = Vec::new();
    let effective = samples.ess() * samples.n as f64;
    if effective < 100.0 {
        notes.push(format!(
            "the samples' weights leave {effective:.1} effective samples: reweighted estimates \
             and their errors are dominated by a few samples and not to be trusted; use exact \
             samples (a boundary chain, a file, or bulk HMC)"
        ));
    }
    progress("bulk correlations");
    let moments: BulkMoments = bulk_moments(samples, options.blocks, Moments::Connected)?;
    let c = samples.channels;
    let mean_norm = |s: usize| -> f64 {
        (0..c)
            .map(|ch| moments.means[ch * v + s].powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let latent_means: Vec<(usize, f64)> = (0..=geometry.depth)
        .filter_map(|level| {
            let sites: Vec<usize> = (0..v)
                .filter(|&s| geometry.sites[s].level == level)
                .collect();
            (!sites.is_empty()).then(|| {
                (
                    level,
                    sites.iter().map(|&s| mean_norm(s)).sum::<f64>() / sites.len() as f64,
                )
            })
        })
        .collect();
    let mut pairs = Vec::with_capacity(v * (v - 1) / 2);
    // ⟨z_i · z_j⟩ = connected + ⟨z_i⟩·⟨z_j⟩
    let c_val = |i: usize, j: usize| -> f64 {
        moments.correlations.at(i, j).0
            + (0..c)
                .map(|ch| moments.means[ch * v + i] * moments.means[ch * v + j])
                .sum::<f64>()
    };
    for i in 0..v {
        for j in i + 1..v {
            let (cc, e) = moments.correlations.at(i, j);
            let raw = c_val(i, j);
            pairs.push(PairCorrelation {
                i,
                j,
                level_i: geometry.sites[i].level,
                level_j: geometry.sites[j].level,
                distance: geometry.distance(i, j),
                correlation: Estimate::new(cc, e),
                raw,
            });
        }
    }
    // same level against distance (distances rounded to 1e-9 to group equal ones)
    let mut classes: BTreeMap<(usize, i64), (usize, f64, f64, f64)> = BTreeMap::new();
    for p in pairs.iter().filter(|p| p.level_i == p.level_j) {
        let key = (p.level_i, (p.distance * 1e9).round() as i64);
        let e = classes.entry(key).or_insert((0, p.distance, 0.0, 0.0));
        e.0 += 1;
        e.2 += p.correlation.value;
        e.3 += p.correlation.error.powi(2);
    }
    let same_level: Vec<DistanceClass> = classes
        .into_iter()
        .map(|((level, _), (count, distance, sum, var))| DistanceClass {
            level,
            distance,
            pairs: count,
            correlation: Estimate::new(sum / count as f64, var.sqrt() / count as f64),
        })
        .collect();
    let mut vertical = Vec::new();
    for level in 0..geometry.depth {
        let (mut count, mut d, mut sum, mut var) = (0, 0.0, 0.0, 0.0);
        for s in (0..v).filter(|&s| geometry.sites[s].level == level) {
            if let Some(t) = above(geometry, s) {
                let (c, e) = moments.correlations.at(s, t);
                count += 1;
                d += geometry.distance(s, t);
                sum += c;
                var += e * e;
            }
        }
        if count > 0 {
            let n = count as f64;
            vertical.push(VerticalClass {
                level,
                pairs: count,
                distance: d / n,
                correlation: Estimate::new(sum / n, var.sqrt() / n),
            });
        }
    }
    let mut mi_matrix = vec![0.0; v * v];
    let dim = 2 * samples.channels;
    for i in 0..v {
        for j in i + 1..v {
            let mi = gaussian_mi(&moments.pair_covariance(i, j), dim, samples.channels)
                .unwrap_or(f64::NAN);
            mi_matrix[i * v + j] = mi;
            mi_matrix[j * v + i] = mi;
        }
    }
    progress("emergent distance");
    let points = |same: bool| -> Vec<(f64, Estimate)> {
        pairs
            .iter()
            .filter(|p| (p.level_i == p.level_j) == same)
            .map(|p| (p.distance, p.correlation))
            .collect()
    };
    let emergent_same_level = fit_or_note("same-level ln|C| against d", &points(true), &mut notes);
    let emergent_cross_level =
        fit_or_note("cross-level ln|C| against d", &points(false), &mut notes);

    progress("mutual information");
    let anchor_sites = anchors(geometry);
    let mut mutual_information = Vec::new();
    for &a in &anchor_sites {
        for j in (0..v).filter(|&j| j != a) {
            let est = gaussian_mi_of(samples, a, j, options.blocks)?;
            mutual_information.push(PairInformation {
                i: a,
                j,
                level_i: geometry.sites[a].level,
                level_j: geometry.sites[j].level,
                distance: geometry.distance(a, j),
                gaussian: est,
                ksg: None,
            });
        }
    }
    // KSG for each anchor's nearest same-level partner and the latent above it
    let idx = match &samples.log_weights {
        None => (0..samples.n.min(options.ksg_samples)).collect::<Vec<_>>(),
        Some(_) => resample(&samples.weights(), options.ksg_samples, options.seed)?,
    };
    let column = |site: usize| -> Vec<f64> {
        idx.iter()
            .flat_map(|&k| {
                let z = samples.configuration(k);
                (0..c).map(move |ch| z[ch * v + site] as f64)
            })
            .collect()
    };
    for &a in &anchor_sites {
        let nearest = (0..v)
            .filter(|&j| j != a && geometry.sites[j].level == geometry.sites[a].level)
            .min_by(|&x, &y| geometry.distance(a, x).total_cmp(&geometry.distance(a, y)));
        for partner in [nearest, above(geometry, a)].into_iter().flatten() {
            let est = ksg(
                &column(a),
                c,
                &column(partner),
                c,
                options.ksg_neighbours,
                10,
            );
            match est {
                Ok(e) => {
                    if let Some(row) = mutual_information
                        .iter_mut()
                        .find(|r| r.i == a && r.j == partner)
                    {
                        row.ksg = Some(e);
                    }
                }
                Err(e) => notes.push(format!("KSG ({a}, {partner}): {e}")),
            }
        }
    }
    let mi_points = |same: bool| -> Vec<(f64, Estimate)> {
        mutual_information
            .iter()
            .filter(|p| (p.level_i == p.level_j) == same)
            .map(|p| (p.distance, p.gaussian))
            .collect()
    };
    let emergent_mi_same_level =
        fit_or_note("same-level ln I against d", &mi_points(true), &mut notes);
    let emergent_mi_cross_level =
        fit_or_note("cross-level ln I against d", &mi_points(false), &mut notes);

    let boundary = match samples.boundary.as_deref() {
        Some(x) => {
            progress("boundary two-point function");
            let lattice = Lattice::square(geometry.size)?;
            Some(boundary_correlation(
                x,
                c,
                &lattice,
                &samples.weights(),
                options.blocks,
                &mut notes,
            )?)
        }
        None => None,
    };
    let latents_per_level = (0..=geometry.depth)
        .map(|l| geometry.sites.iter().filter(|s| s.level == l).count())
        .collect();
    Ok(Analysis {
        size: geometry.size,
        depth: geometry.depth,
        latents_per_level,
        samples: samples.n,
        latent_means,
        ess: samples.ess(),
        pairs,
        mi_matrix,
        same_level,
        vertical,
        emergent_same_level,
        emergent_cross_level,
        emergent_mi_same_level,
        emergent_mi_cross_level,
        mutual_information,
        boundary,
        notes,
    })
}
