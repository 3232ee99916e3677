//! Parity fixtures of the PyTorch reference (`benches/peer/reference/make_fixtures.py`): build the module a
//! file describes, run it, and compare outputs, input gradients, parameter gradients and
//! updated BatchNorm statistics with the stored float64 values.
//!
//! The file is self-describing (`__metadata__.vt_fixture`: module, constructor kwargs, mode),
//! so any fixture the script makes can be checked, not only the committed ones.

use crate::config::{vt_stack, BlockKind, ResNetConfig, Stem};
use crate::fpn::{Fpn, Neck, SemSegFpnHead, VtFpn, VtFpnConfig};
use crate::resnet::ResNet;
use crate::semantic::{NeckConfig, SemanticFpn, SemanticFpnConfig};
use candle_core::{bail, DType, Device, Result, Tensor, Var};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use vt_layers::{
    GraphConv, PositionEncoder, Projector, Tokenizer, Transformer, VisualTransformer, VtConfig,
};
use vt_ops::VarStore;

/// Tolerances of the fixtures README: outputs, input gradients and buffers relative to the
/// tensor's own largest value; parameter gradients relative to the largest parameter gradient
/// of the file (a few true gradients are exactly zero, see the README).
pub const OUTPUT_TOL: f64 = 1e-5;
pub const PARAM_GRAD_TOL: f64 = 1e-4;

/// One compared tensor.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    /// max |ours − reference|
    pub max_abs_err: f64,
    /// the scale the tolerance is relative to
    pub scale: f64,
    pub tolerance: f64,
}

impl Check {
    /// Error as a fraction of the allowed error (≤ 1 passes).
    pub fn ratio(&self) -> f64 {
        self.max_abs_err / (self.tolerance * self.scale).max(1e-30)
    }
    pub fn passed(&self) -> bool {
        self.ratio() <= 1.0
    }
}

#[derive(Clone, Debug)]
pub struct ParityReport {
    pub module: String,
    pub mode: String,
    pub checks: Vec<Check>,
}

impl ParityReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }
    pub fn worst(&self) -> Option<&Check> {
        self.checks
            .iter()
            .max_by(|a, b| a.ratio().total_cmp(&b.ratio()))
    }
}

/// The pyramid levels of the segmentation fixtures (inputs `c2..c5`, outputs `p2..p5`).
const LEVELS: [&str; 4] = ["p2", "p3", "p4", "p5"];

const ROLES: [&str; 6] = ["input.", "output.", "aux.", "grad_seed.", "grad.", "after."];

fn kwargs_usize(kw: &Map<String, Value>, key: &str, default: usize) -> Result<usize> {
    match kw.get(key) {
        None => Ok(default),
        Some(v) => v.as_u64().map(|v| v as usize).ok_or_else(|| {
            candle_core::Error::msg(format!("kwarg `{key}` is not an integer: {v}"))
        }),
    }
}

/// A `VtConfig` from the reference defaults `base` overridden by constructor kwargs, with
/// the per-class spellings (`groups`, `mode`, `niter`) renamed to the `VTConfig` fields.
fn vt_config(base: VtConfig, kw: &Map<String, Value>, groups_field: &str) -> Result<VtConfig> {
    let mut v = serde_json::to_value(&base).map_err(candle_core::Error::wrap)?;
    let obj = v.as_object_mut().expect("VtConfig serialises to an object");
    for (k, val) in kw {
        let field = match k.as_str() {
            "groups" => groups_field,
            "mode" => "recurrent_mode",
            "niter" => "kmeans_iters",
            other => other,
        };
        obj.insert(field.to_string(), val.clone());
    }
    serde_json::from_value(v)
        .map_err(|e| candle_core::Error::wrap(e).context(format!("fixture kwargs {kw:?}")))
}

/// The module under test, built from the metadata.
enum Module {
    Tokenizer(Tokenizer),
    Position(PositionEncoder, (usize, usize)),
    Transformer(Transformer),
    GraphConv(GraphConv),
    Projector(Projector),
    Vt(VisualTransformer),
    ResNet(ResNet),
    Neck(Neck),
    SemSegHead(SemSegFpnHead),
    SemanticFpn(SemanticFpn),
}

