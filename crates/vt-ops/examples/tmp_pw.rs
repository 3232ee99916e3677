use candle_core::{DType, Device, Module, Tensor, Var};
use std::time::Instant;
use vt_ops::{Conv1x1, VarStore};
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for &(n, c, o, g, l) in &[
        (64usize, 256usize, 128usize, 8usize, 16usize),
        (64, 256, 256, 8, 16),
        (64, 256, 256, 1, 16),
        (64, 64, 64, 16, 196),
        (64, 128, 128, 16, 196),
        (64, 128, 128, 1, 16),
    ] {
        let store = VarStore::seeded(0, DType::F32, &dev);
        let conv = Conv1x1::new(c, o, g, true, store.var_builder())?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (n, c, l), &dev)?)?;
        let mut tf = vec![];
        let mut tb = vec![];
        for _ in 0..30 {
            let t = Instant::now();
            let y = conv.forward(&x)?;
            tf.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let _g = y.sum_all()?.backward()?;
            tb.push(t.elapsed().as_secs_f64() * 1e3);
        }
        tf.sort_by(f64::total_cmp);
        tb.sort_by(f64::total_cmp);
        let macs = (n * o * c / g * l) as f64;
        println!(
            "n{n} c{c} o{o} g{g} l{l}: fwd {:.3} ms ({:.1} GMAC/s), bwd {:.3} ms ({:.1} GMAC/s)",
            tf[15],
            macs / tf[15] / 1e6,
            tb[15],
            2.0 * macs / tb[15] / 1e6
        );
    }
    Ok(())
}
