//! The segmentation neck and head of Panoptic FPN's semantic branch (the reference's S1-S3):
//! [`Fpn`] (torchvision's `FeaturePyramidNetwork`), [`VtFpn`] (its 3x3 output convs replaced
//! by VT modules) and [`SemSegFpnHead`] (detectron2's `SemSegFPNHead`), with the reference's
//! parameter names.

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use vt_layers::{FilterTokenizer, Projector, TokenAttention, Transformer, VtConfig};
use vt_ops::resize::{resize_bilinear, resize_nearest};
use vt_ops::{Conv2d, Conv2dConfig, Cost, GroupNorm};

/// The strides of P2..P5.
pub const STRIDES: [usize; 4] = [4, 8, 16, 32];

fn conv_cfg(k: usize, bias: bool) -> Conv2dConfig {
    Conv2dConfig {
        padding: k / 2,
        bias,
        ..Default::default()
    }
}

/// The lateral 1x1 convs (`inner_blocks.i.0`, C_i → d with bias) and the top-down path that
/// FPN and VT-FPN share: nearest upsampling of the running sum to each finer level, then add.
#[derive(Clone, Debug)]
struct Laterals {
    convs: Vec<Conv2d>,
}

impl Laterals {
    fn new(in_channels: &[usize], d: usize, vb: &VarBuilder) -> Result<Self> {
        let vb = vb.pp("inner_blocks");
        let convs = in_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| Conv2d::new(c, d, 1, conv_cfg(1, true), None, vb.pp(i).pp(0)))
            .collect::<Result<_>>()?;
        Ok(Self { convs })
    }

    fn merged(&self, feats: &[Tensor]) -> Result<Vec<Tensor>> {
        if feats.len() != self.convs.len() {
            bail!(
                "the neck has {} levels but got {} feature maps",
                self.convs.len(),
                feats.len()
            );
        }
        let lat = self
            .convs
            .iter()
            .zip(feats)
            .map(|(c, f)| c.forward(f))
            .collect::<Result<Vec<_>>>()?;
        let mut out = lat.clone();
        for i in (0..lat.len() - 1).rev() {
            let (_, _, h, w) = lat[i].dims4()?;
            out[i] = (&lat[i] + resize_nearest(&out[i + 1], (h, w))?)?;
        }
        Ok(out)
    }

    fn cost(&self, sizes: &[(usize, usize)]) -> Cost {
        self.convs
            .iter()
            .zip(sizes)
            .map(|(c, &(h, w))| c.cost(h, w).0)
            .sum()
    }
}

/// S1: `forward([C2..C5]) -> [P2..P5]`, laterals + top-down + a 3x3 output conv per level
/// (`layer_blocks.i.0`).
#[derive(Clone, Debug)]
pub struct Fpn {
    laterals: Laterals,
    outputs: Vec<Conv2d>,
}

impl Fpn {
    pub fn new(in_channels: &[usize], out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let d = out_channels;
        let ovb = vb.pp("layer_blocks");
        let outputs = (0..in_channels.len())
            .map(|i| Conv2d::new(d, d, 3, conv_cfg(3, true), None, ovb.pp(i).pp(0)))
            .collect::<Result<_>>()?;
        Ok(Self {
            laterals: Laterals::new(in_channels, d, &vb)?,
            outputs,
        })
    }

    pub fn forward(&self, feats: &[Tensor]) -> Result<Vec<Tensor>> {
        let merged = self.laterals.merged(feats)?;
        self.outputs
            .iter()
            .zip(&merged)
            .map(|(c, m)| c.forward(m))
            .collect()
    }

    /// MACs of the laterals and output convs at level sizes `sizes` (what Tables 9/10 count).
    pub fn cost(&self, sizes: &[(usize, usize)]) -> Cost {
        self.laterals.cost(sizes)
            + self
                .outputs
                .iter()
                .zip(sizes)
                .map(|(c, &(h, w))| c.cost(h, w).0)
                .sum()
    }
}

/// The VT modules of VT-FPN (S2): per level a filter tokenizer, one transformer over the
/// concatenated tokens of all levels, per level a projector reading its own tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VtFpnConfig {
    /// Tokens per level (L).
    pub num_tokens: usize,
    /// Token channels (C_T).
    pub token_channels: usize,
    pub heads: usize,
    pub tokenizer_groups: usize,
    pub transformer_groups: usize,
    pub projector_groups: usize,
    pub pos_encoding: bool,
}

