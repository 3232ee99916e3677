//! ResNet-18/34/50/101 with torchvision's parameter names, and its VT version (stage 5
//! replaced by VT modules), as one model type.

use crate::config::{BlockKind, ResNetConfig, Stem};
use candle_core::{bail, Module, ModuleT, Result, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};
use vt_layers::{TokenAttention, VisualTransformer};
use vt_ops::pool::max_pool2d;
use vt_ops::{
    BatchNorm, Conv2d, Conv2dConfig, Cost, CostBreakdown, DropPath, Dropout, Linear, NoiseSource,
};

/// torchvision's ResNet conv init: Kaiming-normal, fan-out, ReLU gain.
const KAIMING: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

fn conv(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        stride,
        padding: k / 2,
        bias: false,
        ..Default::default()
    };
    Conv2d::new(cin, cout, k, cfg, Some(KAIMING), vb)
}

/// Conv → BN pair with the cost of the conv.
#[derive(Clone, Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
    /// Followed by a ReLU (every pair but a block's last and the shortcut's).
    relu: bool,
}

impl ConvBn {
    /// Conv → BN (→ ReLU). In train mode BN and ReLU are one op; in eval mode the BN is
    /// folded into the conv, and its shift and the ReLU are one pass over the activations.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            let y = self.conv.forward(x)?;
            match self.relu {
                true => self.bn.forward_relu_t(&y, train),
                false => self.bn.forward_t(&y, train),
            }
        } else {
            self.conv.forward_folded(x, &self.bn, self.relu)
        }
    }
}

/// A BasicBlock or Bottleneck (torchvision layout: `conv1, bn1, conv2, bn2[, conv3, bn3]`,
/// `downsample.0` / `downsample.1`).
#[derive(Clone, Debug)]
pub struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
    drop_path: DropPath,
}

