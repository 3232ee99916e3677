//! `relu(a + b)`, the tail of every residual block, as one CPU op: one pass forward instead of
//! an add and a ReLU, no stored sum, and a backward that masks the gradient once for both
//! inputs instead of candle's compare, convert and multiply.

use crate::contiguous_data;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Elements per parallel task: big enough to amortise the task, small enough to balance.
const CHUNK: usize = 1 << 14;

/// `relu(a + b)` for tensors of one shape; other devices and broadcasting shapes use candle's
/// add and ReLU.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !crate::cpu_kernels(a.device()) || a.shape() != b.shape() {
        return (a + b)?.relu();
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

/// An elementwise function of two operands, generic over the element type so that the loop
/// compiles (and vectorises) per type.
trait Zip: Sync {
    fn f<T: WithDType>(&self, a: T, b: T) -> T;

    /// Applies `f` over two same-shaped f32 or f64 operands, in parallel.
    fn zip_map(
        &self,
        what: &str,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            bail!(
                "{what}: shapes {:?} and {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(
                self.run(contiguous_data(a, l1, what)?, contiguous_data(b, l2, what)?),
            ),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(
                self.run(contiguous_data(a, l1, what)?, contiguous_data(b, l2, what)?),
            ),
            (a, _) => bail!("{what}: unsupported dtype {:?}", a.dtype()),
        };
        Ok((out, l1.shape().clone()))
    }

    fn run<T: WithDType>(&self, a: &[T], b: &[T]) -> Vec<T> {
        let mut out = crate::output_vec(a.len());
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
            let (a, b) = (&a[i * CHUNK..][..o.len()], &b[i * CHUNK..][..o.len()]);
            for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                *o = self.f(x, y);
            }
        });
        out
    }
}

/// `(a, b) → relu(a + b)`.
struct AddRelu;

impl Zip for AddRelu {
    fn f<T: WithDType>(&self, a: T, b: T) -> T {
        let s = a + b;
        if s > T::zero() {
            s
        } else {
            T::zero()
        }
    }
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "vt-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.zip_map(self.name(), (s1, l1), (s2, l2))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = y.apply_op2_no_bwd(&dy.contiguous()?, &ReluMask)?;
        Ok((Some(d.clone()), Some(d)))
    }
}

/// `(y, dy) → dy · [y > 0]`.
struct ReluMask;

impl Zip for ReluMask {
    fn f<T: WithDType>(&self, y: T, dy: T) -> T {
        if y > T::zero() {
            dy
        } else {
            T::zero()
        }
    }
}

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "vt-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.zip_map(self.name(), (s1, l1), (s2, l2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn add_relu_equals_add_then_relu_with_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let n = 3 * CHUNK + 17; // several parallel chunks and a short last one
        let a = Var::from_vec(crate::Rng::new(1).normal_vec(n, 0.0, 1.0), n, &dev)?;
        let b = Var::from_vec(crate::Rng::new(2).normal_vec(n, 0.0, 1.0), n, &dev)?;
        let seed = Tensor::from_vec(crate::Rng::new(3).normal_vec(n, 0.0, 1.0), n, &dev)?;
        let run = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>| -> Result<[Vec<f32>; 3]> {
            let y = f(a.as_tensor(), b.as_tensor())?;
            let g = (&y * &seed)?.sum_all()?.backward()?;
            Ok([
                y.to_vec1()?,
                g.get(a.as_tensor()).unwrap().to_vec1()?,
                g.get(b.as_tensor()).unwrap().to_vec1()?,
            ])
        };
        let fused = run(&|a, b| add_relu(a, b))?;
        let composite = run(&|a, b| (a + b)?.relu())?;
        assert_eq!(fused, composite);
        crate::gradcheck::check_gradient(&[vec![2usize, 3, 4], vec![2, 3, 4]], DType::F64, |t| {
            let w = Tensor::arange(0f64, 24., &dev)?.reshape((2, 3, 4))?.sin()?;
            (add_relu(&t[0], &t[1])? * w)?.sum_all()
        })
    }
}
