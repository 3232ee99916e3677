//! Exponential moving average of a model's weights *and* BatchNorm statistics (timm's
//! `ModelEmaV2`): `shadow ← d·shadow + (1 − d)·value` after each step; evaluation can swap the
//! shadow weights in and back.

use candle_core::{bail, Result, Tensor, Var};
use std::collections::{BTreeMap, HashMap};

pub struct Ema {
    decay: f64,
    shadow: BTreeMap<String, Tensor>,
}

impl Ema {
    /// Starts from the current values (the paper's decay is 0.99985).
    pub fn new(vars: &BTreeMap<String, Var>, decay: f64) -> Result<Self> {
        let shadow = vars
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<_>>()?;
        Ok(Self { decay, shadow })
    }

    pub fn update(&mut self, vars: &BTreeMap<String, Var>) -> Result<()> {
        for (k, s) in self.shadow.iter_mut() {
            let Some(v) = vars.get(k) else {
                bail!("EMA tracks `{k}`, which the model no longer has")
            };
            *s = ((&*s * self.decay)? + (v.as_tensor().detach() * (1.0 - self.decay))?)?;
        }
        Ok(())
    }

    /// Sets the shadow values `which` selects to rank 0's (in a data-parallel run, the shadow
    /// batch-norm statistics follow each rank's own; the weights agree already).
    pub fn broadcast_from_rank0(
        &mut self,
        group: &vt_ops::Group,
        which: impl Fn(&str) -> bool,
    ) -> Result<()> {
        if !group.is_distributed() {
            return Ok(());
        }
        for (_, s) in self.shadow.iter_mut().filter(|(k, _)| which(k)) {
            *s = group.broadcast_tensor(s, 0)?;
        }
        Ok(())
    }

    /// Copies the EMA values into the model; returns the values they replaced.
    pub fn swap_in(&self, vars: &BTreeMap<String, Var>) -> Result<BTreeMap<String, Tensor>> {
        let mut saved = BTreeMap::new();
        for (k, s) in &self.shadow {
            let v = &vars[k];
            saved.insert(k.clone(), v.as_tensor().detach().copy()?);
            v.set(s)?;
        }
        Ok(saved)
    }

    /// Puts back the values returned by [`Ema::swap_in`].
    pub fn restore(vars: &BTreeMap<String, Var>, saved: BTreeMap<String, Tensor>) -> Result<()> {
        for (k, t) in saved {
            vars[&k].set(&t)?;
        }
        Ok(())
    }

    pub fn state(&self) -> HashMap<String, Tensor> {
        self.shadow
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        for (k, s) in self.shadow.iter_mut() {
            let Some(v) = state.get(k) else {
                bail!("EMA state has no `{k}`")
            };
            if v.shape() != s.shape() {
                bail!(
                    "EMA state `{k}` has shape {:?}, expected {:?}",
                    v.shape(),
                    s.shape()
                );
            }
            *s = v.to_device(s.device())?.to_dtype(s.dtype())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn ema_update_swap_and_restore() -> Result<()> {
        let dev = Device::Cpu;
        let v = Var::new(&[1f32, 2.], &dev)?;
        let vars = BTreeMap::from([("w".to_string(), v.clone())]);
        let mut ema = Ema::new(&vars, 0.9)?;
        v.set(&Tensor::new(&[11f32, 2.], &dev)?)?;
        ema.update(&vars)?;
        assert_eq!(ema.state()["w"].to_vec1::<f32>()?, vec![2.0, 2.0]); // 0.9·1 + 0.1·11
        let saved = ema.swap_in(&vars)?;
        assert_eq!(v.as_tensor().to_vec1::<f32>()?, vec![2.0, 2.0]);
        Ema::restore(&vars, saved)?;
        assert_eq!(v.as_tensor().to_vec1::<f32>()?, vec![11.0, 2.0]);
        Ok(())
    }
}
