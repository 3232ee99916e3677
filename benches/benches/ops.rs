//! Kernel benches: every distinct conv shape of ResNet-18 and ResNet-50 (224 px stages, batch
//! 8), forward and forward+backward, vt's conv op against candle's built-in conv2d; batch
//! norm (and BN + ReLU) fused vs composite; the position encoder's conv of a resized map, folded
//! vs explicit; the VT stages' attention, fused vs composite; their grouped 1×1 convs; one VT
//! module; and the GEMM roof (1024³ matmul). Throughput is in
//! FLOPs (2 per MAC), so criterion's "elem/s" reads as FLOP/s against the roof.

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use vt_layers::{VisualTransformer, VtConfig};
use vt_ops::{BatchNorm, Rng, VarStore};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(Rng::new(seed).normal_vec(n, 0.0, 1.0), shape, &Device::Cpu).unwrap()
}

/// (cin, cout, k, stride, input side) of ResNet-18 / ResNet-50 convs at 224 px.
const CONVS: &[(usize, usize, usize, usize, usize)] = &[
    (3, 64, 7, 2, 224),
    (64, 64, 3, 1, 56),
    (64, 128, 3, 2, 56),
    (128, 128, 3, 1, 28),
    (128, 256, 3, 2, 28),
    (256, 256, 3, 1, 14),
    (256, 512, 3, 2, 14),
    (512, 512, 3, 1, 7),
    (64, 128, 1, 2, 56),
    (64, 256, 1, 1, 56),
    (256, 64, 1, 1, 56),
    (256, 128, 1, 1, 56),
    (512, 128, 1, 1, 28),
    (1024, 256, 1, 1, 14),
    (2048, 512, 1, 1, 7),
];

fn convs(c: &mut Criterion) {
    let n = 8;
    let mut g = c.benchmark_group("ops/conv2d");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for &(ci, co, k, s, hw) in CONVS {
        let x = Var::from_tensor(&rand(&[n, ci, hw, hw], 1)).unwrap();
        let w = Var::from_tensor(&rand(&[co, ci, k, k], 2)).unwrap();
        let ho = (hw + 2 * (k / 2) - k) / s + 1;
        let flops = 2 * (n * co * ho * ho * ci * k * k) as u64;
        let shape = format!("{ci}x{hw}x{hw}-{co}k{k}s{s}-b{n}");
        g.throughput(Throughput::Elements(flops));
        g.bench_function(
            BenchmarkId::new("fwd/vt", format!("{shape}/f32/cpu")),
            |b| {
                b.iter(|| {
                    vt_ops::conv::conv2d(x.as_tensor(), w.as_tensor(), s, k / 2, 1, 1).unwrap()
                })
            },
        );
        g.bench_function(
            BenchmarkId::new("fwd/candle", format!("{shape}/f32/cpu")),
            |b| b.iter(|| x.as_tensor().conv2d(w.as_tensor(), k / 2, s, 1, 1).unwrap()),
        );
        g.throughput(Throughput::Elements(3 * flops));
        g.bench_function(
            BenchmarkId::new("fwd_bwd/vt", format!("{shape}/f32/cpu")),
            |b| {
                b.iter(|| {
                    vt_ops::conv::conv2d(x.as_tensor(), w.as_tensor(), s, k / 2, 1, 1)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                })
            },
        );
        g.bench_function(
            BenchmarkId::new("fwd_bwd/candle", format!("{shape}/f32/cpu")),
            |b| {
                b.iter(|| {
                    x.as_tensor()
                        .conv2d(w.as_tensor(), k / 2, s, 1, 1)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap()
                })
            },
        );
    }
    g.finish();
}

fn gemm_roof(c: &mut Criterion) {
    let a = rand(&[1024, 1024], 3);
    let b = rand(&[1024, 1024], 4);
    let mut g = c.benchmark_group("ops/matmul");
    g.sample_size(10)
        .throughput(Throughput::Elements(2 * 1024u64.pow(3)));
    g.bench_function("roof/1024x1024x1024/f32/cpu", |bn| {
        bn.iter(|| a.matmul(&b).unwrap())
    });
    g.finish();
}

