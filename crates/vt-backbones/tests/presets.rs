//! One loop over the preset table (style rule 5): counts against the reference counter and the
//! paper, parameter names against torchvision, and a forward/backward at a tiny input.

use candle_core::{DType, Device, Result, Tensor};
use vt_backbones::{
    ClassifierPreset, Preset, PresetKind, ResNet, ResNetConfig, SemanticFpn, Stem, PRESETS,
};
use vt_ops::VarStore;

/// The classifier presets with their figures.
fn classifiers() -> impl Iterator<Item = (&'static Preset, &'static ClassifierPreset)> {
    PRESETS.iter().filter_map(|p| match &p.kind {
        PresetKind::Classifier(c) => Some((p, c)),
        PresetKind::Segmenter(_) => None,
    })
}

fn build(cfg: &ResNetConfig) -> Result<(ResNet, VarStore)> {
    let store = VarStore::seeded(0, DType::F32, &Device::Cpu);
    let model = ResNet::new(cfg, store.var_builder())?;
    Ok((model, store))
}

/// BatchNorm variables: those whose module also holds a `running_mean`.
fn bn_names(store: &VarStore) -> std::collections::BTreeSet<String> {
    let vars = store.vars();
    let modules: Vec<String> = vars
        .keys()
        .filter_map(|k| k.strip_suffix("running_mean"))
        .map(str::to_string)
        .collect();
    vars.keys()
        .filter(|k| {
            modules
                .iter()
                .any(|m| k.strip_prefix(m.as_str()).is_some_and(|r| !r.contains('.')))
        })
        .cloned()
        .collect()
}

#[test]
fn every_preset_matches_the_reference_counter() -> Result<()> {
    for (p, c) in classifiers() {
        let (model, store) = build(&(c.config)())?;
        let total = model.cost(224, 224).total();
        let (macs_m, params_m) = (total.macs as f64 / 1e6, total.params as f64 / 1e6);
        assert!(
            (macs_m - c.reference_macs_m).abs() <= 0.51,
            "{}: {macs_m} MMACs vs reference {}",
            p.name,
            c.reference_macs_m
        );
        assert!(
            (params_m - c.reference_params_m).abs() <= 0.0051,
            "{}: {params_m} M params vs reference {}",
            p.name,
            c.reference_params_m
        );
        // the analytic parameter count equals the variables actually created (BN excluded)
        let bn = bn_names(&store);
        let created: usize = store
            .vars()
            .iter()
            .filter(|(k, _)| !bn.contains(*k))
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(created as u64, total.params, "{}", p.name);
    }
    Ok(())
}

#[test]
fn trunk_counts_are_exact() -> Result<()> {
    // stem + layer1..3 at 224x224 from the reference counter (vt_counter.TRUNK)
    for (cfg, macs, params) in [
        (ResNetConfig::resnet18(), 1_402_519_552u64, 2_778_304u64),
        (ResNetConfig::resnet34(), 3_020_996_608, 8_160_448),
        (ResNetConfig::resnet50(), 3_277_897_728, 8_512_704),
        (ResNetConfig::resnet101(), 6_990_118_912, 27_452_608),
    ] {
        let (model, _) = build(&cfg)?;
        let c = model.cost(224, 224);
        let trunk: vt_ops::Cost = ["stem", "layer1", "layer2", "layer3"]
            .iter()
            .map(|n| c.get(n).unwrap())
            .sum();
        assert_eq!((trunk.macs, trunk.params), (macs, params));
    }
    Ok(())
}

#[test]
fn paper_targets() -> Result<()> {
    for (p, c) in classifiers().filter(|(p, _)| p.mismatch.is_none() && !p.paper_row.contains(':'))
    {
        let (model, _) = build(&(c.config)())?;
        let t = model.cost(224, 224).total();
        let err = (t.macs as f64 / 1e6 / c.paper_macs_m - 1.0).abs();
        let limit = if p.name.starts_with("vt_") {
            0.02
        } else {
            0.005
        };
        assert!(
            err <= limit,
            "{}: MACs {:.4}% from the paper",
            p.name,
            err * 100.0
        );
    }
    Ok(())
}

