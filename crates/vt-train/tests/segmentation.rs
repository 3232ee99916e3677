//! The same trainer on a segmentation task: a per-pixel linear model learns synthetic label
//! maps (with ignored pixels and a class that never occurs) to a high pixel accuracy.

use candle_core::{DType, Device, Module, Result, Tensor};
use vt_ops::{Linear, Rng, VarStore};
use vt_train::metrics::{MIOU, PER_CLASS_IOU, PIXEL_ACC};
use vt_train::{
    evaluate, read_log, BatchSource, Decay, LogRecord, LrSchedule, OptimizerConfig,
    SegmentationStep, Segmenter, TrainConfig, Trainer,
};

const K: usize = 4; // class 3 never occurs in the data
const C: usize = 3;
const SIDE: usize = 6;
const BATCH: usize = 4;

/// A 1x1 convolution: the same linear map at every pixel.
struct PerPixel {
    fc: Linear,
}

impl Segmenter for PerPixel {
    fn logits(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let rows = x.permute((0, 2, 3, 1))?.reshape((n * h * w, c))?;
        self.fc
            .forward(&rows)?
            .reshape((n, h, w, K))?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }
}

/// Images whose pixel of class c has a feature vector near 1.5·e_c (noise σ 0.5); 10 % of the
/// pixels are labelled 255 (ignored) and carry pure noise.
struct Maps {
    images: Vec<Vec<f32>>,
    labels: Vec<Vec<u32>>,
}

impl Maps {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let (mut images, mut labels) = (vec![], vec![]);
        for _ in 0..n {
            let mut img = vec![0f32; C * SIDE * SIDE];
            let mut lab = vec![0u32; SIDE * SIDE];
            for p in 0..SIDE * SIDE {
                let class = (rng.uniform() * C as f64) as usize % C;
                let ignored = rng.uniform() < 0.1;
                lab[p] = if ignored { 255 } else { class as u32 };
                for ch in 0..C {
                    let signal = if !ignored && ch == class { 1.5 } else { 0.0 };
                    img[ch * SIDE * SIDE + p] = (signal + 0.5 * rng.normal()) as f32;
                }
            }
            images.push(img);
            labels.push(lab);
        }
        Self { images, labels }
    }
}

impl BatchSource for Maps {
    fn batches_per_epoch(&self) -> usize {
        self.images.len() / BATCH
    }
    fn epoch(
        &self,
        _epoch: usize,
        skip: usize,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + '_> {
        Box::new((skip..self.batches_per_epoch()).map(move |b| {
            let r = b * BATCH..(b + 1) * BATCH;
            let x: Vec<f32> = self.images[r.clone()].concat();
            let y: Vec<u32> = self.labels[r].concat();
            Ok((
                Tensor::from_vec(x, (BATCH, C, SIDE, SIDE), &Device::Cpu)?,
                Tensor::from_vec(y, (BATCH, SIDE, SIDE), &Device::Cpu)?,
            ))
        }))
    }
}

#[test]
fn a_per_pixel_model_learns_synthetic_maps() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vt-train-seg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = VarStore::seeded(3, DType::F32, &Device::Cpu);
    let model = PerPixel {
        fc: Linear::new(C, K, store.var_builder().pp("fc"))?,
    };
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: BATCH,
        seed: 1,
        optimizer: OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        },
        schedule: LrSchedule {
            lr: 0.5,
            decay: Decay::Constant,
            warmup_epochs: 0.0,
            warmup_start_lr: 0.0,
        },
        label_smoothing: 0.0,
        ema_decay: None,
        grad_clip: None,
        checkpoint_every: 0,
        log_every: 1,
        distillation: None,
    };
    let task = SegmentationStep::from_config(&model, K, &cfg)?;
    let (train, test) = (Maps::new(32, 1), Maps::new(8, 2));
    let before = evaluate(&task, &test)?;
    let trainer = Trainer {
        cfg,
        run_dir: dir.clone(),
        store: &store,
        max_steps: None,
        progress: false,
        group: Default::default(),
    };
    let s = trainer.fit(&task, &train, &test, false)?;
    let acc = s.test.scalar(PIXEL_ACC).unwrap();
    let acc0 = before.scalar(PIXEL_ACC).unwrap();
    assert!(
        acc0 < 70.0,
        "untrained accuracy {acc0}: the task is too easy"
    );
    assert!(
        acc > 90.0,
        "pixel accuracy after training {acc} (before {acc0})"
    );
    assert!(s.test.loss < before.loss);
    // the absent class has no IoU and stays out of the mean
    let iou = s.test.per_class(PER_CLASS_IOU).unwrap();
    assert_eq!(iou.len(), K);
    assert_eq!(iou[3], None);
    let mean = iou.iter().flatten().sum::<f64>() / 3.0;
    assert!((s.test.scalar(MIOU).unwrap() - mean).abs() < 1e-9);
    // ignored pixels are not counted: 8 images of 36 pixels, about 10 % ignored
    assert_eq!(s.test.samples, 8);
    // the log holds one eval record per epoch with the segmentation metrics
    let evals: Vec<_> = read_log(&dir.join("log.jsonl"))?
        .into_iter()
        .filter_map(|r| match r {
            LogRecord::Eval { result, .. } => Some(result),
            _ => None,
        })
        .collect();
    assert_eq!(evals.len(), 3);
    assert_eq!(evals[2], s.test);

    let err = SegmentationStep::from_config(
        &model,
        K,
        &TrainConfig {
            label_smoothing: 0.1,
            ..trainer.cfg.clone()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("label_smoothing"), "{err}");
    let wrong = SegmentationStep::new(&model, 5);
    let (x, y) = test.epoch(0, 0).next().unwrap()?;
    let err = vt_train::TrainStep::step(&wrong, &x, &y, false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("gives 4 class maps, the task has 5"), "{err}");
    Ok(())
}
