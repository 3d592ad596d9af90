//! SparseLoCo: H inner AdamW steps per window; the parameter change goes into an
//! error-feedback buffer; the outer step subtracts the merged, norm-clipped peers.
//!
//! - train: θ₀ ← θ; H AdamW steps (LR from the schedule over inner steps, gradient clipped);
//!   δ = θ₀ − θ; θ ← θ₀; e ← β·e + outer_lr·δ.
//! - peers: each peer's whole-tensor value norm clipped to the (lower) median peer norm; a
//!   non-finite peer contributes nothing.
//! - step: θ ← θ − agg (non-finite entries skipped).

use super::{OptimError, UpdateRule, schedule};
use crate::codec::Selected;
use crate::codec::norms::clip_to_median_norm;
use crate::hparams::{Hparams, ScheduleParams, SparseLocoParams};
use crate::model::Llama;
use tch::{Tensor, nn, nn::OptimizerConfig};

pub struct SparseLoco {
    params: SparseLocoParams,
    schedule: ScheduleParams,
    inner: nn::Optimizer,
    error: Vec<Tensor>,
}

/// AdamW with the SparseLoCo inner settings over every variable of `vs`.
pub fn inner_adamw(s: &SparseLocoParams, vs: &nn::VarStore) -> Result<nn::Optimizer, OptimError> {
    Ok(nn::AdamW {
        beta1: s.beta1,
        beta2: s.beta2,
        wd: s.weight_decay,
        eps: s.eps,
        amsgrad: false,
    }
    .build(vs, s.inner_lr)?)
}

/// One inner AdamW step on `batch` at inner step `step` (LR from the schedule, gradient
/// clipped when `grad_clip > 0`); returns the loss, detached and still on the device (read it
/// once per window: reading it here would wait for the device every micro-batch). The
/// convergence benchmark's AdamW baseline takes the same steps.
pub fn inner_step(
    opt: &mut nn::Optimizer,
    model: &Llama,
    batch: &Tensor,
    step: u64,
    s: &SparseLocoParams,
    sched: &ScheduleParams,
) -> Tensor {
    opt.set_lr(schedule::lr_at(step, s.inner_lr, sched));
    opt.zero_grad();
    let loss = model.loss(batch);
    loss.backward();
    if s.grad_clip > 0.0 {
        clip_grad_norm(&model.vs.trainable_variables(), s.grad_clip);
    }
    opt.step();
    loss.detach()
}

/// Scales the gradients of `vars` so that their joint norm is at most `max`, on the device
/// (tch's `clip_grad_norm` reads the norm back to the host, a wait per step).
pub fn clip_grad_norm(vars: &[Tensor], max: f64) {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = vars
            .iter()
            .map(|v| v.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let coef = (max / (total + 1e-6)).clamp_max(1.0);
        for mut g in grads {
            let _ = g.g_mul_(&coef);
        }
    })
}

impl SparseLoco {
    pub fn new(hp: &Hparams, model: &Llama, params: &[Tensor]) -> Result<Self, OptimError> {
        Ok(Self {
            params: hp.sparseloco.clone(),
            schedule: hp.schedule.clone(),
            inner: inner_adamw(&hp.sparseloco, &model.vs)?,
            error: params.iter().map(|p| p.zeros_like()).collect(),
        })
    }
}

impl UpdateRule for SparseLoco {
    fn current_lr(&self, _outer_step: u64, inner_step: u64) -> f64 {
        schedule::lr_at(inner_step, self.params.inner_lr, &self.schedule)
    }

    fn train_window(
        &mut self,
        model: &Llama,
        params: &mut [Tensor],
        batches: &[Tensor],
        _lr: f64,
        steps: &mut u64,
    ) -> Result<f64, OptimError> {
        let start: Vec<Tensor> = tch::no_grad(|| params.iter().map(|p| p.copy()).collect());
        let s = &self.params;
        let mut loss_sum = Tensor::zeros([], (tch::Kind::Float, model.device()));
        for b in batches {
            loss_sum += inner_step(&mut self.inner, model, b, *steps, s, &self.schedule);
            *steps += 1;
        }
        let loss_sum = loss_sum.double_value(&[]);
        tch::no_grad(|| {
            for ((p, p0), e) in params.iter_mut().zip(&start).zip(self.error.iter_mut()) {
                let delta = p0 - &*p;
                p.copy_(p0);
                let _ = e.g_mul_scalar_(s.error_decay);
                *e += delta * s.outer_lr;
            }
        });
        Ok(loss_sum)
    }

    fn buffer(&self) -> &[Tensor] {
        &self.error
    }

    fn buffer_mut(&mut self) -> &mut [Tensor] {
        &mut self.error
    }

    fn prepare_peers(&self, peers: &[&Selected]) -> Vec<Selected> {
        clip_to_median_norm(peers)
    }

    fn outer_delta(&self, aggregate: Tensor, _lr: f64) -> Tensor {
        aggregate.nan_to_num(0.0, 0.0, 0.0)
    }
}