/// A preset at 1/16 width with 4 heads: structure and names stay the preset's, the tests fast.
fn tiny(c: &ClassifierPreset) -> ResNetConfig {
    let cfg = (c.config)()
        .with_width(0.0625)
        .with_classes(5)
        .with_stem(Stem::Small);
    ResNetConfig {
        vt: cfg
            .vt
            .iter()
            .map(|v| vt_layers::VtConfig {
                heads: 4,
                tokenizer_groups: 4,
                projector_groups: 4,
                ..v.clone()
            })
            .collect(),
        ..cfg
    }
}

/// The eval forward skips the last VT module's projector (the head reads its tokens only): the
/// logits are those of the whole model's features.
#[test]
fn eval_logits_equal_those_of_every_module() -> Result<()> {
    use candle_core::ModuleT;
    let mut rng = vt_ops::Rng::new(0x5e1);
    for (p, c) in classifiers() {
        let (model, _store) = build(&tiny(c))?;
        let x = rng.normal_tensor((2, 3, 32, 32), &Device::Cpu)?;
        let (feat, tokens) = model.forward_features(&x, false)?;
        let full = model.forward_head(&feat, tokens.as_ref(), false)?;
        let fast = model.forward_t(&x, false)?;
        let diff = (full - fast)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{}: eval logits differ by {diff}", p.name);
    }
    Ok(())
}

#[test]
fn every_preset_trains_at_a_tiny_input() -> Result<()> {
    // seeded inputs and loss weights: a failure reproduces
    let mut rng = vt_ops::Rng::new(0x9ad);
    for (p, c) in classifiers() {
        let (model, store) = build(&tiny(c))?;
        let x = rng.normal_tensor((2, 3, 32, 32), &Device::Cpu)?;
        let (feat, tokens) = model.forward_features(&x, true)?;
        let logits = model.forward_head(&feat, tokens.as_ref(), true)?;
        assert_eq!(logits.dims(), &[2, 5], "{}", p.name);
        let w = rng.normal_tensor((2, 5), &Device::Cpu)?;
        // as in the fixtures, the final map enters the loss too: the last VT's projector
        // output is unused by the token head (reference Decision 14)
        let wf = rng.normal_tensor(feat.shape(), &Device::Cpu)?;
        let grads = ((logits * w)?.sum_all()? + (feat * wf)?.sum_all()?)?.backward()?;
        // these biases add a constant along a softmax axis: their true gradient is 0
        let shift_invariant = [
            "tokenizer.coef.bias",
            "tokenizer.key.bias",
            "transformer.key.bias",
            "projector.key.bias",
        ];
        assert_gradients(p.name, &store, &grads, &shift_invariant)?;
    }
    Ok(())
}

/// Every trainable variable of `store` has a finite gradient, non-zero unless its name ends
/// with one of `zero_allowed`; those may have none (a bias that cancels in a softmax is left
/// out of the computation).
fn assert_gradients(
    model: &str,
    store: &VarStore,
    grads: &candle_core::backprop::GradStore,
    zero_allowed: &[&str],
) -> Result<()> {
    for (name, var) in store.vars() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            continue;
        }
        let zero_ok = zero_allowed.iter().any(|s| name.ends_with(s));
        let Some(g) = grads.get(var.as_tensor()) else {
            assert!(zero_ok, "{model}: no gradient for {name}");
            continue;
        };
        let g = g.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(g.is_finite(), "{model}: {name} gradient not finite");
        assert!(zero_ok || g > 0.0, "{model}: zero gradient for {name}");
    }
    Ok(())
}

#[test]
fn resnet_names_and_shapes_equal_torchvision() -> Result<()> {
    // tests/data/torchvision_keys.json is written by torchvision_keys.py beside it
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/torchvision_keys.json"
    );
    let all: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<usize>>> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (name, want) in &all {
        let c = vt_backbones::preset(name)?.classifier()?;
        let (_, store) = build(&(c.config)())?;
        let ours: std::collections::BTreeMap<String, Vec<usize>> = store
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.dims().to_vec()))
            .collect();
        assert_eq!(&ours, want, "{name}");
    }
    Ok(())
}

