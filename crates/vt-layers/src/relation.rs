//! Token relation modules: the transformer of the VT module and its Table 5 ablations.

use crate::config::{Relation, VtConfig};
use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;
use vt_ops::{attend, attention_weights, softmax, Conv1x1, Cost};

/// Pseudo-code transformer (default) or Eq. (3)-(4) (`paper_eq`).
///
/// Default: k, q = grouped conv C_T → C_T/2, v = grouped conv C_T → C_T; per head
/// `S = softmax_over_keys(kᵀ q / √L)`; `T ← T + V S`; `T ← T + FF(T)` (dense, no ReLU, no norm).
/// `paper_eq`: `T' = T + softmax((T K)(T Q)ᵀ) T`; `T_out = T' + ReLU(T' F1) F2`, no bias/scale.
#[derive(Clone, Debug)]
pub struct Transformer {
    key: Conv1x1,
    query: Conv1x1,
    value: Option<Conv1x1>,
    ff: Conv1x1,
    ff2: Option<Conv1x1>,
    heads: usize,
    kq: usize,
    channels: usize,
}

impl Transformer {
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Self> {
        let ct = cfg.effective_token_channels();
        let kq = cfg.kq_channels.unwrap_or(ct / 2);
        if cfg.paper_eq {
            return Ok(Self {
                key: Conv1x1::new(ct, kq, 1, false, vb.pp("key"))?,
                query: Conv1x1::new(ct, kq, 1, false, vb.pp("query"))?,
                value: None,
                ff: Conv1x1::new(ct, ct, 1, false, vb.pp("ff1"))?,
                ff2: Some(Conv1x1::new(ct, ct, 1, false, vb.pp("ff2"))?),
                heads: 1,
                kq,
                channels: ct,
            });
        }
        let (h, g) = (cfg.heads, cfg.transformer_groups);
        if kq % h != 0 || ct % h != 0 {
            bail!(
                "transformer {}: channels {ct} and {kq} must be divisible by heads {h}",
                vb.prefix()
            );
        }
        Ok(Self {
            key: Conv1x1::new(ct, kq, g, cfg.bias, vb.pp("key"))?,
            query: Conv1x1::new(ct, kq, g, cfg.bias, vb.pp("query"))?,
            value: Some(Conv1x1::new(ct, ct, g, cfg.bias, vb.pp("value"))?),
            ff: Conv1x1::new(ct, ct, 1, cfg.bias, vb.pp("ff"))?,
            ff2: None,
            heads: h,
            kq,
            channels: ct,
        })
    }

    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let l = t.dim(2)?;
        let Some(value) = &self.value else {
            let a = self
                .key
                .forward(t)?
                .transpose(1, 2)?
                .matmul(&self.query.forward(t)?)?; // (N, L, L)
            let s = softmax(&a, 2)?;
            let t = (t + s.matmul(&t.transpose(1, 2)?)?.transpose(1, 2)?)?;
            let ff2 = self.ff2.as_ref().expect("paper_eq transformer has ff2");
            return &t + ff2.forward(&self.ff.forward(&t)?.relu()?)?;
        };
        let (q, k) = (self.query.forward(t)?, self.key.forward(t)?);
        let s = attention_weights(&q, &k, self.heads, 1.0 / (l as f64).sqrt())?; // (N, h, L_key, L_query)
        let t = (t + attend(&value.forward(t)?, &s)?)?;
        &t + self.ff.forward(&t)?
    }

    pub fn cost(&self, l: usize) -> Cost {
        let convs = self.key.cost(l)
            + self.query.cost(l)
            + self.value.as_ref().map_or(Cost::ZERO, |v| v.cost(l))
            + self.ff.cost(l)
            + self.ff2.as_ref().map_or(Cost::ZERO, |f| f.cost(l));
        convs + Cost::macs(l * l * self.kq + l * l * self.channels)
    }
}

/// Table 5 ablation: `T_out = T + ReLU(adj(Tᵀ))ᵀ`, a learned L×L token mixing with no channel
/// mixing, stored as `Conv1d(L, L, 1)` named `adj`.
#[derive(Clone, Debug)]
pub struct GraphConv {
    adj: Conv1x1,
}

impl GraphConv {
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            adj: Conv1x1::new(cfg.num_tokens, cfg.num_tokens, 1, cfg.bias, vb.pp("adj"))?,
        })
    }

    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let mixed = self
            .adj
            .forward(&t.transpose(1, 2)?.contiguous()?)?
            .relu()?;
        t + mixed.transpose(1, 2)?
    }

    pub fn cost(&self, token_channels: usize) -> Cost {
        self.adj.cost(token_channels)
    }
}

/// The relation stage of a VT module (`None` passes tokens through and has no struct).
#[derive(Clone, Debug)]
pub enum TokenRelation {
    Transformer(Transformer),
    GraphConv(GraphConv),
}

impl TokenRelation {
    /// Builds the relation of `cfg`; `Ok(None)` for `Relation::None`.
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Option<Self>> {
        Ok(match cfg.relation {
            Relation::Transformer => Some(Self::Transformer(Transformer::new(cfg, vb)?)),
            Relation::GraphConv => Some(Self::GraphConv(GraphConv::new(cfg, vb)?)),
            Relation::None => None,
        })
    }

    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        match self {
            Self::Transformer(m) => m.forward(t),
            Self::GraphConv(m) => m.forward(t),
        }
    }

    pub fn cost(&self, num_tokens: usize, token_channels: usize) -> Cost {
        match self {
            Self::Transformer(m) => m.cost(num_tokens),
            Self::GraphConv(m) => m.cost(token_channels),
        }
    }
}
