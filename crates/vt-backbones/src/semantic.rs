//! Semantic segmentation with Panoptic FPN's semantic branch (S6):
//! `backbone.body` (a ResNet trunk, torchvision names) → `backbone.fpn` (FPN or VT-FPN) →
//! `sem_seg_head` → logits upsampled x4 to the input. ImageNet ResNet weights load under
//! `backbone.body`, torchvision's FPN weights under `backbone.fpn`.

use crate::config::{ResNetConfig, Stem};
use crate::fpn::{Fpn, Neck, SemSegFpnHead, VtFpn, VtFpnConfig};
use crate::resnet::ResNetTrunk;
use candle_core::{bail, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use vt_layers::TokenAttention;
use vt_ops::resize::resize_bilinear;
use vt_ops::{Cost, CostBreakdown, NoiseSource};

/// The input's height and width must be multiples of this (S4).
pub const SIZE_DIVISIBILITY: usize = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NeckConfig {
    Fpn,
    VtFpn(VtFpnConfig),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticFpnConfig {
    /// The trunk: four stages, the ImageNet stem, no VT modules (its `num_classes`, `dropout`
    /// and `vt` are unused).
    pub trunk: ResNetConfig,
    pub neck: NeckConfig,
    /// Channels of P2..P5.
    pub fpn_channels: usize,
    /// Channels of the head's convs.
    pub head_channels: usize,
    pub gn_groups: usize,
    pub num_classes: usize,
}

impl SemanticFpnConfig {
    /// detectron2's semantic FPN on `trunk` (256-channel neck, 128-channel head, GN(32)).
    pub fn new(trunk: ResNetConfig, neck: NeckConfig, num_classes: usize) -> Self {
        Self {
            trunk,
            neck,
            fpn_channels: 256,
            head_channels: 128,
            gn_groups: 32,
            num_classes,
        }
    }

    /// Scale every width (trunk, neck, head, token channels) by `mult`, keeping heads and
    /// groups; the GroupNorm group count is lowered to the head's channels if they are fewer.
    pub fn with_width(mut self, mult: f64) -> Self {
        let s = |c: usize| ((c as f64 * mult).round() as usize).max(1);
        self.trunk = self.trunk.with_width(mult);
        self.fpn_channels = s(self.fpn_channels);
        self.head_channels = s(self.head_channels);
        self.gn_groups = self.gn_groups.min(self.head_channels);
        if let NeckConfig::VtFpn(v) = &mut self.neck {
            v.token_channels = s(v.token_channels);
        }
        self
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        self.trunk.validate()?;
        if self.trunk.layers.len() != 4 || !self.trunk.vt.is_empty() {
            return Err(format!(
                "a semantic FPN needs a four-stage trunk without VT modules (C2..C5), got {} stages and {} VT modules",
                self.trunk.layers.len(),
                self.trunk.vt.len()
            ));
        }
        if self.trunk.stem != Stem::Imagenet {
            return Err("a semantic FPN needs the ImageNet stem (strides 4..32)".into());
        }
        if self.num_classes == 0 {
            return Err("num_classes must be at least 1".into());
        }
        Ok(())
    }
}

/// FPN or VT-FPN semantic segmentation; `forward_t(x (N, C, H, W))` gives logits `(N, K, H, W)`.
#[derive(Clone, Debug)]
pub struct SemanticFpn {
    body: ResNetTrunk,
    neck: Neck,
    head: SemSegFpnHead,
    noise: NoiseSource,
    cfg: SemanticFpnConfig,
}

impl SemanticFpn {
    pub fn new(cfg: &SemanticFpnConfig, vb: VarBuilder) -> Result<Self> {
        if let Err(e) = cfg.validate() {
            bail!("invalid segmentation model config: {e}");
        }
        let noise = NoiseSource::new(0);
        let backbone = vb.pp("backbone");
        let body = ResNetTrunk::new(&cfg.trunk, &noise, backbone.pp("body"))?;
        let chans = body.out_channels().to_vec();
        let d = cfg.fpn_channels;
        let neck = match &cfg.neck {
            NeckConfig::Fpn => Neck::Fpn(Fpn::new(&chans, d, backbone.pp("fpn"))?),
            NeckConfig::VtFpn(v) => Neck::VtFpn(VtFpn::new(&chans, d, v, backbone.pp("fpn"))?),
        };
        let head = SemSegFpnHead::new(
            cfg.num_classes,
            d,
            cfg.head_channels,
            cfg.gn_groups,
            vb.pp("sem_seg_head"),
        )?;
        Ok(Self {
            body,
            neck,
            head,
            noise,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &SemanticFpnConfig {
        &self.cfg
    }

    /// The mask source of drop-path in the trunk: the trainer sets its seed and step.
    pub fn noise(&self) -> &NoiseSource {
        &self.noise
    }

    /// P2..P5 of an input (its size checked as S4 asks).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let (_, _, h, w) = x.dims4()?;
        if h % SIZE_DIVISIBILITY != 0 || w % SIZE_DIVISIBILITY != 0 || h == 0 || w == 0 {
            bail!("segmentation input is {h}x{w}: pad it to a multiple of {SIZE_DIVISIBILITY} (the eval pipeline does)");
        }
        self.neck
            .forward(&self.body.forward_stages(x, train)?, train)
    }

    /// What the VT-FPN's tokens attend to on `x` (eval mode); empty for an FPN.
    pub fn token_attention(&self, x: &Tensor) -> Result<Vec<TokenAttention>> {
        self.neck
            .token_attention(&self.body.forward_stages(x, false)?)
    }

    /// MACs and parameters of `stem`, `layer1..4`, `neck`, `head` at an `h × w` input.
    pub fn cost(&self, h: usize, w: usize) -> CostBreakdown {
        let mut out = CostBreakdown::default();
        let sizes = self.body.cost(h, w, &mut out);
        out.push("neck", self.neck.cost(&sizes));
        out.push("head", self.head.cost(&sizes));
        out
    }

    /// The neck's MACs and parameters alone (what Tables 9/10 call FPN FLOPs).
    pub fn neck_cost(&self, h: usize, w: usize) -> Cost {
        self.cost(h, w).get("neck").unwrap_or(Cost::ZERO)
    }
}

impl ModuleT for SemanticFpn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let logits = self.head.forward(&self.features(x, train)?)?;
        let (_, _, h, w) = logits.dims4()?;
        resize_bilinear(&logits, (4 * h, 4 * w))
    }
}
