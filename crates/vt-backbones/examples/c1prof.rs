use candle_core::{DType, Device, Module, Tensor, Var};
use std::time::Instant;
fn t<F: FnMut() -> candle_core::Result<()>>(name: &str, mut f: F) {
    for _ in 0..3 {
        f().unwrap();
    }
    let mut v = vec![];
    for _ in 0..15 {
        let s = Instant::now();
        f().unwrap();
        v.push(s.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    println!("{name:50} median {:7.2} ms  min {:7.2}", v[7], v[0]);
}
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let store = vt_ops::VarStore::seeded(0, DType::F32, &dev);
    for (c, o, g, p) in [
        (256usize, 256usize, 1usize, 16usize),
        (256, 128, 4, 16),
        (64, 16, 1, 49),
        (128, 128, 16, 49),
        (128, 256, 16, 16),
        (256, 128, 1, 49),
    ] {
        let vb = store.var_builder().pp(format!("c{c}_{o}_{g}_{p}"));
        let m = vt_ops::Conv1x1::new(c, o, g, true, vb.clone())?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (64, c, p), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (o, c / g, 1, 1), &dev)?)?;
        t(&format!("conv1x1 {c}->{o} g{g} p{p} fwd+bwd"), || {
            m.forward(&x)?.sum_all()?.backward()?;
            Ok(())
        });
        t(&format!("conv2d k1 {c}->{o} g{g} p{p} fwd+bwd"), || {
            vt_ops::conv::conv2d(&x.unsqueeze(3)?, &w, 1, 0, 1, g)?
                .sum_all()?
                .backward()?;
            Ok(())
        });
    }
    Ok(())
}
