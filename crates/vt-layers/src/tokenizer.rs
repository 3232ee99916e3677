//! Tokenizers: feature map `(N, C, H, W)` → visual tokens `(N, C_T, L)`.
//!
//! Filter, recurrent and clustering tokenizers compute token coefficients `A (N, h_c, HW, L')`
//! (softmax over the pixels) and share one tail ([`TokenTail`]): pool the values with `A`, append
//! the position encoding, apply the token conv. The pooling tokenizer is a fixed bilinear grid.

use crate::config::{RecurrentMode, TokenizerKind, ValueSide, VtConfig};
use crate::position::PositionEncoder;
use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use vt_ops::resize::bilinear_matrix;
use vt_ops::{attend, attention_weights, softmax, Conv1x1, Cost};

/// Shared tail: `T = token_conv([W_V pool(X, A) ; P(A)])`.
#[derive(Clone, Debug)]
pub struct TokenTail {
    value: Conv1x1,
    pos: Option<PositionEncoder>,
    token: Conv1x1,
    value_side: ValueSide,
}

impl TokenTail {
    fn new(cfg: &VtConfig, coef_heads: usize, vb: &VarBuilder) -> Result<Self> {
        let (c, ct) = (cfg.in_channels, cfg.token_channels);
        let cv = cfg.value_channels.unwrap_or(ct);
        let value = Conv1x1::new(c, cv, cfg.tokenizer_groups, cfg.bias, vb.pp("value"))?;
        let pos = if cfg.pos_encoding {
            Some(PositionEncoder::new(
                coef_heads,
                cfg.pos_size,
                cfg.pos_downsample,
                cfg.bias,
                vb.pp("pos"),
            )?)
        } else {
            None
        };
        let cp = pos.as_ref().map_or(0, |p| p.pos_dim());
        let token = Conv1x1::new(cv + cp, ct, 1, cfg.bias, vb.pp("token"))?;
        Ok(Self {
            value,
            pos,
            token,
            value_side: cfg.value_side,
        })
    }

    /// `xf (N, C, HW)`, `coef (N, h_c, HW, L')` → pooled values `(N, C_v, L')`.
    fn pool(&self, xf: &Tensor, coef: &Tensor) -> Result<Tensor> {
        match self.value_side {
            ValueSide::Pixel => attend(&self.value.forward(xf)?, coef),
            // head k pools its own input-channel block (groups % heads == 0 keeps heads apart)
            ValueSide::Token => self.value.forward(&attend(xf, coef)?),
        }
    }

    fn finish(&self, xf: &Tensor, coef: &Tensor, hw: (usize, usize)) -> Result<Tensor> {
        let pooled = self.pool(xf, coef)?;
        let pooled = match &self.pos {
            Some(p) => Tensor::cat(&[&pooled, &p.forward(coef, hw)?], 1)?,
            None => pooled,
        };
        self.token.forward(&pooled)
    }

    fn cost(&self, c: usize, hw: usize, lq: usize) -> Cost {
        let cv = self.value.out_channels();
        let pool = match self.value_side {
            ValueSide::Token => Cost::macs(hw * lq * c) + self.value.cost(lq),
            ValueSide::Pixel => self.value.cost(hw) + Cost::macs(hw * lq * cv),
        };
        pool + self.pos.as_ref().map_or(Cost::ZERO, |p| p.cost(lq)) + self.token.cost(lq)
    }
}

/// Static tokenizer, Eq. (1): `A = softmax_HW(W_A X / √C)`.
#[derive(Clone, Debug)]
pub struct FilterTokenizer {
    coef: Conv1x1,
    tail: Option<TokenTail>,
    channels: usize,
}

impl FilterTokenizer {
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Self> {
        let (c, l) = (cfg.in_channels, cfg.num_tokens);
        if cfg.paper_eq {
            return Ok(Self {
                coef: Conv1x1::new(c, l, 1, false, vb.pp("coef"))?,
                tail: None,
                channels: c,
            });
        }
        let coef = Conv1x1::new(c, l, 1, cfg.bias, vb.pp("coef"))?;
        Ok(Self {
            coef,
            tail: Some(TokenTail::new(cfg, 1, &vb)?),
            channels: c,
        })
    }

