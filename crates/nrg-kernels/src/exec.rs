//! Where a kernel runs: the SIMD instruction set and, for the convolution, the algorithm.
//!
//! By default ([`Exec::native`]) the inner loops run inside [`pulp::Arch::dispatch`],
//! which compiles them for each SIMD extension pulp knows (AVX2 + FMA on x86-64; NEON on
//! aarch64; scalar code elsewhere) and picks the widest the processor has at run time. The
//! kernels' lane-dependent logic — vector heads and scalar tails, the direct convolution's
//! eligibility (`W` a multiple of the lane count), the register tiles — therefore depends on
//! the host. [`SimdWidth`] forces a width instead: one lane, or pulp's portable vectors of
//! 4, 8 or 16 lanes (the widths of NEON/SSE, AVX2 and AVX-512, emulated lane by lane), so
//! that a test on any CPU runs every path the kernels have. [`ConvPath`] forces the direct
//! or the unfolded periodic convolution in the same way.
//!
//! The results of all widths agree to `f32` rounding (the order of the sums differs with
//! the width); with [`Exec::native`] they are the same to the last bit from run to run.

use pulp::{Arch, Simd, WithSimd};

/// The SIMD width the kernels are compiled for and run with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SimdWidth {
    /// The widest instruction set the processor has (pulp's run-time detection).
    #[default]
    Native,
    /// One lane: plain scalar code.
    Scalar,
    /// Portable vectors of 4 `f32` lanes (NEON's and SSE's width), emulated lane by lane.
    Portable4,
    /// Portable vectors of 8 lanes (AVX2's width).
    Portable8,
    /// Portable vectors of 16 lanes (AVX-512's width).
    Portable16,
}

impl SimdWidth {
    /// Every width, native first.
    pub const ALL: [SimdWidth; 5] = [
        SimdWidth::Native,
        SimdWidth::Scalar,
        SimdWidth::Portable4,
        SimdWidth::Portable8,
        SimdWidth::Portable16,
    ];
}

/// The algorithm of the periodic convolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvPath {
    /// Direct where a lattice row is a whole number of SIMD vectors, unfolded otherwise.
    #[default]
    Auto,
    /// Taps read straight from a wrapped copy of each plane (needs `W` to be a multiple of
    /// the lane count; see [`Exec::direct_convolution`]).
    Direct,
    /// Each sample unfolded into a `[cin·k², H·W]` matrix, then a matrix product.
    Unfolded,
}

impl ConvPath {
    /// Every path.
    pub const ALL: [ConvPath; 3] = [ConvPath::Auto, ConvPath::Direct, ConvPath::Unfolded];
}

/// How a kernel runs: a [`SimdWidth`] and a [`ConvPath`] (the latter used by the
/// convolution only). Cheap to copy; the default is [`Exec::native`].
#[derive(Clone, Copy, Debug)]
pub struct Exec {
    simd: SimdWidth,
    conv: ConvPath,
    arch: Arch,
}

impl Default for Exec {
    fn default() -> Self {
        Self::native()
    }
}

impl PartialEq for Exec {
    fn eq(&self, other: &Self) -> bool {
        (self.simd, self.conv) == (other.simd, other.conv)
    }
}

impl Eq for Exec {}

impl Exec {
    /// The widest SIMD the processor has and the automatic convolution path: what the
    /// layers use.
    pub fn native() -> Self {
        Self::new(SimdWidth::Native, ConvPath::Auto)
    }

    /// A forced width and convolution path.
    pub fn new(simd: SimdWidth, conv: ConvPath) -> Self {
        Exec {
            simd,
            conv,
            arch: Arch::new(),
        }
    }

    /// Every combination of width and convolution path (15), for tests.
    pub fn all() -> Vec<Exec> {
        SimdWidth::ALL
            .iter()
            .flat_map(|&s| ConvPath::ALL.iter().map(move |&c| Exec::new(s, c)))
            .collect()
    }

    /// The SIMD width.
    pub fn simd(&self) -> SimdWidth {
        self.simd
    }

