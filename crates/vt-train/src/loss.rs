//! Losses: cross entropy with label smoothing, knowledge distillation, and per-pixel cross
//! entropy with an ignore index (segmentation).

use candle_core::{bail, DType, Result, Tensor, D};
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

/// The label of pixels that no loss or metric counts (PyTorch's and detectron2's 255).
pub const IGNORE_INDEX: u32 = 255;

/// Mean cross entropy of per-pixel `logits (N, K, H, W)` against `labels (N, H, W)` (u32) over
/// the pixels whose label is not `ignore_index`: PyTorch's
/// `F.cross_entropy(logits, labels, ignore_index=255)` (reduction "mean").
///
/// Log-softmax over the class axis, one gather of each pixel's label, a mask of the labelled
/// pixels; the count is taken on the device (no host round trip). A batch whose every pixel is
/// ignored gives a loss of 0 with a zero gradient (PyTorch gives NaN), so such a batch is a
/// no-op step rather than a NaN stop. A label outside `0..K` that is not `ignore_index` is an
/// error on the CPU (candle's gather checks its indices).
pub fn pixel_cross_entropy(logits: &Tensor, labels: &Tensor, ignore_index: u32) -> Result<Tensor> {
    let (n, _, h, w) = logits.dims4()?;
    if labels.dims() != [n, h, w] {
        bail!(
            "pixel_cross_entropy: logits of shape {:?} need labels ({n}, {h}, {w}), got {:?}",
            logits.shape(),
            labels.shape()
        );
    }
    let labelled = labels.ne(ignore_index)?; // u8 mask
    let safe = labelled.where_cond(labels, &labels.zeros_like()?)?;
    let logp = log_softmax(logits, 1)?;
    let picked = logp
        .gather(&safe.unsqueeze(1)?.contiguous()?, 1)
        .map_err(|e| {
            e.context(format!(
                "pixel_cross_entropy: labels must be classes 0..{} or the ignore index {ignore_index}",
                logits.dim(1).unwrap_or(0)
            ))
        })?
        .squeeze(1)?;
    let dtype = logits.dtype();
    let total = (picked * labelled.to_dtype(dtype)?)?.sum_all()?.neg()?;
    // counted in f32 whatever the logits' dtype (bf16 cannot count past 256 exactly)
    let count = labelled.to_dtype(DType::F32)?.sum_all()?.maximum(1f32)?;
    total / count.to_dtype(dtype)?
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

    /// Two 1x2 images, 3 classes; one pixel ignored.
    #[test]
    fn pixel_cross_entropy_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        // logits (N=2, K=3, H=1, W=2): pixel (n, w) has scores logits[n, :, 0, w]
        let px = [
            [[1f32, 2., 3.], [0., 0., 0.]],
            [[2., 0., -1.], [5., 5., 5.]],
        ];
        let mut v = vec![0f32; 12];
        for n in 0..2 {
            for w in 0..2 {
                for k in 0..3 {
                    v[n * 6 + k * 2 + w] = px[n][w][k];
                }
            }
        }
        let logits = Tensor::from_vec(v, (2, 3, 1, 2), &dev)?;
        let labels = Tensor::new(&[[[2u32, 1]], [[0, 255]]], &dev)?;
        let lse = |r: [f32; 3]| r.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        let want = ((lse(px[0][0]) - 3.0) + (lse(px[0][1]) - 0.0) + (lse(px[1][0]) - 2.0)) / 3.0;
        let got = pixel_cross_entropy(&logits, &labels, IGNORE_INDEX)?.to_scalar::<f32>()? as f64;
        assert!((got - want).abs() < 1e-6, "{got} {want}");
        // nothing ignored: the plain mean over all 4 pixels equals cross_entropy on rows
        let all = Tensor::new(&[[[2u32, 1]], [[0, 2]]], &dev)?;
        let rows = logits.permute((0, 2, 3, 1))?.reshape((4, 3))?;
        let plain = cross_entropy(&rows, &all.flatten_all()?, 0.0)?.to_scalar::<f32>()?;
        let pixel = pixel_cross_entropy(&logits, &all, IGNORE_INDEX)?.to_scalar::<f32>()?;
        assert!((plain - pixel).abs() < 1e-6);
        // every pixel ignored: 0, and a zero gradient
        let var = candle_core::Var::from_tensor(&logits)?;
        let none = Tensor::full(255u32, (2, 1, 2), &dev)?;
        let loss = pixel_cross_entropy(var.as_tensor(), &none, IGNORE_INDEX)?;
        assert_eq!(loss.to_scalar::<f32>()?, 0.0);
        let g = loss
            .backward()?
            .get(var.as_tensor())
            .unwrap()
            .abs()?
            .sum_all()?;
        assert_eq!(g.to_scalar::<f32>()?, 0.0);
        // a label that is no class
        let bad = Tensor::new(&[[[2u32, 3]], [[0, 255]]], &dev)?;
        let err = pixel_cross_entropy(&logits, &bad, IGNORE_INDEX)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("labels must be classes 0..3 or the ignore index 255"),
            "{err}"
        );
        let err = pixel_cross_entropy(&logits, &all.squeeze(1)?, IGNORE_INDEX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("need labels (2, 1, 2), got [2, 2]"), "{err}");
        Ok(())
    }

    #[test]
    fn pixel_cross_entropy_gradient_by_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        // 2 images of 2x3 pixels, 4 classes; two pixels ignored
        let labels =
            Tensor::new(&[3u32, 0, 255, 1, 2, 2, 0, 1, 1, 255, 3, 0], &dev)?.reshape((2, 2, 3))?;
        vt_ops::gradcheck::check_gradient(&[(2, 4, 2, 3)], DType::F64, |x| {
            pixel_cross_entropy(&x[0], &labels, IGNORE_INDEX)
        })
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