fn build(meta: &Value, vb: candle_nn::VarBuilder) -> Result<Module> {
    let name = meta["module"].as_str().unwrap_or_default();
    let empty = Map::new();
    let kw = meta["kwargs"].as_object().unwrap_or(&empty);
    let pseudo = || VtConfig::pseudo_code(kwargs_usize(kw, "in_channels", 0).unwrap_or(0), 0);
    Ok(match name {
        "FilterTokenizer" | "RecurrentTokenizer" | "PoolingTokenizer" | "ClusteringTokenizer" => {
            let mut cfg = vt_config(pseudo(), kw, "tokenizer_groups")?;
            cfg.tokenizer = serde_json::from_value(Value::String(
                name.trim_end_matches("Tokenizer").to_lowercase(),
            ))
            .map_err(candle_core::Error::wrap)?;
            Module::Tokenizer(Tokenizer::new(&cfg, vb)?)
        }
        "PositionEncoder" => {
            let hw = meta["hw"].as_array().map(|a| {
                (
                    a[0].as_u64().unwrap_or(0) as usize,
                    a[1].as_u64().unwrap_or(0) as usize,
                )
            });
            let Some(hw) = hw else {
                bail!("PositionEncoder fixture without `hw`")
            };
            let bias = kw.get("bias").and_then(Value::as_bool).unwrap_or(true);
            let pe = PositionEncoder::new(
                kwargs_usize(kw, "coef_heads", 1)?,
                kwargs_usize(kw, "size", 14)?,
                kwargs_usize(kw, "num_downsample", 1)?,
                bias,
                vb,
            )?;
            Module::Position(pe, hw)
        }
        "Transformer" => {
            let mut cfg = vt_config(pseudo(), kw, "transformer_groups")?;
            cfg.in_channels = cfg.token_channels; // paper_eq reads C_T from in_channels
            Module::Transformer(Transformer::new(&cfg, vb)?)
        }
        "GraphConv" => Module::GraphConv(GraphConv::new(
            &vt_config(pseudo(), kw, "transformer_groups")?,
            vb,
        )?),
        "Projector" => Module::Projector(Projector::new(
            &vt_config(pseudo(), kw, "projector_groups")?,
            vb,
        )?),
        "VisualTransformer" => {
            let cfg_kw = kw.get("cfg").and_then(Value::as_object).unwrap_or(&empty);
            Module::Vt(VisualTransformer::new(
                &vt_config(pseudo(), cfg_kw, "tokenizer_groups")?,
                vb,
            )?)
        }
        "VTResNet" => Module::ResNet(ResNet::new(&vt_resnet_config(kw)?, vb)?),
        "FPN" | "VTFPN" => {
            let (cin, d) = (
                kwargs_ints(kw, "in_channels")?,
                kwargs_usize(kw, "out_channels", 256)?,
            );
            Module::Neck(match name {
                "FPN" => Neck::Fpn(Fpn::new(&cin, d, vb)?),
                _ => Neck::VtFpn(VtFpn::new(&cin, d, &vt_fpn_config(kw)?, vb)?),
            })
        }
        "SemSegFPNHead" => Module::SemSegHead(SemSegFpnHead::new(
            kwargs_usize(kw, "num_classes", 0)?,
            kwargs_usize(kw, "in_channels", 256)?,
            kwargs_usize(kw, "conv_dims", 128)?,
            kwargs_usize(kw, "gn_groups", 32)?,
            vb,
        )?),
        "SemanticFPN" => Module::SemanticFpn(SemanticFpn::new(&semantic_fpn_config(kw)?, vb)?),
        tv if tv.starts_with("torchvision.models.") => {
            let cfg = match tv.trim_start_matches("torchvision.models.") {
                "resnet18" => ResNetConfig::resnet18(),
                "resnet34" => ResNetConfig::resnet34(),
                "resnet50" => ResNetConfig::resnet50(),
                "resnet101" => ResNetConfig::resnet101(),
                other => bail!("unsupported torchvision model `{other}`"),
            };
            Module::ResNet(ResNet::new(&cfg, vb)?)
        }
        other => bail!("unknown fixture module `{other}`"),
    })
}

fn kwargs_ints(kw: &Map<String, Value>, key: &str) -> Result<Vec<usize>> {
    kw.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|v| v as usize)
                .collect()
        })
        .ok_or_else(|| candle_core::Error::msg(format!("fixture kwargs without `{key}`")))
}

fn kwargs_block(kw: &Map<String, Value>) -> Result<BlockKind> {
    Ok(match kw.get("block").and_then(Value::as_str) {
        Some("basic") => BlockKind::Basic,
        Some("bottleneck") => BlockKind::Bottleneck,
        other => bail!("unknown block {other:?}"),
    })
}

