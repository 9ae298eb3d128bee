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

/// `max |a − b|`, infinite where a difference is NaN (`f32::max` would drop it, and a
/// kernel writing NaN, or leaving a buffer unwritten, would pass).
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

/// The largest magnitude in `v`, at least 1: the scale of a relative tolerance (f32
/// results summed in another order differ by a few ulps of it).
pub fn magnitude(v: &[f32]) -> f32 {
    v.iter().fold(1.0f32, |m, x| m.max(x.abs()))
}

#[test]
fn a_nan_is_an_infinite_difference() {
    assert_eq!(max_diff(&[1.0, f32::NAN], &[1.0, 2.0]), f32::INFINITY);
    assert_eq!(max_diff(&[1.0, 2.5], &[1.0, 2.0]), 0.5);
}

/// The wgpu device (Mesa's software Vulkan where there is no GPU), initialised once per
/// test binary; a clear failure where no adapter exists.
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> burn::tensor::Device {
    use std::sync::OnceLock;
    static WGPU: OnceLock<burn::tensor::Device> = OnceLock::new();
    WGPU.get_or_init(|| {
        burn::tensor::Device::wgpu_options()
            .init_with_setup()
            .map(|(device, _)| device)
            .expect("a wgpu adapter (apt-get install mesa-vulkan-drivers for a software one)")
    })
    .clone()
}

/// Serialises the tests that draw from flex's random generator, which is process-wide:
/// a test that seeds it and expects the same numbers from two draws
/// (`block::tests::flat_pieces_tile_the_parameter`) fails when another test draws in
/// between, as the test runner's threads do. Every test drawing on flex holds this.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
