//! The network view: one JSON document (`/network.json`) with everything the network page
//! draws — the window clock, each miner's training and held-out loss, score, weight and sync
//! drift now, and the same per window, with the peers each window left out and why. Built
//! from nodes' `/status` documents by whoever can read them: the devnet runner (every node),
//! a validator (itself: its scores, weights and evaluations), the operator (the pods of a
//! `TemplarValidator` and its miners). The schema is in docs/network-view.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::node_status::{NodeRole, NodeStatus, SkippedPeer};

/// The network page: one self-contained HTML file (styles and script inline, nothing fetched
/// but its JSON, which it finds at its own path plus `.json`).
pub const PAGE: &str = include_str!("page.html");

/// The document's schema version (a reader refuses a newer one).
pub const SCHEMA_VERSION: u32 = 1;

/// Windows of history a view keeps (older ones are dropped first).
pub const HISTORY_WINDOWS: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkView {
    pub schema: u32,
    /// What the network is called where the view comes from (`devnet`, a validator's
    /// hotkey, `namespace/name` of a `TemplarValidator`).
    pub name: String,
    /// Milliseconds since the Unix epoch at which the view was built.
    pub generated_at_ms: u64,
    pub clock: WindowClock,
    pub validator: Option<ValidatorView>,
    /// Every miner known, by uid.
    pub miners: Vec<MinerView>,
    /// Past windows, oldest first, at most [`HISTORY_WINDOWS`].
    pub windows: Vec<WindowRecord>,
}

/// Where the network is in time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowClock {
    /// The window the validator works on (else the highest any node reports).
    pub window: Option<u64>,
    /// When this view first saw that window (ms since the epoch).
    pub window_seen_at_ms: Option<u64>,
    /// The length of a window, measured between the last two windows seen.
    pub window_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidatorView {
    pub uid: Option<u16>,
    pub hotkey: String,
    pub window: Option<u64>,
    pub last_weights_window: Option<u64>,
    /// Mean loss on the held-out pages of the window's evaluations, before the updates.
    pub held_out_loss: Option<f64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MinerView {
    pub uid: u16,
    /// The node's name where the source knows one (devnet `miner-3`, a pod), else `uid N`.
    pub name: String,
    pub hotkey: String,
    /// Whether the miner answers (its `/status`) and works on a window; `None` where the
    /// source cannot ask it (a validator's own view).
    pub ready: Option<bool>,
    pub window: Option<u64>,
    /// The loss of its last inner steps, as it reports it.
    pub training_loss: Option<f64>,
    /// The validator's loss on held-out pages after this miner's last evaluated update.
    pub held_out_loss: Option<f64>,
    pub score: Option<f64>,
    pub weight: Option<f64>,
    /// Relative distance of the model its last payload came from to the validator's.
    pub sync_drift: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    pub last_error: Option<String>,
}

/// One window as last seen while the validator worked on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowRecord {
    pub window: u64,
    pub held_out_loss: Option<f64>,
    pub miners: Vec<MinerPoint>,
    /// The peers the validator left out of the window's aggregate, and why.
    pub skipped: Vec<SkippedPeer>,
}

/// One miner's figures in one window (absent figures are left out of the JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MinerPoint {
    pub uid: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// A node as a view source sees it: its name, and its `/status` when it answered.
#[derive(Debug, Clone)]
pub struct Observed {
    pub name: String,
    pub status: Option<NodeStatus>,
}

/// Builds views from successive observations of the nodes, keeping the window history.
#[derive(Debug, Clone, Default)]
pub struct NetworkRecorder {
    name: String,
    windows: BTreeMap<u64, WindowRecord>,
    /// The windows seen begin, with the time each was first seen.
    seen: BTreeMap<u64, u64>,
    /// Miners' last known names and hotkeys, so that one that stops answering stays listed.
    known: BTreeMap<u16, (String, String)>,
}

impl NetworkRecorder {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Record what `nodes` report now (at `now_ms`) and return the view.
    pub fn observe(&mut self, nodes: &[Observed], now_ms: u64) -> NetworkView {
        let statuses = || nodes.iter().filter_map(|n| n.status.as_ref());
        let validator = statuses().find(|s| s.role == NodeRole::Validator);
        let window = validator
            .and_then(|v| v.window)
            .or_else(|| statuses().filter_map(|s| s.window).max());
        if let Some(w) = window {
            self.seen.entry(w).or_insert(now_ms);
            while self.seen.len() > 3 {
                self.seen.pop_first();
            }
        }
        let miners = self.miners(nodes, validator);
        if let Some(w) = validator.and_then(|v| v.window) {
            self.windows.insert(w, record(w, validator, &miners));
            while self.windows.len() > HISTORY_WINDOWS {
                self.windows.pop_first();
            }
        }
        NetworkView {
            schema: SCHEMA_VERSION,
            name: self.name.clone(),
            generated_at_ms: now_ms,
            clock: self.clock(window),
            validator: validator.map(|v| ValidatorView {
                uid: v.uid,
                hotkey: v.hotkey.clone(),
                window: v.window,
                last_weights_window: v.last_weights_window,
                held_out_loss: v.held_out_loss,
                last_error: v.last_error.clone(),
            }),
            miners,
            windows: self.windows.values().cloned().collect(),
        }
    }

