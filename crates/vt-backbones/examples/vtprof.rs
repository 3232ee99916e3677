use candle_core::{DType, Device, Tensor, Var};
use std::time::Instant;
use vt_layers::{Projector, TokenRelation, Tokenizer};
fn t<F: FnMut() -> candle_core::Result<()>>(name: &str, mut f: F) {
    for _ in 0..2 {
        f().unwrap();
    }
    let mut v = vec![];
    for _ in 0..10 {
        let s = Instant::now();
        f().unwrap();
        v.push(s.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    println!("{name:40} median {:7.2} ms  min {:7.2}", v[5], v[0]);
}
fn main() -> candle_core::Result<()> {
    let cfg = vt_backbones::presets::vt_resnet18().with_width(0.25);
    let dev = Device::Cpu;
    let store = vt_ops::VarStore::seeded(0, DType::F32, &dev);
    let n = 64;
    let mut tok_in: Option<Tensor> = None;
    for (i, c) in cfg.vt.iter().enumerate() {
        println!(
            "module {i}: {:?} in {} out {} ct {} L {}",
            c.tokenizer, c.in_channels, c.out_channels, c.token_channels, c.num_tokens
        );
        let vb = store.var_builder().pp(format!("m{i}"));
        let tok = Tokenizer::new(c, vb.pp("tok"))?;
        let rel = TokenRelation::new(c, vb.pp("rel"))?.unwrap();
        let proj = Projector::new(c, vb.pp("proj"))?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (n, c.in_channels, 7, 7), &dev)?)?;
        let tin = tok_in.clone();
        t("tokenizer fwd", || {
            tok.forward(&x, tin.as_ref())?;
            Ok(())
        });
        t("tokenizer fwd+bwd", || {
            let (tt, _) = tok.forward(&x, tin.as_ref())?;
            tt.sum_all()?.backward()?;
            Ok(())
        });
        let (tt, _) = tok.forward(&x, tin.as_ref())?;
        let tv = Var::from_tensor(&tt.detach())?;
        t("transformer fwd", || {
            rel.forward(&tv)?;
            Ok(())
        });
        t("transformer fwd+bwd", || {
            rel.forward(&tv)?.sum_all()?.backward()?;
            Ok(())
        });
        t("projector fwd", || {
            proj.forward_t(&x, &tv, true)?;
            Ok(())
        });
        t("projector fwd+bwd", || {
            proj.forward_t(&x, &tv, true)?.sum_all()?.backward()?;
            Ok(())
        });
        tok_in = Some(tt.detach());
        let hc = if i == 0 { 1 } else { c.heads };
        let pe =
            vt_layers::PositionEncoder::new(hc, c.pos_size, c.pos_downsample, c.bias, vb.pp("pe"))?;
        let coef = Var::from_tensor(&Tensor::randn(0f32, 1., (n, hc, 49, c.num_tokens), &dev)?)?;
        t("pos fwd", || {
            pe.forward(&coef, (7, 7))?;
            Ok(())
        });
        t("pos fwd+bwd", || {
            pe.forward(&coef, (7, 7))?.sum_all()?.backward()?;
            Ok(())
        });
        let m = coef
            .permute((0, 3, 1, 2))?
            .reshape((n * c.num_tokens, hc, 7, 7))?;
        t("pos resize fwd", || {
            vt_ops::resize::resize_nearest(&m, (14, 14))?;
            Ok(())
        });
        t("pos resize fwd+bwd", || {
            vt_ops::resize::resize_nearest(&m, (14, 14))?
                .sum_all()?
                .backward()?;
            Ok(())
        });
    }
    Ok(())
}
