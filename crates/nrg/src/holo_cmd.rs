//! `nrg holo --run RUN`: the holographic analysis of a trained hierarchical flow
//! ([`nrg_run::holo`]), writing to `OUT` (default `RUN/holo`):
//!
//! ```text
//! summary.json              fits (ξ, d₀, R², χ²), η or ξ of the boundary, radii per level,
//!                           the KL gap, inpainting counts and statistics, timings
//! correlations.csv          every latent pair: levels, H³ distance, C ± σ
//! mutual_information.csv    the anchors' pairs: Gaussian MI ± σ, KSG MI ± σ
//! boundary_g.csv            G(r) ± σ
//! radii.csv                 receptive-field radius per level ± σ
//! bulk_correlations.png     ln|C| against the H³ distance, same- and cross-level, with fits
//! boundary_g.png            ln G against ln r, with the power-law fit
//! mutual_information.png    the Gaussian MI of all pairs, latents ordered by level
//! receptive_fields.png      one latent per level: its receptive field on the boundary
//! mixing.png                A, B and the mixtures (large scales of A, small of B)
//! inpainting.png            original, corrupted, repaired in the bulk, boundary chain
//! ```

use crate::device::{DeviceChoice, make};
use crate::plot::{Curve, Grid, Marks, Panel, grids_png, panels_png};
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nrg_run::RunDir;
use nrg_run::dir::{write_atomic, write_json};
use nrg_run::holo::{HoloOutput, HoloRequest, HoloSource, holo};
use plotters::style::{BLUE, RED};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the bulk samples come from.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Flow samples with NIS weights.
    Flow,
    /// Exact configurations from --data FILE.npy.
    Data,
    /// The baseline chain of the run's action (HMC; Wolff for the Ising model).
    Chain,
    /// HMC in the bulk, on S_eff (--chains chains, --samples trajectories in all).
    Bulk,
}

/// Arguments of `nrg holo`.
#[derive(Args, Debug)]
pub struct HoloArgs {
    /// The run directory (a hierarchical flow trained by `nrg train`).
    #[arg(long)]
    run: PathBuf,
    /// Source of bulk samples.
    #[arg(long, value_enum, default_value_t = Source::Flow)]
    source: Source,
    /// Configurations for --source data (.npy, [N, C, L, L] or [N, L, L]).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Bulk samples (flow, chain).
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// --source chain: updates between configurations.
    #[arg(long, default_value_t = 5)]
    every: usize,
    /// --source bulk: chains (batched through the flow).
    #[arg(long, default_value_t = 8)]
    chains: usize,
    /// Jackknife blocks.
    #[arg(long, default_value_t = 50)]
    blocks: usize,
    /// Samples for the receptive fields.
    #[arg(long, default_value_t = 4)]
    receptive_samples: usize,
    /// Side of the corrupted square region for inpainting.
    #[arg(long, default_value_t = 2)]
    region: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (default RUN/holo).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
}

/// `nrg holo …`.
pub fn run(args: HoloArgs, device_choice: DeviceChoice) -> Result<()> {
    let source = match (args.source, &args.data) {
        (Source::Data, Some(path)) => HoloSource::Data { path: path.clone() },
        (Source::Data, None) => bail!("--source data needs --data FILE.npy"),
        (_, Some(_)) => bail!("--data applies to --source data only"),
        (Source::Flow, None) => HoloSource::Flow {
            samples: args.samples,
        },
        (Source::Chain, None) => HoloSource::Chain {
            samples: args.samples,
            every: args.every.max(1),
            thermalisation: 200,
        },
        (Source::Bulk, None) => HoloSource::Bulk {
            chains: args.chains.max(1),
            updates: (args.samples / args.chains.max(1)).max(8),
            thermalisation: 100,
        },
    };
    if args.samples < 2 * args.blocks || args.blocks < 2 {
        bail!("need --blocks ≥ 2 and --samples ≥ 2 × blocks");
    }
    let mut request = HoloRequest::new(source);
    request.analysis.blocks = args.blocks;
    request.analysis.seed = args.seed;
    request.receptive_samples = args.receptive_samples;
    request.region = args.region;
    request.seed = args.seed;
    let run = RunDir::open(args.run.clone())?;
    let device = make(device_choice)?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] holo: {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let out = holo(&run, &request, &device, &mut |stage| {
        bar.set_message(stage.to_string())
    })?;
    bar.finish_and_clear();
    let dir = args.out.clone().unwrap_or_else(|| run.path().join("holo"));
    write_outputs(&dir, &out)?;
    print_report(&out);
    println!("wrote {}", dir.join("summary.json").display());
    Ok(())
}