fn vt_fpn_config(kw: &Map<String, Value>) -> Result<VtFpnConfig> {
    serde_json::from_value(kw.get("vt").cloned().unwrap_or(Value::Null))
        .map_err(|e| candle_core::Error::wrap(e).context("fixture kwarg `vt`"))
}

/// `SemanticFPN(num_classes, neck, block, layers, widths, stem_width, fpn_channels,
/// head_channels, gn_groups, vt)` of the reference.
fn semantic_fpn_config(kw: &Map<String, Value>) -> Result<SemanticFpnConfig> {
    let mut trunk = ResNetConfig::resnet50();
    trunk.block = kwargs_block(kw)?;
    trunk.layers = kwargs_ints(kw, "layers")?;
    trunk.widths = kwargs_ints(kw, "widths")?;
    trunk.stem_width = kwargs_usize(kw, "stem_width", 64)?;
    let neck = match kw.get("neck").and_then(Value::as_str) {
        Some("fpn") | None => NeckConfig::Fpn,
        Some("vt_fpn") => NeckConfig::VtFpn(vt_fpn_config(kw)?),
        Some(other) => bail!("unknown neck `{other}`"),
    };
    Ok(SemanticFpnConfig {
        fpn_channels: kwargs_usize(kw, "fpn_channels", 256)?,
        head_channels: kwargs_usize(kw, "head_channels", 128)?,
        gn_groups: kwargs_usize(kw, "gn_groups", 32)?,
        ..SemanticFpnConfig::new(trunk, neck, kwargs_usize(kw, "num_classes", 0)?)
    })
}

fn vt_resnet_config(kw: &Map<String, Value>) -> Result<ResNetConfig> {
    let ints = |key: &str| kwargs_ints(kw, key);
    let block = kwargs_block(kw)?;
    let mut vts = kw
        .get("vts")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let c0 = vts.remove("c0").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    let couts: Vec<usize> = vts
        .remove("couts")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_u64)
        .map(|v| v as usize)
        .collect();
    let project_last = vts
        .remove("project_last")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let projectors = vts
        .remove("projectors")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let tokenizers: Option<Vec<vt_layers::TokenizerKind>> = match vts.remove("tokenizers") {
        Some(Value::Array(a)) => {
            Some(serde_json::from_value(Value::Array(a)).map_err(candle_core::Error::wrap)?)
        }
        _ => None,
    };
    let base = vt_config(VtConfig::preset(0, 0), &vts, "tokenizer_groups")?;
    Ok(ResNetConfig {
        block,
        layers: ints("layers")?,
        widths: ints("widths")?,
        stem_width: kwargs_usize(kw, "stem_width", 64)?,
        stem: Stem::Imagenet,
        in_channels: 3,
        num_classes: kwargs_usize(kw, "num_classes", 1000)?,
        dropout: kw.get("dropout").and_then(Value::as_f64).unwrap_or(0.0),
        drop_path: 0.0,
        vt: vt_stack(
            c0,
            &couts,
            project_last,
            tokenizers.as_deref(),
            projectors,
            &base,
        ),
    })
}

