//! Projector: writes the tokens back into the feature map (Eq. 5 / pseudo-code).

use crate::config::VtConfig;
use candle_core::{bail, Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use vt_ops::{
    attend, attention_weights, attention_weights_with_key_bias, softmax, BatchNorm, Conv1x1, Cost,
};

/// Residual-path channel change: `Conv1d(C_in, C_out, 1, bias=False)` + `BatchNorm1d(C_out)`.
#[derive(Clone, Debug)]
pub struct Lateral {
    conv: Conv1x1,
    bn: BatchNorm,
}

impl Lateral {
    pub fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv1x1::new(cin, cout, 1, false, vb.pp("conv"))?,
            bn: BatchNorm::new(cout, vb.pp("bn"))?,
        })
    }

    pub fn forward_t(&self, xf: &Tensor, train: bool) -> Result<Tensor> {
        match train {
            true => self.bn.forward_t(&self.conv.forward(xf)?, train),
            false => self.conv.forward_folded(xf, &self.bn),
        }
    }
}

/// Default: `q` = grouped conv C_in → C_in on pixels, `k` = conv C_T → C_in, `v` = conv
/// C_T → C_out; per head `S = softmax_over_L(q_p · k_l / √(C_in/h))`; `X_out = lateral(X) + V Sᵀ`.
/// `paper_eq`: `X_out = X + softmax_L((X W_Q)(T W_K)ᵀ) T`.
#[derive(Clone, Debug)]
pub struct Projector {
    query: Conv1x1,
    key: Conv1x1,
    value: Option<Conv1x1>,
    lateral: Option<Lateral>,
    heads: usize,
    cin: usize,
    cout: usize,
}

impl Projector {
    pub fn new(cfg: &VtConfig, vb: VarBuilder) -> Result<Self> {
        let (c, co, ct, h) = (
            cfg.in_channels,
            cfg.out_channels,
            cfg.effective_token_channels(),
            cfg.heads,
        );
        if cfg.paper_eq {
            if c != co {
                bail!(
                    "paper_eq projector {} needs in_channels == out_channels, got {c} and {co}",
                    vb.prefix()
                );
            }
            return Ok(Self {
                query: Conv1x1::new(c, c, 1, false, vb.pp("query"))?,
                key: Conv1x1::new(ct, c, 1, false, vb.pp("key"))?,
                value: None,
                lateral: None,
                heads: 1,
                cin: c,
                cout: c,
            });
        }
        if c % h != 0 || co % h != 0 {
            bail!(
                "projector {}: channels {c} -> {co} must be divisible by heads {h}",
                vb.prefix()
            );
        }
        Ok(Self {
            query: Conv1x1::new(c, c, cfg.projector_groups, cfg.bias, vb.pp("query"))?,
            key: Conv1x1::new(ct, c, 1, cfg.bias, vb.pp("key"))?,
            value: Some(Conv1x1::new(ct, co, 1, cfg.bias, vb.pp("value"))?),
            lateral: if co != c {
                Some(Lateral::new(c, co, vb.pp("lateral"))?)
            } else {
                None
            },
            heads: h,
            cin: c,
            cout: co,
        })
    }

    pub fn forward_t(&self, x: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
        let (res, out) = self.forward_parts(x, t, train)?;
        self.combine(&res, &out, x)
    }

    /// The residual path (`lateral(X)` or `X`) and the attention output, both `(N, C_out, HW)`,
    /// whose sum is the projector's output (stochastic depth drops the second).
    pub fn forward_parts(&self, x: &Tensor, t: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let c = x.dim(1)?;
        let xf = x.flatten_from(2)?;
        let Some(value) = &self.value else {
            let s = softmax(
                &self
                    .query
                    .forward(&xf)?
                    .transpose(1, 2)?
                    .matmul(&self.key.forward(t)?)?,
                2,
            )?;
            return Ok((xf, t.matmul(&s.transpose(1, 2)?)?));
        };
        let (h, scale) = (self.heads, 1.0 / ((c / self.heads) as f64).sqrt());
        let k = self.key.forward(t)?;
        // (N, h, L, HW). Per head (W_q x + b)ᵀ k = xᵀ (W_qᵀ k) + bᵀk: with the query conv's
        // groups inside the heads, its weight moves onto the L tokens instead of the HW pixels
        // (the same function, fewer MACs; `cost` still counts the reference's form).
        let s = if self.query.groups() % h == 0 {
            let moved = self.query.transposed(&k)?;
            match self.query.bias() {
                Some(b) => {
                    let (n, l) = (k.dim(0)?, k.dim(2)?);
                    let bias = k
                        .broadcast_mul(&b.reshape((1, c, 1))?)?
                        .reshape((n, h, c / h, l))?
                        .sum(2)?;
                    attention_weights_with_key_bias(&xf, &moved, &bias, h, scale)?
                }
                None => attention_weights(&xf, &moved, h, scale)?,
            }
        } else {
            attention_weights(&self.query.forward(&xf)?, &k, h, scale)?
        };
        let out = attend(&value.forward(t)?, &s)?;
        let res = match &self.lateral {
            Some(lat) => lat.forward_t(&xf, train)?,
            None => xf,
        };
        Ok((res, out))
    }

    /// `res + out` as a feature map shaped like `x` with the output channels.
    pub fn combine(&self, res: &Tensor, out: &Tensor, x: &Tensor) -> Result<Tensor> {
        let (n, _, hh, ww) = x.dims4()?;
        (res + out)?.reshape((n, self.cout, hh, ww))
    }

    pub fn cost(&self, hw: usize, l: usize) -> Cost {
        let convs = self.query.cost(hw)
            + self.key.cost(l)
            + self.value.as_ref().map_or(Cost::ZERO, |v| v.cost(l));
        let lateral = self
            .lateral
            .as_ref()
            .map_or(Cost::ZERO, |lat| lat.conv.cost(hw));
        convs + lateral + Cost::macs(hw * l * self.cin + hw * l * self.cout)
    }
}
