//! Losses: cross entropy with label smoothing, and knowledge distillation.

use candle_core::{bail, Result, Tensor, D};
use vt_ops::{log_softmax, softmax};

/// Mean cross entropy of `logits (N, K)` against `labels (N,)` (u32), with label smoothing
/// `s`: the target is `(1 − s)·onehot + s/K` (PyTorch's `label_smoothing`).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let (n, _) = logits.dims2()?;
    if labels.dims() != [n] {
        bail!(
            "cross_entropy: {n} logits rows but labels of shape {:?}",
            labels.shape()
        );
    }
    let logp = log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let loss = if smoothing > 0.0 {
        let uniform = logp.mean(D::Minus1)?.neg()?;
        ((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?
    } else {
        nll
    };
    loss.mean_all()
}

/// The paper's distillation loss: `kd_weight · KD + (1 − kd_weight) · CE`, where
/// `KD = T² · KL(softmax(teacher/T) ‖ softmax(student/T))` averaged over the batch (Hinton et
/// al.); the teacher is constant. The paper uses kd_weight 0.8.
pub fn distillation(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    temperature: f64,
    kd_weight: f64,
    smoothing: f64,
) -> Result<Tensor> {
    let t = temperature;
    let p_t = softmax(&(teacher.detach() / t)?, D::Minus1)?;
    let log_p_t = log_softmax(&(teacher.detach() / t)?, D::Minus1)?;
    let log_p_s = log_softmax(&(student / t)?, D::Minus1)?;
    let n = student.dim(0)? as f64;
    let kl = ((p_t * (log_p_t - log_p_s)?)?.sum_all()? / n)?;
    let ce = cross_entropy(student, labels, smoothing)?;
    (kl * (kd_weight * t * t))? + (ce * (1.0 - kd_weight))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[1f32, 2., 3.], [0., 0., 0.]], &dev)?;
        let labels = Tensor::new(&[2u32, 0], &dev)?;
        let lse1 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let lse2 = 3f64.ln();
        let plain = ((lse1 - 3.0) + lse2) / 2.0;
        let got = cross_entropy(&logits, &labels, 0.0)?.to_scalar::<f32>()? as f64;
        assert!((got - plain).abs() < 1e-6, "{got} {plain}");
        // smoothing 0.1: target 0.9 on the label + 0.1/3 everywhere
        let s = 0.1;
        let row1 = (1.0 - s) * (lse1 - 3.0) + s * (lse1 - 2.0);
        let row2 = lse2;
        let got = cross_entropy(&logits, &labels, s)?.to_scalar::<f32>()? as f64;
        assert!((got - (row1 + row2) / 2.0).abs() < 1e-6);
        let err = cross_entropy(&logits, &Tensor::new(&[1u32], &dev)?, 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("labels of shape [1]"), "{err}");
        Ok(())
    }

    #[test]
    fn distillation_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        let s = Tensor::new(&[[1f32, 0.]], &dev)?;
        let t = Tensor::new(&[[0f32, 1.]], &dev)?;
        let y = Tensor::new(&[0u32], &dev)?;
        let temp = 2.0;
        let sm = |a: f64, b: f64| (a.exp() / (a.exp() + b.exp()), b.exp() / (a.exp() + b.exp()));
        let (pt0, pt1) = sm(0.0, 0.5);
        let (ps0, ps1) = sm(0.5, 0.0);
        let kl = pt0 * (pt0 / ps0).ln() + pt1 * (pt1 / ps1).ln();
        let ce = (1f64.exp() + 1.0).ln() - 1.0;
        let want = 0.8 * temp * temp * kl + 0.2 * ce;
        let got = distillation(&s, &t, &y, temp, 0.8, 0.0)?.to_scalar::<f32>()? as f64;
        assert!((got - want).abs() < 1e-6, "{got} {want}");
        // a student equal to the teacher has zero KD term
        let same = distillation(&t, &t, &y, temp, 1.0, 0.0)?.to_scalar::<f32>()?;
        assert!(same.abs() < 1e-7);
        Ok(())
    }
}
