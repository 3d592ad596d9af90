//! Cheating miners, for tests and demos only (`templar-node sim-miner --behaviour`,
//! `devnet --cheater`): each one uploads what one attack on the incentive would, through the
//! same signing and storage path as an honest miner, as a [`MinerHook`] installed on the
//! miner. The defence against each is in docs/incentive-integrity.md.

use crate::codec::Selected;
use crate::engine::Engine;
use crate::optim::WindowStats;
use crate::roles::NodeError;
use crate::roles::miner::{MinerHook, upload};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tch::{Device, Kind, Tensor};
use templar_protocol::Hotkey;
use templar_protocol::network::{NodeContext, fetch_payload};
use templar_protocol::payload::{Payload, PayloadMeta};
use tokio::task::block_in_place;

/// What a miner does with its window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Behaviour {
    /// Trains on its assigned pages and uploads the result.
    #[default]
    Honest,
    /// Uploads nothing.
    Absent,
    /// Trains nothing and uploads an all-zero update.
    FreeRider,
    /// Uploads random values with the norm of an honest update's, tensor by tensor.
    Noise,
    /// Re-uploads `victim`'s payload of the same window under its own name, re-signed, with
    /// 1% noise on the values.
    Copier { victim: u16 },
    /// Uploads its honest update scaled by `factor`.
    Amplifier { factor: f64 },
    /// Trains once, then uploads that update again every window, re-stamped and re-signed.
    Stale,
    /// Trains honestly on pages of its own choosing (the last uid slot's) instead of its own.
    WrongData,
    /// Trains honestly and uploads after the window's time bound.
    Late,
    /// Uploads the negated honest update (raises the loss).
    Poisoner,
    /// Uploads its honest update in `victim`'s name (the victim's hotkey), signed with its
    /// own key: what anyone who can write where a payload is read from could try.
    Impersonator { victim: u16 },
    /// Does a quarter of the work: a quarter of its assigned pages, a quarter of the inner
    /// steps.
    Lazy,
    /// Trains nothing; uploads blocks of the window's earlier payloads, a few sources taken
    /// in turn block by block, so that no single source holds the copy threshold.
    Blender,
    /// Uploads its honest update scaled down by `factor` (under 1), to drag the window's
    /// median norm, which clips every update, down.
    Throttler { factor: f64 },
    /// Uploads its honest update negated on the coordinates no earlier payload of the
    /// window selected, where no agreement check can compare it.
    SelectivePoisoner,
    /// Trains nothing; re-uploads `victim`'s payload of two windows back (past the previous
    /// window that copies are compared with), re-signed, with 1% noise on the values.
    Echo { victim: u16 },
    /// A copier of `victim` that runs its own store and back-dates its commitment and its
    /// copy to just before the victim's (in the simulation: a folder bucket's file times).
    Framer { victim: u16 },
}

impl Behaviour {
    /// Every attack with a fixed victim, for the adversarial network and the benchmark.
    pub fn adversaries(victim: u16) -> Vec<Behaviour> {
        vec![
            Behaviour::Absent,
            Behaviour::FreeRider,
            Behaviour::Noise,
            Behaviour::Copier { victim },
            Behaviour::Amplifier { factor: 30.0 },
            Behaviour::Stale,
            Behaviour::WrongData,
            Behaviour::Late,
            Behaviour::Poisoner,
            Behaviour::Impersonator { victim },
            Behaviour::Lazy,
            Behaviour::Blender,
            Behaviour::Throttler { factor: 0.1 },
            Behaviour::SelectivePoisoner,
            Behaviour::Echo { victim },
            Behaviour::Framer { victim },
        ]
    }

