//! The two update rules of a window (shared/reference/algorithm.md), chosen by `outer.mode`.
//!
//! A window, for either rule, is three calls on [`WindowOptimizer`]:
//! 1. [`WindowOptimizer::train_window`]: local work on the window's micro-batches.
//!    - demo: accumulate the mean gradient g; m ← γ·m + lr·g.
//!    - sparseloco: θ₀ ← θ; H inner AdamW steps; δ = θ₀ − θ; θ ← θ₀; e ← β·e + outer_lr·δ.
//! 2. [`WindowOptimizer::compress`]: encode the buffer (m or e), quantise, and remove what
//!    was sent from the buffer (error feedback, with the dequantised values).
//! 3. [`WindowOptimizer::apply`]: merge every gathered peer (own payload included) and step.
//!    - demo: each peer's values L2-normalised per block, scatter-mean, inverse DCT,
//!      θ ← (1 − lr·wd)·θ − lr·sign(agg).
//!    - sparseloco: each peer's values scaled to at most the median peer norm (per tensor),
//!      scatter-mean, decode, θ ← θ − agg (non-finite entries skipped).

pub mod schedule;

use crate::codec::payload::{Payload, PayloadMeta};
use crate::codec::{Codec, Selected};
use crate::hparams::{Hparams, OuterMode};
use crate::model::Llama;
use tch::{Tensor, nn, nn::OptimizerConfig};

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
    #[error("a window needs at least one micro-batch")]
    NoBatches,
    #[error("loss became non-finite ({0})")]
    NonFiniteLoss(f64),
}

enum RuleState {
    Demo {
        momentum: Vec<Tensor>,
    },
    SparseLoco {
        inner: nn::Optimizer,
        error: Vec<Tensor>,
    },
}

/// Per-node optimiser state across windows. Owns nothing of the model but its buffers.
pub struct WindowOptimizer {
    hp: Hparams,
    state: RuleState,
    params: Vec<Tensor>,
    /// Completed windows (outer steps).
    pub outer_step: u64,
    /// Completed inner optimiser steps (sparseloco) or micro-batches (demo).
    pub inner_step: u64,
}

/// What one window of local work measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    pub mean_loss: f64,
    pub tokens: u64,
}

/// AdamW with the SparseLoCo inner settings over every variable of `vs`.
pub fn inner_adamw(
    s: &crate::hparams::SparseLocoParams,
    vs: &nn::VarStore,
) -> Result<nn::Optimizer, OptimError> {
    Ok(nn::AdamW {
        beta1: s.beta1,
        beta2: s.beta2,
        wd: s.weight_decay,
        eps: s.eps,
        amsgrad: false,
    }
    .build(vs, s.inner_lr)?)
}

fn zeros_like_all(params: &[Tensor]) -> Vec<Tensor> {
    params.iter().map(|p| p.zeros_like()).collect()
}

impl WindowOptimizer {
    pub fn new(hp: &Hparams, model: &Llama) -> Result<Self, OptimError> {
        let params: Vec<Tensor> = model
            .named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let state = match hp.outer.mode {
            OuterMode::Demo => RuleState::Demo {
                momentum: zeros_like_all(&params),
            },
            OuterMode::Sparseloco => {
                let inner = inner_adamw(&hp.sparseloco, &model.vs)?;
                RuleState::SparseLoco {
                    inner,
                    error: zeros_like_all(&params),
                }
            }
        };
        Ok(Self {
            hp: hp.clone(),
            state,
            params,
            outer_step: 0,
            inner_step: 0,
        })
    }

    /// Outer LR of the current window (demo) or inner LR of the current step (sparseloco).
    pub fn current_lr(&self) -> f64 {
        match self.state {
            RuleState::Demo { .. } => {
                schedule::lr_at(self.outer_step, self.hp.demo.lr, &self.hp.schedule)
            }
            RuleState::SparseLoco { .. } => schedule::lr_at(
                self.inner_step,
                self.hp.sparseloco.inner_lr,
                &self.hp.schedule,
            ),
        }
    }

