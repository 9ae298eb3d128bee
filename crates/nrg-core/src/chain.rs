//! Markov chains.
//!
//! A [`MarkovChain`] owns its state and its seeded random number generator, so that a chain
//! built with the same parameters and seed reproduces the same sequence of states.

/// A Markov chain whose every update leaves the target distribution invariant.
pub trait MarkovChain {
    /// One update (a sweep, a cluster flip, an HMC trajectory). Returns the fraction of
    /// proposals accepted in it (the cluster size fraction for cluster updates).
    fn update(&mut self) -> f64;

    /// A short name of the update ("metropolis", "wolff", "hmc", …).
    fn algorithm(&self) -> &'static str;
}