    /// Whether the upload waits until after the window's time bound.
    pub fn uploads_late(&self) -> bool {
        matches!(self, Behaviour::Late)
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behaviour::Honest => write!(f, "honest"),
            Behaviour::Absent => write!(f, "absent"),
            Behaviour::FreeRider => write!(f, "free-rider"),
            Behaviour::Noise => write!(f, "noise"),
            Behaviour::Copier { victim } => write!(f, "copier:{victim}"),
            Behaviour::Amplifier { factor } => write!(f, "amplifier:{factor}"),
            Behaviour::Stale => write!(f, "stale"),
            Behaviour::WrongData => write!(f, "wrong-data"),
            Behaviour::Late => write!(f, "late"),
            Behaviour::Poisoner => write!(f, "poisoner"),
            Behaviour::Impersonator { victim } => write!(f, "impersonator:{victim}"),
            Behaviour::Lazy => write!(f, "lazy"),
            Behaviour::Blender => write!(f, "blender"),
            Behaviour::Throttler { factor } => write!(f, "throttler:{factor}"),
            Behaviour::SelectivePoisoner => write!(f, "selective-poisoner"),
            Behaviour::Echo { victim } => write!(f, "echo:{victim}"),
            Behaviour::Framer { victim } => write!(f, "framer:{victim}"),
        }
    }
}

/// A `--behaviour` value that names no behaviour.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "unknown behaviour {0:?}: honest, absent, free-rider, noise, copier:UID, amplifier:FACTOR, stale, wrong-data, late, poisoner, impersonator:UID, lazy, blender, throttler:FACTOR, selective-poisoner, echo:UID, framer:UID"
)]
pub struct UnknownBehaviour(pub String);

impl FromStr for Behaviour {
    type Err = UnknownBehaviour;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnknownBehaviour(s.to_string());
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let uid = || arg.and_then(|a| a.parse::<u16>().ok()).ok_or_else(bad);
        Ok(match (name, arg) {
            ("honest", None) => Behaviour::Honest,
            ("absent", None) => Behaviour::Absent,
            ("free-rider", None) => Behaviour::FreeRider,
            ("noise", None) => Behaviour::Noise,
            ("copier", _) => Behaviour::Copier { victim: uid()? },
            ("amplifier", a) => {
                let factor = a.map_or(Ok(30.0), |a| a.parse::<f64>().map_err(|_| bad()))?;
                if !(factor.is_finite() && factor > 0.0) {
                    return Err(bad());
                }
                Behaviour::Amplifier { factor }
            }
            ("throttler", a) => {
                let factor = a.map_or(Ok(0.1), |a| a.parse::<f64>().map_err(|_| bad()))?;
                if !(factor.is_finite() && factor > 0.0 && factor < 1.0) {
                    return Err(bad());
                }
                Behaviour::Throttler { factor }
            }
            ("lazy", None) => Behaviour::Lazy,
            ("blender", None) => Behaviour::Blender,
            ("selective-poisoner", None) => Behaviour::SelectivePoisoner,
            ("stale", None) => Behaviour::Stale,
            ("wrong-data", None) => Behaviour::WrongData,
            ("late", None) => Behaviour::Late,
            ("poisoner", None) => Behaviour::Poisoner,
            ("impersonator", _) => Behaviour::Impersonator { victim: uid()? },
            ("echo", _) => Behaviour::Echo { victim: uid()? },
            ("framer", _) => Behaviour::Framer { victim: uid()? },
            _ => return Err(bad()),
        })
    }
}

/// A miner cheating as its [`Behaviour`] says.
pub struct Cheat {
    behaviour: Behaviour,
    /// The stale miner's one trained update.
    first: Option<Payload>,
    /// The late miner's upload of a window, held until after the window's time bound.
    held: Option<(u64, Vec<u8>)>,
}

impl Cheat {
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            first: None,
            held: None,
        }
    }
}

#[async_trait::async_trait(?Send)]
impl MinerHook for Cheat {
    async fn window_payload(
        &mut self,
        ctx: &NodeContext,
        engine: &mut Engine,
        w: u64,
    ) -> Result<(Option<WindowStats>, Option<Payload>), NodeError> {
        cheat_payload(self.behaviour, ctx, engine, &mut self.first, w).await
    }