    fn clock(&self, window: Option<u64>) -> WindowClock {
        let mut seen = self.seen.iter().rev();
        let (last, before) = (seen.next(), seen.next());
        let window_ms = match (last, before) {
            (Some((w1, t1)), Some((w0, t0))) if w1 > w0 => Some((t1 - t0) / (w1 - w0)),
            _ => None,
        };
        WindowClock {
            window,
            window_seen_at_ms: window.and_then(|w| self.seen.get(&w).copied()),
            window_ms,
        }
    }

    /// Every miner the nodes or the validator's scores name, by uid.
    fn miners(&mut self, nodes: &[Observed], validator: Option<&NodeStatus>) -> Vec<MinerView> {
        let mut out: BTreeMap<u16, MinerView> = BTreeMap::new();
        for n in nodes {
            let Some(s) = &n.status else { continue };
            let Some(uid) = s.uid.filter(|_| s.role == NodeRole::Miner) else {
                continue;
            };
            self.known.insert(uid, (n.name.clone(), s.hotkey.clone()));
            out.insert(
                uid,
                MinerView {
                    uid,
                    name: n.name.clone(),
                    hotkey: s.hotkey.clone(),
                    ready: Some(s.window.is_some()),
                    window: s.window,
                    training_loss: s.last_loss,
                    tokens_per_sec: s.tokens_per_sec,
                    last_error: s.last_error.clone(),
                    ..Default::default()
                },
            );
        }
        // Known miners that no longer answer stay listed, not ready.
        for (uid, (name, hotkey)) in &self.known {
            out.entry(*uid).or_insert_with(|| MinerView {
                uid: *uid,
                name: name.clone(),
                hotkey: hotkey.clone(),
                ready: Some(false),
                ..Default::default()
            });
        }
        for m in validator.map_or(&[][..], |v| &v.scores[..]) {
            let view = out.entry(m.uid).or_insert_with(|| MinerView {
                uid: m.uid,
                name: format!("uid {}", m.uid),
                ..Default::default()
            });
            view.score = Some(m.score);
            view.weight = Some(m.weight);
            view.held_out_loss = m.held_out_loss;
            view.sync_drift = m.sync_drift;
        }
        out.into_values().collect()
    }
}

