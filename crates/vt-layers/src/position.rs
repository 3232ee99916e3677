//! Position encoding of the token coefficients (early-arXiv feature, reference Decision 7).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use vt_ops::{Conv1x1, Conv2d, Conv2dConfig, Cost};

/// `P = proj(flatten(downsample(resize_nearest(A → size×size))))`, one C_P vector per token.
///
/// Input: coefficients `A` `(N, h_c, HW, L')` and the map size `(H, W)`. Output `(N, C_P, L')`
/// with `C_P = s'²`, where `s'` is `size` after `num_downsample` stride-2 3×3 convs (14 → 7: 49).
#[derive(Clone, Debug)]
pub struct PositionEncoder {
    size: usize,
    downsample: Vec<Conv2d>,
    proj: Conv1x1,
    pos_dim: usize,
    side: usize,
}

impl PositionEncoder {
    pub fn new(
        coef_heads: usize,
        size: usize,
        num_downsample: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut s = size;
        let mut downsample = Vec::with_capacity(num_downsample + 1);
        let dvb = vb.pp("downsample");
        let cfg = Conv2dConfig {
            stride: 2,
            padding: 1,
            bias,
            ..Default::default()
        };
        for i in 0..num_downsample {
            downsample.push(Conv2d::new(
                coef_heads,
                coef_heads,
                3,
                cfg,
                None,
                dvb.pp(i),
            )?);
            s = (s + 2 - 3) / 2 + 1;
        }
        let one = Conv2dConfig {
            bias,
            ..Default::default()
        };
        downsample.push(Conv2d::new(
            coef_heads,
            1,
            1,
            one,
            None,
            dvb.pp(num_downsample),
        )?);
        let pos_dim = s * s;
        let proj = Conv1x1::new(pos_dim, pos_dim, 1, bias, vb.pp("proj"))?;
        Ok(Self {
            size,
            downsample,
            proj,
            pos_dim,
            side: s,
        })
    }

    /// C_P, the number of position channels appended to each token.
    pub fn pos_dim(&self) -> usize {
        self.pos_dim
    }

    pub fn forward(&self, coef: &Tensor, hw: (usize, usize)) -> Result<Tensor> {
        let (n, hc, _, lq) = coef.dims4()?;
        // token l's map is coef[.., l]: the convs read the L maps interleaved, as they lie
        let m = coef.reshape((n, hc, hw.0, hw.1, lq))?;
        // the 1×1 conv follows the last 3×3 with no activation between: one conv does both
        // (a h_c-th of that conv's MACs, no h_c-channel intermediate)
        let mut convs = self.downsample.clone();
        if let [.., last, pointwise] = &convs[..] {
            let fused = last.then_pointwise(pointwise)?;
            convs.truncate(convs.len() - 2);
            convs.push(fused);
        }
        let (first, rest) = convs.split_first().expect("the 1×1 conv is always last");
        // the resize goes into the first conv, folded where the size is its stride's multiple
        let mut m = first.forward_resized_interleaved(&m, (self.size, self.size))?;
        for conv in rest {
            m = conv.forward_interleaved(&m)?;
        }
        // (N, 1, s', s', L) is (N, C_P, L)
        self.proj.forward(&m.reshape((n, self.pos_dim, lq))?)
    }

    /// Cost for `lq` tokens (each token's coefficient map is one image of the conv stack).
    pub fn cost(&self, lq: usize) -> Cost {
        let (mut h, mut w) = (self.size, self.size);
        let mut total = Cost::ZERO;
        for conv in &self.downsample {
            let (c, out) = conv.cost(h, w);
            total += Cost::new(c.macs * lq as u64, c.params);
            (h, w) = out;
        }
        debug_assert_eq!((h, w), (self.side, self.side));
        total + self.proj.cost(lq)
    }
}