    /// The error-feedback buffer (demo: momentum), in parameter order.
    pub fn buffer(&self) -> &[Tensor] {
        match &self.state {
            RuleState::Demo { momentum } => momentum,
            RuleState::SparseLoco { error, .. } => error,
        }
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
        let lr = self.current_lr();
        let mut loss_sum = 0.0;
        match &mut self.state {
            RuleState::Demo { momentum } => {
                for p in self.params.iter_mut() {
                    p.zero_grad();
                }
                for b in batches {
                    let loss = model.loss(b);
                    loss_sum += loss.double_value(&[]);
                    (loss / batches.len() as f64).backward();
                    self.inner_step += 1;
                }
                let d = &self.hp.demo;
                tch::no_grad(|| {
                    for (p, m) in self.params.iter_mut().zip(momentum.iter_mut()) {
                        let _ = m.g_mul_scalar_(d.momentum_decay);
                        *m += p.grad() * lr;
                    }
                });
            }
            RuleState::SparseLoco { inner, error } => {
                let start: Vec<Tensor> =
                    tch::no_grad(|| self.params.iter().map(|p| p.copy()).collect());
                let s = &self.hp.sparseloco;
                for b in batches {
                    let lr = schedule::lr_at(self.inner_step, s.inner_lr, &self.hp.schedule);
                    inner.set_lr(lr);
                    inner.zero_grad();
                    let loss = model.loss(b);
                    loss_sum += loss.double_value(&[]);
                    loss.backward();
                    if s.grad_clip > 0.0 {
                        inner.clip_grad_norm(s.grad_clip);
                    }
                    inner.step();
                    self.inner_step += 1;
                }
                tch::no_grad(|| {
                    for ((p, p0), e) in self.params.iter_mut().zip(&start).zip(error.iter_mut()) {
                        let delta = p0 - &*p;
                        p.copy_(p0);
                        let _ = e.g_mul_scalar_(s.error_decay);
                        *e += delta * s.outer_lr;
                    }
                });
            }
        }
        let mean_loss = loss_sum / batches.len() as f64;
        if !mean_loss.is_finite() {
            return Err(OptimError::NonFiniteLoss(mean_loss));
        }
        Ok(WindowStats { mean_loss, tokens })
    }

    /// Step 2: the window's payload; what it carries (after quantisation) leaves the buffer.
    pub fn compress(&mut self, codec: &Codec, meta: PayloadMeta) -> Payload {
        let buffer = match &mut self.state {
            RuleState::Demo { momentum } => momentum,
            RuleState::SparseLoco { error, .. } => error,
        };
        tch::no_grad(|| {
            let selected = codec.encode(buffer);
            let payload = Payload::from_selected(meta, codec, &selected);
            let device = buffer[0].device();
            for ((b, sent), layout) in buffer
                .iter_mut()
                .zip(payload.selected(codec, device))
                .zip(&codec.layouts)
            {
                *b -= codec.decode_tensor(layout, &sent);
            }
            payload
        })
    }

    /// The merged update of all peers for every parameter (before the rule's step).
    pub fn aggregate(&self, codec: &Codec, peers: &[Vec<Selected>]) -> Vec<Tensor> {
        tch::no_grad(|| {
            codec
                .layouts
                .iter()
                .enumerate()
                .map(|(i, layout)| {
                    let per_peer: Vec<Selected> = match self.state {
                        RuleState::Demo { .. } => {
                            peers.iter().map(|p| normalise_blocks(&p[i])).collect()
                        }
                        RuleState::SparseLoco { .. } => {
                            clip_to_median_norm(peers.iter().map(|p| &p[i]))
                        }
                    };
                    let refs: Vec<&Selected> = per_peer.iter().collect();
                    codec.batch_decode(layout, &refs)
                })
                .collect()
        })
    }

