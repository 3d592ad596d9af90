//! Agreement of a payload with the rest of its window: the cosine of the values on the
//! coordinates two payloads both selected. Honest miners train one model on one corpus, so
//! where they pick the same coordinate they agree (measured 0.82 to 0.996 on the tiny model,
//! wrong-data and amplified updates included); random values (noise) sit near 0 and a negated
//! update (poisoner) near -1. A payload whose median agreement with the others is below
//! `network.min_agreement` is left out of the step by every node and scores as invalid.

use super::shared::shared_value_similarity;
use templar_protocol::payload::{BlockLayout, Payload};

/// Fewest shared coordinates for a pair's cosine to count.
pub const MIN_SHARED: usize = 64;
/// Fewest counted pairs for a payload to be judged (a median of fewer is one peer's word).
pub const MIN_PAIRS: usize = 3;

/// The payloads whose median agreement with the others of the window is below
/// `min_agreement`, with that median. Pairs sharing fewer than [`MIN_SHARED`] coordinates do
/// not count; a payload with fewer than [`MIN_PAIRS`] counted pairs is not judged.
pub fn disagreeing(
    payloads: &[(u16, &Payload)],
    layouts: &[BlockLayout],
    min_agreement: f64,
) -> Vec<(u16, f64)> {
    let n = payloads.len();
    let mut cosines: Vec<Vec<f64>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in i + 1..n {
            let (cos, shared) = shared_value_similarity(payloads[i].1, payloads[j].1, layouts);
            if shared >= MIN_SHARED {
                cosines[i].push(cos);
                cosines[j].push(cos);
            }
        }
    }
    payloads
        .iter()
        .zip(cosines)
        .filter_map(|((uid, _), mut c)| {
            if c.len() < MIN_PAIRS {
                return None;
            }
            c.sort_by(f64::total_cmp);
            let median = c[(c.len() - 1) / 2];
            tracing::debug!(uid, agreement = median, pairs = c.len(), "agreement");
            (median < min_agreement).then_some((*uid, median))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::shared::value_similarity;
    use super::super::test_payloads::{payload, two_block_layout as layout};
    use super::*;

    #[test]
    fn value_similarity_is_the_cosine_on_shared_coordinates_of_the_same_block() {
        let l = layout();
        let a = payload(1, (0..16).collect(), (1..=16).map(|x| x as f32).collect());
        let scaled = payload(
            2,
            (0..16).collect(),
            (1..=16).map(|x| 3.0 * x as f32).collect(),
        );
        assert!((value_similarity(&a, &scaled, &l) - 1.0).abs() < 1e-12);
        let negated = payload(
            3,
            (0..16).collect(),
            (1..=16).map(|x| -(x as f32)).collect(),
        );
        assert!((value_similarity(&a, &negated, &l) + 1.0).abs() < 1e-12);
        // Shared positions of the other block do not pair up; nothing shared gives 0.
        let swapped: Vec<u16> = (8..16).chain(0..8).collect();
        let b = payload(4, swapped, vec![1.0; 16]);
        assert_eq!(value_similarity(&a, &b, &l), 0.0);
        // Only the shared coordinates count: block 0 agrees, block 1 shares nothing.
        let half: Vec<u16> = (0..8).chain(40..48).collect();
        let mut values: Vec<f32> = (1..=8).map(|x| x as f32).collect();
        values.extend([-100.0; 8]);
        let c = payload(5, half, values);
        assert!((value_similarity(&a, &c, &l) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn noise_and_a_negated_update_disagree_with_the_window_and_honest_spread_does_not() {
        // 128 coordinates per payload, all shared: 16 blocks of k = 8 in a 32x64 tensor.
        let l = vec![BlockLayout::new(&[32, 64], 8, 8)];
        let idx: Vec<u16> = (0..16).flat_map(|_| 0..8u16).collect();
        let base: Vec<f32> = (0..128)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let jitter = |s: u32| -> Vec<f32> {
            base.iter()
                .enumerate()
                .map(|(i, v)| v + 0.1 * (((i as u32 * 31 + s * 7) % 11) as f32 - 5.0) / 5.0)
                .collect()
        };
        let noise: Vec<f32> = (0..128)
            .map(|i| if (i * 7919) % 3 == 0 { 1.0 } else { -0.5 })
            .collect();
        let negated: Vec<f32> = base.iter().map(|v| -v).collect();
        let mut window: Vec<(u16, Payload)> = (1..=4)
            .map(|u| (u, payload(u, idx.clone(), jitter(u as u32))))
            .collect();
        window.push((5, payload(5, idx.clone(), noise)));
        window.push((6, payload(6, idx.clone(), negated)));
        let window: Vec<(u16, &Payload)> = window.iter().map(|(u, p)| (*u, p)).collect();
        let out = disagreeing(&window, &l, 0.3);
        let uids: Vec<u16> = out.iter().map(|(u, _)| *u).collect();
        assert_eq!(uids, vec![5, 6], "{out:?}");
        assert!(
            out[1].1 < -0.9,
            "the negated update is anti-correlated: {out:?}"
        );
        // -1 never flags; too few payloads are not judged.
        assert!(disagreeing(&window, &l, -1.0).is_empty());
        assert!(
            disagreeing(&window[3..], &l, 0.3).is_empty(),
            "3 payloads: 2 pairs each"
        );
    }
}
