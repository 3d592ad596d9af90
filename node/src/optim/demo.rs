//! DeMo (decoupled momentum): the window's mean gradient goes into a momentum buffer; the
//! outer step is the sign of the merged, block-normalised peers.
//!
//! - train: g = mean gradient over the micro-batches; m ← γ·m + lr·g (θ unchanged).
//! - peers: each block's values scaled to unit L2 norm, so no peer dominates by magnitude.
//! - step: θ ← (1 − lr·wd)·θ − lr·sign(agg); lr follows the schedule over outer steps.

use super::{OptimError, UpdateRule, schedule};
use crate::codec::Selected;
use crate::hparams::{DemoParams, Hparams, ScheduleParams};
use crate::model::Llama;
use tch::Tensor;

pub struct Demo {
    params: DemoParams,
    schedule: ScheduleParams,
    momentum: Vec<Tensor>,
}

impl Demo {
    pub fn new(hp: &Hparams, params: &[Tensor]) -> Self {
        Self {
            params: hp.demo.clone(),
            schedule: hp.schedule.clone(),
            momentum: params.iter().map(|p| p.zeros_like()).collect(),
        }
    }
}

impl UpdateRule for Demo {
    fn current_lr(&self, outer_step: u64, _inner_step: u64) -> f64 {
        schedule::lr_at(outer_step, self.params.lr, &self.schedule)
    }

    fn train_window(
        &mut self,
        model: &Llama,
        params: &mut [Tensor],
        batches: &[Tensor],
        lr: f64,
        inner_step: &mut u64,
    ) -> Result<f64, OptimError> {
        for p in params.iter_mut() {
            p.zero_grad();
        }
        // Losses summed on the device and read once (a read per batch waits for the device).
        let mut loss_sum = Tensor::zeros([], (tch::Kind::Float, model.device()));
        for b in batches {
            let loss = model.loss(b);
            loss_sum += loss.detach();
            (loss / batches.len() as f64).backward();
            *inner_step += 1;
        }
        let loss_sum = loss_sum.double_value(&[]);
        let decay = self.params.momentum_decay;
        tch::no_grad(|| {
            for (p, m) in params.iter().zip(self.momentum.iter_mut()) {
                let _ = m.g_mul_scalar_(decay);
                *m += p.grad() * lr;
            }
        });
        Ok(loss_sum)
    }

    fn buffer(&self) -> &[Tensor] {
        &self.momentum
    }

    fn buffer_mut(&mut self) -> &mut [Tensor] {
        &mut self.momentum
    }

    fn prepare_peers(&self, peers: &[&Selected]) -> Vec<Selected> {
        peers.iter().map(|p| normalise_blocks(p)).collect()
    }

    fn outer_delta(&self, aggregate: Tensor, lr: f64) -> Tensor {
        aggregate.sign() * lr
    }

    fn outer_decay(&self, lr: f64) -> f64 {
        1.0 - lr * self.params.weight_decay
    }
}

/// Each block's values scaled to unit L2 norm.
fn normalise_blocks(s: &Selected) -> Selected {
    let norm = s.values.norm_scalaropt_dim(2.0, [1i64].as_slice(), true);
    Selected {
        indices: s.indices.shallow_clone(),
        values: &s.values / (norm + 1e-8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn block_normalisation_gives_unit_rows() {
        let s = Selected {
            indices: Tensor::zeros([2, 2], (Kind::Int64, Device::Cpu)),
            values: Tensor::from_slice(&[3.0f32, 4.0, 0.0, 2.0]).view([2, 2]),
        };
        let n = normalise_blocks(&s)
            .values
            .norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
        assert!(n.allclose(&Tensor::from_slice(&[1.0f32, 1.0]), 1e-5, 1e-5, false));
    }
}