impl VtFpnConfig {
    /// The paper's VT-FPN: L = 8, C_T = 1024, 16 heads, groups 16 / 4 / 16, position encoding.
    pub fn paper() -> Self {
        Self {
            num_tokens: 8,
            token_channels: 1024,
            heads: 16,
            tokenizer_groups: 16,
            transformer_groups: 4,
            projector_groups: 16,
            pos_encoding: true,
        }
    }

    /// The `VtConfig` of the modules at `d` feature channels (every other field as the
    /// reference's class defaults).
    pub fn vt_config(&self, d: usize) -> VtConfig {
        VtConfig {
            num_tokens: self.num_tokens,
            token_channels: self.token_channels,
            heads: self.heads,
            tokenizer_groups: self.tokenizer_groups,
            transformer_groups: self.transformer_groups,
            projector_groups: self.projector_groups,
            pos_encoding: self.pos_encoding,
            ..VtConfig::pseudo_code(d, d)
        }
    }
}

/// S2: `forward([C2..C5]) -> [P2..P5]` with the output convs replaced by VT modules
/// (`tokenizers.i`, `transformer`, `projectors.i`).
#[derive(Clone, Debug)]
pub struct VtFpn {
    laterals: Laterals,
    tokenizers: Vec<FilterTokenizer>,
    transformer: Transformer,
    projectors: Vec<Projector>,
    num_tokens: usize,
}

impl VtFpn {
    pub fn new(
        in_channels: &[usize],
        out_channels: usize,
        cfg: &VtFpnConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vt = cfg.vt_config(out_channels);
        let n = in_channels.len();
        let (tvb, pvb) = (vb.pp("tokenizers"), vb.pp("projectors"));
        Ok(Self {
            laterals: Laterals::new(in_channels, out_channels, &vb)?,
            tokenizers: (0..n)
                .map(|i| FilterTokenizer::new(&vt, tvb.pp(i)))
                .collect::<Result<_>>()?,
            transformer: Transformer::new(&vt, vb.pp("transformer"))?,
            projectors: (0..n)
                .map(|i| Projector::new(&vt, pvb.pp(i)))
                .collect::<Result<_>>()?,
            num_tokens: cfg.num_tokens,
        })
    }

    pub fn forward(&self, feats: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        let merged = self.laterals.merged(feats)?;
        let tokens = self
            .tokenizers
            .iter()
            .zip(&merged)
            .map(|(t, m)| Ok(t.forward(m)?.0))
            .collect::<Result<Vec<_>>>()?;
        let tokens = self.transformer.forward(&Tensor::cat(&tokens, 2)?)?;
        let l = self.num_tokens;
        self.projectors
            .iter()
            .zip(&merged)
            .enumerate()
            .map(|(i, (p, m))| p.forward_t(m, &tokens.narrow(2, i * l, l)?, train))
            .collect()
    }

    /// What each level's tokens attend to (`backbone.fpn.tokenizers.{i}`, over that level's
    /// merged map).
    pub fn token_attention(&self, feats: &[Tensor]) -> Result<Vec<TokenAttention>> {
        let merged = self.laterals.merged(feats)?;
        self.tokenizers
            .iter()
            .zip(&merged)
            .enumerate()
            .map(|(i, (t, m))| {
                Ok(TokenAttention {
                    module: format!("backbone.fpn.tokenizers.{i}"),
                    coef: t.forward(m)?.1,
                    hw: (m.dim(2)?, m.dim(3)?),
                })
            })
            .collect()
    }

    /// MACs of the laterals and the VT modules at level sizes `sizes`.
    pub fn cost(&self, sizes: &[(usize, usize)]) -> Cost {
        let l = self.num_tokens;
        let per_level: Cost = self
            .tokenizers
            .iter()
            .zip(&self.projectors)
            .zip(sizes)
            .map(|((t, p), &(h, w))| t.cost(h * w, l) + p.cost(h * w, l))
            .sum();
        self.laterals.cost(sizes) + per_level + self.transformer.cost(l * sizes.len())
    }
}

/// The neck of a semantic FPN: either kind, one interface.
#[derive(Clone, Debug)]
pub enum Neck {
    Fpn(Fpn),
    VtFpn(VtFpn),
}

impl Neck {
    pub fn forward(&self, feats: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        match self {
            Self::Fpn(n) => n.forward(feats),
            Self::VtFpn(n) => n.forward(feats, train),
        }
    }

