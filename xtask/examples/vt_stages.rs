//! Each VT stage of VT-ResNet-18 next to the ResNet stage it replaces, in one process:
//! `reproduce`'s 56 px workload (width 1/4, small stem, 1 channel, batch 64).
//!
//! `cargo run --release -p xtask --example vt_stages` times inference; `TRAIN=1` forward +
//! backward (a sum as the loss); `PART=vt.1.tokenizer` (any printed name) loops that part
//! alone, for `perf record`. `NECK=1` times VT-FPN's neck instead, part by part, next to the
//! FPN neck: `reproduce`'s 128 px segmentation workload (width 1/4, batch 8), on random C2..C5.
//! Medians of 15 steps after 3 warm-up ones; a shared host moves single numbers by 10 % and
//! more, so compare parts of one run.

use anyhow::Result;
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use std::time::Instant;
use vt_backbones::config::{ResNetConfig, Stem};
use vt_backbones::{presets, Fpn, NeckConfig, ResNet, ResNetTrunk, VtFpn};
use vt_layers::{
    FilterTokenizer, Projector, TokenRelation, Tokenizer, Transformer, VisualTransformer,
};
use vt_ops::{NoiseSource, VarStore};

// as the xtask binary (xtask/src/main.rs, `tune_cpu_runtime`): mimalloc with freed pages kept,
// and candle's elementwise pool spinning briefly
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    // SAFETY: a process-wide option (15 = mi_option_purge_delay), set before any allocation
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100");
    }
    vt_ops::in_thread_pool(run)
}

fn run() -> Result<()> {
    let train = std::env::var_os("TRAIN").is_some();
    match std::env::var_os("NECK").is_some() {
        true => neck_parts(train),
        false => resnet_stages(train),
    }
}

/// A step: in train mode the backward of the sum of `outs`.
fn step(train: bool, outs: &[&Tensor]) -> Result<()> {
    if train {
        let mut loss = outs[0].sum_all()?;
        for o in &outs[1..] {
            loss = (loss + o.sum_all()?)?;
        }
        loss.backward()?;
    }
    Ok(())
}

