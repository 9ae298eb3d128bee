//! Criterion benchmarks of the kernels on their own, at the shapes the flows use: the
//! φ⁴ tutorial's convolutions (batch 64, 8×8, 8 hidden channels, 3×3), and NeuralRG's block
//! couplings (a 2×2 block's halves, batch × blocks columns). Each at the native width and
//! direct/unfolded where both apply, and once on one lane for the SIMD speed-up.
//!
//! `cargo bench -p nrg-kernels` (or `cargo xtask bench`).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nrg_kernels::{
    Activation, AffineGeometry, ChainGeometry, ConvGeometry, ConvPath, DenseGeometry, Direction,
    Exec, MlpGeometry, SimdWidth, affine_backward, affine_forward, chain_backward, chain_forward,
    conv_backward, conv_forward, dense_backward, dense_forward, mlp_backward, mlp_forward,
};
use std::hint::black_box;

/// Deterministic values in `[−1, 1)` (a Weyl sequence: no random-number crate needed).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as f64 + 1.0) * 0.618_033_988_75 + seed as f64 * 0.414_213_562_37;
            (2.0 * x.fract() - 1.0) as f32
        })
        .collect()
}

fn conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    for (name, cin, cout) in [("8x8_1to8", 1, 8), ("8x8_8to8", 8, 8), ("8x8_8to2", 8, 2)] {
        let g = ConvGeometry {
            batch: 64,
            cin,
            cout,
            rows: 8,
            cols: 8,
            kernel: 3,
        };
        let x = values(g.batch * cin * g.sites(), 1);
        let w = values(cout * g.taps(), 2);
        let b = values(cout, 3);
        let gy = values(g.batch * cout * g.sites(), 4);
        for (path, exec) in [
            ("direct", Exec::new(SimdWidth::Native, ConvPath::Direct)),
            ("unfolded", Exec::new(SimdWidth::Native, ConvPath::Unfolded)),
            ("scalar", Exec::new(SimdWidth::Scalar, ConvPath::Auto)),
        ] {
            if path == "direct" && !g.cols.is_multiple_of(exec.lanes()) {
                continue;
            }
            let act = Activation::LeakyRelu(0.01);
            group.bench_function(BenchmarkId::new(format!("forward_{path}"), name), |bench| {
                bench.iter(|| conv_forward(exec, &g, black_box(&x), &w, &b, act))
            });
            let y = conv_forward(exec, &g, &x, &w, &b, act);
            group.bench_function(
                BenchmarkId::new(format!("backward_{path}"), name),
                |bench| bench.iter(|| conv_backward(exec, &g, black_box(&x), &w, &y, &gy, act)),
            );
        }
    }
    group.finish();
}

fn dense_and_mlp(c: &mut Criterion) {
    let mut group = c.benchmark_group("dense_mlp");
    // 2×2 blocks of a 16×16 lattice, batch 64: 4096 columns; halves of width 2, hidden 10.
    let n = 4096;
    for (name, exec) in [
        ("native", Exec::native()),
        ("scalar", Exec::new(SimdWidth::Scalar, ConvPath::Auto)),
    ] {
        let g = DenseGeometry {
            groups_in: 1,
            twins: 2,
            rows: n,
            input: 10,
            output: 10,
        };
        let x = values(n * 10, 1);
        let w = values(2 * 100, 2);
        let b = values(2 * 10, 3);
        let gy = values(2 * n * 10, 4);
        group.bench_function(BenchmarkId::new("dense_forward", name), |bench| {
            bench.iter(|| dense_forward(exec, &g, black_box(&x), &w, &b, Activation::Elu))
        });
        let y = dense_forward(exec, &g, &x, &w, &b, Activation::Elu);
        group.bench_function(BenchmarkId::new("dense_backward", name), |bench| {
            bench.iter(|| dense_backward(exec, &g, black_box(&x), &w, &y, &gy, Activation::Elu))
        });
        let m = MlpGeometry {
            groups_in: 1,
            twins: 2,
            rows: n,
            widths: vec![2, 10, 10, 2],
            hidden: Activation::Elu,
        };
        let xm = values(2 * n, 5);
        let p = values(m.layout().1, 6);
        let gm = values(2 * 2 * n, 7);
        group.bench_function(BenchmarkId::new("mlp_forward", name), |bench| {
            bench.iter(|| mlp_forward(exec, &m, black_box(&xm), &p))
        });
        group.bench_function(BenchmarkId::new("mlp_backward", name), |bench| {
            bench.iter(|| mlp_backward(exec, &m, black_box(&xm), &p, &gm))
        });
    }
    group.finish();
}

fn couplings(c: &mut Criterion) {
    let mut group = c.benchmark_group("couplings");
    let n = 4096;
    for (name, exec) in [
        ("native", Exec::native()),
        ("scalar", Exec::new(SimdWidth::Scalar, ConvPath::Auto)),
    ] {
        let g = ChainGeometry {
            mlp: MlpGeometry {
                groups_in: 1,
                twins: 2,
                rows: n,
                widths: vec![2, 10, 10, 2],
                hidden: Activation::Elu,
            },
            couplings: 4,
            direction: Direction::Forward,
        };
        let x = values(4 * n, 1);
        let p: Vec<f32> = values(g.param_len(), 2).iter().map(|v| 0.5 * v).collect();
        let gy = values(5 * n, 3);
        group.bench_function(BenchmarkId::new("chain_forward", name), |bench| {
            bench.iter(|| chain_forward(exec, &g, black_box(&x), &p))
        });
        group.bench_function(BenchmarkId::new("chain_backward", name), |bench| {
            bench.iter(|| chain_backward(exec, &g, black_box(&x), &p, &gy))
        });
        // The φ⁴ tutorial's coupling update: batch 64, one channel, 8×8.
        let a = AffineGeometry {
            batch: 64,
            channels: 1,
            sites: 64,
            direction: Direction::Forward,
        };
        let z = values(64 * 65, 4);
        let o = values(2 * 64 * 64, 5);
        let mask: Vec<f32> = (0..64).map(|i| ((i / 8 + i % 8) % 2) as f32).collect();
        let scale = [0.8f32];
        let ga = values(64 * 65, 6);
        group.bench_function(BenchmarkId::new("affine_forward", name), |bench| {
            bench.iter(|| affine_forward(exec, &a, black_box(&z), &o, &mask, &scale))
        });
        group.bench_function(BenchmarkId::new("affine_backward", name), |bench| {
            bench.iter(|| affine_backward(exec, &a, black_box(&z), &o, &mask, &scale, &ga))
        });
    }
    group.finish();
}

criterion_group!(kernels, conv, dense_and_mlp, couplings);
criterion_main!(kernels);
