//! The README's "use one crate in your own candle model" example, kept compiling and running.

use candle_core::{DType, Device, Result, Tensor};
use vt_layers::{VisualTransformer, VtConfig};

#[test]
fn readme_example() -> Result<()> {
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let vt = VisualTransformer::new(&VtConfig::preset(256, 512), vb.pp("vt"))?;
    let features = Tensor::zeros((8, 256, 14, 14), DType::F32, &Device::Cpu)?;
    let (map, tokens) = vt.forward_t(&features, None, /* train */ true)?;
    assert_eq!(tokens.dims(), &[8, 1024, 16]);
    assert_eq!(map.dims(), &[8, 512, 14, 14]);
    assert!(varmap
        .data()
        .lock()
        .unwrap()
        .contains_key("vt.projector.lateral.bn.running_mean"));
    Ok(())
}