    async fn upload(&mut self, ctx: &NodeContext, w: u64, bytes: Vec<u8>) -> Result<(), NodeError> {
        if self.behaviour.uploads_late() {
            self.held = Some((w, bytes));
            return Ok(());
        }
        upload(ctx, w, bytes).await?;
        if let Behaviour::Framer { victim } = self.behaviour {
            back_date(ctx, w, victim).await;
        }
        Ok(())
    }

    /// The late miner's held upload, once the window's time bound has passed.
    async fn before_gather(&mut self, ctx: &NodeContext, w: u64) -> Result<(), NodeError> {
        let Some((held_w, bytes)) = self.held.take() else {
            return Ok(());
        };
        let n = &ctx.hp.network;
        let past_bound = Duration::from_millis(n.upload_grace_ms + n.clock_skew_ms + 200);
        tokio::time::sleep(ctx.wait_before_gather(w).max(past_bound)).await;
        upload(ctx, held_w, bytes).await
    }

    fn name(&self) -> String {
        self.behaviour.to_string()
    }
}

/// What a miner of `behaviour` uploads for window `w` (None: nothing), with the stats of its
/// training when it trained. `last` keeps the stale miner's first update.
async fn cheat_payload(
    behaviour: Behaviour,
    ctx: &NodeContext,
    engine: &mut Engine,
    last: &mut Option<Payload>,
    w: u64,
) -> Result<(Option<WindowStats>, Option<Payload>), NodeError> {
    match behaviour {
        Behaviour::Absent
        | Behaviour::FreeRider
        | Behaviour::Stale
        | Behaviour::Copier { .. }
        | Behaviour::Framer { .. }
        | Behaviour::Echo { .. }
        | Behaviour::Blender => untrained_payload(behaviour, ctx, engine, last, w).await,
        _ => trained_payload(behaviour, ctx, engine, w).await,
    }
}

/// The attacks that train (on their pages or others'), then upload the result, changed or not.
async fn trained_payload(
    behaviour: Behaviour,
    ctx: &NodeContext,
    engine: &mut Engine,
    w: u64,
) -> Result<(Option<WindowStats>, Option<Payload>), NodeError> {
    let (uid, hotkey) = (ctx.uid, &ctx.hotkey);
    let trained = |(stats, p): (WindowStats, Payload)| (Some(stats), Some(p));
    Ok(match behaviour {
        Behaviour::Honest | Behaviour::Late => trained(train_as(ctx, engine, w, uid)?),
        Behaviour::WrongData => {
            let chosen = foreign_pages_uid(engine, uid);
            trained(train_as(ctx, engine, w, chosen)?)
        }
        Behaviour::Lazy => {
            // A quarter of the work: a quarter of the pages, a quarter of the inner steps.
            let assigned = engine
                .sampler
                .assigned(uid, w)
                .map_err(crate::engine::EngineError::from)?;
            let quarter = &assigned[..assigned.len().div_ceil(4)];
            let steps = ctx.hp.batches_per_window().div_ceil(4);
            trained(block_in_place(|| {
                engine.train_on_pages(uid, quarter, steps, hotkey, w)
            })?)
        }
        Behaviour::Noise => {
            let (stats, p) = train_as(ctx, engine, w, uid)?;
            let noise = rewritten(ctx, engine, w, &p, &|v| {
                let r = v.randn_like();
                let scale = v.norm().double_value(&[]) / r.norm().double_value(&[]).max(1e-30);
                r * scale
            });
            (Some(stats), Some(noise))
        }
        Behaviour::Amplifier { factor } | Behaviour::Throttler { factor } => {
            let (stats, p) = train_as(ctx, engine, w, uid)?;
            (
                Some(stats),
                Some(rewritten(ctx, engine, w, &p, &|v| v * factor)),
            )
        }
        Behaviour::Poisoner => {
            let (stats, p) = train_as(ctx, engine, w, uid)?;
            (Some(stats), Some(rewritten(ctx, engine, w, &p, &|v| -v)))
        }
        Behaviour::SelectivePoisoner => {
            let (stats, p) = train_as(ctx, engine, w, uid)?;
            let others = earlier_payloads(ctx, engine, w, usize::MAX).await;
            let meta = engine.payload_meta(uid, hotkey, w);
            let poisoned = block_in_place(|| negate_unshared(engine, &p, &others, meta));
            (Some(stats), Some(poisoned))
        }
        Behaviour::Impersonator { victim } => {
            let (stats, p) = train_as(ctx, engine, w, uid)?;
            let victim_hotkey = hotkey_of(ctx, victim).await?;
            let meta = PayloadMeta {
                hotkey: victim_hotkey.unwrap_or_else(|| hotkey.clone()),
                ..p.meta.clone()
            };
            (Some(stats), Some(Payload { meta, ..p }))
        }
        _ => unreachable!("{behaviour} does not train"),
    })
}

