//! The loader: same batches for 0, 1 and 4 workers; order per epoch; drop_last; segmentation
//! batches; progress counter; batch shape errors; the shards of a data-parallel run.

use candle_core::Device;
use std::sync::Arc;
use vt_data::dataset::InMemory;
use vt_data::transforms::seg::{Joint, SegPipeline};
use vt_data::transforms::Pipeline;
use vt_data::{
    Batch, ClassSample, Compose, Dataset, Loader, LoaderConfig, MosaicConfig, Mosaics, Normalize,
    RandAugment, RandomCrop, RandomHorizontalFlip, RandomResizedCrop, Shard,
};

fn toy(n: usize) -> Arc<dyn Dataset<Sample = ClassSample>> {
    let (h, w) = (12, 10);
    Arc::new(InMemory {
        shape: (h, w, 1),
        pixels: (0..n * h * w).map(|i| (i * 37 % 251) as u8).collect(),
        labels: (0..n).map(|i| i % 10).collect(),
        source: "toy".into(),
    })
}

fn augment() -> Arc<Pipeline> {
    Arc::new(Pipeline::new(
        Compose::new()
            .then(RandomCrop::padded(10, 2))
            .then(RandomHorizontalFlip::default())
            .then(RandAugment::new(2, 9)),
        Some(Normalize::new(vec![0.5], vec![0.25]).unwrap()),
    ))
}

fn run(
    ds: Arc<dyn Dataset<Sample = ClassSample>>,
    cfg: LoaderConfig,
    epoch: u64,
) -> Vec<(Vec<f32>, Vec<u32>, Vec<usize>)> {
    let loader = Loader::new(ds, augment(), cfg, &Device::Cpu).unwrap();
    loader
        .epoch(epoch)
        .map(|b| {
            let b: Batch = b.unwrap();
            (
                b.images.flatten_all().unwrap().to_vec1().unwrap(),
                b.labels.to_vec1().unwrap(),
                b.indices,
            )
        })
        .collect()
}

#[test]
fn batches_are_identical_for_0_1_and_4_workers() {
    let ds = toy(103);
    let mut cfg = LoaderConfig::new(8);
    cfg.seed = 11;
    let reference = {
        cfg.workers = 0;
        run(ds.clone(), cfg.clone(), 3)
    };
    assert_eq!(reference.len(), 13);
    assert_eq!(reference.last().unwrap().2.len(), 7);
    for (workers, prefetch) in [(1, 1), (4, 2), (4, 16)] {
        cfg.workers = workers;
        cfg.prefetch = prefetch;
        assert!(
            run(ds.clone(), cfg.clone(), 3) == reference,
            "{workers} workers differ"
        );
    }
    // the augmentation is really random per sample and per epoch
    let other_epoch = run(ds.clone(), cfg.clone(), 4);
    assert!(other_epoch != reference);
    cfg.seed = 12;
    assert!(run(ds, cfg, 3) != reference);
}

#[test]
fn order_shuffle_drop_last_and_progress() {
    let ds = toy(25);
    let mut cfg = LoaderConfig::new(4);
    cfg.workers = 2;
    let loader = Loader::new(ds.clone(), augment(), cfg.clone(), &Device::Cpu).unwrap();
    let (o0, o1) = (loader.order(0), loader.order(1));
    assert_ne!(o0, o1);
    let mut sorted = o0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..25).collect::<Vec<_>>());
    let mut epoch = loader.epoch(0);
    let progress = epoch.progress();
    let seen: Vec<usize> = epoch.by_ref().flat_map(|b| b.unwrap().indices).collect();
    assert_eq!(seen, o0);
    assert_eq!(progress.load(std::sync::atomic::Ordering::Relaxed), 25);
    assert_eq!(loader.num_batches(), 7);

    cfg.drop_last = true;
    cfg.shuffle = false;
    let loader = Loader::new(ds, augment(), cfg, &Device::Cpu).unwrap();
    assert_eq!(loader.num_batches(), 6);
    let batches: Vec<Batch> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 6);
    assert_eq!(batches[1].indices, vec![4, 5, 6, 7]);
    assert_eq!(batches[0].images.dims(), &[4, 1, 10, 10]);
    assert_eq!(
        batches[0].labels.to_vec1::<u32>().unwrap(),
        vec![0, 1, 2, 3]
    );
    // dropping an epoch part-way stops its workers
    let mut e = loader.epoch(1);
    assert!(e.next().is_some());
    drop(e);
}

