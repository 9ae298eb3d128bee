//! Helpers shared by the unit tests of this crate.

use burn::module::{ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

/// Every float parameter's gradient in `grads`, in a module's visiting order.
pub struct GradsOf<'a>(pub &'a Gradients, pub Vec<Vec<f32>>);

impl ModuleVisitor for GradsOf<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let g = param
            .val()
            .grad(self.0)
            .expect("a gradient for every parameter");
        self.1.push(g.into_data().try_to_vec::<f32>().unwrap());
    }
}

/// `max |a − b|`.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