impl Block {
    fn new(
        kind: BlockKind,
        cin: usize,
        width: usize,
        stride: usize,
        drop_path: DropPath,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cout = width * kind.expansion();
        // (in, out, kernel, stride) of conv1, conv2[, conv3]
        let shapes: Vec<(usize, usize, usize, usize)> = match kind {
            BlockKind::Basic => vec![(cin, width, 3, stride), (width, width, 3, 1)],
            BlockKind::Bottleneck => vec![
                (cin, width, 1, 1),
                (width, width, 3, stride),
                (width, cout, 1, 1),
            ],
        };
        let convs = shapes
            .iter()
            .enumerate()
            .map(|(i, &(a, b, k, s))| {
                Ok(ConvBn {
                    conv: conv(a, b, k, s, vb.pp(format!("conv{}", i + 1)))?,
                    bn: BatchNorm::new(b, vb.pp(format!("bn{}", i + 1)))?,
                    relu: i + 1 < shapes.len(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if stride != 1 || cin != cout {
            let d = vb.pp("downsample");
            Some(ConvBn {
                conv: conv(cin, cout, 1, stride, d.pp(0))?,
                bn: BatchNorm::new(cout, d.pp(1))?,
                relu: false,
            })
        } else {
            None
        };
        Ok(Self {
            convs,
            downsample,
            drop_path,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let identity = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        let mut y = x.clone();
        for cb in &self.convs {
            y = cb.forward_t(&y, train)?;
        }
        vt_ops::residual::add_relu(&self.drop_path.forward_t(&y, train)?, &identity)
    }

    fn cost(&self, h: usize, w: usize) -> (Cost, (usize, usize)) {
        let mut total = Cost::ZERO;
        let mut hw = (h, w);
        for cb in &self.convs {
            let (c, out) = cb.conv.cost(hw.0, hw.1);
            total += c;
            hw = out;
        }
        if let Some(d) = &self.downsample {
            total += d.conv.cost(h, w).0;
        }
        (total, hw)
    }
}

/// The convolutional trunk: stem → `layer1..` (torchvision names), giving every stage's
/// output (C2..C5 for a four-stage trunk). ResNet, VT-ResNet and the segmentation models share it.
#[derive(Clone, Debug)]
pub struct ResNetTrunk {
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    stem_kind: Stem,
    in_channels: usize,
    out_channels: Vec<usize>,
}

impl ResNetTrunk {
    /// The stem and stages of `cfg` (its VT modules and classifier are not built); drop-path
    /// masks come from `noise`.
    pub fn new(cfg: &ResNetConfig, noise: &NoiseSource, vb: VarBuilder) -> Result<Self> {
        let (k, s) = match cfg.stem {
            Stem::Imagenet => (7, 2),
            Stem::Small => (3, 1),
        };
        let stem = ConvBn {
            conv: conv(cfg.in_channels, cfg.stem_width, k, s, vb.pp("conv1"))?,
            bn: BatchNorm::new(cfg.stem_width, vb.pp("bn1"))?,
            relu: true,
        };
        let total_blocks: usize = cfg.layers.iter().sum();
        let mut index = 0;
        let mut cin = cfg.stem_width;
        let mut stages = Vec::with_capacity(cfg.layers.len());
        let mut out_channels = Vec::with_capacity(cfg.layers.len());
        for (i, (&n, &width)) in cfg.layers.iter().zip(&cfg.widths).enumerate() {
            let svb = vb.pp(format!("layer{}", i + 1)); // torchvision's name, kept for checkpoints
            let mut blocks = Vec::with_capacity(n);
            for j in 0..n {
                let rate = if total_blocks > 1 {
                    cfg.drop_path * index as f64 / (total_blocks - 1) as f64
                } else {
                    0.0
                };
                let name = format!("{}.{j}", svb.prefix());
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                blocks.push(Block::new(
                    cfg.block,
                    cin,
                    width,
                    stride,
                    DropPath::new(rate, &name, noise)?,
                    svb.pp(j),
                )?);
                cin = width * cfg.block.expansion();
                index += 1;
            }
            stages.push(blocks);
            out_channels.push(cin);
        }
        Ok(Self {
            stem,
            stages,
            stem_kind: cfg.stem,
            in_channels: cfg.in_channels,
            out_channels,
        })
    }

    /// Channels of each stage's output.
    pub fn out_channels(&self) -> &[usize] {
        &self.out_channels
    }

    /// The output of every stage, in order.
    pub fn forward_stages(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let (_, c, _, _) = x.dims4()?;
        if c != self.in_channels {
            bail!(
                "model expects {} input channels, got input of shape {:?}",
                self.in_channels,
                x.shape()
            );
        }
        let mut x = self.stem.forward_t(x, train)?;
        if self.stem_kind == Stem::Imagenet {
            x = max_pool2d(&x, 3, 2, 1)?;
        }
        let mut outs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            for b in stage {
                x = b.forward_t(&x, train)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }

    /// Pushes the cost of `stem`, `layer1..` at an `h × w` input onto `out`; returns the size
    /// of each stage's output.
    pub fn cost(&self, h: usize, w: usize, out: &mut CostBreakdown) -> Vec<(usize, usize)> {
        let (c, mut hw) = self.stem.conv.cost(h, w);
        if self.stem_kind == Stem::Imagenet {
            let p = |n: usize| (n + 2 - 3) / 2 + 1;
            hw = (p(hw.0), p(hw.1));
        }
        out.push("stem", c);
        let mut sizes = Vec::with_capacity(self.stages.len());
        for (i, stage) in self.stages.iter().enumerate() {
            let mut total = Cost::ZERO;
            for b in stage {
                let (c, o) = b.cost(hw.0, hw.1);
                total += c;
                hw = o;
            }
            out.push(format!("layer{}", i + 1), total);
            sizes.push(hw);
        }
        sizes
    }
}

/// ResNet or VT-ResNet: stem → `layer1..` → (`vt.0..` | global pool) → dropout → `fc`.
#[derive(Clone, Debug)]
pub struct ResNet {
    trunk: ResNetTrunk,
    vt: Vec<VisualTransformer>,
    dropout: Dropout,
    fc: Linear,
    noise: NoiseSource,
    cfg: ResNetConfig,
}

impl ResNet {
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        if let Err(e) = cfg.validate() {
            bail!("invalid model config: {e}");
        }
        let noise = NoiseSource::new(0);
        let trunk = ResNetTrunk::new(cfg, &noise, vb.clone())?;
        let vvb = vb.pp("vt");
        let vt = cfg
            .vt
            .iter()
            .enumerate()
            .map(|(i, c)| {
                VisualTransformer::new(c, vvb.pp(i))?.with_drop_path(
                    cfg.drop_path,
                    &format!("vt.{i}"),
                    &noise,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let dropout = Dropout::new(cfg.dropout, "dropout", &noise)?;
        let fc = Linear::new(cfg.head_channels(), cfg.num_classes, vb.pp("fc"))?;
        Ok(Self {
            trunk,
            vt,
            dropout,
            fc,
            noise,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// The mask source of dropout and drop-path: the trainer sets its seed and step.
    pub fn noise(&self) -> &NoiseSource {
        &self.noise
    }

    /// The final feature map and, for a VT-ResNet, the last VT module's tokens.
    pub fn forward_features(&self, x: &Tensor, train: bool) -> Result<(Tensor, Option<Tensor>)> {
        let (x, tokens) = self.features(x, train, self.vt.len())?;
        Ok((x, tokens))
    }

    /// The trunk, then the VT modules, the last `len − projected` of them without their
    /// projector (their feature map output is not computed; the returned map is the last
    /// projected one).
    fn features(
        &self,
        x: &Tensor,
        train: bool,
        projected: usize,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut stages = self.trunk.forward_stages(x, train)?;
        let mut x = stages
            .pop()
            .expect("a validated config has at least one stage");
        let mut tokens: Option<Tensor> = None;
        for (i, m) in self.vt.iter().enumerate() {
            if i < projected {
                let (nx, t) = m.forward_t(&x, tokens.as_ref(), train)?;
                x = nx;
                tokens = Some(t);
            } else {
                tokens = Some(m.forward_tokens(&x, tokens.as_ref(), train)?);
            }
        }
        Ok((x, tokens))
    }

    /// What each VT module's tokens attend to on `x` (eval mode), module by module (`vt.0`,
    /// `vt.1`, ...); empty for a plain ResNet.
    pub fn token_attention(&self, x: &Tensor) -> Result<Vec<TokenAttention>> {
        let train = false;
        let mut x = match self.trunk.forward_stages(x, train)?.pop() {
            Some(x) => x,
            None => bail!("a ResNet without stages"),
        };
        let mut tokens: Option<Tensor> = None;
        let mut out = vec![];
        for (i, m) in self.vt.iter().enumerate() {
            let hw = (x.dim(2)?, x.dim(3)?);
            let (nx, t, coef) = m.forward_attention(&x, tokens.as_ref(), train)?;
            if let Some(coef) = coef {
                out.push(TokenAttention {
                    module: format!("vt.{i}"),
                    coef,
                    hw,
                });
            }
            (x, tokens) = (nx, Some(t));
        }
        Ok(out)
    }

    /// Classifier input: mean over tokens (VT) or global average pool (ResNet).
    pub fn forward_head(&self, x: &Tensor, tokens: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let pooled = match tokens {
            Some(t) => t.mean(2)?,
            None => x.mean(3)?.mean(2)?,
        };
        self.fc.forward(&self.dropout.forward_t(&pooled, train)?)
    }

    /// MACs and parameters per part for an `h × w` input (batch 1), in forward order:
    /// `stem`, `layer1..`, `vt.0..`, `fc`.
    pub fn cost(&self, h: usize, w: usize) -> CostBreakdown {
        let mut out = CostBreakdown::default();
        let sizes = self.trunk.cost(h, w, &mut out);
        let hw = sizes.last().copied().unwrap_or((h, w));
        for (i, m) in self.vt.iter().enumerate() {
            out.push(format!("vt.{i}"), m.cost(hw.0, hw.1));
        }
        out.push("fc", self.fc.cost());
        out
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // The head reads the last VT module's tokens only, so in eval that module's projector
        // (kept for the paper's parameter count, the reference's note 14) changes nothing
        // observable and is skipped. Training runs it: its batch norm's running statistics
        // are state.
        let projected = match train {
            true => self.vt.len(),
            false => self.vt.len().saturating_sub(1),
        };
        let (x, t) = self.features(x, train, projected)?;
        self.forward_head(&x, t.as_ref(), train)
    }
}