fn csv(path: &Path, header: &str, rows: impl Iterator<Item = String>) -> Result<()> {
    let mut text = format!("{header}\n");
    for r in rows {
        text.push_str(&r);
        text.push('\n');
    }
    Ok(write_atomic(path, text.as_bytes())?)
}

fn write_outputs(dir: &Path, out: &HoloOutput) -> Result<()> {
    let r = &out.report;
    let a = &r.analysis;
    write_json(&dir.join("summary.json"), r)?;
    csv(
        &dir.join("correlations.csv"),
        "i,j,level_i,level_j,distance,c,error",
        a.pairs.iter().map(|p| {
            format!(
                "{},{},{},{},{:.17e},{:.17e},{:.17e}",
                p.i,
                p.j,
                p.level_i,
                p.level_j,
                p.distance,
                p.correlation.value,
                p.correlation.error
            )
        }),
    )?;
    csv(
        &dir.join("mutual_information.csv"),
        "i,j,level_i,level_j,distance,gaussian,gaussian_error,ksg,ksg_error",
        a.mutual_information.iter().map(|m| {
            let (k, ke) = m.ksg.map_or((f64::NAN, f64::NAN), |k| (k.value, k.error));
            format!(
                "{},{},{},{},{:.17e},{:.17e},{:.17e},{k:.17e},{ke:.17e}",
                m.i, m.j, m.level_i, m.level_j, m.distance, m.gaussian.value, m.gaussian.error
            )
        }),
    )?;
    if let Some(b) = &a.boundary {
        csv(
            &dir.join("boundary_g.csv"),
            "r,g,error",
            b.g.iter()
                .enumerate()
                .map(|(r, g)| format!("{r},{:.17e},{:.17e}", g.value, g.error)),
        )?;
    }
    csv(
        &dir.join("radii.csv"),
        "level,latents,radius,error",
        r.receptive.levels.iter().map(|l| {
            format!(
                "{},{},{:.17e},{:.17e}",
                l.level, l.latents, l.radius.value, l.radius.error
            )
        }),
    )?;
    plots(dir, out)
}

