//! The one configuration of the ResNet family; a VT-ResNet is a ResNet whose last stage is
//! replaced by VT modules (`vt` non-empty).

use serde::{Deserialize, Serialize};
use vt_layers::VtConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Two 3x3 convs (ResNet-18/34).
    Basic,
    /// 1x1 → 3x3 (stride here, torchvision v1.5) → 1x1 with 4x expansion (ResNet-50/101).
    Bottleneck,
}

impl BlockKind {
    pub fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stem {
    /// 7x7 stride-2 conv + 3x3 stride-2 max-pool (224 px ImageNet).
    Imagenet,
    /// 3x3 stride-1 conv, no max-pool: for 28-64 px inputs (Fashion-MNIST, CIFAR).
    Small,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub block: BlockKind,
    /// Blocks per stage (`layer1`, `layer2`, ...); 4 stages for a ResNet, 3 for a VT-ResNet.
    pub layers: Vec<usize>,
    /// Base width of each stage (torchvision: 64, 128, 256, 512; a bottleneck outputs 4x).
    pub widths: Vec<usize>,
    pub stem_width: usize,
    pub stem: Stem,
    pub in_channels: usize,
    pub num_classes: usize,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Stochastic depth: the drop probability of the last residual block; it grows linearly
    /// from 0 over the blocks (timm's schedule).
    pub drop_path: f64,
    /// VT modules after the last stage (`vt.0`, `vt.1`, ...); empty for a plain ResNet.
    pub vt: Vec<VtConfig>,
}

impl ResNetConfig {
    fn resnet(block: BlockKind, layers: [usize; 4]) -> Self {
        Self {
            block,
            layers: layers.to_vec(),
            widths: vec![64, 128, 256, 512],
            stem_width: 64,
            stem: Stem::Imagenet,
            in_channels: 3,
            num_classes: 1000,
            dropout: 0.0,
            drop_path: 0.0,
            vt: vec![],
        }
    }

    pub fn resnet18() -> Self {
        Self::resnet(BlockKind::Basic, [2, 2, 2, 2])
    }
    pub fn resnet34() -> Self {
        Self::resnet(BlockKind::Basic, [3, 4, 6, 3])
    }
    pub fn resnet50() -> Self {
        Self::resnet(BlockKind::Bottleneck, [3, 4, 6, 3])
    }
    pub fn resnet101() -> Self {
        Self::resnet(BlockKind::Bottleneck, [3, 4, 23, 3])
    }

    /// Channels at the end of the convolutional stages.
    pub fn trunk_channels(&self) -> usize {
        self.widths
            .get(self.layers.len().wrapping_sub(1))
            .copied()
            .unwrap_or(self.stem_width)
            * self.block.expansion()
    }

    /// Replace the last stage by the VT modules `vt` (stages 1-3 stay).
    pub fn with_vt(mut self, vt: Vec<VtConfig>) -> Self {
        self.layers.truncate(3);
        self.widths.truncate(3);
        self.vt = vt;
        self
    }

    pub fn with_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    pub fn with_in_channels(mut self, c: usize) -> Self {
        self.in_channels = c;
        self
    }

    pub fn with_stem(mut self, stem: Stem) -> Self {
        self.stem = stem;
        self
    }

    /// Scale every width (stem, stages, VT channels and token channels) by `mult`, keeping the
    /// VT heads and groups: `mult = 0.25` turns ResNet-18's 64..512 into 16..128.
    pub fn with_width(mut self, mult: f64) -> Self {
        let s = |c: usize| ((c as f64 * mult).round() as usize).max(1);
        self.stem_width = s(self.stem_width);
        self.widths = self.widths.iter().map(|&w| s(w)).collect();
        for v in &mut self.vt {
            v.in_channels = s(v.in_channels);
            v.out_channels = s(v.out_channels);
            v.token_channels = s(v.token_channels);
            v.value_channels = v.value_channels.map(s);
            v.kq_channels = v.kq_channels.map(s);
        }
        self
    }

    /// Checks the shapes line up (stage count, VT channel chain) before anything is built.
    pub fn validate(&self) -> Result<(), String> {
        if self.layers.is_empty() || self.layers.len() != self.widths.len() {
            return Err(format!(
                "layers {:?} and widths {:?} must be non-empty and equally long",
                self.layers, self.widths
            ));
        }
        let mut c = self.trunk_channels();
        for (i, v) in self.vt.iter().enumerate() {
            if v.in_channels != c {
                return Err(format!(
                    "vt.{i}: in_channels {} but the previous stage outputs {c} channels",
                    v.in_channels
                ));
            }
            c = v.effective_out_channels();
        }
        if !(0.0..1.0).contains(&self.dropout) || !(0.0..1.0).contains(&self.drop_path) {
            return Err(format!(
                "dropout {} and drop_path {} must lie in [0, 1)",
                self.dropout, self.drop_path
            ));
        }
        Ok(())
    }

    /// How many input pixels one pixel of the last stage's map spans: the stem's stride (4
    /// with its max-pool, or 1) times 2 for every stage after the first.
    pub fn output_stride(&self) -> usize {
        let stem = match self.stem {
            Stem::Imagenet => 4,
            Stem::Small => 1,
        };
        stem << self.layers.len().saturating_sub(1)
    }

    /// An input `height x width` the model can take: both sides at least the output stride,
    /// so the last stage (and a VT on it) sees at least one pixel of the image rather than
    /// of its padding.
    pub fn check_input(&self, height: usize, width: usize) -> Result<(), String> {
        let s = self.output_stride();
        if height < s || width < s {
            return Err(format!(
                "input {height}x{width} is smaller than the model's output stride {s} ({:?} stem, {} stages): use at least {s}x{s}",
                self.stem,
                self.layers.len()
            ));
        }
        Ok(())
    }

    /// Width of the classifier's input.
    pub fn head_channels(&self) -> usize {
        match self.vt.last() {
            Some(v) => v.effective_token_channels(),
            None => self.trunk_channels(),
        }
    }
}

/// The chain of VT modules of the presets (the reference's `vt_stack`): module `i` maps to
/// `couts[i]` channels; a module without a projector leaves the channel count unchanged.
/// `tokenizers` defaults to filter then recurrent; `projectors = false` removes every projector
/// (Table 7); `base` gives every other field.
pub fn vt_stack(
    c0: usize,
    couts: &[usize],
    project_last: bool,
    tokenizers: Option<&[vt_layers::TokenizerKind]>,
    projectors: bool,
    base: &VtConfig,
) -> Vec<VtConfig> {
    use vt_layers::TokenizerKind::{Filter, Recurrent};
    let n = couts.len();
    let mut c = c0;
    let mut out = Vec::with_capacity(n);
    for (i, &co) in couts.iter().enumerate() {
        let proj = projectors && (project_last || i + 1 < n);
        let tokenizer = tokenizers.map_or(if i == 0 { Filter } else { Recurrent }, |t| t[i]);
        out.push(VtConfig {
            in_channels: c,
            out_channels: if proj { co } else { c },
            tokenizer,
            projector: proj,
            ..base.clone()
        });
        if proj {
            c = co;
        }
    }
    out
}
