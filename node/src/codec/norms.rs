//! Norms of dequantised payload values, shared by the update rules (SparseLoCo clips each
//! peer to the median norm), the engine (a miner's update evaluated alone is clipped the same
//! way) and admission (norm outliers).

use super::Selected;

/// The lower median of the finite values among `norms` (0 when none): with two peers the
/// smaller norm bounds both.
pub fn lower_median(norms: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = norms.into_iter().filter(|n| n.is_finite()).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0)
}

/// `s` with its values scaled by min(1, bound / (norm + 1e-8)), `norm` being their L2 norm;
/// all zero when that norm is not finite.
pub fn clip_to_norm(s: &Selected, norm: f64, bound: f64) -> Selected {
    let factor = if norm.is_finite() {
        (bound / (norm + 1e-8)).min(1.0)
    } else {
        0.0
    };
    Selected {
        indices: s.indices.shallow_clone(),
        values: &s.values * factor,
    }
}

/// The L2 norm of a tensor's transmitted values.
pub fn values_norm(s: &Selected) -> f64 {
    s.values.norm().double_value(&[])
}

/// Each peer's whole-tensor value norm clipped to the median peer norm; a peer whose norm is
/// not finite (values so large their squares overflow) is dropped.
pub fn clip_to_median_norm(peers: &[&Selected]) -> Vec<Selected> {
    let norms: Vec<f64> = peers.iter().map(|p| values_norm(p)).collect();
    let median = lower_median(norms.iter().copied());
    peers
        .iter()
        .zip(norms)
        .filter(|(_, n)| n.is_finite())
        .map(|(p, n)| clip_to_norm(p, n, median))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

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
        let out = clip_to_median_norm(&peers.iter().collect::<Vec<_>>());
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
        // Finite values whose norm overflows: dropped, not counted.
        let bad = [sel(&[3e38, 3e38]), sel(&[1.0, 0.0])];
        let out = clip_to_median_norm(&bad.iter().collect::<Vec<_>>());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].values.abs().sum(Kind::Float).double_value(&[]), 1.0);
    }
}