fn segmenters() -> impl Iterator<Item = (&'static Preset, &'static vt_backbones::SegmenterPreset)> {
    PRESETS.iter().filter_map(|p| match &p.kind {
        PresetKind::Segmenter(s) => Some((p, s)),
        PresetKind::Classifier(_) => None,
    })
}

#[test]
fn segmentation_necks_match_the_reference_counter() -> Result<()> {
    let mut seen = 0;
    for (p, s) in segmenters() {
        let store = VarStore::seeded(0, DType::F32, &Device::Cpu);
        let model = SemanticFpn::new(&(s.config)(), store.var_builder())?;
        for row in &s.rows {
            let (h, w) = row.input;
            let neck = model.neck_cost(h, w).macs as f64 / 1e9;
            assert!(
                (neck - row.reference_neck_gmacs).abs() < 0.006,
                "{} at {h}x{w}: neck {neck:.4} GMACs vs reference {}",
                p.name,
                row.reference_neck_gmacs
            );
            // the paper rounds its neck figure; ours is within 1.5 % of it
            assert!(
                (neck / row.neck_gmacs - 1.0).abs() < 0.05,
                "{}: {neck} vs paper {}",
                p.name,
                row.neck_gmacs
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 8, "four segmentation presets, two tables each");
    Ok(())
}

#[test]
fn every_segmentation_preset_trains_at_a_tiny_input() -> Result<()> {
    let mut rng = vt_ops::Rng::new(0x5e9);
    for (p, s) in segmenters() {
        // shrink widths; heads and groups shrink with them so the channels still divide
        let mut cfg = (s.config)().with_width(0.0625);
        cfg.num_classes = 3;
        cfg.gn_groups = 4;
        if let vt_backbones::NeckConfig::VtFpn(v) = &mut cfg.neck {
            (v.heads, v.tokenizer_groups, v.projector_groups) = (4, 4, 4);
        }
        let store = VarStore::seeded(0, DType::F32, &Device::Cpu);
        let model = SemanticFpn::new(&cfg, store.var_builder())?;
        let x = rng.normal_tensor((2, 3, 64, 96), &Device::Cpu)?;
        let logits = candle_core::ModuleT::forward_t(&model, &x, true)?;
        assert_eq!(logits.dims(), &[2, 3, 64, 96], "{}", p.name);
        let w = rng.normal_tensor(logits.shape(), &Device::Cpu)?;
        let grads = (logits * w)?.sum_all()?.backward()?;
        // a bias before a softmax over its own axis has true gradient 0
        assert_gradients(p.name, &store, &grads, &["coef.bias"])?;
        // S4: other sizes are refused with a message that says what to do
        let bad = Tensor::zeros((1, 3, 60, 64), DType::F32, &Device::Cpu)?;
        let err = candle_core::ModuleT::forward_t(&model, &bad, false).unwrap_err();
        assert!(err.to_string().contains("multiple of 32"), "{err}");
    }
    Ok(())
}

#[test]
fn segmentation_names_are_torchvision_and_detectron2() -> Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/torchvision_keys.json"
    );
    let all: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<usize>>> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let store = VarStore::seeded(0, DType::F32, &Device::Cpu);
    SemanticFpn::new(&vt_backbones::presets::fpn_resnet50(), store.var_builder())?;
    let vars = store.vars();
    // an ImageNet resnet50 checkpoint (without its classifier) loads under backbone.body
    for (k, shape) in all["resnet50"]
        .iter()
        .filter(|(k, _)| !k.starts_with("fc."))
    {
        let v = vars
            .get(&format!("backbone.body.{k}"))
            .unwrap_or_else(|| panic!("backbone.body.{k} missing"));
        assert_eq!(v.dims(), shape.as_slice(), "{k}");
    }
    // torchvision's FeaturePyramidNetwork and detectron2's SemSegFPNHead names
    for k in [
        "backbone.fpn.inner_blocks.3.0.weight",
        "backbone.fpn.layer_blocks.0.0.bias",
        "sem_seg_head.p2.0.weight",
        "sem_seg_head.p2.0.norm.weight",
        "sem_seg_head.p4.2.weight",
        "sem_seg_head.p5.4.norm.bias",
        "sem_seg_head.predictor.bias",
    ] {
        assert!(vars.contains_key(k), "{k} missing");
    }
    Ok(())
}