    /// What the outer step subtracts from the parameters for these peers (weight decay
    /// aside): demo lr·sign(agg), sparseloco agg with non-finite entries zeroed.
    pub fn step_delta(&self, codec: &Codec, peers: &[Vec<Selected>]) -> Vec<Tensor> {
        let lr = self.current_lr();
        let demo = matches!(self.state, RuleState::Demo { .. });
        tch::no_grad(|| {
            self.aggregate(codec, peers)
                .into_iter()
                .map(|a| {
                    if demo {
                        a.sign() * lr
                    } else {
                        a.nan_to_num(0.0, 0.0, 0.0)
                    }
                })
                .collect()
        })
    }

    /// Step 3: merge the gathered peers (own payload included) and take the outer step.
    /// Depends only on the peers' payloads and the step count, so a node that replays the
    /// same payloads from the same parameters reaches the same parameters.
    pub fn apply(&mut self, codec: &Codec, peers: &[Vec<Selected>]) {
        let decay = match self.state {
            RuleState::Demo { .. } => 1.0 - self.current_lr() * self.hp.demo.weight_decay,
            RuleState::SparseLoco { .. } => 1.0,
        };
        let delta = (!peers.is_empty()).then(|| self.step_delta(codec, peers));
        tch::no_grad(|| {
            for (i, p) in self.params.iter_mut().enumerate() {
                if decay != 1.0 {
                    let _ = p.g_mul_scalar_(decay);
                }
                if let Some(d) = &delta {
                    *p -= &d[i];
                }
            }
        });
        self.outer_step += 1;
    }

    /// Parameters in payload order (shallow handles on the model's tensors).
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }
}

/// DeMo: each block's values scaled to unit L2 norm, so no peer dominates by magnitude.
fn normalise_blocks(s: &Selected) -> Selected {
    let norm = s.values.norm_scalaropt_dim(2.0, [1i64].as_slice(), true);
    Selected {
        indices: s.indices.shallow_clone(),
        values: &s.values / (norm + 1e-8),
    }
}

/// SparseLoCo: each peer's whole-tensor value norm is clipped to the median peer norm.
fn clip_to_median_norm<'a>(peers: impl Iterator<Item = &'a Selected>) -> Vec<Selected> {
    let peers: Vec<&Selected> = peers.collect();
    let norms: Vec<f64> = peers
        .iter()
        .map(|p| p.values.norm().double_value(&[]))
        .collect();
    let mut sorted: Vec<f64> = norms.iter().copied().filter(|n| n.is_finite()).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    // Lower median: with two peers the smaller norm bounds both.
    let median = sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0);
    peers
        .iter()
        .zip(norms)
        .map(|(p, n)| {
            // A non-finite peer contributes nothing (0 * NaN would still be NaN).
            let values = if n.is_finite() {
                &p.values * (median / (n + 1e-8)).min(1.0)
            } else {
                p.values.zeros_like()
            };
            Selected {
                indices: p.indices.shallow_clone(),
                values,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn sel(values: &[f32]) -> Selected {
        Selected {
            indices: Tensor::from_slice(&(0..values.len() as i64).collect::<Vec<_>>())
                .view([1, -1]),
            values: Tensor::from_slice(values).view([1, -1]),
        }
    }

    #[test]
    fn median_clipping_scales_only_the_large_peers() {
        let peers = [sel(&[3.0, 4.0]), sel(&[0.6, 0.8]), sel(&[30.0, 40.0])];
        let out = clip_to_median_norm(peers.iter());
        let norms: Vec<f64> = out
            .iter()
            .map(|s| s.values.norm().double_value(&[]))
            .collect();
        assert!((norms[0] - 5.0).abs() < 1e-4);
        assert!((norms[1] - 1.0).abs() < 1e-5);
        assert!(
            (norms[2] - 5.0).abs() < 1e-4,
            "the outlier is clipped to the median"
        );
        let bad = [sel(&[f32::NAN, 1.0]), sel(&[1.0, 0.0])];
        let out = clip_to_median_norm(bad.iter());
        assert_eq!(out[0].values.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

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
