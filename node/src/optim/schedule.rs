//! Learning-rate schedule, as the Python network defines it (torch's `LinearLR` then
//! `CosineAnnealingLR`): a linear warm-up from `warmup_start_factor` x peak, then a cosine over
//! `cosine_steps` from the warm-up's end down to `min_lr_factor` x peak, held there.

use crate::hparams::ScheduleParams;

/// LR at `step` (0-based, the global inner step) for a peak LR.
pub fn lr_at(step: u64, peak: f64, s: &ScheduleParams) -> f64 {
    if step < s.warmup_steps {
        let progress = step as f64 / s.warmup_steps as f64;
        let start = s.warmup_start_factor;
        return peak * (start + (1.0 - start) * progress);
    }
    let min = peak * s.min_lr_factor;
    let t = ((step - s.warmup_steps) as f64 / s.cosine_steps.max(1) as f64).min(1.0);
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_from_the_start_factor_then_cosine_over_its_own_span() {
        let s = ScheduleParams {
            warmup_steps: 10,
            warmup_start_factor: 0.1,
            cosine_steps: 100,
            min_lr_factor: 0.1,
        };
        // torch LinearLR(start_factor=0.1, total_iters=10): 0.1 at step 0, +0.09 a step.
        assert!((lr_at(0, 1.0, &s) - 0.1).abs() < 1e-12);
        assert!((lr_at(5, 1.0, &s) - 0.55).abs() < 1e-12);
        assert!((lr_at(9, 1.0, &s) - 0.91).abs() < 1e-12);
        assert!((lr_at(10, 1.0, &s) - 1.0).abs() < 1e-12);
        // CosineAnnealingLR(T_max=100, eta_min=0.1) counted from the warm-up's end.
        assert!((lr_at(60, 1.0, &s) - 0.55).abs() < 1e-12);
        assert!((lr_at(110, 1.0, &s) - 0.1).abs() < 1e-12);
        assert!((lr_at(10_000, 1.0, &s) - 0.1).abs() < 1e-12);
        let mut prev = f64::MAX;
        for step in 10..=110 {
            let lr = lr_at(step, 1.0, &s);
            assert!(lr <= prev + 1e-15, "monotone after warm-up");
            prev = lr;
        }
        let no_warmup = ScheduleParams {
            warmup_steps: 0,
            ..s
        };
        assert!((lr_at(0, 2.0, &no_warmup) - 2.0).abs() < 1e-12);
    }
}
