//! What a trained run's visual tokens attend to (the paper's token figure and its §6
//! analysis): each VT module's spatial coefficients on an image, their entropy against a
//! uniform map, the picture of them over the image, and over a run's test set the mean
//! entropy and, for segmentation, the attention on labelled foreground against background.

use crate::config::saved_config;
use crate::data::{classification_pipelines, prepare, segmentation_pipelines};
use crate::error::{invalid, Result, RunError};
use crate::model::{checkpoint_weights, Net, SegNet};
use candle_core::{DType, Device, ModuleT, Tensor};
use serde::Serialize;
use std::path::Path;
use vt_backbones::Task;
use vt_data::transforms::Prepare;
use vt_data::{ClassSample, Image, LabelMap, Rng, SegSample};
use vt_layers::TokenAttention;

/// A trained run's model, either task (one per call, so its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Model {
    Classifier(Net),
    Segmenter(SegNet),
}

impl Model {
    fn load(dir: &Path, device: &Device) -> Result<(Self, crate::RunConfig)> {
        let cfg = saved_config(dir)?;
        let (store, _, _) = checkpoint_weights(dir, device)?;
        let model = match cfg.model.task()? {
            Task::Classification => Model::Classifier(Net::new(&cfg.model, &store)?),
            Task::Segmentation => Model::Segmenter(SegNet::new(&cfg.model, &store)?),
        };
        store.finish()?;
        Ok((model, cfg))
    }

    fn token_attention(&self, x: &Tensor) -> candle_core::Result<Vec<TokenAttention>> {
        match self {
            Model::Classifier(n) => n.0.token_attention(x),
            Model::Segmenter(n) => n.0.token_attention(x),
        }
    }

    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let train = false;
        match self {
            Model::Classifier(n) => n.0.forward_t(x, train),
            Model::Segmenter(n) => n.0.forward_t(x, train),
        }
    }
}

/// One token of one module: its map over the module's input, and that map's entropy.
#[derive(Clone, Debug, Serialize)]
pub struct TokenMap {
    pub token: usize,
    pub entropy: f64,
    /// `H * W` coefficients (mean over heads; they sum to 1), row-major.
    #[serde(skip)]
    pub map: Vec<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModuleTokens {
    pub module: String,
    /// `[H, W]` of the map the tokens attend over.
    pub hw: [usize; 2],
    /// `ln(H * W)`: a token attending everywhere equally.
    pub uniform_entropy: f64,
    pub tokens: Vec<TokenMap>,
}

/// What the model predicted for the image.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicted {
    Class(usize),
    /// Classes present in the class map, with their pixel counts.
    ClassMap(Vec<(u8, usize)>),
}

/// Every VT module's tokens on one image (`tokens.json` of `xtask visualize`).
#[derive(Clone, Debug, Serialize)]
pub struct TokenView {
    pub run: String,
    pub image: String,
    pub prediction: Predicted,
    pub modules: Vec<ModuleTokens>,
}

/// The model input of one image through the run's eval pipeline (1-channel models see the
/// image's grey levels).
fn input(cfg: &crate::RunConfig, image: &Image, device: &Device) -> Result<Tensor> {
    let channels = cfg.model.in_channels.unwrap_or(3);
    let image = match (channels, image.channels) {
        (1, 3) => image.to_grey(),
        _ => image.clone(),
    };
    let (w, h) = (image.width, image.height);
    let prepared = match cfg.model.task()? {
        Task::Classification => {
            let (_, eval) = classification_pipelines(&cfg.data, channels)?;
            eval.prepare(ClassSample { image, label: 0 }, &mut Rng::new(0))?
        }
        Task::Segmentation => {
            let (_, eval) = segmentation_pipelines(&cfg.data, channels)?;
            let label = LabelMap::new(w, h, vec![0; w * h])?;
            eval.prepare(SegSample { image, label }, &mut Rng::new(0))?
        }
    };
    let im = prepared.image;
    Ok(Tensor::from_vec(
        im.data,
        (1, im.channels, im.height, im.width),
        device,
    )?)
}