fn batch_norm(c: &mut Criterion) {
    let x = Var::from_tensor(&rand(&[32, 64, 56, 56], 5)).unwrap();
    let mut g = c.benchmark_group("ops/batch_norm");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    // BN alone, and BN + ReLU (one op when fused; BN then candle's relu when composite)
    for (fused, relu) in [(true, false), (false, false), (true, true), (false, true)] {
        let store = VarStore::seeded(0, DType::F32, &Device::Cpu);
        let bn = BatchNorm::new(64, store.var_builder())
            .unwrap()
            .with_fused(fused);
        let name = match (fused, relu) {
            (true, false) => "vt_fused",
            (false, false) => "composite",
            (true, true) => "vt_fused_relu",
            (false, true) => "composite_relu",
        };
        g.bench_function(format!("train_fwd_bwd/{name}/32x64x56x56/f32/cpu"), |b| {
            b.iter(|| {
                match relu {
                    true => bn.forward_relu_t(x.as_tensor(), true),
                    false => bn.forward_t(x.as_tensor(), true),
                }
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
            })
        });
    }
    g.finish();
}

/// The VT position encoder's first conv on 28 px images: 64 images × 16 tokens of 16-head
/// coefficient maps, 7 px resized to 14 px, 3×3 stride 2. `Conv2d::forward_resized` folds the
/// resize into the kernel; "resize_then_conv" is the explicit resize the reference writes.
fn resized_conv(c: &mut Criterion) {
    let store = VarStore::seeded(0, DType::F32, &Device::Cpu);
    let cfg = vt_ops::Conv2dConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    let conv = vt_ops::Conv2d::new(16, 16, 3, cfg, None, store.var_builder()).unwrap();
    let x = Var::from_tensor(&rand(&[1024, 16, 7, 7], 7)).unwrap();
    let mut g = c.benchmark_group("ops/resized_conv");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let folded = |x: &Tensor| conv.forward_resized(x, (14, 14)).unwrap();
    let explicit = |x: &Tensor| {
        let big = vt_ops::resize::resize_nearest(x, (14, 14)).unwrap();
        candle_core::Module::forward(&conv, &big).unwrap()
    };
    for (name, f) in [
        ("folded", &folded as &dyn Fn(&Tensor) -> Tensor),
        ("resize_then_conv", &explicit),
    ] {
        let shape = "1024x16x7x7-to14-16k3s2/f32/cpu";
        g.bench_function(BenchmarkId::new(format!("fwd/{name}"), shape), |b| {
            b.iter(|| f(x.as_tensor()))
        });
        g.bench_function(BenchmarkId::new(format!("fwd_bwd/{name}"), shape), |b| {
            b.iter(|| f(x.as_tensor()).sum_all().unwrap().backward().unwrap())
        });
    }
    g.finish();
}