    pub fn cost(&self, sizes: &[(usize, usize)]) -> Cost {
        match self {
            Self::Fpn(n) => n.cost(sizes),
            Self::VtFpn(n) => n.cost(sizes),
        }
    }

    /// The VT-FPN's token attention; none for a plain FPN.
    pub fn token_attention(&self, feats: &[Tensor]) -> Result<Vec<TokenAttention>> {
        match self {
            Self::Fpn(_) => Ok(vec![]),
            Self::VtFpn(n) => n.token_attention(feats),
        }
    }
}

/// detectron2's `Conv2d(norm=GN, activation=relu)`: a 3x3 conv without bias (`weight`), then
/// `norm.weight` / `norm.bias`, then ReLU.
#[derive(Clone, Debug)]
struct ConvGn {
    conv: Conv2d,
    norm: GroupNorm,
}

impl ConvGn {
    fn new(cin: usize, cout: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(cin, cout, 3, conv_cfg(3, false), None, vb.clone())?,
            norm: GroupNorm::new(groups, cout, vb.pp("norm"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(&self.conv.forward(x)?)?.relu()
    }
}

/// S3: detectron2's `SemSegFPNHead`. Per level of stride s, max(1, log2(s) − 2) blocks of
/// [3x3 conv → GroupNorm → ReLU], each followed by a x2 bilinear upsample unless s = 4; the
/// sum of the four maps; a 1x1 `predictor`. `forward([P2..P5])` gives logits at stride 4.
#[derive(Clone, Debug)]
pub struct SemSegFpnHead {
    levels: Vec<Vec<ConvGn>>,
    predictor: Conv2d,
}

impl SemSegFpnHead {
    pub fn new(
        num_classes: usize,
        in_channels: usize,
        conv_dims: usize,
        gn_groups: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let levels = STRIDES
            .iter()
            .map(|&s| {
                let lvb = vb.pp(format!("p{}", s.trailing_zeros()));
                let upsampled = s != STRIDES[0];
                let n = (s.trailing_zeros() as usize).saturating_sub(2).max(1);
                (0..n)
                    .map(|k| {
                        let cin = if k == 0 { in_channels } else { conv_dims };
                        // detectron2 numbers the Upsample modules too: conv k sits at 2k
                        let index = if upsampled { 2 * k } else { k };
                        ConvGn::new(cin, conv_dims, gn_groups, lvb.pp(index))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let predictor = Conv2d::new(
            conv_dims,
            num_classes,
            1,
            conv_cfg(1, true),
            None,
            vb.pp("predictor"),
        )?;
        Ok(Self { levels, predictor })
    }

    pub fn forward(&self, feats: &[Tensor]) -> Result<Tensor> {
        if feats.len() != self.levels.len() {
            bail!(
                "the head reads {} levels, got {}",
                self.levels.len(),
                feats.len()
            );
        }
        let mut sum: Option<Tensor> = None;
        for (i, (blocks, f)) in self.levels.iter().zip(feats).enumerate() {
            let mut y = f.clone();
            for b in blocks {
                y = b.forward(&y)?;
                if i > 0 {
                    let (_, _, h, w) = y.dims4()?;
                    y = resize_bilinear(&y, (2 * h, 2 * w))?;
                }
            }
            sum = Some(match sum {
                None => y,
                Some(s) => {
                    if s.dims() != y.dims() {
                        bail!(
                            "head level p{} gives {:?} but p2 gives {:?}: level sizes must halve exactly (pad the input to a multiple of 32)",
                            i + 2,
                            y.dims(),
                            s.dims()
                        );
                    }
                    (s + y)?
                }
            });
        }
        let sum = sum.expect("the head has four levels");
        self.predictor.forward(&sum)
    }

    /// MACs of the head's convs when P2 is `h × w` (the x2 upsamplings are not counted, as no
    /// resize is anywhere in vt's accounting).
    pub fn cost(&self, sizes: &[(usize, usize)]) -> Cost {
        let p2 = sizes.first().copied().unwrap_or((0, 0));
        let mut total = self.predictor.cost(p2.0, p2.1).0;
        for (blocks, &(h, w)) in self.levels.iter().zip(sizes) {
            let mut hw = (h, w);
            for b in blocks {
                total += b.conv.cost(hw.0, hw.1).0 + b.norm.cost();
                hw = (2 * hw.0, 2 * hw.1);
            }
        }
        total
    }
}
