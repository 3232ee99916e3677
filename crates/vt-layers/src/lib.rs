//! # vt-layers
//!
//! The modules of *Visual Transformers* (Wu et al., 2020) for candle, parameter for parameter
//! the executable reference (`reference/vt_reference.py`): tokenizers (filter, recurrent,
//! pooling, clustering), position encoder, transformer (and the GraphConv / none ablations),
//! projector, and the [`VisualTransformer`] module that chains them. `paper_eq` switches to the
//! single-head Eq. (1)-(5).
//!
//! Layouts: feature maps NCHW, tokens `(N, C_T, L)`, coefficients `(N, h_c, HW, L')`. Every 1x1
//! conv is a (grouped) `Conv1d` with PyTorch's weight shape. Depends on `vt-ops` and candle only.
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use vt_layers::{VisualTransformer, VtConfig};
//! let store = vt_ops::VarStore::seeded(0, DType::F32, &Device::Cpu);
//! let vt = VisualTransformer::new(&VtConfig::preset(256, 512), store.var_builder().pp("vt"))?;
//! let x = Tensor::randn(0f32, 1., (2, 256, 14, 14), &Device::Cpu)?;
//! let (x, tokens) = vt.forward_t(&x, None, false)?; // (2, 512, 14, 14), (2, 1024, 16)
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod block;
pub mod config;
pub mod position;
pub mod projector;
pub mod relation;
pub mod tokenizer;

pub use block::{entropy, TokenAttention, VisualTransformer};
pub use config::{RecurrentMode, Relation, TokenizerKind, ValueSide, VtConfig};
pub use position::PositionEncoder;
pub use projector::{Lateral, Projector};
pub use relation::{GraphConv, TokenRelation, Transformer};
pub use tokenizer::{
    ClusteringTokenizer, FilterTokenizer, PoolingTokenizer, RecurrentTokenizer, Tokenizer,
};

/// The README's code blocks, compiled and run as doctests from the README itself (its Rust
/// example uses this crate), so the example a user copies cannot drift from the code.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