/// The attention of the VT stages at VT-ResNet-18's 56 px `reproduce` shapes (batch 64, 16
/// heads, a 14 × 14 map, 16 tokens), forward and forward + backward: `vt_ops::attention_weights`
/// + `attend` against the composite form they replaced (per-head batched matmul + softmax).
fn attention(c: &mut Criterion) {
    // (name, d of q/k, dv, keys, queries)
    let shapes = [
        ("tokenizer", 4, 16, 196, 16),
        ("transformer", 8, 16, 16, 16),
        ("projector", 4, 8, 16, 196),
    ];
    let (n, h) = (64, 16);
    let mut g = c.benchmark_group("layers/attention");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for (i, (name, d, dv, lk, m)) in shapes.into_iter().enumerate() {
        let q = Var::from_tensor(&rand(&[n, h * d, m], 20 + i as u64)).unwrap();
        let k = Var::from_tensor(&rand(&[n, h * d, lk], 30 + i as u64)).unwrap();
        let v = Var::from_tensor(&rand(&[n, h * dv, lk], 40 + i as u64)).unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        let fused = || {
            let p = vt_ops::attention_weights(&q, &k, h, scale).unwrap();
            vt_ops::attend(&v, &p).unwrap()
        };
        let composite = || {
            let q4 = q.reshape((n, h, d, m)).unwrap();
            let k4 = k.reshape((n, h, d, lk)).unwrap();
            let logits = k4.transpose(2, 3).unwrap().matmul(&q4).unwrap();
            let p = vt_ops::scaled_softmax(&logits, scale, 2).unwrap();
            let v4 = v.reshape((n, h, dv, lk)).unwrap();
            v4.matmul(&p).unwrap().reshape((n, h * dv, m)).unwrap()
        };
        g.throughput(Throughput::Elements((2 * n * h * lk * m * (d + dv)) as u64));
        let shape = format!("{name}_{n}x{h}h_d{d}_dv{dv}_k{lk}_q{m}/f32/cpu");
        for (kind, f) in [
            ("fused", &fused as &dyn Fn() -> Tensor),
            ("composite", &composite),
        ] {
            g.bench_function(BenchmarkId::new(format!("fwd/{kind}"), &shape), |b| {
                b.iter(f)
            });
            g.bench_function(BenchmarkId::new(format!("fwd_bwd/{kind}"), &shape), |b| {
                b.iter(|| f().sum_all().unwrap().backward().unwrap())
            });
        }
    }
    g.finish();
}

/// The VT modules' grouped 1×1 convs at VT-ResNet-18's 56 px `reproduce` shapes (batch 64):
/// the transformer's on 16 tokens (8 groups of 32 channels), the tokenizer's and projector's on
/// 14 × 14 pixels (16 groups of 4 and 8 channels), and a dense one on tokens for scale.
fn grouped_conv1x1(c: &mut Criterion) {
    let mut g = c.benchmark_group("layers/conv1x1");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    // (in, out, groups, positions)
    for (i, (cin, cout, groups, p)) in [
        (256, 256, 8, 16),
        (64, 64, 16, 196),
        (128, 128, 16, 196),
        (256, 256, 1, 16),
    ]
    .into_iter()
    .enumerate()
    {
        let store = VarStore::seeded(0, DType::F32, &Device::Cpu);
        let conv = vt_ops::Conv1x1::new(cin, cout, groups, true, store.var_builder()).unwrap();
        let x = Var::from_tensor(&rand(&[64, cin, p], 80 + i as u64)).unwrap();
        g.throughput(Throughput::Elements(
            (2 * 64 * cout * cin / groups * p) as u64,
        ));
        let shape = format!("{cin}to{cout}_g{groups}/64x{cin}x{p}/f32/cpu");
        let fwd = || candle_core::Module::forward(&conv, x.as_tensor()).unwrap();
        g.bench_function(BenchmarkId::new("fwd", &shape), |b| b.iter(fwd));
        g.bench_function(BenchmarkId::new("fwd_bwd", &shape), |b| {
            b.iter(|| fwd().sum_all().unwrap().backward().unwrap())
        });
    }
    g.finish();
}

fn vt_module(c: &mut Criterion) {
    let store = VarStore::seeded(0, DType::F32, &Device::Cpu);
    let vt = VisualTransformer::new(&VtConfig::preset(256, 512), store.var_builder()).unwrap();
    let x = Var::from_tensor(&rand(&[8, 256, 14, 14], 6)).unwrap();
    let mut g = c.benchmark_group("layers/vt_module");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("filter_256to512_L16_CT1024/8x256x14x14/f32/cpu", |b| {
        b.iter(|| {
            let (y, t) = vt.forward_t(x.as_tensor(), None, true).unwrap();
            (y.sum_all().unwrap() + t.sum_all().unwrap())
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    gemm_roof,
    convs,
    batch_norm,
    resized_conv,
    attention,
    grouped_conv1x1,
    vt_module
);
criterion_main!(benches);
