//! Metrics fed one batch at a time. Segmentation adds its own (mIoU) through the same trait.

use candle_core::{Result, Tensor};

/// What a metric sees of one evaluated batch.
pub struct BatchOutput<'a> {
    pub logits: &'a Tensor,
    pub labels: &'a Tensor,
    /// Mean loss of the batch.
    pub loss: f64,
}

pub trait Metric {
    fn name(&self) -> String;
    fn update(&mut self, out: &BatchOutput) -> Result<()>;
    fn value(&self) -> f64;
}

/// Sample-weighted mean loss.
#[derive(Default)]
pub struct MeanLoss {
    sum: f64,
    count: usize,
}

impl Metric for MeanLoss {
    fn name(&self) -> String {
        "loss".into()
    }
    fn update(&mut self, out: &BatchOutput) -> Result<()> {
        let n = out.labels.dim(0)?;
        self.sum += out.loss * n as f64;
        self.count += n;
        Ok(())
    }
    fn value(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

/// Top-k accuracy in percent: the label is among the k largest logits (ties count against).
pub struct TopK {
    k: usize,
    hits: usize,
    count: usize,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            hits: 0,
            count: 0,
        }
    }
}

impl Metric for TopK {
    fn name(&self) -> String {
        format!("top{}", self.k)
    }
    fn update(&mut self, out: &BatchOutput) -> Result<()> {
        let logits = out
            .logits
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?;
        let labels = out.labels.to_vec1::<u32>()?;
        for (row, &y) in logits.iter().zip(&labels) {
            let target = row[y as usize];
            let better = row.iter().filter(|&&v| v > target).count();
            if better < self.k {
                self.hits += 1;
            }
        }
        self.count += labels.len();
        Ok(())
    }
    fn value(&self) -> f64 {
        100.0 * self.hits as f64 / self.count.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn top1_top2_and_mean_loss() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(
            &[[0.1f32, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]],
            &dev,
        )?;
        let labels = Tensor::new(&[2u32, 0, 0], &dev)?;
        let out = BatchOutput {
            logits: &logits,
            labels: &labels,
            loss: 2.0,
        };
        let (mut t1, mut t2, mut l) = (TopK::new(1), TopK::new(2), MeanLoss::default());
        for m in [&mut t1 as &mut dyn Metric, &mut t2, &mut l] {
            m.update(&out)?;
        }
        assert!((t1.value() - 100.0 / 3.0).abs() < 1e-9);
        assert!((t2.value() - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(l.value(), 2.0);
        Ok(())
    }
}