fn modules(attn: &[TokenAttention], n: usize) -> Result<Vec<ModuleTokens>> {
    attn.iter()
        .map(|a| {
            let maps = a.maps(n)?;
            Ok(ModuleTokens {
                module: a.module.clone(),
                hw: [a.hw.0, a.hw.1],
                uniform_entropy: a.uniform_entropy(),
                tokens: maps
                    .into_iter()
                    .enumerate()
                    .map(|(token, map)| TokenMap {
                        token,
                        entropy: vt_layers::entropy(&map),
                        map,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// The tokens of the run in `dir` on `image` (its newest checkpoint, eval mode).
pub fn token_view(
    dir: &Path,
    image: &Image,
    image_name: &str,
    device: &Device,
) -> Result<TokenView> {
    let (model, cfg) = Model::load(dir, device)?;
    let x = input(&cfg, image, device)?;
    let attn = model.token_attention(&x)?;
    if attn.is_empty() {
        invalid!(
            "{}: model `{}` has no VT module with spatial coefficients to show",
            dir.display(),
            cfg.model.preset
        )
    }
    let logits = model.logits(&x)?.squeeze(0)?;
    let prediction = match &model {
        Model::Classifier(_) => Predicted::Class(logits.argmax(0)?.to_scalar::<u32>()? as usize),
        Model::Segmenter(_) => {
            let (h, w) = (image.height, image.width);
            let map = logits
                .narrow(1, 0, h)?
                .narrow(2, 0, w)?
                .argmax(0)?
                .to_dtype(DType::U32)?;
            let mut counts = std::collections::BTreeMap::new();
            for c in map.flatten_all()?.to_vec1::<u32>()? {
                *counts.entry(c as u8).or_insert(0usize) += 1;
            }
            Predicted::ClassMap(counts.into_iter().collect())
        }
    };
    Ok(TokenView {
        run: dir.display().to_string(),
        image: image_name.to_string(),
        prediction,
        modules: modules(&attn, 0)?,
    })
}

/// Side of the input panel and of each token panel of [`write_token_png`], and tokens per row.
const INPUT_SIDE: usize = 256;
const PANEL: usize = 128;
const PER_ROW: usize = 8;

/// A colour for `v` in `[0, 1]` (dark blue, through green and yellow, to red).
fn heat(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0);
    let ramp = |c: f32| (1.5 - (4.0 * v - c).abs()).clamp(0.0, 1.0);
    [ramp(3.0), ramp(2.0), ramp(1.0)].map(|c| c * 255.0)
}

/// The picture of a [`TokenView`]: the input image (256 px) on top, then for each module rows
/// of 128 px panels, one per token: its coefficients as a
/// heatmap over the grey image, on a log scale from uniform (`1/HW`, dark blue) to all of the
/// mass on one cell (red).
pub fn write_token_png(path: &Path, image: &Image, view: &TokenView) -> Result<()> {
    let rows: usize = view
        .modules
        .iter()
        .map(|m| m.tokens.len().div_ceil(PER_ROW))
        .sum();
    let (width, height) = (PER_ROW * PANEL, INPUT_SIDE + rows * PANEL);
    let mut canvas = vec![32u8; width * height * 3];
    let sample = |img: &Image, side: usize, x: usize, y: usize| -> [u8; 3] {
        let (sx, sy) = (x * img.width / side, y * img.height / side);
        let p = (sy * img.width + sx) * img.channels;
        match img.channels {
            1 => [img.data[p]; 3],
            _ => [img.data[p], img.data[p + 1], img.data[p + 2]],
        }
    };
    for y in 0..INPUT_SIDE {
        for x in 0..INPUT_SIDE {
            let o = (y * width + x) * 3;
            canvas[o..o + 3].copy_from_slice(&sample(image, INPUT_SIDE, x, y));
        }
    }
    let mut row = 0;
    for m in &view.modules {
        let (h, w) = (m.hw[0], m.hw[1]);
        for t in &m.tokens {
            let (col, r) = (t.token % PER_ROW, row + t.token / PER_ROW);
            // log scale against uniform: a token spread evenly is dark blue, a token with all
            // its mass on one cell is red there
            let (cells, log_cells) = ((h * w) as f32, ((h * w) as f32).ln().max(f32::EPSILON));
            for y in 0..PANEL {
                for x in 0..PANEL {
                    let grey = sample(image, PANEL, x, y)
                        .iter()
                        .map(|&v| v as f32)
                        .sum::<f32>()
                        / 3.0;
                    let p = t.map[(y * h / PANEL) * w + x * w / PANEL];
                    let a = (p * cells).max(1.0).ln() / log_cells;
                    let c = heat(a);
                    let o = ((INPUT_SIDE + r * PANEL + y) * width + col * PANEL + x) * 3;
                    for k in 0..3 {
                        canvas[o + k] = (0.4 * grey + 0.6 * c[k]) as u8;
                    }
                }
            }
        }
        row += m.tokens.len().div_ceil(PER_ROW);
    }
    crate::predict::write_rgb(path, width, height, &canvas)
}

/// The paper's §6 analysis of a run over its first test batches.
#[derive(Clone, Debug, Serialize)]
pub struct TokenStatistics {
    pub samples: usize,
    /// Mean token entropy over modules, tokens and samples, and the mean uniform entropy.
    pub mean_entropy: f64,
    pub uniform_entropy: f64,
    /// Segmentation: mean attention per labelled-foreground pixel over that per background
    /// pixel (background = class 0; ignore pixels are neither), over every module and token.
    pub foreground_ratio: Option<f64>,
}

/// [`TokenStatistics`] of the run in `dir` over up to `max_samples` test samples.
pub fn token_statistics(
    dir: &Path,
    max_samples: usize,
    device: &Device,
) -> Result<TokenStatistics> {
    let (model, cfg) = Model::load(dir, device)?;
    let segmentation = matches!(model, Model::Segmenter(_));
    let p = prepare(cfg, device)?;
    let (mut samples, mut entropy, mut uniform, mut terms) = (0usize, 0f64, 0f64, 0usize);
    let (mut fg, mut bg) = (0f64, 0f64);
    for batch in p.test.epoch(0, 0) {
        if samples >= max_samples {
            break;
        }
        let (x, y) = batch?;
        let attn = model.token_attention(&x)?;
        let n = x.dim(0)?.min(max_samples - samples);
        for i in 0..n {
            for a in &attn {
                let maps = a.maps(i)?;
                for m in &maps {
                    entropy += vt_layers::entropy(m);
                    uniform += a.uniform_entropy();
                    terms += 1;
                }
                if segmentation {
                    let (f, b) = foreground_attention(&y.get(i)?, a.hw, &maps)?;
                    fg += f;
                    bg += b;
                }
            }
        }
        samples += n;
    }
    if terms == 0 {
        return Err(RunError::Invalid(format!(
            "{}: no VT module with spatial coefficients, or no test sample",
            dir.display()
        )));
    }
    Ok(TokenStatistics {
        samples,
        mean_entropy: entropy / terms as f64,
        uniform_entropy: uniform / terms as f64,
        foreground_ratio: (segmentation && bg > 0.0).then(|| fg / bg),
    })
}

/// Per-pixel attention on foreground and on background of one label map `(H, W)` (padded
/// with 255), each token's map read at the label nearest its cell; summed over tokens.
fn foreground_attention(
    labels: &Tensor,
    hw: (usize, usize),
    maps: &[Vec<f32>],
) -> Result<(f64, f64)> {
    let (lh, lw) = labels.dims2()?;
    let labels = labels.to_vec2::<u32>()?;
    let (h, w) = hw;
    let cell = |i: usize| labels[(i / w * lh / h).min(lh - 1)][(i % w * lw / w).min(lw - 1)];
    let (nf, nb) = (0..h * w).fold((0usize, 0usize), |(f, b), i| match cell(i) {
        0 => (f, b + 1),
        255 => (f, b),
        _ => (f + 1, b),
    });
    if nf == 0 || nb == 0 {
        return Ok((0.0, 0.0));
    }
    let (mut f, mut b) = (0f64, 0f64);
    for m in maps {
        for (i, &a) in m.iter().enumerate() {
            match cell(i) {
                0 => b += a as f64,
                255 => {}
                _ => f += a as f64,
            }
        }
    }
    Ok((f / nf as f64, b / nb as f64))
}
