//! `templar-operator bench`: the pure pipeline (validate + build the desired objects +
//! serialise them as the apply bodies) over N generated resources, and the process's peak RSS.

use crate::build::{Owner, desired};
use crate::validate::{Inputs, validate};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Instant;
use templar_crds::TemplarMiner;
use templar_protocol::node_status::NodeRole;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub crs: usize,
    pub passes: usize,
    /// Best pass.
    pub seconds: f64,
    pub crs_per_sec: f64,
    /// Bytes of apply bodies produced per pass (4 objects per resource).
    pub apply_bytes: usize,
    /// Peak resident set size of the process (VmHWM), when the platform reports it.
    pub peak_rss_mb: Option<f64>,
}

fn resource(i: usize) -> TemplarMiner {
    let yaml = format!(
        r#"apiVersion: templar.tplr.ai/v1alpha1
kind: TemplarMiner
metadata: {{name: miners-{i}, namespace: team-{ns}, uid: 00000000-0000-0000-0000-{i:012}}}
spec:
  image: ghcr.io/templar-rs/node:0.1.0
  replicas: {replicas}
  storage: {{endpoint: "https://s3.example.org", bucket: "bucket-{i}", writeSecret: s3-write, readSecret: s3-read}}
  walletSecret: hotkeys
  resources: {{gpus: 1, gpuType: NVIDIA-H100-80GB-HBM3, memory: 64Gi}}
  tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]
  cache: {{size: 50Gi}}
  hyperparameters:
    inline: |
      [outer]
      mode = "sparseloco"
      [codec]
      topk = {topk}
"#,
        ns = i % 10,
        replicas = 1 + i % 4,
        topk = 32 + 2 * (i % 16),
    );
    serde_yaml::from_str(&yaml).expect("the generated resource parses")
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(crs: usize, passes: usize) -> BenchReport {
    let resources: Vec<TemplarMiner> = (0..crs).map(resource).collect();
    let mut inputs = Inputs::default();
    let s3: BTreeSet<String> = ["accessKeyId", "secretAccessKey"].map(String::from).into();
    inputs.secrets.insert("s3-write".into(), s3.clone());
    inputs.secrets.insert("s3-read".into(), s3);
    inputs.secrets.insert(
        "hotkeys".into(),
        (0..4).map(|i| format!("hotkey-{i}")).collect(),
    );

    let mut best = f64::INFINITY;
    let mut apply_bytes = 0;
    for _ in 0..passes.max(1) {
        let started = Instant::now();
        let mut bytes = 0;
        for r in &resources {
            let name = r.metadata.name.as_deref().unwrap_or_default();
            let namespace = r.metadata.namespace.as_deref().unwrap_or_default();
            let uid = r.metadata.uid.as_deref().unwrap_or_default();
            let spec = &r.spec.node;
            let valid = validate(spec, &inputs).expect("generated resources are valid");
            let owner = Owner {
                kind: "TemplarMiner",
                role: NodeRole::Miner,
                name,
                namespace,
                uid,
                spec,
            };
            let d = desired(&owner, &valid);
            for body in [
                serde_json::to_vec(&d.config_map),
                serde_json::to_vec(&d.headless),
                serde_json::to_vec(&d.metrics),
                serde_json::to_vec(&d.stateful_set),
            ] {
                bytes += body.map(|b| b.len()).unwrap_or_default();
            }
        }
        best = best.min(started.elapsed().as_secs_f64());
        apply_bytes = bytes;
    }
    BenchReport {
        crs,
        passes: passes.max(1),
        seconds: best,
        crs_per_sec: crs as f64 / best.max(1e-9),
        apply_bytes,
        peak_rss_mb: peak_rss_mb(),
    }
}
