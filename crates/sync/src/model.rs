//! Running loom models (only under `--cfg loom`): the one helper every crate's
//! `tests/loom.rs` uses.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Runs `f` under loom's model checker with a preemption bound (`LOOM_MAX_PREEMPTIONS`, or 2)
/// and reports on stderr how many interleavings were explored and how long it took.
///
/// # Panics
///
/// If `f` panics in any interleaving (that is how a model reports a violation).
pub fn run_model(name: &'static str, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    let iterations = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&iterations);
    let start = Instant::now();
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f();
    });
    std::eprintln!(
        "loom model {name}: {} interleavings in {:.2?} (preemption bound {:?})",
        iterations.load(Ordering::Relaxed),
        start.elapsed(),
        builder.preemption_bound,
    );
}