fn record(w: u64, validator: Option<&NodeStatus>, miners: &[MinerView]) -> WindowRecord {
    WindowRecord {
        window: w,
        held_out_loss: validator.and_then(|v| v.held_out_loss),
        miners: miners
            .iter()
            .map(|m| MinerPoint {
                uid: m.uid,
                training_loss: m.training_loss,
                held_out_loss: m.held_out_loss,
                score: m.score,
                weight: m.weight,
            })
            .collect(),
        skipped: validator.map_or_else(Vec::new, |v| v.peers_skipped.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_status::MinerScore;

    fn miner(uid: u16, window: u64, loss: f64) -> Observed {
        Observed {
            name: format!("miner-{uid}"),
            status: Some(NodeStatus {
                role: NodeRole::Miner,
                uid: Some(uid),
                hotkey: format!("hk{uid}"),
                window: Some(window),
                last_loss: Some(loss),
                ..Default::default()
            }),
        }
    }

    fn validator(window: u64, scored: &[(u16, f64, f64)], skipped: &[u16]) -> Observed {
        Observed {
            name: "validator".into(),
            status: Some(NodeStatus {
                role: NodeRole::Validator,
                uid: Some(0),
                window: Some(window),
                held_out_loss: Some(7.0 - window as f64 / 10.0),
                scores: scored
                    .iter()
                    .map(|&(uid, score, weight)| MinerScore {
                        uid,
                        score,
                        last_improvement: None,
                        last_random_improvement: None,
                        weight,
                        sync_drift: Some(0.0),
                        held_out_loss: Some(6.5),
                    })
                    .collect(),
                peers_skipped: skipped
                    .iter()
                    .map(|&uid| SkippedPeer {
                        uid,
                        reason: "no payload".into(),
                    })
                    .collect(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn windows_accumulate_and_each_keeps_its_last_sighting() {
        let mut r = NetworkRecorder::new("devnet");
        r.observe(&[validator(3, &[], &[]), miner(1, 3, 8.0)], 1_000);
        r.observe(
            &[validator(3, &[(1, 0.1, 1.0)], &[]), miner(1, 3, 7.5)],
            2_000,
        );
        let view = r.observe(
            &[validator(4, &[(1, 0.2, 1.0)], &[1]), miner(1, 4, 7.0)],
            11_000,
        );
        let windows: Vec<u64> = view.windows.iter().map(|w| w.window).collect();
        assert_eq!(windows, [3, 4]);
        let w3 = &view.windows[0];
        assert_eq!(w3.miners[0].training_loss, Some(7.5));
        assert_eq!(w3.miners[0].score, Some(0.1));
        assert_eq!(view.windows[1].skipped[0].uid, 1);
        assert_eq!(view.clock.window, Some(4));
        assert_eq!(view.clock.window_seen_at_ms, Some(11_000));
        assert_eq!(view.clock.window_ms, Some(10_000));
        let m = &view.miners[0];
        assert_eq!(
            (m.name.as_str(), m.ready, m.weight, m.held_out_loss),
            ("miner-1", Some(true), Some(1.0), Some(6.5))
        );
    }

    #[test]
    fn a_miner_that_stops_answering_stays_listed_not_ready_and_history_is_bounded() {
        let mut r = NetworkRecorder::new("devnet");
        r.observe(&[validator(1, &[], &[]), miner(2, 1, 8.0)], 0);
        let gone = Observed {
            name: "miner-2".into(),
            status: None,
        };
        let view = r.observe(&[validator(2, &[], &[]), gone], 1);
        assert_eq!(view.miners.len(), 1);
        assert_eq!(view.miners[0].ready, Some(false));
        for w in 3..(3 + HISTORY_WINDOWS as u64 + 10) {
            r.observe(&[validator(w, &[], &[])], w);
        }
        let view = r.observe(&[validator(1_000, &[], &[])], 1_000);
        assert_eq!(view.windows.len(), HISTORY_WINDOWS);
        assert_eq!(view.windows.last().unwrap().window, 1_000);
    }

    /// Every field name of a full document.
    fn keys(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, inner) in m {
                    out.insert(k.clone());
                    keys(inner, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| keys(x, out)),
            _ => {}
        }
    }

    /// docs/network-view.md documents every field a served document carries.
    #[test]
    fn the_documented_schema_names_every_field() {
        let mut r = NetworkRecorder::new("devnet");
        r.observe(&[validator(1, &[(1, 0.1, 1.0)], &[1]), miner(1, 1, 8.0)], 0);
        let mut full = miner(1, 2, 7.9);
        if let Some(s) = full.status.as_mut() {
            s.tokens_per_sec = Some(10.0);
            s.last_error = Some("e".into());
        }
        let mut v = validator(2, &[(1, 0.2, 1.0)], &[1]);
        if let Some(s) = v.status.as_mut() {
            s.last_error = Some("e".into());
            s.last_weights_window = Some(1);
        }
        let view = r.observe(&[v, full], 10_000);
        let mut names = std::collections::BTreeSet::new();
        keys(&serde_json::to_value(&view).unwrap(), &mut names);
        let doc = include_str!("../../../docs/network-view.md");
        let missing: Vec<&String> = names
            .iter()
            .filter(|k| {
                let forms = [
                    format!("`{k}`"),
                    format!("`{k}."),
                    format!("`{k}["),
                    format!(".{k}`"),
                ];
                !forms.iter().any(|f| doc.contains(f.as_str()))
            })
            .collect();
        assert!(missing.is_empty(), "undocumented fields: {missing:?}");
        assert!(names.len() >= 20, "{names:?}");
    }

    /// A validator's own view: the miners it scored, by uid, without their `/status`.
    #[test]
    fn scored_miners_appear_without_their_own_status() {
        let mut r = NetworkRecorder::new("hk0");
        let view = r.observe(&[validator(5, &[(7, 0.3, 0.6)], &[])], 0);
        assert_eq!(view.miners[0].name, "uid 7");
        assert_eq!(view.miners[0].ready, None);
        assert_eq!(view.miners[0].training_loss, None);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["schema"], SCHEMA_VERSION);
        assert_eq!(json["windows"][0]["miners"][0]["score"], 0.3);
        assert!(
            json["windows"][0]["miners"][0]
                .get("trainingLoss")
                .is_none()
        );
    }
}
