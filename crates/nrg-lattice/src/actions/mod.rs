//! Lattice actions on burn tensors (and on the host, in `f64`).
//!
//! - [`IsingRelaxed`]: the continuous (Hubbard–Stratonovich) relaxation of the Ising model
//!   on a chain or a torus, with the exact offset between `ln Z_x` and `ln Z_Ising`;
//! - [`PhiFour`]: real and O(n) φ⁴ in the lattice, hopping and complex `(t, μ, λ)` forms,
//!   and the free field (`λ = 0`);
//! - [`IsingSpins`]: the discrete-spin Ising model for the baseline Monte Carlo.

mod ising_relaxed;
mod ising_spins;
mod phi4;

pub use ising_relaxed::{FieldGivenSpins, IsingRelaxed};
pub use ising_spins::IsingSpins;
pub use phi4::{PhiFour, PhiFourForm};

use burn::tensor::{Device, Tensor, TensorData};

/// Builds a float tensor from `f64` values (converted to the device's float type).
pub(crate) fn tensor_from_f64<const D: usize>(
    values: &[f64],
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    let data: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}
