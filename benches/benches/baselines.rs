//! Baseline Monte Carlo throughput.
//!
//! `metropolis_sweep/L`: one sweep of `L²` single-spin updates at β = 0.44 (throughput in
//! elements = spin updates per second). `wolff_cluster/L`: one cluster flip at β_c.
//! `hmc_trajectory/L`: one 10-step leapfrog trajectory of φ⁴ at the tutorial point.

/// The allocator of the `nrg` program (mimalloc), so that the benches time what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nrg_benches::{ising, phi4_tutorial};
use nrg_core::OnLattice;
use nrg_lattice::exact::ising2d::critical_beta;
use nrg_samplers::baseline::{Hmc, IsingMetropolis, IsingWolff, SpinStart};
use std::hint::black_box;

fn metropolis(c: &mut Criterion) {
    let mut group = c.benchmark_group("metropolis_sweep");
    for l in [16, 64, 256] {
        let mut chain = IsingMetropolis::new(ising(l, 0.44), 1, SpinStart::Hot);
        for _ in 0..100 {
            chain.sweep();
        }
        group.throughput(Throughput::Elements((l * l) as u64));
        group.bench_function(format!("{l}"), |b| b.iter(|| black_box(chain.sweep())));
    }
    group.finish();
}

fn wolff(c: &mut Criterion) {
    let mut group = c.benchmark_group("wolff_cluster");
    for l in [16, 64] {
        let mut chain = IsingWolff::new(ising(l, critical_beta()), 1, SpinStart::Hot);
        for _ in 0..1000 {
            chain.flip_cluster();
        }
        group.bench_function(format!("{l}"), |b| {
            b.iter(|| black_box(chain.flip_cluster()))
        });
    }
    group.finish();
}

fn hmc(c: &mut Criterion) {
    let mut group = c.benchmark_group("hmc_trajectory");
    for l in [8, 32] {
        let action = phi4_tutorial(l);
        let field = vec![0.0; action.lattice().volume()];
        let mut chain = Hmc::new(action, field, 0.05, 10, 1).expect("a valid chain");
        for _ in 0..50 {
            chain.trajectory();
        }
        group.bench_function(format!("{l}"), |b| b.iter(|| black_box(chain.trajectory())));
    }
    group.finish();
}

criterion_group!(benches, metropolis, wolff, hmc);
criterion_main!(benches);
