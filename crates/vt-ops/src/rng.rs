//! Seeded randomness: a small, portable generator (xoshiro256** seeded by SplitMix64) and the
//! [`NoiseSource`] that stochastic layers (dropout, drop-path) draw their masks from.
//!
//! candle's CPU RNG cannot be seeded, so every random number in vt comes from here. A stream is
//! derived from `(seed, labels...)`, never from call order, so a mask depends only on the seed,
//! the training step and the layer that asks for it.

use candle_core::{DType, Device, Result, Shape, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// xoshiro256** generator. Deterministic across platforms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a hash of a string, used to turn parameter names into stream labels.
pub fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Self { s }
    }

    /// A generator for the stream `(seed, labels...)`: independent of any other stream.
    pub fn derive(seed: u64, labels: &[u64]) -> Self {
        let mut x = seed;
        let mut h = splitmix64(&mut x);
        for &l in labels {
            let mut y = h ^ l.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            h = splitmix64(&mut y);
        }
        Self::new(h)
    }

    /// The full internal state, for checkpoints.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    pub fn from_state(s: [u64; 4]) -> Self {
        Self { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Standard normal (Box-Muller; the second value is discarded to keep the state simple).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * self.uniform()) as f32)
            .collect()
    }

    /// A standard-normal f32 tensor drawn from this stream (seeded inputs for tests and
    /// benches, where candle's `randn` would draw from an unseeded global generator).
    pub fn normal_tensor<S: Into<Shape>>(&mut self, shape: S, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        Tensor::from_vec(self.normal_vec(shape.elem_count(), 0.0, 1.0), shape, device)
    }

    pub fn normal_vec(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (mean + std * self.normal()) as f32)
            .collect()
    }

    /// In-place Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// The source of dropout and drop-path masks of one model.
///
/// Cloning shares the state: every stochastic layer of a model holds a clone, and the trainer
/// sets the seed and the step. The mask of layer `id` at step `s` is a pure function of
/// `(seed, s, id)`, so a resumed run draws exactly the masks an uninterrupted run would.
#[derive(Clone, Debug, Default)]
pub struct NoiseSource {
    seed: Arc<AtomicU64>,
    step: Arc<AtomicU64>,
}

impl NoiseSource {
    pub fn new(seed: u64) -> Self {
        Self {
            seed: Arc::new(AtomicU64::new(seed)),
            step: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn set_seed(&self, seed: u64) {
        self.seed.store(seed, Ordering::Relaxed)
    }

    pub fn set_step(&self, step: u64) {
        self.step.store(step, Ordering::Relaxed)
    }

    pub fn step(&self) -> u64 {
        self.step.load(Ordering::Relaxed)
    }

    /// A {0, 1/keep} mask of `shape` for layer `layer_id` at the current step (inverted dropout).
    pub fn keep_mask<S: Into<Shape>>(
        &self,
        layer_id: u64,
        shape: S,
        keep: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let mut rng = Rng::derive(self.seed.load(Ordering::Relaxed), &[self.step(), layer_id]);
        let scale = (1.0 / keep) as f32;
        let v: Vec<f32> = (0..shape.elem_count())
            .map(|_| if rng.uniform() < keep { scale } else { 0.0 })
            .collect();
        // Drawn in f32 (the stream is the same for every dtype), stored in the model's dtype.
        Tensor::from_vec(v, shape, device)?.to_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(7, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::derive(7, &[1, 2]).next_u64(),
            Rng::derive(7, &[2, 1]).next_u64()
        );
        assert_ne!(
            Rng::derive(7, &[1]).next_u64(),
            Rng::derive(8, &[1]).next_u64()
        );
    }

    #[test]
    fn moments_of_uniform_and_normal() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let u: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let mean = u.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        let z: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let m = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.02, "{m} {var}");
    }

    #[test]
    fn masks_depend_on_step_and_layer_only() -> Result<()> {
        let noise = NoiseSource::new(3);
        let dev = Device::Cpu;
        let a = noise
            .keep_mask(1, (64,), 0.5, DType::F32, &dev)?
            .to_vec1::<f32>()?;
        let b = noise
            .keep_mask(1, (64,), 0.5, DType::F32, &dev)?
            .to_vec1::<f32>()?;
        assert_eq!(a, b);
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        noise.set_step(1);
        let c = noise
            .keep_mask(1, (64,), 0.5, DType::F32, &dev)?
            .to_vec1::<f32>()?;
        assert_ne!(a, c);
        Ok(())
    }
}
