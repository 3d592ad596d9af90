//! The outer update rules of a window (formulas: docs/algorithm.md), one file each behind
//! [`UpdateRule`], chosen by `outer.mode` in [`build_rule`] (the one registration a new rule
//! adds).
//!
//! A window, for any rule, is three calls on [`WindowOptimizer`]:
//! 1. [`WindowOptimizer::train_window`]: the rule's local work on the window's micro-batches,
//!    leaving its result in the rule's buffer ([`demo`]: momentum; [`sparseloco`]: error
//!    feedback).
//! 2. [`WindowOptimizer::compress`]: encode the buffer, quantise, and remove what was sent
//!    from the buffer (error feedback, with the dequantised values).
//! 3. [`WindowOptimizer::apply`]: merge every gathered peer (own payload included): the rule
//!    prepares each peer's values, one scatter-mean and inverse transform per tensor, then
//!    θ ← decay·θ − delta(agg) with the rule's decay and delta.

pub mod demo;
pub mod schedule;
pub mod sparseloco;

use crate::codec::{Codec, Selected};
use crate::hparams::{Hparams, OuterMode};
use crate::model::Llama;
use tch::Tensor;
use templar_protocol::payload::{Payload, PayloadMeta};

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
    #[error("a window needs at least one micro-batch")]
    NoBatches,
    #[error("loss became non-finite ({0})")]
    NonFiniteLoss(f64),
}

/// One outer update rule: the local work of a window and what the outer step does with the
/// peers' payloads. [`WindowOptimizer`] drives it and owns the step counters.
pub trait UpdateRule: Send {
    /// LR of the current step (a rule's schedule runs over outer or inner steps).
    fn current_lr(&self, outer_step: u64, inner_step: u64) -> f64;
    /// Local work on the window's micro-batches [b, seq_len + 1] at learning rate `lr`;
    /// counts its inner steps and returns the summed loss. The parameters end as the rule
    /// defines; what the node shares ends in [`UpdateRule::buffer`].
    fn train_window(
        &mut self,
        model: &Llama,
        params: &mut [Tensor],
        batches: &[Tensor],
        lr: f64,
        inner_step: &mut u64,
    ) -> Result<f64, OptimError>;
    /// The buffer that is compressed and shared, in parameter order.
    fn buffer(&self) -> &[Tensor];
    fn buffer_mut(&mut self) -> &mut [Tensor];
    /// The peers' coefficients of one tensor, made comparable before the scatter-mean.
    fn prepare_peers(&self, peers: &[&Selected]) -> Vec<Selected>;
    /// What the outer step subtracts from a tensor, given the merged aggregate.
    fn outer_delta(&self, aggregate: Tensor, lr: f64) -> Tensor;
    /// Factor on the parameters before the outer step (decoupled weight decay).
    fn outer_decay(&self, _lr: f64) -> f64 {
        1.0
    }
}

/// The registered rules: the one `outer.mode` names, for this model's parameters.
pub fn build_rule(
    hp: &Hparams,
    model: &Llama,
    params: &[Tensor],
) -> Result<Box<dyn UpdateRule>, OptimError> {
    Ok(match hp.outer.mode {
        OuterMode::Demo => Box::new(demo::Demo::new(hp, params)),
        OuterMode::Sparseloco => Box::new(sparseloco::SparseLoco::new(hp, model, params)?),
    })
}

/// Per-node optimiser state across windows. Owns nothing of the model but its buffers.
pub struct WindowOptimizer {
    rule: Box<dyn UpdateRule>,
    params: Vec<Tensor>,
    /// Completed windows (outer steps).
    pub outer_step: u64,
    /// Inner optimiser steps (sparseloco) or micro-batches (demo) of the network so far:
    /// outer steps × micro-batches per window at the start of each window, so the inner
    /// schedule follows the global step (a node that joins late or restarts does not
    /// re-warm from zero).
    pub inner_step: u64,
}

/// What one window of local work measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    pub mean_loss: f64,
    pub tokens: u64,
}

impl WindowOptimizer {
    pub fn new(hp: &Hparams, model: &Llama) -> Result<Self, OptimError> {
        let params: Vec<Tensor> = model
            .named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        Ok(Self {
            rule: build_rule(hp, model, &params)?,
            params,
            outer_step: 0,
            inner_step: 0,
        })
    }

