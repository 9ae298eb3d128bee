//! Lattice actions.
//!
//! An action is the negative log of an unnormalised density, `p(x) = e^{−S(x)}/Z`.
//!
//! - [`Action`] evaluates `S` on a batch of fields, a burn tensor `[batch, channels, rows,
//!   cols]` → `[batch]`, and its gradient `∂S/∂x` of the field's shape. This is what flows
//!   train on and what gradient-based samplers (boundary HMC) use on any backend.
//! - [`HostAction`] evaluates `S` and `∂S/∂x` on one configuration held on the host in
//!   `f64`, laid out like the tensor (`channel·V + site`): the baselines' fast path.
//! - [`with_analytic_gradient`] is `S` for training, its backward pass `∂S/∂x` itself
//!   rather than the adjoint of `S`'s expression.
//!
//! Implementations live in `nrg-lattice`; each is tested there against autodiff and
//! against the other form.

use crate::lattice::OnLattice;
use burn::tensor::{Device, Tensor};

/// A batched lattice action on burn tensors; its field space comes from [`OnLattice`].
pub trait Action: OnLattice + Send + Sync {
    /// `S(x)` for every configuration: `[batch, channels, rows, cols] → [batch]`.
    fn action(&self, x: Tensor<4>) -> Tensor<1>;

    /// `∂S/∂x`, same shape as `x`. Training differentiates `S` through it
    /// ([`with_analytic_gradient`]), so it must be the exact gradient of
    /// [`Action::action`] (the built-in actions test it against autodiff).
    fn grad(&self, x: Tensor<4>) -> Tensor<4>;

    /// `(S(x), ∂S/∂x)` together; an action whose value and gradient share work (the
    /// neighbour sum of a hopping term, a matrix product) computes it once. Equal to
    /// `(action(x), grad(x))` up to f32 rounding; training takes its gradient as `S`'s
    /// ([`with_analytic_gradient`]), so an override must keep the two consistent.
    fn action_and_grad(&self, x: Tensor<4>) -> (Tensor<1>, Tensor<4>) {
        (self.action(x.clone()), self.grad(x))
    }

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

/// `S(x)` `[batch]` whose gradient is the action's own analytic `∂S/∂x`, for training on an
/// autodiff device: the value and `∂S/∂x` ([`Action::action_and_grad`]) are computed on an
/// untracked copy of the field (recording nothing) and attached by one product,
///
/// ```text
/// S̃(x) = S(x̄) + Σ_{c,i,j} (x − x̄) ⊙ ∂S/∂x(x̄),   x̄ = x untracked,
/// ```
///
/// which equals `action_and_grad`'s `S(x̄)` exactly (`x − x̄ = 0`; that value may differ
/// from [`Action::action`]'s by f32 rounding) and has the gradient `∂S/∂x(x)`. The
/// backward pass then runs that product's adjoint instead of the whole expression of `S`
/// (for φ⁴ the rolls, products and sums of the hopping term and the potential): on a GPU,
/// where each operation of the backward pass is a kernel launch, a few launches instead
/// of dozens. Only for actions whose gradient is right (the built-in ones are tested
/// against autodiff): the gradient of `S̃` is whatever `action_and_grad` returns.
pub fn with_analytic_gradient<A: Action + ?Sized>(action: &A, x: Tensor<4>) -> Tensor<1> {
    // Not `detach`: that keeps a leaf's `require_grad`, and `S`'s expression would be
    // recorded on it.
    let fixed = x.clone().set_require_grad(false);
    let (value, grad) = action.action_and_grad(fixed.clone());
    value + crate::batch::sum_per_sample((x - fixed) * grad)
}

/// A lattice action on one configuration in `f64` (`field[channel·V + site]`); its field
/// space comes from [`OnLattice`].
pub trait HostAction: OnLattice {
    /// `S(field)`.
    fn action_host(&self, field: &[f64]) -> f64;

    /// Writes `∂S/∂field` into `grad` (same length as `field`).
    fn grad_host(&self, field: &[f64], grad: &mut [f64]);
}
