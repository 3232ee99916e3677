//! Stochastic depth on a VT module: identity in eval mode; in train mode each sample either
//! keeps a branch (scaled by 1/(1−p)) or drops it.

use candle_core::{DType, Device, Result, Tensor};
use vt_layers::{VisualTransformer, VtConfig};
use vt_ops::{NoiseSource, Rng, VarStore};

#[test]
fn vt_module_drop_path() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = VtConfig {
        token_channels: 32,
        num_tokens: 4,
        heads: 4,
        tokenizer_groups: 4,
        projector_groups: 4,
        ..VtConfig::preset(16, 16)
    };
    let store = VarStore::seeded(0, DType::F32, &dev);
    let plain = VisualTransformer::new(&cfg, store.var_builder())?;
    let noise = NoiseSource::new(3);
    let dropped =
        VisualTransformer::new(&cfg, store.var_builder())?.with_drop_path(0.5, "vt.0", &noise)?;
    let x = Tensor::from_vec(
        Rng::new(1).normal_vec(16 * 16 * 25, 0.0, 1.0),
        (16, 16, 5, 5),
        &dev,
    )?;
    let diff = |a: &Tensor, b: &Tensor| -> Result<Vec<f32>> {
        (a - b)?.abs()?.flatten_from(1)?.max(1)?.to_vec1::<f32>()
    };
    // eval: exactly the module without stochastic depth
    let (xe, te) = dropped.forward_t(&x, None, false)?;
    let (xp, tp) = plain.forward_t(&x, None, false)?;
    assert!(diff(&xe, &xp)?
        .iter()
        .chain(diff(&te, &tp)?.iter())
        .all(|&d| d == 0.0));
    // train: some samples keep the full module, some lose the relation branch
    let (_, tt) = dropped.forward_t(&x, None, true)?;
    let (_, tpt) = plain.forward_t(&x, None, true)?;
    let d = diff(&tt, &tpt)?;
    assert!(d.iter().any(|&v| v > 1e-3), "no sample was changed: {d:?}");
    Ok(())
}