/// PyTorch's own float32 deviation per tensor, from the `fixtures.json` that
/// `make_fixtures.py` writes beside the files (absent: empty). Deep nets (torchvision's
/// ResNet-50) round more than the 1e-5 default, so a tensor's tolerance is at least
/// `F32_SLACK` times what PyTorch float32 itself deviates.
fn recorded_f32_deviation(path: &Path) -> HashMap<String, f64> {
    let index = path.with_file_name("fixtures.json");
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let Ok(text) = std::fs::read_to_string(index) else {
        return HashMap::new();
    };
    let Ok(json) = serde_json::from_str::<Value>(&text) else {
        return HashMap::new();
    };
    let entries = json["fixtures"].as_array().cloned().unwrap_or_default();
    let Some(entry) = entries
        .iter()
        .find(|e| e["file"].as_str() == Some(file.as_str()))
    else {
        return HashMap::new();
    };
    let devs = entry["f32_vs_f64_rel_linf"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    devs.into_iter()
        .filter_map(|(k, v)| v.as_f64().map(|v| (k, v)))
        .collect()
}

const F32_SLACK: f64 = 3.0;

fn max_abs(t: &Tensor) -> Result<f64> {
    t.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// Fixtures whose gradients float32 cannot resolve, checked in float64, with the reason.
///
/// VT-FPN in train mode: its gradients in float32 deviate from the reference by up to 2.5e-3
/// of their scale with vt's kernels (and by other amounts with candle's: the result depends on
/// the summation order), while PyTorch's own float32 run deviates by 4e-6; in float64 every
/// tensor matches to 4e-8, so the maths is the reference's and float32 cannot resolve this
/// fixture's gradients (batch statistics over 16 values per channel at the 2x2 C5, feeding
/// the softmaxes of the VT modules).
///
/// The tiny VT-ResNet in train mode: train-mode batch norm over 2 samples of 4×4 maps amplifies
/// rounding, so its input gradient in float32 moves with the summation order alone (0.49-1.14
/// of its tolerance across vt's kernel rounds; PyTorch's own float32 run sits at 0.41). Running
/// the position encoder's 3×3 and 1×1 convs as one conv put it at 1.14; in float64 every tensor
/// is within 0.005 of its tolerance.
pub const FLOAT32_UNRESOLVED: &[&str] = &[
    "semantic_vt_fpn_tiny_train.safetensors",
    "vt_resnet_tiny_basic_train.safetensors",
];

/// The dtype to check the fixture at `path` in: float64 for [`FLOAT32_UNRESOLVED`], else float32.
pub fn fixture_dtype(path: &Path) -> DType {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match FLOAT32_UNRESOLVED.contains(&name) {
        true => DType::F64,
        false => DType::F32,
    }
}

/// Runs the fixture at `path` on `device`, in [`fixture_dtype`], and compares every stored
/// tensor.
pub fn run_fixture(path: &Path, device: &Device) -> Result<ParityReport> {
    run_fixture_as(path, device, fixture_dtype(path))
}

/// [`run_fixture`] with the module and its inputs in `dtype` (`F64` checks the maths without
/// float32 rounding, for fixtures whose gradients float32 cannot resolve).
pub fn run_fixture_as(path: &Path, device: &Device, dtype: DType) -> Result<ParityReport> {
    let at = |what: &str| format!("{}: {what}", path.display());
    let bytes =
        std::fs::read(path).map_err(|e| candle_core::Error::from(e).context(at("cannot read")))?;
    let (_, st_meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| candle_core::Error::from(e).context(at("not a safetensors file")))?;
    let meta_str = st_meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("vt_fixture").cloned())
        .ok_or_else(|| {
            candle_core::Error::msg(at("no `vt_fixture` entry in the safetensors metadata"))
        })?;
    let meta: Value = serde_json::from_str(&meta_str)
        .map_err(|e| candle_core::Error::wrap(e).context(at("bad vt_fixture metadata")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
    let train = meta["mode"].as_str() == Some("train");
    let module_name = meta["module"].as_str().unwrap_or("?").to_string();

    let (params, other): (HashMap<_, _>, HashMap<_, _>) = tensors
        .into_iter()
        .partition(|(k, _)| !ROLES.iter().any(|r| k.starts_with(r)));
    let param_names: Vec<String> = params
        .keys()
        .filter(|k| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .cloned()
        .collect();
    let store = VarStore::from_tensors(params, &path.display().to_string(), dtype, device);
    let module =
        build(&meta, store.var_builder()).map_err(|e| e.context(at("cannot build the module")))?;
    store.finish()?;

    let inputs: BTreeMap<String, Var> = other
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("input.").map(|n| (n.to_string(), v)))
        .map(|(n, v)| Ok((n, Var::from_tensor(&v.to_dtype(dtype)?)?)))
        .collect::<Result<_>>()?;
    let input = |n: &str| -> Result<Tensor> {
        inputs
            .get(n)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::msg(at(&format!("fixture has no `input.{n}`"))))
    };
    let mut outputs: BTreeMap<&str, Tensor> = BTreeMap::new();
    match &module {
        Module::Tokenizer(m) => {
            let tokens = if inputs.contains_key("tokens") {
                Some(input("tokens")?)
            } else {
                None
            };
            outputs.insert("tokens", m.forward(&input("x")?, tokens.as_ref())?.0);
        }
        Module::Position(m, hw) => {
            outputs.insert("pos", m.forward(&input("coef")?, *hw)?);
        }
        Module::Transformer(m) => {
            outputs.insert("tokens", m.forward(&input("tokens")?)?);
        }
        Module::GraphConv(m) => {
            outputs.insert("tokens", m.forward(&input("tokens")?)?);
        }
        Module::Projector(m) => {
            outputs.insert("x", m.forward_t(&input("x")?, &input("tokens")?, train)?);
        }
        Module::Vt(m) => {
            let tokens = if inputs.contains_key("tokens") {
                Some(input("tokens")?)
            } else {
                None
            };
            let (x, t) = m.forward_t(&input("x")?, tokens.as_ref(), train)?;
            outputs.insert("x", x);
            outputs.insert("tokens", t);
        }
        Module::Neck(m) => {
            let feats = LEVELS
                .iter()
                .map(|l| input(&format!("c{}", &l[1..])))
                .collect::<Result<Vec<_>>>()?;
            for (l, p) in LEVELS.iter().zip(m.forward(&feats, train)?) {
                outputs.insert(l, p);
            }
        }
        Module::SemSegHead(m) => {
            let feats = LEVELS
                .iter()
                .map(|l| input(l))
                .collect::<Result<Vec<_>>>()?;
            outputs.insert("logits", m.forward(&feats)?);
        }
        Module::SemanticFpn(m) => {
            outputs.insert(
                "logits",
                candle_core::ModuleT::forward_t(m, &input("x")?, train)?,
            );
        }
        Module::ResNet(m) => {
            let (x, t) = m.forward_features(&input("x")?, train)?;
            outputs.insert("logits", m.forward_head(&x, t.as_ref(), train)?);
            if let Some(t) = t {
                outputs.insert("x", x);
                outputs.insert("tokens", t);
            }
        }
    }

    let f32_dev = recorded_f32_deviation(path);
    let mut checks = Vec::new();
    let mut compare =
        |name: String, ours: &Tensor, reference: &Tensor, scale: f64, tol: f64| -> Result<()> {
            let tol = f32_dev.get(&name).map_or(tol, |d| tol.max(F32_SLACK * d));
            if ours.shape() != reference.shape() {
                bail!(
                    "{}: {name} has shape {:?}, reference {:?}",
                    path.display(),
                    ours.shape(),
                    reference.shape()
                );
            }
            let d = max_abs(&(ours.to_dtype(DType::F64)? - reference.to_dtype(DType::F64)?)?)?;
            checks.push(Check {
                name,
                max_abs_err: d,
                scale,
                tolerance: tol,
            });
            Ok(())
        };
    let mut loss: Option<Tensor> = None;
    for (name, out) in &outputs {
        let Some(reference) = other.get(&format!("output.{name}")) else {
            continue;
        };
        compare(
            format!("output.{name}"),
            out,
            reference,
            max_abs(reference)?,
            OUTPUT_TOL,
        )?;
        if let Some(seed) = other.get(&format!("grad_seed.{name}")) {
            let term = (out * seed.to_dtype(out.dtype())?)?.sum_all()?;
            loss = Some(match loss {
                Some(l) => (l + term)?,
                None => term,
            });
        }
    }
    if let Some(loss) = loss {
        let grads = loss.backward()?;
        for (name, var) in &inputs {
            if let Some(reference) = other.get(&format!("grad.input.{name}")) {
                let g = grads
                    .get(var.as_tensor())
                    .cloned()
                    .unwrap_or(var.as_tensor().zeros_like()?);
                compare(
                    format!("grad.input.{name}"),
                    &g,
                    reference,
                    max_abs(reference)?,
                    OUTPUT_TOL,
                )?;
            }
        }
        let vars = store.vars();
        let mut file_scale: f64 = 0.0;
        for n in &param_names {
            if let Some(r) = other.get(&format!("grad.{n}")) {
                file_scale = file_scale.max(max_abs(r)?);
            }
        }
        for n in &param_names {
            let Some(reference) = other.get(&format!("grad.{n}")) else {
                continue;
            };
            let var = &vars[n];
            let g = grads
                .get(var.as_tensor())
                .cloned()
                .unwrap_or(var.as_tensor().zeros_like()?);
            compare(
                format!("grad.{n}"),
                &g,
                reference,
                file_scale,
                PARAM_GRAD_TOL,
            )?;
        }
    }
    let vars = store.vars();
    for (k, reference) in other.iter().filter(|(k, _)| k.starts_with("after.")) {
        let key = &k["after.".len()..];
        let Some(var) = vars.get(key) else {
            bail!("{}: `{k}` names no buffer of the module", path.display())
        };
        compare(
            k.clone(),
            var.as_tensor(),
            reference,
            max_abs(reference)?,
            OUTPUT_TOL,
        )?;
    }
    checks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ParityReport {
        module: module_name,
        mode: meta["mode"].as_str().unwrap_or("eval").to_string(),
        checks,
    })
}
