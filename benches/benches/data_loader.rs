//! Loader throughput (images/s) with 2 workers:
//! (a) Fashion-MNIST 28×28, pad 4 + random crop 28 + flip, batch 256;
//! (b) a JPEG image folder (500×375), RandomResizedCrop 224 + flip + AutoAugment, batch 32.
//! `peer/data_loader.py` runs torchvision's `DataLoader(num_workers=2)` on the same files.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;
use vt_benches::{bench_data_dir, fashion_mnist_subset_dir, jpeg_folder};
use vt_data::transforms::Pipeline;
use vt_data::{
    AutoAugment, ClassSample, Compose, Dataset, Loader, LoaderConfig, Normalize, RandomCrop,
    RandomHorizontalFlip, RandomResizedCrop,
};

fn epoch_images<S: 'static>(loader: &Loader<S>, epoch: u64) -> usize {
    loader
        .epoch(epoch)
        .map(|b| b.expect("bench batch").indices.len())
        .sum()
}

fn loader(
    ds: Arc<dyn Dataset<Sample = ClassSample>>,
    augment: Compose,
    normalize: Normalize,
    batch: usize,
) -> Loader<ClassSample> {
    let mut cfg = LoaderConfig::new(batch);
    cfg.workers = 2;
    cfg.prefetch = 4;
    cfg.drop_last = false;
    Loader::new(
        ds,
        Arc::new(Pipeline::new(augment, Some(normalize))),
        cfg,
        &Device::Cpu,
    )
    .expect("loader")
}

fn bench(c: &mut Criterion) {
    let fm = vt_data::open_classification(&fashion_mnist_subset_dir(), None).expect("subset");
    let n = fm.train.len();
    let l = loader(
        fm.train.clone(),
        Compose::new()
            .then(RandomCrop::padded(28, 4))
            .then(RandomHorizontalFlip::default()),
        Normalize::new(vec![0.286], vec![0.353]).expect("normalize"),
        256,
    );
    let mut g = c.benchmark_group("data/loader");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(n as u64));
    let mut e = 0;
    g.bench_function("fashion_mnist_28x28_padcrop_flip/u8/cpu", |b| {
        b.iter(|| {
            e += 1;
            epoch_images(&l, e)
        })
    });

    let root = jpeg_folder(
        &bench_data_dir().join("jpeg-folder-500x375"),
        8,
        32,
        500,
        375,
    )
    .expect("bench JPEG folder");
    let folder = vt_data::open_classification(&root, None).expect("folder");
    let n = folder.train.len();
    let l = loader(
        folder.train.clone(),
        Compose::new()
            .then(RandomResizedCrop::new(224))
            .then(RandomHorizontalFlip::default())
            .then(AutoAugment::imagenet()),
        Normalize::imagenet(),
        32,
    );
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.bench_function("jpeg_folder_224x224_rrc_flip_autoaugment/u8/cpu", |b| {
        b.iter(|| {
            e += 1;
            epoch_images(&l, e)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