fn plots(dir: &Path, out: &HoloOutput) -> Result<()> {
    let a = &out.report.analysis;
    let (c, l) = out.shape;
    let v = l * l;
    // bulk ln|C| against d, with the fits
    let dots = |same: bool| -> Vec<(f64, f64)> {
        a.pairs
            .iter()
            .filter(|p| (p.level_i == p.level_j) == same)
            .filter(|p| p.correlation.value.abs() > 2.0 * p.correlation.error)
            .map(|p| (p.distance, p.correlation.value.abs().ln()))
            .collect()
    };
    let d_max = a.pairs.iter().map(|p| p.distance).fold(0.0, f64::max);
    let fit_line = |fit: &Option<nrg_holo::fit::EmergentDistance>| -> Vec<(f64, f64)> {
        fit.as_ref().map_or_else(Vec::new, |f| {
            let (i, s) = (f.fit.intercept.value, f.fit.slope.value);
            vec![(0.0, i), (d_max, i + s * d_max)]
        })
    };
    let bulk = Panel {
        title: "bulk: ln|C_ij| (connected) against the H³ distance",
        x_label: "geodesic distance d",
        curves: vec![
            Curve {
                label: "same level",
                points: dots(true),
                color: BLUE,
                marks: Marks::Dots,
            },
            Curve {
                label: "across levels",
                points: dots(false),
                color: RED,
                marks: Marks::Dots,
            },
            Curve {
                label: "fit, same level",
                points: fit_line(&a.emergent_same_level),
                color: BLUE,
                marks: Marks::Line,
            },
            Curve {
                label: "fit, across levels",
                points: fit_line(&a.emergent_cross_level),
                color: RED,
                marks: Marks::Line,
            },
        ],
        y_range: None,
    };
    panels_png(&dir.join("bulk_correlations.png"), &[bulk])?;
    if let Some(b) = &a.boundary {
        let pts: Vec<(f64, f64)> =
            b.g.iter()
                .enumerate()
                .skip(1)
                .filter(|(_, g)| g.value > 0.0)
                .map(|(r, g)| ((r as f64).ln(), g.value.ln()))
                .collect();
        let fit = b.eta.as_ref().map_or_else(Vec::new, |(_, f)| {
            let x1 = ((l / 2) as f64).ln();
            vec![
                (0.0, f.intercept.value),
                (x1, f.intercept.value + f.slope.value * x1),
            ]
        });
        let panel = Panel {
            title: "boundary: ln G(r) against ln r",
            x_label: "ln r",
            curves: vec![
                Curve {
                    label: "G(r)",
                    points: pts,
                    color: BLUE,
                    marks: Marks::Dots,
                },
                Curve {
                    label: "power-law fit",
                    points: fit,
                    color: RED,
                    marks: Marks::Line,
                },
            ],
            y_range: None,
        };
        panels_png(&dir.join("boundary_g.png"), &[panel])?;
    }
    // MI heat map, latents ordered by level (coarsest first) then site
    let levels = &a.latents_per_level;
    let geometry_levels: Vec<usize> = {
        // recover each site's level from the pair list's first rows
        let mut lv = vec![0usize; v];
        for p in &a.pairs {
            lv[p.i] = p.level_i;
            lv[p.j] = p.level_j;
        }
        lv
    };
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by_key(|&s| (std::cmp::Reverse(geometry_levels[s]), s));
    let mi: Vec<f64> = order
        .iter()
        .flat_map(|&i| {
            order.iter().map(move |&j| {
                if i == j {
                    f64::NAN
                } else {
                    a.mi_matrix[i * v + j]
                }
            })
        })
        .map(|m| {
            if m.is_finite() && m > 0.0 {
                m.ln()
            } else {
                f64::NAN
            }
        })
        .collect();
    grids_png(
        &dir.join("mutual_information.png"),
        &[Grid {
            title: format!("ln I_ij (Gaussian), latents by level {levels:?}"),
            rows: v,
            cols: v,
            values: mi,
            diverging: false,
        }],
        1,
    )?;
    // receptive fields: log10 of the field, one per level
    let fields: Vec<Grid> = out
        .report
        .receptive
        .maps
        .iter()
        .map(|m| Grid {
            title: format!("level {}, site {}: log10 E|dx/dz|", m.level, m.site),
            rows: l,
            cols: l,
            values: m
                .field
                .iter()
                .map(|f| if *f > 0.0 { f.log10() } else { f64::NAN })
                .collect(),
            diverging: false,
        })
        .collect();
    grids_png(
        &dir.join("receptive_fields.png"),
        &fields,
        fields.len().min(4),
    )?;
    let channel0 = |x: &[f32]| -> Vec<f64> { x[..v].iter().map(|v| *v as f64).collect() };
    let (za, zb, mixes) = &out.mixing;
    let _ = (za, zb, c);
    let mut panels: Vec<Grid> = mixes
        .iter()
        .enumerate()
        .map(|(h, x)| Grid {
            title: if h == 0 {
                "A".into()
            } else if h + 1 == mixes.len() {
                "B".into()
            } else {
                format!("levels ≥ {h} of A, < {h} of B")
            },
            rows: l,
            cols: l,
            values: channel0(x),
            diverging: true,
        })
        .collect();
    let n = panels.len();
    grids_png(&dir.join("mixing.png"), &panels, n.min(5))?;
    panels = [
        "original",
        "corrupted",
        "repaired in the bulk",
        "boundary chain",
    ]
    .iter()
    .zip(&out.inpainting)
    .map(|(t, x)| Grid {
        title: t.to_string(),
        rows: l,
        cols: l,
        values: if x.is_empty() {
            vec![f64::NAN; v]
        } else {
            channel0(x)
        },
        diverging: true,
    })
    .collect();
    grids_png(&dir.join("inpainting.png"), &panels, 4)?;
    Ok(())
}