    /// Token coefficients `(N, 1, HW, L)` of a flattened map `(N, C, HW)`: per token a softmax
    /// over the pixels of `s·(W_A x + b)`. `b_l` is the same for every pixel and cancels (its
    /// gradient is zero), so this is one head of attention with the `L` filters as queries
    /// and the pixels as keys: one op, no `(N, L, HW)` logits to transpose.
    pub fn coefficients(&self, xf: &Tensor) -> Result<Tensor> {
        let scale = match self.tail {
            Some(_) => 1.0 / (self.channels as f64).sqrt(),
            None => 1.0,
        };
        let (n, c, _) = xf.dims3()?;
        let filters = self.coef.weight().squeeze(2)?.t()?; // (C, L)
        let queries = filters
            .unsqueeze(0)?
            .broadcast_as((n, c, filters.dim(1)?))?
            .contiguous()?;
        attention_weights(&queries, xf, 1, scale)
    }

    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, _, h, w) = x.dims4()?;
        let xf = x.flatten_from(2)?;
        let coef = self.coefficients(&xf)?;
        let tokens = match &self.tail {
            None => xf.matmul(&coef.squeeze(1)?)?,
            Some(t) => t.finish(&xf, &coef, (h, w))?,
        };
        Ok((tokens, coef))
    }

    pub fn cost(&self, hw: usize, l: usize) -> Cost {
        let c = self.coef.cost(hw);
        match &self.tail {
            None => c + Cost::macs(hw * self.channels * l),
            Some(t) => c + t.cost(self.channels, hw, l),
        }
    }
}

/// Dynamic tokenizer, Eq. (2): queries from the previous tokens, keys from the pixels,
/// `A_h = softmax_HW(k_hᵀ q_h / √(C/h))` per head.
#[derive(Clone, Debug)]
pub struct RecurrentTokenizer {
    query: Conv1x1,
    key: Option<Conv1x1>,
    tail: Option<TokenTail>,
    mode: RecurrentMode,
    heads: usize,
    channels: usize,
}

impl RecurrentTokenizer {
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Self> {
        let (c, ct, h) = (cfg.in_channels, cfg.token_channels, cfg.heads);
        if cfg.paper_eq {
            let query = Conv1x1::new(c, c, 1, false, vb.pp("query"))?;
            return Ok(Self {
                query,
                key: None,
                tail: None,
                mode: RecurrentMode::Full,
                heads: 1,
                channels: c,
            });
        }
        if c % h != 0 {
            bail!(
                "recurrent tokenizer {}: in_channels {c} not divisible by heads {h}",
                vb.prefix()
            );
        }
        if cfg.value_side == ValueSide::Token && cfg.tokenizer_groups % h != 0 {
            bail!(
                "recurrent tokenizer {}: value_side=token needs tokenizer_groups ({}) divisible by heads ({h})",
                vb.prefix(),
                cfg.tokenizer_groups
            );
        }
        if cfg.recurrent_mode == RecurrentMode::Half && cfg.num_tokens % 2 != 0 {
            bail!(
                "recurrent tokenizer {}: half mode needs an even number of tokens, got {}",
                vb.prefix(),
                cfg.num_tokens
            );
        }
        let query = Conv1x1::new(ct, c, 1, cfg.bias, vb.pp("query"))?;
        let key = Conv1x1::new(c, c, cfg.tokenizer_groups, cfg.bias, vb.pp("key"))?;
        let tail = TokenTail::new(cfg, h, &vb)?;
        Ok(Self {
            query,
            key: Some(key),
            tail: Some(tail),
            mode: cfg.recurrent_mode,
            heads: h,
            channels: c,
        })
    }

