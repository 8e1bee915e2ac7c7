//! Compute precision of the SPLADE networks. burn has no autocast: low precision means running a
//! network on a cast of its f32 parameters. Under autodiff the cast stays in the graph, so the
//! f32 parameters (master weights) receive f32 gradients.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{FloatDType, Tensor};

use super::network::{MlmEncoder, PoolingKind};

crate::param_choice! {
    /// `F32` everywhere, or `Bf16` compute (activations and the cast weights in bf16; what is
    /// trained, stored and returned stays f32). The stages' `precision` param.
    #[derive(Default)]
    pub enum Precision {
        /// Full precision.
        #[default]
        F32 = "f32",
        /// bf16 compute on f32 master weights.
        Bf16 = "bf16",
    }
}

/// Casts every float parameter, keeping its id and its place in the autodiff graph.
struct CastParams(FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// `model` with its float parameters cast for `precision` (unchanged for `F32`).
pub fn cast_for(model: MlmEncoder, precision: Precision) -> MlmEncoder {
    match precision {
        Precision::F32 => model,
        Precision::Bf16 => model.map(&mut CastParams(FloatDType::BF16)),
    }
}

/// SPLADE representations (f32) of `model` already cast by [`cast_for`] to `precision`.
pub fn splade_in(
    model: &MlmEncoder,
    precision: Precision,
    ids: Tensor<2, burn::tensor::Int>,
    mask: Tensor<2>,
    pooling: PoolingKind,
    chunk: usize,
) -> Tensor<2> {
    match precision {
        Precision::F32 => model.splade(ids, mask, pooling, chunk),
        Precision::Bf16 => model
            .splade(ids, mask.cast(FloatDType::BF16), pooling, chunk)
            .cast(FloatDType::F32),
    }
}