/// The FPN and VT-FPN necks whole, then VT-FPN's parts on the merged maps P2..P5 as leaves:
/// per level its tokenizer and projector, and the transformer over the 32 tokens.
fn neck_parts(train: bool) -> Result<()> {
    let dev = Device::Cpu;
    let (n, size) = (8, 128);
    let cfg = presets::vt_fpn_resnet50().with_width(0.25);
    let NeckConfig::VtFpn(vt_fpn) = &cfg.neck else {
        anyhow::bail!("vt_fpn_resnet50 has a VT-FPN neck")
    };
    let d = cfg.fpn_channels;
    let t = &cfg.trunk;
    let chans: Vec<usize> = t.widths.iter().map(|w| w * t.block.expansion()).collect();
    let sides: Vec<usize> = (0..chans.len()).map(|i| size >> (i + 2)).collect();
    let store = VarStore::seeded(0, DType::F32, &dev);
    let vb = store.var_builder();
    let fpn = Fpn::new(&chans, d, vb.pp("fpn"))?;
    let vt = VtFpn::new(&chans, d, vt_fpn, vb.pp("vt_fpn"))?;
    let feats = chans
        .iter()
        .zip(&sides)
        .map(|(&c, &s)| {
            Ok(Var::from_tensor(&Tensor::randn(
                0f32,
                1.,
                (n, c, s, s),
                &dev,
            )?)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let feats: Vec<Tensor> = feats.iter().map(|v| v.as_tensor().clone()).collect();
    time("fpn neck", || {
        let out = fpn.forward(&feats)?;
        step(train, &out.iter().collect::<Vec<_>>())
    })?;
    time("vt_fpn neck", || {
        let out = vt.forward(&feats, train)?;
        step(train, &out.iter().collect::<Vec<_>>())
    })?;
    let vcfg = vt_fpn.vt_config(d);
    let parts = vb.pp("parts");
    let merged = sides
        .iter()
        .map(|&s| {
            Ok(Var::from_tensor(&Tensor::randn(
                0f32,
                1.,
                (n, d, s, s),
                &dev,
            )?)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut tokens = Vec::new();
    for (i, m) in merged.iter().enumerate() {
        let tokenizer = FilterTokenizer::new(&vcfg, parts.pp("tokenizers").pp(i))?;
        time(&format!("tokenizer.{i}"), || {
            step(train, &[&tokenizer.forward(m.as_tensor())?.0])
        })?;
        tokens.push(tokenizer.forward(m.as_tensor())?.0.detach());
    }
    let transformer = Transformer::new(&vcfg, parts.pp("transformer"))?;
    let all = Var::from_tensor(&Tensor::cat(&tokens, 2)?)?;
    time("transformer", || {
        step(train, &[&transformer.forward(all.as_tensor())?])
    })?;
    for (i, (m, t)) in merged.iter().zip(&tokens).enumerate() {
        let projector = Projector::new(&vcfg, parts.pp("projectors").pp(i))?;
        let t = Var::from_tensor(t)?;
        time(&format!("projector.{i}"), || {
            step(
                train,
                &[&projector.forward_t(m.as_tensor(), t.as_tensor(), train)?],
            )
        })?;
    }
    Ok(())
}

/// Each VT stage of VT-ResNet-18 next to the ResNet stage it replaces.
fn resnet_stages(train: bool) -> Result<()> {
    let dev = Device::Cpu;
    let small = |c: ResNetConfig| {
        c.with_width(0.25)
            .with_stem(Stem::Small)
            .with_in_channels(1)
            .with_classes(10)
    };
    let (base_cfg, vt_cfg) = (
        small(ResNetConfig::resnet18()),
        small(presets::vt_resnet18()),
    );
    let (base_store, vt_store) = (
        VarStore::seeded(0, DType::F32, &dev),
        VarStore::seeded(0, DType::F32, &dev),
    );
    let base = ResNet::new(&base_cfg, base_store.var_builder())?;
    let vt = ResNet::new(&vt_cfg, vt_store.var_builder())?;
    let trunk = ResNetTrunk::new(&vt_cfg, &NoiseSource::new(0), vt_store.var_builder())?;
    let x = Tensor::randn(0f32, 1., (64, 1, 56, 56), &dev)?;
    let step = |outs: &[&Tensor]| step(train, outs);
    time("resnet18", || step(&[&base.forward_t(&x, train)?]))?;
    time("vt_resnet18", || step(&[&vt.forward_t(&x, train)?]))?;
    time("trunk (layer1-3)", || {
        step(&[&trunk.forward_stages(&x, train)?.pop().expect("stages")])
    })?;
    // the VT stages' inputs: the trunk's output, then each module's, as leaves
    let mut input = Var::from_tensor(&trunk.forward_stages(&x, false)?.pop().expect("stages"))?;
    let mut tokens: Option<Tensor> = None;
    for (i, cfg) in vt_cfg.vt.iter().enumerate() {
        let vb = vt_store.var_builder().pp(format!("vt.{i}"));
        let module = VisualTransformer::new(cfg, vb.clone())?;
        let tokenizer = Tokenizer::new(cfg, vb.pp("tokenizer"))?;
        let relation = TokenRelation::new(cfg, vb.pp("transformer"))?;
        let projector = Projector::new(cfg, vb.pp("projector"))?;
        let (xin, prev) = (input.as_tensor(), tokens.as_ref());
        time(&format!("vt.{i}"), || {
            let (y, t) = module.forward_t(xin, prev, train)?;
            step(&[&y, &t])
        })?;
        time(&format!("vt.{i}.tokenizer"), || {
            step(&[&tokenizer.forward(xin, prev)?.0])
        })?;
        let t = Var::from_tensor(&tokenizer.forward(xin, prev)?.0.detach())?;
        if let Some(relation) = &relation {
            time(&format!("vt.{i}.transformer"), || {
                step(&[&relation.forward(t.as_tensor())?])
            })?;
        }
        time(&format!("vt.{i}.projector"), || {
            step(&[&projector.forward_t(xin, t.as_tensor(), train)?])
        })?;
        let (y, t) = module.forward_t(xin, prev, false)?;
        (input, tokens) = (Var::from_tensor(&y.detach())?, Some(t.detach()));
    }
    Ok(())
}

/// Prints the median and fastest of 15 steps of `f` (or, with `PART=name`, loops it 1000 times first).
fn time(name: &str, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    if let Some(part) = std::env::var_os("PART") {
        if part != name {
            return Ok(());
        }
        for _ in 0..1000 {
            f()?;
        }
    }
    for _ in 0..3 {
        f()?;
    }
    let mut ms = Vec::with_capacity(15);
    for _ in 0..15 {
        let start = Instant::now();
        f()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{name:20} median {:8.2} ms   fastest {:8.2} ms",
        ms[7], ms[0]
    );
    Ok(())
}
