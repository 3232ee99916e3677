//! Finite-difference gradient checks, used by the tests of every differentiable op in vt.

use crate::rng::Rng;
use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};

/// Checks candle's backward of `f` (a scalar function of the inputs) against central
/// differences at random inputs of the given shapes. Use `DType::F64` for a tight check.
pub fn check_gradient<S, F>(shapes: &[S], dtype: DType, f: F) -> Result<()>
where
    S: Into<Shape> + Clone,
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let dev = Device::Cpu;
    let mut rng = Rng::new(42);
    let vars: Vec<Var> = shapes
        .iter()
        .map(|s| {
            let s: Shape = s.clone().into();
            let v = rng.normal_vec(s.elem_count(), 0.0, 1.0);
            Var::from_tensor(&Tensor::from_vec(v, s, &dev)?.to_dtype(dtype)?)
        })
        .collect::<Result<_>>()?;
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = f(&inputs)?.backward()?;
    let (eps, tol) = if dtype == DType::F64 {
        (1e-6, 1e-6)
    } else {
        (1e-2, 2e-2)
    };
    for (i, var) in vars.iter().enumerate() {
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            None => bail!("input {i} received no gradient"),
        };
        let base = var
            .as_tensor()
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let scale = analytic.iter().fold(1.0f64, |m, g| m.max(g.abs()));
        for j in 0..base.len() {
            let eval = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let t = Tensor::from_vec(v, var.shape().clone(), &dev)?.to_dtype(dtype)?;
                let mut ins = inputs.clone();
                ins[i] = t;
                f(&ins)?.to_dtype(DType::F64)?.to_scalar::<f64>()
            };
            let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
            if (numeric - analytic[j]).abs() > tol * scale {
                bail!(
                    "input {i} element {j}: backward gives {}, finite differences {numeric}",
                    analytic[j]
                );
            }
        }
    }
    Ok(())
}