    /// The convolution path as chosen (possibly [`ConvPath::Auto`]).
    pub fn conv(&self) -> ConvPath {
        self.conv
    }

    /// `f32` lanes per vector: 8 with AVX2, 4 with NEON, 1 scalar; 4, 8, 16 portable.
    pub fn lanes(&self) -> usize {
        struct Lanes;
        impl WithSimd for Lanes {
            type Output = usize;
            #[inline(always)]
            fn with_simd<S: Simd>(self, _: S) -> usize {
                lanes::<S>()
            }
        }
        self.dispatch(Lanes)
    }

    /// Whether the periodic convolution of rows of `cols` sites runs directly (`true`) or
    /// by unfolding (`false`): [`ConvPath::Auto`] takes the direct kernel where `cols` is a
    /// multiple of [`Exec::lanes`].
    ///
    /// # Panics
    ///
    /// With [`ConvPath::Direct`] forced on rows that are not a whole number of vectors.
    pub fn direct_convolution(&self, cols: usize) -> bool {
        let fits = cols.is_multiple_of(self.lanes());
        match self.conv {
            ConvPath::Auto => fits,
            ConvPath::Unfolded => false,
            ConvPath::Direct => {
                assert!(
                    fits,
                    "ConvPath::Direct needs rows of whole SIMD vectors: W = {cols}, {} lanes",
                    self.lanes()
                );
                true
            }
        }
    }

    /// Runs `op` with the chosen SIMD type (for a closure, compiles its body with that
    /// type's target features).
    #[inline(always)]
    pub(crate) fn dispatch<Op: WithSimd>(self, op: Op) -> Op::Output {
        match self.simd {
            SimdWidth::Native => self.arch.dispatch(op),
            forced => Self::forced(forced, op),
        }
    }

    /// The forced widths, out of line, so that the native path's call sites inside the hot
    /// loops stay as small as a plain `Arch::dispatch` (the forced widths are for tests and
    /// benchmarks; their extra call does not matter).
    #[inline(never)]
    fn forced<Op: WithSimd>(simd: SimdWidth, op: Op) -> Op::Output {
        match simd {
            SimdWidth::Scalar | SimdWidth::Native => pulp::Scalar.vectorize(op),
            SimdWidth::Portable4 => pulp::Scalar128b.vectorize(op),
            SimdWidth::Portable8 => pulp::Scalar256b.vectorize(op),
            SimdWidth::Portable16 => pulp::Scalar512b.vectorize(op),
        }
    }
}

/// `f32` lanes of the SIMD type `S`.
#[inline(always)]
pub(crate) fn lanes<S: Simd>() -> usize {
    core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forced widths have the lanes they promise, and the convolution path follows
    /// the rule of [`Exec::direct_convolution`].
    #[test]
    fn widths_and_paths_are_as_forced() {
        for (simd, lanes) in [
            (SimdWidth::Scalar, 1),
            (SimdWidth::Portable4, 4),
            (SimdWidth::Portable8, 8),
            (SimdWidth::Portable16, 16),
        ] {
            let e = Exec::new(simd, ConvPath::Auto);
            assert_eq!(e.lanes(), lanes, "{simd:?}");
            assert!(e.direct_convolution(lanes * 3));
            assert_eq!(e.direct_convolution(lanes * 3 + 1), lanes == 1);
            assert!(!Exec::new(simd, ConvPath::Unfolded).direct_convolution(lanes));
            assert!(Exec::new(simd, ConvPath::Direct).direct_convolution(2 * lanes));
        }
        assert!([1, 4, 8, 16].contains(&Exec::native().lanes()));
        assert_eq!(Exec::all().len(), 15);
    }

    #[test]
    #[should_panic(expected = "ConvPath::Direct needs rows of whole SIMD vectors")]
    fn a_forced_direct_convolution_on_ragged_rows_is_refused() {
        Exec::new(SimdWidth::Portable8, ConvPath::Direct).direct_convolution(12);
    }
}
