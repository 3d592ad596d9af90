//! What a node pod asks the scheduler for when its resource leaves cpu or memory out: the
//! model preset's needs, so a GPU pod is never BestEffort (evicted first under pressure),
//! with the memory-backed `/dev/shm` counted in the memory limit it is charged to.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use templar_crds::NodeSpec;

const GI: u128 = 1 << 30;

/// `/dev/shm` when the spec gives no `shmSize`.
pub const DEFAULT_SHM: &str = "2Gi";
/// Scratch space: `/tmp`'s size limit, and the ephemeral storage each pod requests.
pub const TMP_SIZE: &str = "10Gi";

/// A model preset's CPU request and the memory its node needs besides `/dev/shm` (the
/// model, optimizer state, the codec's buffers and the gathered payloads in host memory).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetNeeds {
    pub cpu: &'static str,
    pub memory_gib: u64,
}

/// The documented table (README); an unknown name gets the largest preset's.
pub fn preset_needs(model: &str) -> PresetNeeds {
    let (cpu, memory_gib) = match model {
        "tiny" => ("1", 2),
        "small" => ("2", 4),
        "150M" => ("4", 16),
        _ => ("8", 48),
    };
    PresetNeeds { cpu, memory_gib }
}

/// Bytes of a Kubernetes quantity (`64Gi`, `1.5G`, `512Mi`, `1000`); `None` when it is not
/// one.
pub fn quantity_bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((value * multiplier as f64) as u128)
}

/// The model `spec` names, else the default.
fn model_of(spec: &NodeSpec) -> &str {
    spec.model
        .as_deref()
        .unwrap_or(templar_crds::resources::DEFAULT_MODEL)
}

/// The `/dev/shm` size of `spec`.
pub fn shm(spec: &NodeSpec) -> Quantity {
    spec.resources
        .shm_size
        .clone()
        .unwrap_or_else(|| Quantity(DEFAULT_SHM.into()))
}

/// The CPU request: the spec's, else the preset's.
pub fn cpu_request(spec: &NodeSpec) -> Quantity {
    spec.resources
        .cpu
        .clone()
        .unwrap_or_else(|| Quantity(preset_needs(model_of(spec)).cpu.into()))
}

/// The memory request and limit: the spec's, else the preset's needs plus `/dev/shm`.
pub fn memory(spec: &NodeSpec) -> Quantity {
    if let Some(m) = &spec.resources.memory {
        return m.clone();
    }
    let shm_gib = quantity_bytes(&shm(spec).0).unwrap_or(2 * GI).div_ceil(GI);
    Quantity(format!(
        "{}Gi",
        u128::from(preset_needs(model_of(spec)).memory_gib) + shm_gib
    ))
}

/// Why the spec's memory cannot hold `/dev/shm` and half the needs of `model` (the size the
/// nodes train), or `None` when it can.
pub fn memory_problem(spec: &NodeSpec, model: &str) -> Option<String> {
    let given = spec.resources.memory.as_ref()?;
    let shm = shm(spec);
    let (Some(limit), Some(shm_bytes)) = (quantity_bytes(&given.0), quantity_bytes(&shm.0)) else {
        return Some(format!(
            "spec.resources.memory {:?} or shmSize {:?} is not a quantity",
            given.0, shm.0
        ));
    };
    let needs = preset_needs(model);
    let least = shm_bytes + u128::from(needs.memory_gib) * GI / 2;
    (limit < least).then(|| {
        format!(
            "spec.resources.memory {} cannot hold the {} /dev/shm (it counts against the \
             limit) and the {} model's working set (at least {} GiB; {} GiB recommended)",
            given.0,
            shm.0,
            model,
            needs.memory_gib / 2,
            needs.memory_gib
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(quantity_bytes("2Gi"), Some(2 * GI));
        assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
        assert_eq!(quantity_bytes("1.5G"), Some(1_500_000_000));
        assert_eq!(quantity_bytes("1000"), Some(1000));
        assert_eq!(quantity_bytes("64gb"), None);
        assert_eq!(quantity_bytes("Gi"), None);
    }
}
