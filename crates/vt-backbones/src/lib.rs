//! # vt-backbones
//!
//! ResNet-18/34/50/101 and VT-ResNet-18/34/50/101 for candle, with torchvision's parameter
//! names (`conv1`, `layer1.0.bn1`, ..., `vt.0.tokenizer.coef`, `fc`), an ImageNet stem and a
//! small-image stem, and the [`presets::PRESETS`] table (paper rows, ablations of Tables 3-7)
//! that the CLI, the tests and the reports all read. [`fixture`] runs the reference's parity
//! fixtures. Depends on `vt-layers` and `vt-ops`.

pub mod config;
pub mod fixture;
pub mod presets;
pub mod resnet;

pub use config::{vt_stack, BlockKind, ResNetConfig, Stem};
pub use presets::{preset, Preset, PRESETS};
pub use resnet::ResNet;