    pub fn forward(&self, x: &Tensor, tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, c, h, w) = x.dims4()?;
        let xf = x.flatten_from(2)?;
        let (Some(key), Some(tail)) = (&self.key, &self.tail) else {
            // paper_eq: W_R = T_in W_{T→R}; A = softmax_HW(X W_Rᵀ); T = Aᵀ X
            let wr = self.query.forward(tokens)?;
            let coef = softmax(&xf.transpose(1, 2)?.matmul(&wr)?, 1)?.unsqueeze(1)?;
            return Ok((xf.matmul(&coef.squeeze(1)?)?, coef));
        };
        let l = tokens.dim(2)?;
        let (t_a, t_b) = match self.mode {
            RecurrentMode::Full => (tokens.clone(), None),
            RecurrentMode::Half => (
                tokens.narrow(2, 0, l / 2)?,
                Some(tokens.narrow(2, l / 2, l - l / 2)?),
            ),
        };
        let hd = self.heads;
        let q = self.query.forward(&t_a.contiguous()?)?;
        let scale = 1.0 / ((c / hd) as f64).sqrt();
        // Per head (W_k x + b)ᵀ q = xᵀ (W_kᵀ q) + bᵀq: with the key conv's groups inside the
        // heads, its weight moves onto the L tokens instead of the HW pixels, and bᵀq, the same
        // for every pixel, cancels in the softmax over them (so the key bias has no gradient;
        // the reference's is zero up to rounding). `cost` still counts the reference's form.
        let coef = if key.groups() % hd == 0 {
            attention_weights(&key.transposed(&q)?, &xf, hd, scale)?
        } else {
            attention_weights(&q, &key.forward(&xf)?, hd, scale)?
        };
        let new = tail.finish(&xf, &coef, (h, w))?;
        let out = match t_b {
            Some(b) => Tensor::cat(&[&b, &new], 2)?,
            None => new,
        };
        Ok((out, coef))
    }

    pub fn cost(&self, hw: usize, l: usize) -> Cost {
        let c = self.channels;
        match (&self.key, &self.tail) {
            (Some(key), Some(tail)) => {
                let lq = if self.mode == RecurrentMode::Half {
                    l / 2
                } else {
                    l
                };
                self.query.cost(lq) + key.cost(hw) + Cost::macs(hw * lq * c) + tail.cost(c, hw, lq)
            }
            _ => self.query.cost(l) + Cost::macs(2 * hw * c * l),
        }
    }
}

/// Table 3 ablation: tokens = `W (X B)`, B the fixed bilinear (HW × L) grid matrix.
#[derive(Clone, Debug)]
pub struct PoolingTokenizer {
    token: Conv1x1,
    num_tokens: usize,
}

