//! The VT module: tokenizer → token relation → projector.

use crate::config::VtConfig;
use crate::projector::Projector;
use crate::relation::TokenRelation;
use crate::tokenizer::Tokenizer;
use candle_core::{bail, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use vt_ops::{Cost, DropPath, NoiseSource};

/// One VT module. `forward_t(x, tokens, train) -> (x_out, tokens_out)`: the tokens are the
/// relation stage's output (what the next recurrent tokenizer and the head read); without a
/// projector `x_out` is `x`.
#[derive(Clone, Debug)]
pub struct VisualTransformer {
    tokenizer: Tokenizer,
    transformer: Option<TokenRelation>,
    projector: Option<Projector>,
    /// Stochastic depth on the relation stage and on the projector's added output.
    drop_path: Option<(DropPath, DropPath)>,
    cfg: VtConfig,
}

impl VisualTransformer {
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.num_tokens == 0 || cfg.in_channels == 0 || cfg.token_channels == 0 || cfg.heads == 0
        {
            bail!(
                "VT module {}: channels, tokens and heads must be positive, got {cfg:?}",
                vb.prefix()
            );
        }
        Ok(Self {
            tokenizer: Tokenizer::new(cfg, vb.pp("tokenizer"))?,
            transformer: TokenRelation::new(cfg, vb.pp("transformer"))?,
            projector: if cfg.projector {
                Some(Projector::new(cfg, vb.pp("projector"))?)
            } else {
                None
            },
            drop_path: None,
            cfg: cfg.clone(),
        })
    }

    /// Adds stochastic depth with drop probability `p` to the module's two residual branches:
    /// the token relation (as one residual unit, `t + dp(rel(t) − t)`) and the projector's
    /// attention output (`lateral(X) + dp(out)`). Masks come from `noise` (the model's).
    pub fn with_drop_path(mut self, p: f64, name: &str, noise: &NoiseSource) -> Result<Self> {
        self.drop_path = if p > 0.0 {
            Some((
                DropPath::new(p, &format!("{name}.transformer"), noise)?,
                DropPath::new(p, &format!("{name}.projector"), noise)?,
            ))
        } else {
            None
        };
        Ok(self)
    }

    pub fn config(&self) -> &VtConfig {
        &self.cfg
    }

    pub fn forward_t(
        &self,
        x: &Tensor,
        tokens: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (x, t, _) = self.forward_attention(x, tokens, train)?;
        Ok((x, t))
    }

    /// [`Self::forward_t`] that also returns the tokenizer's spatial coefficients
    /// `(N, h_c, HW, L')` (softmax over HW; none for the pooling tokenizer): what each token
    /// attends to, for visualisation and the paper's §6 analysis.
    pub fn forward_attention(
        &self,
        x: &Tensor,
        tokens: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (t, coef) = self.tokens_and_coefficients(x, tokens, train)?;
        let dp = self.drop_path.as_ref().filter(|_| train);
        let x = match (&self.projector, dp) {
            (Some(p), Some((_, d))) => {
                let (res, out) = p.forward_parts(x, &t, train)?;
                p.combine(&res, &d.forward_t(&out, train)?, x)?
            }
            (Some(p), None) => p.forward_t(x, &t, train)?,
            (None, _) => x.clone(),
        };
        Ok((x, t, coef))
    }

    /// The module's output tokens alone: the tokenizer and the token relation, without the
    /// projector. What a reader of the tokens only (a classification head) needs.
    pub fn forward_tokens(
        &self,
        x: &Tensor,
        tokens: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        Ok(self.tokens_and_coefficients(x, tokens, train)?.0)
    }

    fn tokens_and_coefficients(
        &self,
        x: &Tensor,
        tokens: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let c = x.dim(1)?;
        if x.rank() != 4 || c != self.cfg.in_channels {
            bail!(
                "VT module expects (N, {}, H, W), got {:?}",
                self.cfg.in_channels,
                x.shape()
            );
        }
        let (mut t, coef) = self.tokenizer.forward(x, tokens)?;
        if let Some(rel) = &self.transformer {
            let out = rel.forward(&t)?;
            t = match self.drop_path.as_ref().filter(|_| train) {
                Some((d, _)) => (&t + d.forward_t(&(out - &t)?, train)?)?,
                None => out,
            };
        }
        Ok((t, coef))
    }

    /// MACs and parameters on an `h × w` input map.
    pub fn cost(&self, h: usize, w: usize) -> Cost {
        let l = self.cfg.num_tokens;
        self.tokenizer.cost(h, w, l)
            + self.transformer.as_ref().map_or(Cost::ZERO, |r| {
                r.cost(l, self.cfg.effective_token_channels())
            })
            + self
                .projector
                .as_ref()
                .map_or(Cost::ZERO, |p| p.cost(h * w, l))
    }
}

/// The spatial coefficients of one VT module's tokenizer on one input: `coef (N, h_c, HW, L)`,
/// a softmax over the `hw` map per head and token.
#[derive(Clone, Debug)]
pub struct TokenAttention {
    /// The module's parameter path (`vt.0`, `backbone.fpn.tokenizers.2`).
    pub module: String,
    pub coef: Tensor,
    /// (height, width) of the map the coefficients are over.
    pub hw: (usize, usize),
}

impl TokenAttention {
    /// Sample `n`'s maps, averaged over heads: one `H * W` distribution per token.
    pub fn maps(&self, n: usize) -> Result<Vec<Vec<f32>>> {
        let c = self.coef.get(n)?.to_dtype(candle_core::DType::F32)?; // (h_c, HW, L)
        let mean = c.mean(0)?.t()?.contiguous()?; // (L, HW)
        mean.to_vec2::<f32>()
    }

    /// Entropy (nats) of each of sample `n`'s token maps; a uniform map has `ln(H * W)`.
    pub fn entropies(&self, n: usize) -> Result<Vec<f64>> {
        Ok(self.maps(n)?.iter().map(|m| entropy(m)).collect())
    }

    /// `ln(H * W)`: the entropy of a token that attends to every position equally.
    pub fn uniform_entropy(&self) -> f64 {
        ((self.hw.0 * self.hw.1) as f64).ln()
    }
}

/// `-sum p ln p` of a distribution (zeros contribute nothing).
pub fn entropy(p: &[f32]) -> f64 {
    p.iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| -(v as f64) * (v as f64).ln())
        .sum()
}
