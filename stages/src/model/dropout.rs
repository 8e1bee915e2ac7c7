//! Dropout whose masks are a pure function of (seed, site, example) — never of thread timing or of
//! how the batch is split over devices.
//!
//! Backends keep one process-wide generator (flex's `SEED`, libtorch's `manual_seed`), so worker
//! threads drawing from it at once would each get masks that depend on who drew first. Here a
//! training step sets a [`DropoutScope`] on the thread that encodes a share of the global batch;
//! every dropout site then draws the mask of the **whole** global batch under one lock, from a
//! seed derived from the scope's seed and the site's index, and keeps the share's rows. One
//! device or four, pass 1 or pass 2 of a step: the same example gets the same mask. Outside a
//! scope (encoding, validation) dropout is off.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Mutex;

use burn::tensor::{Distribution, Shape, Tensor};

use crate::rng::splitmix64;

/// Where the tensors a thread computes sit in the global batch, and the seed of their masks.
#[derive(Debug, Clone)]
pub struct DropoutScope {
    /// Seed of this batch's masks (e.g. from the run seed, the micro-step and queries/docs).
    pub seed: u64,
    /// The rows this thread computes, within the global batch.
    pub rows: Range<usize>,
    /// Rows of the global batch.
    pub global_rows: usize,
    /// Dropout probability (0 = off).
    pub prob: f64,
}

struct Active {
    scope: DropoutScope,
    site: u64,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// Serialises seeding and drawing from the backends' process-wide generators.
static DRAW: Mutex<()> = Mutex::new(());

/// Runs `f` with dropout on under `scope` on this thread (sites numbered from 0), then off.
pub fn with_scope<T>(scope: DropoutScope, f: impl FnOnce() -> T) -> T {
    ACTIVE.with(|a| *a.borrow_mut() = Some(Active { scope, site: 0 }));
    let out = f();
    ACTIVE.with(|a| *a.borrow_mut() = None);
    out
}

/// `x` (`[rows, ...]`, the scope's rows) with dropout applied, or `x` itself outside a scope.
pub fn dropout<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let Some((scope, site)) = ACTIVE.with(|a| {
        a.borrow_mut().as_mut().map(|active| {
            active.site += 1;
            (active.scope.clone(), active.site)
        })
    }) else {
        return x;
    };
    if scope.prob <= 0.0 {
        return x;
    }
    let keep = 1.0 - scope.prob;
    let mut dims = x.dims();
    let rows = dims[0];
    dims[0] = scope.global_rows.max(scope.rows.end);
    let device = x.device();
    let mut seed = scope.seed ^ site.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let seed = splitmix64(&mut seed);
    let mask = {
        let _draw = DRAW.lock().unwrap_or_else(|e| e.into_inner());
        device.seed(seed);
        Tensor::<D>::random(Shape::from(dims), Distribution::Bernoulli(keep), &device)
    };
    let mask = mask.narrow(0, scope.rows.start, rows).cast(x.dtype());
    x * mask.div_scalar(keep)
}
