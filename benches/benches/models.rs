//! Whole-model benches at batch 32: a train step (forward, backward, SGD) and an inference of
//! ResNet-18 and VT-ResNet-18 at 64 and 224 px. `cargo xtask bench-peer` runs the same
//! workloads in PyTorch for the ratio.

use candle_core::{DType, Device, ModuleT, Tensor};
use criterion::{criterion_group, Criterion, Throughput};
use std::time::Duration;
use vt_backbones::{preset, ResNet};
use vt_ops::{Rng, VarStore};
use vt_train::optim::{param_groups, Optimizer, Sgd};

fn models(c: &mut Criterion) {
    let batch = 32;
    let dev = Device::Cpu;
    let mut g = c.benchmark_group("models");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(batch as u64));
    for name in ["resnet18", "vt_resnet18"] {
        let store = VarStore::seeded(0, DType::F32, &dev);
        let net = ResNet::new(
            &(preset(name).unwrap().classifier().unwrap().config)().with_classes(10),
            store.var_builder(),
        )
        .unwrap();
        let mut opt = Sgd::new(param_groups(&store.vars(), 0.0), 0.9, false).unwrap();
        for size in [64usize, 224] {
            let x = Tensor::from_vec(
                Rng::new(1).normal_vec(batch * 3 * size * size, 0.0, 1.0),
                (batch, 3, size, size),
                &dev,
            )
            .unwrap();
            let y = Tensor::from_vec(
                (0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
                batch,
                &dev,
            )
            .unwrap();
            g.bench_function(
                format!("{name}/train_step/{batch}x3x{size}x{size}/f32/cpu"),
                |b| {
                    b.iter(|| {
                        let loss = vt_train::loss::cross_entropy(
                            &net.forward_t(&x, true).unwrap(),
                            &y,
                            0.0,
                        )
                        .unwrap();
                        opt.step(&loss.backward().unwrap(), 0.01).unwrap();
                    })
                },
            );
            g.bench_function(
                format!("{name}/inference/{batch}x3x{size}x{size}/f32/cpu"),
                |b| b.iter(|| net.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap()),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, models);
// `criterion_main!` with the steps on the CPU kernels' thread pool, as `vt_run::train` runs them
fn main() {
    vt_ops::in_thread_pool(|| {
        benches();
        Criterion::default().configure_from_args().final_summary();
    });
}