impl PoolingTokenizer {
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Self> {
        let token = Conv1x1::new(
            cfg.in_channels,
            cfg.token_channels,
            1,
            cfg.bias,
            vb.pp("token"),
        )?;
        Ok(Self {
            token,
            num_tokens: cfg.num_tokens,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let b = bilinear_matrix(h, w, self.num_tokens, x)?;
        self.token
            .forward(&x.flatten_from(2)?.broadcast_matmul(&b)?)
    }

    pub fn cost(&self) -> Cost {
        self.token.cost(self.num_tokens)
    }
}

/// Table 3 ablation (Appendix C): k-means centroids `U` (no gradient) replace the filter:
/// `A = softmax_HW(Xᵀ U / √C)`, then the filter tokenizer's tail.
#[derive(Clone, Debug)]
pub struct ClusteringTokenizer {
    tail: TokenTail,
    channels: usize,
    num_tokens: usize,
    iters: usize,
}

fn normalize_columns(m: &mut [f64], rows: usize, cols: usize) {
    for j in 0..cols {
        let norm = (0..rows)
            .map(|i| m[i * cols + j] * m[i * cols + j])
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        for i in 0..rows {
            m[i * cols + j] /= norm;
        }
    }
}

impl ClusteringTokenizer {
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            tail: TokenTail::new(cfg, 1, &vb)?,
            channels: cfg.in_channels,
            num_tokens: cfg.num_tokens,
            iters: cfg.kmeans_iters,
        })
    }

    /// Unit-norm centroids `(N, C, L)`: bilinear-grid init, then Lloyd steps on cosine
    /// similarity (ties → lowest index; an empty cluster keeps its centroid). Runs in f64 on
    /// the host, outside the autograd graph.
    pub fn kmeans(&self, xf: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (n, c, hw) = xf.dims3()?;
        let l = self.num_tokens;
        let xd = xf.detach().to_dtype(DType::F64)?;
        let init = xd.broadcast_matmul(&bilinear_matrix(h, w, l, &xd)?)?;
        let xs = xd
            .to_device(&candle_core::Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let us = init
            .to_device(&candle_core::Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let mut out = Vec::with_capacity(n * c * l);
        for s in 0..n {
            let mut x = xs[s * c * hw..(s + 1) * c * hw].to_vec();
            let mut u = us[s * c * l..(s + 1) * c * l].to_vec();
            normalize_columns(&mut u, c, l);
            normalize_columns(&mut x, c, hw);
            for _ in 0..self.iters {
                let mut sum = vec![0.0; c * l];
                let mut count = vec![0usize; l];
                for p in 0..hw {
                    let (mut best, mut best_sim) = (0, f64::NEG_INFINITY);
                    for j in 0..l {
                        let sim: f64 = (0..c).map(|i| x[i * hw + p] * u[i * l + j]).sum();
                        if sim > best_sim {
                            (best, best_sim) = (j, sim);
                        }
                    }
                    count[best] += 1;
                    for i in 0..c {
                        sum[i * l + best] += x[i * hw + p];
                    }
                }
                let mut mean = sum;
                normalize_columns(&mut mean, c, l);
                for j in 0..l {
                    if count[j] > 0 {
                        for i in 0..c {
                            u[i * l + j] = mean[i * l + j];
                        }
                    }
                }
            }
            out.extend_from_slice(&u);
        }
        Tensor::from_vec(out, (n, c, l), xf.device())?.to_dtype(xf.dtype())
    }

    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, c, h, w) = x.dims4()?;
        let xf = x.flatten_from(2)?;
        let u = self.kmeans(&xf, h, w)?;
        // softmax over the pixels of xᵀu: the centroids as queries, as the filter tokenizer's
        let coef = attention_weights(&u, &xf, 1, 1.0 / (c as f64).sqrt())?;
        Ok((self.tail.finish(&xf, &coef, (h, w))?, coef))
    }

    pub fn cost(&self, hw: usize) -> Cost {
        let (c, l) = (self.channels, self.num_tokens);
        Cost::macs(2 * self.iters * hw * l * c + hw * c * l) + self.tail.cost(c, hw, l)
    }
}

/// Any tokenizer, chosen by [`TokenizerKind`].
#[derive(Clone, Debug)]
pub enum Tokenizer {
    Filter(FilterTokenizer),
    Recurrent(RecurrentTokenizer),
    Pooling(PoolingTokenizer),
    Clustering(ClusteringTokenizer),
}

impl Tokenizer {
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match cfg.tokenizer {
            TokenizerKind::Filter => Self::Filter(FilterTokenizer::new(cfg, vb)?),
            TokenizerKind::Recurrent => Self::Recurrent(RecurrentTokenizer::new(cfg, vb)?),
            TokenizerKind::Pooling => Self::Pooling(PoolingTokenizer::new(cfg, vb)?),
            TokenizerKind::Clustering => Self::Clustering(ClusteringTokenizer::new(cfg, vb)?),
        })
    }

    /// Tokens `(N, C_T, L)` and, except for pooling, the coefficients `(N, h_c, HW, L')`.
    pub fn forward(&self, x: &Tensor, tokens: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        Ok(match self {
            Self::Filter(t) => {
                let (t, a) = t.forward(x)?;
                (t, Some(a))
            }
            Self::Recurrent(t) => {
                let Some(prev) = tokens else {
                    bail!("a recurrent tokenizer needs the previous VT module's tokens; it cannot be the first VT module")
                };
                let (t, a) = t.forward(x, prev)?;
                (t, Some(a))
            }
            Self::Pooling(t) => (t.forward(x)?, None),
            Self::Clustering(t) => {
                let (t, a) = t.forward(x)?;
                (t, Some(a))
            }
        })
    }

    pub fn cost(&self, h: usize, w: usize, num_tokens: usize) -> Cost {
        match self {
            Self::Filter(t) => t.cost(h * w, num_tokens),
            Self::Recurrent(t) => t.cost(h * w, num_tokens),
            Self::Pooling(t) => t.cost(),
            Self::Clustering(t) => t.cost(h * w),
        }
    }
}
