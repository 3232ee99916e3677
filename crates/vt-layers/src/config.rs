//! Configuration of one VT module (`VisualTransformer`), field for field the reference's
//! `VTConfig` (the PyTorch reference, `benches/peer/reference/vt_reference.py`), with typed choices instead of strings.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// Static, Eq. (1): coefficients from a learned 1x1 conv.
    Filter,
    /// Dynamic, Eq. (2): coefficients from the previous VT's tokens.
    Recurrent,
    /// Table 3 ablation: bilinear downsampling to an L-cell grid.
    Pooling,
    /// Table 3 ablation: k-means centroids replace the filter.
    Clustering,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecurrentMode {
    /// Appendix pseudo-code: recompute L/2 tokens from the first L/2, keep the other half.
    Half,
    /// ICCV Eq. (2): recompute all L tokens (the presets).
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSide {
    /// `T = W_V (X A)`: pool first, then project (the presets; fewer MACs).
    Token,
    /// `T = (W_V X) A`: the literal pseudo-code order. Equal in exact arithmetic.
    Pixel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Transformer,
    /// Table 5 ablation: `T + ReLU(T A + b)` with a learned L×L mixing.
    #[serde(rename = "graphconv")]
    GraphConv,
    /// Table 5 ablation: tokens pass unchanged.
    None,
}

/// One VT module: tokenizer → relation (transformer) → projector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VtConfig {
    pub in_channels: usize,
    /// Projector output channels (a conv+BN lateral is added when they differ from the input).
    pub out_channels: usize,
    pub token_channels: usize,
    pub num_tokens: usize,
    pub heads: usize,
    pub tokenizer: TokenizerKind,
    pub tokenizer_groups: usize,
    pub recurrent_mode: RecurrentMode,
    pub value_side: ValueSide,
    /// Channels of the pooled values; `None` means `token_channels` (reference Decision 3).
    pub value_channels: Option<usize>,
    pub pos_encoding: bool,
    pub pos_size: usize,
    pub pos_downsample: usize,
    pub kmeans_iters: usize,
    pub relation: Relation,
    pub transformer_groups: usize,
    /// Key/query channels of the transformer; `None` means `token_channels / 2`.
    pub kq_channels: Option<usize>,
    pub projector: bool,
    pub projector_groups: usize,
    /// The literal single-head Eq. (1)-(5): C_T = C, no biases, no groups, no scaling.
    pub paper_eq: bool,
    pub bias: bool,
}

impl VtConfig {
    /// The reference class defaults (`VTConfig(in, out)`: the pseudo-code form, half
    /// recurrence, transformer groups 8).
    pub fn pseudo_code(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            token_channels: 1024,
            num_tokens: 16,
            heads: 16,
            tokenizer: TokenizerKind::Filter,
            tokenizer_groups: 16,
            recurrent_mode: RecurrentMode::Half,
            value_side: ValueSide::Token,
            value_channels: None,
            pos_encoding: true,
            pos_size: 14,
            pos_downsample: 1,
            kmeans_iters: 3,
            relation: Relation::Transformer,
            transformer_groups: 8,
            kq_channels: None,
            projector: true,
            projector_groups: 16,
            paper_eq: false,
            bias: true,
        }
    }

    /// The configuration of the VT-ResNet presets (docs/decisions.md, Decision 19): full recurrence,
    /// transformer groups 4, everything else as the pseudo-code.
    pub fn preset(in_channels: usize, out_channels: usize) -> Self {
        Self {
            recurrent_mode: RecurrentMode::Full,
            transformer_groups: 4,
            ..Self::pseudo_code(in_channels, out_channels)
        }
    }

    /// Channels of the tokens this module produces.
    pub fn effective_token_channels(&self) -> usize {
        if self.paper_eq {
            self.in_channels
        } else {
            self.token_channels
        }
    }

    /// Channels of the feature map this module outputs.
    pub fn effective_out_channels(&self) -> usize {
        if self.projector {
            self.out_channels
        } else {
            self.in_channels
        }
    }
}
