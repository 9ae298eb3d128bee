//! `nrg exact …`: exact solutions, printed as a table or as JSON.

use anyhow::Result;
use clap::{Args, Subcommand};
use nrg_core::Lattice;
use nrg_lattice::exact::gaussian::GaussianExact;
use nrg_lattice::exact::{IsingThermo, ising1d, ising2d};
use serde_json::json;

/// Arguments of `nrg exact`.
#[derive(Args, Debug)]
pub struct ExactArgs {
    #[command(subcommand)]
    model: ExactModel,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ExactModel {
    /// 2D Ising on the L×L torus (Kaufman), J = 1.
    Ising {
        /// Linear size L ≥ 2.
        #[arg(long = "L")]
        l: usize,
        /// Inverse temperature β > 0 (default: the critical β_c = ln(1+√2)/2).
        #[arg(long, allow_negative_numbers = true)]
        beta: Option<f64>,
    },
    /// 2D Ising on the infinite lattice (Onsager), J = 1.
    Onsager {
        /// Inverse temperature β > 0 (default β_c).
        #[arg(long, allow_negative_numbers = true)]
        beta: Option<f64>,
    },
    /// The periodic Ising chain of L sites (transfer matrix), J = 1.
    Ising1d {
        /// Number of sites L ≥ 2.
        #[arg(long = "L")]
        l: usize,
        /// Inverse temperature β > 0.
        #[arg(long, allow_negative_numbers = true)]
        beta: f64,
    },
    /// The free field S = Σ[Σ_μ(φ_{x+μ}−φ_x)² + m²φ²] with n components.
    FreeField {
        /// Linear size L ≥ 2.
        #[arg(long = "L")]
        l: usize,
        /// Mass squared m² > 0.
        #[arg(long, allow_negative_numbers = true)]
        m2: f64,
        /// Lattice dimension (1 or 2).
        #[arg(long, default_value_t = 2)]
        dim: usize,
        /// Field components.
        #[arg(long, default_value_t = 1)]
        n: usize,
    },
}

/// `x` with `digits` decimals, or in scientific notation with as many significant digits
/// when fixed decimals would hide them (`|x| < 10⁻³`, e.g. `u = −2·10⁻⁸` at `β = 10⁻⁸`,
/// or `|x| ≥ 10⁷`).
fn number(x: f64, digits: usize) -> String {
    if x != 0.0 && x.is_finite() && !(1e-3..1e7).contains(&x.abs()) {
        format!("{x:.digits$e}")
    } else {
        format!("{x:.digits$}")
    }
}

fn print_ising(model: &str, t: &IsingThermo, as_json: bool) -> Result<()> {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "model": model, "result": t }))?
        );
        return Ok(());
    }
    println!("{model}: L = {}, beta = {}", t.l, t.beta);
    if t.ln_z.is_finite() {
        println!("  ln Z                     = {}", number(t.ln_z, 12));
    }
    println!(
        "  ln Z / V                 = {}",
        number(t.ln_z_per_site, 15)
    );
    println!(
        "  free energy per site f   = {}",
        number(t.free_energy_per_site, 15)
    );
    println!(
        "  energy per site u        = {}",
        number(t.energy_per_site, 15)
    );
    println!(
        "  specific heat per site c = {}",
        number(t.specific_heat_per_site, 15)
    );
    Ok(())
}

/// Runs `nrg exact`.
pub fn run(args: ExactArgs) -> Result<()> {
    let beta_c = ising2d::critical_beta();
    match args.model {
        ExactModel::Ising { l, beta } => {
            let t = ising2d::kaufman(l, beta.unwrap_or(beta_c))?;
            print_ising("ising2d (Kaufman)", &t, args.json)
        }
        ExactModel::Onsager { beta } => {
            let t = ising2d::onsager(beta.unwrap_or(beta_c))?;
            print_ising("ising2d (Onsager, infinite lattice)", &t, args.json)
        }
        ExactModel::Ising1d { l, beta } => {
            let t = ising1d::chain(l, beta)?;
            print_ising("ising1d (transfer matrix)", &t, args.json)
        }
        ExactModel::FreeField { l, m2, dim, n } => {
            let lattice = Lattice::new(dim, l)?;
            let t = GaussianExact::free_field(lattice, n, m2)?.thermo();
            if args.json {
                let out = json!({
                    "model": "free field (lattice form)",
                    "L": l, "dim": dim, "n": n, "m2": m2, "result": t,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("free field: {dim}D L = {l}, n = {n}, m2 = {m2}");
                println!("  ln Z          = {:.12}", t.ln_z);
                println!("  <phi^2>       = {:.15}", t.phi2);
                println!("  chi = V<M^2>  = {:.15}", t.chi);
                println!("  <S>/V         = {:.15}", t.action_per_site);
                let g: Vec<String> = t.two_point.iter().map(|g| format!("{g:.6}")).collect();
                println!("  G(r), r=0..   = {}", g.join(" "));
            }
            Ok(())
        }
    }
}