    /// Outer LR of the current window (demo) or inner LR of the current step (sparseloco).
    pub fn current_lr(&self) -> f64 {
        self.rule.current_lr(self.outer_step, self.inner_step)
    }

    /// The error-feedback buffer (demo: momentum), in parameter order.
    pub fn buffer(&self) -> &[Tensor] {
        self.rule.buffer()
    }

    /// Step 1: local training on the window's micro-batches [b, seq_len + 1].
    pub fn train_window(
        &mut self,
        model: &Llama,
        batches: &[Tensor],
    ) -> Result<WindowStats, OptimError> {
        if batches.is_empty() {
            return Err(OptimError::NoBatches);
        }
        let tokens: u64 = batches
            .iter()
            .map(|b| (b.size()[0] * (b.size()[1] - 1)) as u64)
            .sum();
        self.inner_step = self.outer_step * batches.len() as u64;
        let lr = self.current_lr();
        let loss_sum =
            self.rule
                .train_window(model, &mut self.params, batches, lr, &mut self.inner_step)?;
        let mean_loss = loss_sum / batches.len() as f64;
        if !mean_loss.is_finite() {
            return Err(OptimError::NonFiniteLoss(mean_loss));
        }
        Ok(WindowStats { mean_loss, tokens })
    }

    /// Step 2: the window's payload; what it carries (after quantisation) leaves the buffer.
    pub fn compress(&mut self, codec: &Codec, meta: PayloadMeta) -> Payload {
        let buffer = self.rule.buffer_mut();
        tch::no_grad(|| {
            let selected = codec.encode(buffer);
            let payload = codec.to_payload(meta, &selected);
            let device = buffer[0].device();
            for ((b, sent), layout) in buffer
                .iter_mut()
                .zip(codec.selected(&payload, device))
                .zip(&codec.spec.layouts)
            {
                codec.subtract_decoded(layout, b, &sent);
            }
            payload
        })
    }

    /// The merged update of all peers for every parameter (before the rule's step). A peer
    /// whose values of a tensor are not all finite (dequantisation can overflow f32) is left
    /// out of that tensor's mean, numerator and denominator alike, so it cannot turn the
    /// step into NaN.
    pub fn aggregate(&self, codec: &Codec, peers: &[Vec<Selected>]) -> Vec<Tensor> {
        tch::no_grad(|| {
            codec
                .spec
                .layouts
                .iter()
                .enumerate()
                .map(|(i, layout)| {
                    let of_tensor: Vec<&Selected> = peers
                        .iter()
                        .map(|p| &p[i])
                        .filter(|s| all_finite(&s.values))
                        .collect();
                    let prepared = self.rule.prepare_peers(&of_tensor);
                    let refs: Vec<&Selected> = prepared.iter().collect();
                    codec.batch_decode(layout, &refs)
                })
                .collect()
        })
    }

    /// What the outer step subtracts from the parameters for these peers (decay aside):
    /// demo lr·sign(agg), sparseloco agg with non-finite entries zeroed.
    pub fn step_delta(&self, codec: &Codec, peers: &[Vec<Selected>]) -> Vec<Tensor> {
        let lr = self.current_lr();
        tch::no_grad(|| {
            self.aggregate(codec, peers)
                .into_iter()
                .map(|a| self.rule.outer_delta(a, lr))
                .collect()
        })
    }

    /// Step 3: merge the gathered peers (own payload included) and take the outer step.
    /// Depends only on the peers' payloads and the step count, so a node that replays the
    /// same payloads from the same parameters reaches the same parameters.
    ///
    /// With no peer gathered there is nothing to step with: the parameters stay as they are
    /// (no weight decay either, as the reference skips the step), while the step count still
    /// advances with the window so the schedule stays in line with the network.
    pub fn apply(&mut self, codec: &Codec, peers: &[Vec<Selected>]) {
        if !peers.is_empty() {
            let decay = self.rule.outer_decay(self.current_lr());
            let delta = self.step_delta(codec, peers);
            tch::no_grad(|| {
                for (p, d) in self.params.iter_mut().zip(&delta) {
                    if decay != 1.0 {
                        let _ = p.g_mul_scalar_(decay);
                    }
                    *p -= d;
                }
            });
        }
        self.outer_step += 1;
    }

    /// Parameters in payload order (shallow handles on the model's tensors).
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }
}