/// The attacks that upload without training this window: nothing, zeros, an old update,
/// others' work.
async fn untrained_payload(
    behaviour: Behaviour,
    ctx: &NodeContext,
    engine: &mut Engine,
    last: &mut Option<Payload>,
    w: u64,
) -> Result<(Option<WindowStats>, Option<Payload>), NodeError> {
    let (uid, hotkey) = (ctx.uid, &ctx.hotkey);
    Ok(match behaviour {
        Behaviour::Absent => (None, None),
        Behaviour::FreeRider => {
            let meta = engine.payload_meta(uid, hotkey, w);
            (None, Some(block_in_place(|| zero_payload(engine, meta))))
        }
        Behaviour::Stale => match last.clone() {
            Some(first) => (
                None,
                Some(rewritten(ctx, engine, w, &first, &|v| v.shallow_clone())),
            ),
            None => {
                let (stats, p) = train_as(ctx, engine, w, uid)?;
                *last = Some(p.clone());
                (Some(stats), Some(p))
            }
        },
        Behaviour::Copier { victim }
        | Behaviour::Framer { victim }
        | Behaviour::Echo { victim } => {
            // Copiers take the victim's payload of this window, an echo one of two back.
            let from = match behaviour {
                Behaviour::Echo { .. } => w.checked_sub(2),
                _ => Some(w),
            };
            let Some(from) = from else {
                return Ok((None, None));
            };
            let Some(theirs) = victims_payload(ctx, engine, victim, from).await else {
                return Ok((None, None));
            };
            let copied = rewritten(ctx, engine, w, &theirs, &|v| {
                v + v.randn_like() * v.std(false) * 0.01
            });
            (None, Some(copied))
        }
        Behaviour::Blender => {
            let sources = earlier_payloads(ctx, engine, w, BLEND_SOURCES).await;
            if sources.len() < 2 {
                tracing::warn!(window = w, "blender: fewer than two payloads to blend");
                return Ok((None, None));
            }
            let meta = engine.payload_meta(uid, hotkey, w);
            (None, Some(block_in_place(|| blend(engine, &sources, meta))))
        }
        _ => unreachable!("{behaviour} trains"),
    })
}

/// The framer's forgery: its commitment and payload of window `w` dated a millisecond
/// before the victim's, which a store its owner runs can report (a folder bucket's file
/// times here). Logged and skipped where the bucket is not a folder.
async fn back_date(ctx: &NodeContext, w: u64, victim: u16) {
    let forge = async {
        let own = ctx.chain.commitment(ctx.uid).await.ok()??;
        let root = own.endpoint.strip_prefix("file://")?;
        let folder = std::path::Path::new(root).join(&own.bucket);
        let theirs = ctx.peer_store(victim).await.ok()??;
        let (k, me) = (&ctx.keys, ctx.uid);
        for (key, mine) in [
            (k.gradient_digest(w, victim), k.gradient_digest(w, me)),
            (k.gradient(w, victim), k.gradient(w, me)),
        ] {
            let at = theirs.head(&key).await.ok()?.last_modified;
            let file = std::fs::File::options()
                .write(true)
                .open(folder.join(mine))
                .ok()?;
            file.set_modified(at - Duration::from_millis(1)).ok()?;
        }
        Some(())
    };
    if forge.await.is_none() {
        tracing::warn!(window = w, victim, "framer: could not back-date its upload");
    }
}

