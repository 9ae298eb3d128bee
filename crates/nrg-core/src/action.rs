//! Lattice actions.
//!
//! An action is the negative log of an unnormalised density, `p(x) = e^{−S(x)}/Z`.
//!
//! - [`Action`] evaluates `S` on a batch of fields, a burn tensor `[batch, channels, rows,
//!   cols]` → `[batch]`, and its gradient `∂S/∂x` of the field's shape. This is what flows
//!   train on and what gradient-based samplers (boundary HMC) use on any backend.
//! - [`HostAction`] evaluates `S` and `∂S/∂x` on one configuration held on the host in
//!   `f64`, laid out like the tensor (`channel·V + site`): the baselines' fast path.
//!
//! Implementations live in `nrg-lattice`; each is tested there against autodiff and
//! against the other form.

use crate::lattice::OnLattice;
use burn::tensor::{Device, Tensor};

/// A batched lattice action on burn tensors; its field space comes from [`OnLattice`].
pub trait Action: OnLattice + Send + Sync {
    /// `S(x)` for every configuration: `[batch, channels, rows, cols] → [batch]`.
    fn action(&self, x: Tensor<4>) -> Tensor<1>;

    /// `∂S/∂x`, same shape as `x`.
    fn grad(&self, x: Tensor<4>) -> Tensor<4>;

    /// `ln Z = ln ∫ dx e^{−S(x)}` when it is known exactly.
    fn exact_ln_z(&self) -> Option<f64> {
        None
    }

    /// A one-line description with the parameters.
    fn describe(&self) -> String;

    /// Rebuilds the action's constant tensors on `device` (e.g. to move it to an autodiff
    /// device).
    fn to_device(&self, device: &Device) -> Box<dyn Action>;
}

/// A lattice action on one configuration in `f64` (`field[channel·V + site]`); its field
/// space comes from [`OnLattice`].
pub trait HostAction: OnLattice {
    /// `S(field)`.
    fn action_host(&self, field: &[f64]) -> f64;

    /// Writes `∂S/∂field` into `grad` (same length as `field`).
    fn grad_host(&self, field: &[f64], grad: &mut [f64]);
}