#[test]
fn segmentation_batches_and_shape_errors() {
    let fm = vt_data::embedded_fashion_mnist().unwrap();
    let mosaics = Arc::new(Mosaics::new(fm.train.clone(), 10, MosaicConfig::new(10, 5)).unwrap());
    let pipe = Arc::new(SegPipeline::default().then(Joint::new(RandomResizedCrop::new(32))));
    let mut cfg = LoaderConfig::new(4);
    cfg.workers = 2;
    let loader = Loader::new(mosaics, pipe, cfg, &Device::Cpu).unwrap();
    let batches: Vec<Batch> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0].images.dims(), &[4, 1, 32, 32]);
    assert_eq!(batches[0].labels.dims(), &[4, 32, 32]);
    let labels: Vec<u32> = batches[0].labels.flatten_all().unwrap().to_vec1().unwrap();
    assert!(labels.iter().all(|&l| l <= 10));

    // images of different sizes cannot be stacked without a resize: the error names them
    let ds = vt_data::open_classification(
        &{
            let dir = tempfile::tempdir().unwrap().keep();
            for (i, size) in [(0u8, 4u32), (1, 5)] {
                let p = dir.join(format!("train/c/{i}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                image::RgbImage::new(size, size).save(&p).unwrap();
            }
            std::fs::create_dir_all(dir.join("val/c")).unwrap();
            image::RgbImage::new(4, 4)
                .save(dir.join("val/c/v.png"))
                .unwrap();
            dir
        },
        None,
    )
    .unwrap();
    let mut cfg = LoaderConfig::new(2);
    cfg.shuffle = false;
    let loader = Loader::new(ds.train, Arc::new(Pipeline::default()), cfg, &Device::Cpu).unwrap();
    let err = loader.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(
        err.contains("1.png")
            && err.contains("(3, 5, 5) (CxHxW)")
            && err.contains("add a Resize or crop"),
        "{err}"
    );
    let err = Loader::new(toy(3), augment(), LoaderConfig::new(0), &Device::Cpu)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("batch_size must be at least 1"),
        "{err}"
    );
}

/// Counts the samples decoded.
struct Counting {
    inner: Arc<dyn Dataset<Sample = ClassSample>>,
    gets: std::sync::atomic::AtomicUsize,
}

impl Dataset for Counting {
    type Sample = ClassSample;
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn get(&self, index: usize) -> vt_data::error::Result<ClassSample> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.get(index)
    }
}

#[test]
fn a_resumed_epoch_reads_only_its_unfinished_batches() {
    let counting = Arc::new(Counting {
        inner: toy(40),
        gets: Default::default(),
    });
    let cfg = LoaderConfig {
        workers: 2,
        seed: 9,
        ..LoaderConfig::new(8)
    };
    let loader = Loader::new(counting.clone(), augment(), cfg, &Device::Cpu).unwrap();
    let whole: Vec<Batch> = loader.epoch(3).map(Result::unwrap).collect();
    let before = counting.gets.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(before, 40);
    let resumed: Vec<Batch> = loader.epoch_from(3, 3).map(Result::unwrap).collect();
    let read = counting.gets.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert_eq!(read, 16, "batches 0..3 of 5 must not be decoded");
    assert_eq!(resumed.len(), 2);
    for (a, b) in whole[3..].iter().zip(&resumed) {
        assert_eq!(a.indices, b.indices);
        assert_eq!(
            a.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}

#[test]
fn the_shards_of_a_batch_are_together_the_batch_one_process_loads() {
    let ds = toy(43);
    let cfg = LoaderConfig {
        seed: 5,
        drop_last: false,
        ..LoaderConfig::new(8)
    };
    let whole = run(ds.clone(), cfg.clone(), 2);
    let shard = |rank, world_size| {
        let cfg = LoaderConfig {
            shard: Shard { rank, world_size },
            ..cfg.clone()
        };
        run(ds.clone(), cfg, 2)
    };
    let (r0, r1, r2) = (shard(0, 3), shard(1, 3), shard(2, 3));
    // 43 samples in batches of 8: the last batch has 3, one per rank
    assert_eq!((r0.len(), r1.len(), r2.len()), (6, 6, 6));
    for (b, w) in whole.iter().enumerate() {
        let px = w.0.len() / w.2.len();
        for (i, &index) in w.2.iter().enumerate() {
            let (rank, at) = (i % 3, i / 3);
            let s = [&r0, &r1, &r2][rank];
            assert_eq!(s[b].2[at], index, "batch {b}, position {i}");
            assert_eq!(s[b].1[at], w.1[i]);
            // the same augmentation draws: a sample's image does not depend on its rank
            assert_eq!(&s[b].0[at * px..(at + 1) * px], &w.0[i * px..(i + 1) * px]);
        }
    }
    let bad = LoaderConfig {
        shard: Shard {
            rank: 2,
            world_size: 2,
        },
        ..cfg
    };
    let err = Loader::new(ds, augment(), bad, &Device::Cpu).err().unwrap();
    assert!(err.to_string().contains("rank 2 of a world of 2"), "{err}");
}