/// Honest training of window `w` on the pages `pages_of` is assigned, as the miner's payload.
fn train_as(
    ctx: &NodeContext,
    engine: &mut Engine,
    w: u64,
    pages_of: u16,
) -> Result<(WindowStats, Payload), crate::engine::EngineError> {
    block_in_place(|| engine.train_on(ctx.uid, pages_of, &ctx.hotkey, w))
}

/// `p` with its values changed by `f`, as the miner's payload of window `w`.
fn rewritten(
    ctx: &NodeContext,
    engine: &Engine,
    w: u64,
    p: &Payload,
    f: &dyn Fn(&Tensor) -> Tensor,
) -> Payload {
    let meta = engine.payload_meta(ctx.uid, &ctx.hotkey, w);
    block_in_place(|| engine.rewrite_values(p, meta, |_, v| f(v)))
}

/// Pages of the wrong-data miner's own choosing: the last slot of the window's assignment, a
/// uid the network is unlikely to have.
fn foreign_pages_uid(engine: &Engine, uid: u16) -> u16 {
    let s = &engine.sampler;
    let slots = (s.num_pages / s.pages_per_window.max(1)).clamp(1, 1 << 16);
    let chosen = (slots - 1) as u16;
    if chosen == uid {
        chosen.saturating_sub(1)
    } else {
        chosen
    }
}

async fn hotkey_of(ctx: &NodeContext, uid: u16) -> Result<Option<Hotkey>, NodeError> {
    let mg = ctx.chain.metagraph().await?;
    Ok(mg
        .neurons
        .into_iter()
        .find(|n| n.uid == uid)
        .map(|n| n.hotkey))
}

/// Payloads a blender takes blocks from, in turn.
const BLEND_SOURCES: usize = 3;

