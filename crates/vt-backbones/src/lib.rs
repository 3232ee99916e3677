//! # vt-backbones
//!
//! ResNet-18/34/50/101 and VT-ResNet-18/34/50/101 for candle, with torchvision's parameter
//! names (`conv1`, `layer1.0.bn1`, ..., `vt.0.tokenizer.coef`, `fc`), an ImageNet stem and a
//! small-image stem; semantic segmentation with Panoptic FPN's semantic branch
//! ([`semantic::SemanticFpn`]: a [`ResNetTrunk`] giving C2..C5, the [`fpn::Fpn`] or
//! [`fpn::VtFpn`] neck, detectron2's [`fpn::SemSegFpnHead`]); and the [`presets::PRESETS`]
//! table (paper rows, ablations of Tables 3-7, Tables 9/10) that the CLI, the tests and the
//! reports all read. [`fixture`] runs the reference's parity fixtures. Depends on `vt-layers`
//! and `vt-ops`.

pub mod config;
pub mod fixture;
pub mod fpn;
pub mod presets;
pub mod resnet;
pub mod semantic;

pub use config::{vt_stack, BlockKind, ResNetConfig, Stem};
pub use fpn::{Fpn, Neck, SemSegFpnHead, VtFpn, VtFpnConfig};
pub use presets::{
    preset, ClassifierPreset, Preset, PresetKind, SegPaperRow, SegmenterPreset, Task, PRESETS,
};
pub use resnet::{ResNet, ResNetTrunk};
pub use semantic::{NeckConfig, SemanticFpn, SemanticFpnConfig, SIZE_DIVISIBILITY};