fn all_finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hparams::OuterMode;
    use crate::model::parameter_shapes;
    use tch::{Device, Kind};

    fn tiny_codec(hp: &Hparams) -> Codec {
        Codec::new(&hp.codec, &parameter_shapes(&hp.model_config().unwrap()))
    }

    #[test]
    fn the_inner_schedule_follows_the_global_step() {
        let mut hp = Hparams::default();
        hp.model.size = "tiny".into();
        hp.outer.mode = OuterMode::Sparseloco;
        hp.schedule.warmup_steps = 100;
        let model = Llama::new(&hp.model_config().unwrap(), Device::Cpu, 1);
        let batch = Tensor::randint(
            hp.model_config().unwrap().vocab_size,
            [2, 9],
            (Kind::Int64, Device::Cpu),
        );
        let batches = [batch.shallow_clone(), batch];
        // A node that joins at global step 40 (e.g. from a checkpoint) trains at the
        // network's inner step 80, as one that ran from the start would.
        let mut joined = WindowOptimizer::new(&hp, &model).unwrap();
        joined.outer_step = 40;
        joined.train_window(&model, &batches).unwrap();
        assert_eq!(joined.inner_step, 40 * 2 + 2);
        let lr_at_join = schedule::lr_at(80, hp.sparseloco.inner_lr, &hp.schedule);
        // Warm-up from 0.1 x peak: step 80 of 100 is at 0.82 x peak, step 0 at 0.1 x.
        assert!(lr_at_join > 5.0 * schedule::lr_at(0, hp.sparseloco.inner_lr, &hp.schedule));
        joined.inner_step = 80;
        assert_eq!(joined.current_lr(), lr_at_join);
    }

    #[test]
    fn a_window_without_peers_leaves_the_parameters_alone() {
        for mode in [OuterMode::Demo, OuterMode::Sparseloco] {
            let mut hp = Hparams::default();
            hp.model.size = "tiny".into();
            hp.outer.mode = mode;
            hp.schedule.warmup_steps = 0;
            let model = Llama::new(&hp.model_config().unwrap(), Device::Cpu, 1);
            let mut opt = WindowOptimizer::new(&hp, &model).unwrap();
            let codec = tiny_codec(&hp);
            // Past warm-up, where DeMo's decoupled weight decay would shrink the parameters.
            opt.outer_step = 10;
            assert!(opt.current_lr() > 0.0);
            let before: Vec<Tensor> = opt.params().iter().map(|p| p.copy()).collect();
            opt.apply(&codec, &[]);
            assert_eq!(
                opt.outer_step, 11,
                "{mode:?}: the step count follows the window"
            );
            for (a, b) in before.iter().zip(opt.params()) {
                assert!(a.equal(b), "{mode:?}: no decay, no step without peers");
            }
        }
    }

    #[test]
    fn a_peer_with_non_finite_values_is_left_out_of_the_mean() {
        for mode in [OuterMode::Demo, OuterMode::Sparseloco] {
            let mut hp = Hparams::default();
            hp.model.size = "tiny".into();
            hp.outer.mode = mode;
            let model = Llama::new(&hp.model_config().unwrap(), Device::Cpu, 1);
            let opt = WindowOptimizer::new(&hp, &model).unwrap();
            let codec = tiny_codec(&hp);
            tch::manual_seed(3);
            let peer = |scale: f64| -> Vec<Selected> {
                let tensors: Vec<Tensor> = codec
                    .spec
                    .layouts
                    .iter()
                    .map(|l| Tensor::randn(l.shape.as_slice(), (Kind::Float, Device::Cpu)) * scale)
                    .collect();
                codec.encode(&tensors)
            };
            let (a, b) = (peer(1.0), peer(0.5));
            let mut broken = peer(1.0);
            broken[0].values = broken[0].values.fill(f64::INFINITY);
            let honest = opt.aggregate(
                &codec,
                &[
                    a.iter().map(|s| s.shallow_clone()).collect(),
                    b.iter().map(|s| s.shallow_clone()).collect(),
                ],
            );
            let with_broken = opt.aggregate(&codec, &[a, b, broken]);
            assert!(
                with_broken[0].equal(&honest[0]),
                "{mode:?}: the broken tensor changed the mean"
            );
            assert!(
                with_broken
                    .iter()
                    .all(|t| t.isfinite().all().int64_value(&[]) != 0),
                "{mode:?}"
            );
        }
    }
}
