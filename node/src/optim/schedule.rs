//! Learning-rate schedule: linear warm-up, then cosine decay to `min_lr_factor * peak`.

use crate::hparams::ScheduleParams;

/// LR at `step` (0-based) for a peak LR.
pub fn lr_at(step: u64, peak: f64, s: &ScheduleParams) -> f64 {
    if step < s.warmup_steps {
        return peak * (step + 1) as f64 / s.warmup_steps as f64;
    }
    let min = peak * s.min_lr_factor;
    let span = s.total_steps.saturating_sub(s.warmup_steps).max(1);
    let t = ((step - s.warmup_steps) as f64 / span as f64).min(1.0);
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let s = ScheduleParams {
            warmup_steps: 10,
            total_steps: 110,
            min_lr_factor: 0.1,
        };
        assert!((lr_at(0, 1.0, &s) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 1.0, &s) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 1.0, &s) - 1.0).abs() < 1e-12);
        assert!((lr_at(60, 1.0, &s) - 0.55).abs() < 1e-12);
        assert!((lr_at(110, 1.0, &s) - 0.1).abs() < 1e-12);
        assert!((lr_at(10_000, 1.0, &s) - 0.1).abs() < 1e-12);
        let mut prev = f64::MAX;
        for step in 10..=110 {
            let lr = lr_at(step, 1.0, &s);
            assert!(lr <= prev + 1e-15, "monotone after warm-up");
            prev = lr;
        }
    }
}