fn print_report(out: &HoloOutput) {
    let r = &out.report;
    let a = &r.analysis;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "holo: {} ({}), L = {}, {} levels",
        r.action,
        r.source,
        a.size,
        a.depth + 1
    );
    let _ = writeln!(s, "  samples {} (ESS per sample {:.3})", a.samples, a.ess);
    if let Some(g) = r.kl_gap {
        let _ = writeln!(
            s,
            "  KL gap of the flow (bound on the bulk total correlation) {:.4} ± {:.4} nats",
            g.value, g.error
        );
    }
    for (name, fit) in [
        ("same level", &a.emergent_same_level),
        ("across levels", &a.emergent_cross_level),
        ("MI, same level", &a.emergent_mi_same_level),
        ("MI, across levels", &a.emergent_mi_cross_level),
    ] {
        if let Some(f) = fit {
            let _ = writeln!(
                s,
                "  d = d₀ − ξ ln|C| ({name}): ξ = {:.4} ± {:.4}, d₀ = {:.4} ± {:.4}, R² {:.3}, χ²/dof {:.2}, {} pairs",
                f.xi.value,
                f.xi.error,
                f.d0.value,
                f.d0.error,
                f.fit.r2,
                f.fit.chi2_per_dof,
                f.fit.points
            );
        }
    }
    if let Some(b) = &a.boundary {
        if let Some((eta, f)) = &b.eta {
            let _ = writeln!(
                s,
                "  boundary G(r) ∝ r^(−η): η = {:.4} ± {:.4} (R² {:.3})",
                eta.value, eta.error, f.r2
            );
        }
        if let Some((xi, f)) = &b.correlation_length {
            let _ = writeln!(
                s,
                "  boundary G(r) ∝ e^(−r/ξ): ξ = {:.4} ± {:.4} (R² {:.3})",
                xi.value, xi.error, f.r2
            );
        }
    }
    for l in &r.receptive.levels {
        let _ = writeln!(
            s,
            "  receptive field, level {}: RMS radius {:.3} ± {:.3} ({} latents)",
            l.level, l.radius.value, l.radius.error, l.latents
        );
    }
    if r.receptive.global {
        let _ = writeln!(
            s,
            "  (a global circulant layer: every receptive field covers the whole lattice)"
        );
    }
    let p = &r.inpainting;
    let _ = writeln!(
        s,
        "  inpainting {} sites: {} of {} latents resampled; ⟨φ²⟩ on the region: original {:.4}, bulk {:.4} ± {:.4}, boundary chain {:.4} ± {:.4}",
        p.region.len(),
        p.latents_touched,
        p.total_latents,
        p.phi2_original,
        p.phi2_bulk.value,
        p.phi2_bulk.error,
        p.phi2_boundary.value,
        p.phi2_boundary.error
    );
    let counts: Vec<String> = p
        .cone_counts
        .iter()
        .map(|(l, n, all)| format!("L={l}: {n}/{all}"))
        .collect();
    let _ = writeln!(s, "  cone latents of the region: {}", counts.join(", "));
    for n in &a.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    print!("{s}");
}