/// Up to `count` payloads of window `w` already uploaded by the miners `from` (in that
/// order), polled for until `want` are there or the gather deadline or peer timeout passes.
async fn payloads_of(
    ctx: &NodeContext,
    engine: &Engine,
    w: u64,
    from: &[u16],
    (want, count): (usize, usize),
) -> Vec<Payload> {
    let wait = ctx.peer_timeout.min(ctx.wait_before_gather(w));
    let deadline = tokio::time::Instant::now() + wait;
    let max = engine.payload_validator().max_bytes();
    loop {
        let mut found = Vec::new();
        for &uid in from {
            if found.len() >= count {
                break;
            }
            if let Ok(fetched) = fetch_payload(ctx, uid, w, max, None).await
                && let Ok(p) = engine.decode(&fetched.bytes, uid, w)
            {
                found.push(p);
            }
        }
        if found.len() >= want || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Up to `count` payloads of window `w` already uploaded by the other miners (lowest uids
/// first), waiting for at least two.
async fn earlier_payloads(
    ctx: &NodeContext,
    engine: &Engine,
    w: u64,
    count: usize,
) -> Vec<Payload> {
    let others: Vec<u16> = match ctx.chain.metagraph().await {
        Ok(mg) => mg
            .neurons
            .iter()
            .map(|n| n.uid)
            .filter(|u| *u != ctx.uid)
            .collect(),
        Err(_) => Vec::new(),
    };
    payloads_of(ctx, engine, w, &others, (2.min(count), count)).await
}

/// Block `b` of every parameter from source `b mod n`, re-encoded as one payload.
fn blend(engine: &Engine, sources: &[Payload], meta: PayloadMeta) -> Payload {
    let decoded: Vec<Vec<Selected>> = sources.iter().map(|p| engine.selected(p)).collect();
    let n = decoded.len() as i64;
    let blended: Vec<Selected> = tch::no_grad(|| {
        (0..decoded[0].len())
            .map(|param| {
                let first = &decoded[0][param];
                let blocks = first.indices.size()[0];
                let device = first.indices.device();
                let turn = Tensor::arange(blocks, (Kind::Int64, device))
                    .remainder(n)
                    .unsqueeze(1);
                let (mut indices, mut values) = (first.indices.copy(), first.values.copy());
                for (s, source) in decoded.iter().enumerate().skip(1) {
                    let mine = turn.eq(s as i64);
                    indices = source[param].indices.where_self(&mine, &indices);
                    values = source[param].values.where_self(&mine, &values);
                }
                Selected {
                    indices,
                    values: values.to_kind(Kind::Float),
                }
            })
            .collect()
    });
    engine.codec.to_payload(meta, &blended)
}

/// `own` with its values negated on every coordinate that none of `others` selected.
fn negate_unshared(
    engine: &Engine,
    own: &Payload,
    others: &[Payload],
    meta: PayloadMeta,
) -> Payload {
    let theirs: Vec<Vec<Selected>> = others.iter().map(|p| engine.selected(p)).collect();
    let layouts = &engine.codec.spec.layouts;
    let mine: Vec<Selected> = tch::no_grad(|| {
        engine
            .selected(own)
            .into_iter()
            .enumerate()
            .map(|(param, s)| {
                let l = &layouts[param];
                let shape = [l.num_blocks(), l.block_size()];
                let chosen = Tensor::zeros(shape, (Kind::Bool, s.indices.device()));
                let ones = Tensor::ones_like(&s.indices).to_kind(Kind::Bool);
                for other in &theirs {
                    let at = other[param].indices.to_kind(Kind::Int64);
                    let _ = chosen.shallow_clone().scatter_(1, &at, &ones);
                }
                let shared = chosen.gather(1, &s.indices.to_kind(Kind::Int64), false);
                let values = s.values.where_self(&shared, &(-&s.values));
                Selected {
                    indices: s.indices,
                    values: values.to_kind(Kind::Float),
                }
            })
            .collect()
    });
    engine.codec.to_payload(meta, &mine)
}

/// An update of zeros (the first k coordinates of every block): what a free-rider sends
/// without training.
fn zero_payload(engine: &Engine, meta: PayloadMeta) -> Payload {
    let selected: Vec<Selected> = engine
        .codec
        .spec
        .layouts
        .iter()
        .map(|l| Selected {
            indices: Tensor::arange(l.k, (Kind::Int64, Device::Cpu)).repeat([l.num_blocks(), 1]),
            values: Tensor::zeros([l.num_blocks(), l.k], (Kind::Float, Device::Cpu)),
        })
        .collect();
    engine.codec.to_payload(meta, &selected)
}

/// The victim's payload of window `w`, polled for (it may upload after the copier begins)
/// until the window's gather deadline or the peer timeout, whichever comes first.
async fn victims_payload(
    ctx: &NodeContext,
    engine: &Engine,
    victim: u16,
    w: u64,
) -> Option<Payload> {
    let found = payloads_of(ctx, engine, w, &[victim], (1, 1)).await.pop();
    if found.is_none() {
        tracing::warn!(victim, window = w, "copier: nothing to copy");
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_behaviour_reads_back_from_its_name() {
        let mut all = Behaviour::adversaries(7);
        all.extend([Behaviour::Honest, Behaviour::Absent]);
        for b in all {
            assert_eq!(b.to_string().parse::<Behaviour>(), Ok(b), "{b}");
        }
        assert_eq!(
            "amplifier".parse::<Behaviour>(),
            Ok(Behaviour::Amplifier { factor: 30.0 })
        );
        assert_eq!(
            "throttler".parse::<Behaviour>(),
            Ok(Behaviour::Throttler { factor: 0.1 })
        );
        for bad in [
            "copier",
            "copier:x",
            "amplifier:-2",
            "amplifier:nan",
            "throttler:2",
            "lazy:3",
            "late:3",
        ] {
            let e = bad.parse::<Behaviour>().unwrap_err();
            assert!(e.to_string().contains("unknown behaviour"), "{bad}: {e}");
        }
    }
}
