//! Cost accounting: multiply-accumulates and parameters.
//!
//! Convention (docs/decisions.md, "Counting convention"; the one that reproduces the paper's tables): MACs of every
//! convolution, linear layer and matmul; elementwise ops, biases, softmax, BatchNorm, ReLU,
//! pooling and resizes are free. Parameters are conv/linear weights and biases; BatchNorm
//! parameters are not counted.

use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub macs: u64,
    pub params: u64,
}

impl Cost {
    pub const ZERO: Cost = Cost { macs: 0, params: 0 };

    pub fn new(macs: u64, params: u64) -> Self {
        Self { macs, params }
    }

    /// MACs of a matmul-like product with no parameters.
    pub fn macs(macs: usize) -> Self {
        Self {
            macs: macs as u64,
            params: 0,
        }
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            macs: self.macs + o.macs,
            params: self.params + o.params,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(it: I) -> Cost {
        it.fold(Cost::ZERO, Add::add)
    }
}

/// Costs of named parts (stem, layer1, ..., vt.0, fc), in forward order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostBreakdown {
    pub parts: Vec<(String, Cost)>,
}

impl CostBreakdown {
    pub fn push(&mut self, name: impl Into<String>, cost: Cost) {
        self.parts.push((name.into(), cost));
    }

    pub fn total(&self) -> Cost {
        self.parts.iter().map(|(_, c)| *c).sum()
    }

    pub fn get(&self, name: &str) -> Option<Cost> {
        self.parts.iter().find(|(n, _)| n == name).map(|(_, c)| *c)
    }
}
