//! Operator metrics in the Prometheus text format: reconciles, failures by error kind,
//! reconcile duration, applies and status writes (skipped ones too), watcher errors,
//! resources that do not parse, leadership; and per resource its Ready and Degraded
//! conditions and its window (what the chart's alerts and dashboard read).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// One TemplarMiner or TemplarValidator.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    kind: String,
    namespace: String,
    name: String,
}

/// A resource not reconciled for this long is dropped from the per-resource series: the
/// controller sees no delete event, and a settled resource is reconciled every
/// `--refresh-secs` (30 s), a failing one at least every 5 min.
pub const RESOURCE_SERIES_TTL: Duration = Duration::from_secs(15 * 60);

/// What the per-resource gauges say about one resource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceState {
    pub ready: bool,
    pub degraded: bool,
    pub window: Option<u64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: String,
    error: String,
}

/// The counters of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub reconciles: u64,
    pub applies: u64,
    pub status_writes: u64,
    pub status_skips: u64,
    pub watch_errors: u64,
    pub invalid_objects: u64,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabel, Histogram>,
    applies: Family<KindLabel, Counter>,
    status_writes: Family<KindLabel, Counter>,
    status_skips: Family<KindLabel, Counter>,
    watch_errors: Family<KindLabel, Counter>,
    invalid_objects: Family<KindLabel, Counter>,
    leader: Gauge,
    resource_ready: Family<ResourceLabels, Gauge>,
    resource_degraded: Family<ResourceLabels, Gauge>,
    resource_window: Family<ResourceLabels, Gauge>,
    resource_seen: Mutex<HashMap<ResourceLabels, Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("templar_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            // 1 ms .. ~16 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let leader = Gauge::default();
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<KindLabel, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let applies = counter(
            &mut registry,
            "applies",
            "Server-side applies of the owned objects (one per reconcile that applied)",
        );
        let status_writes = counter(&mut registry, "status_writes", "Status patches sent");
        let status_skips = counter(
            &mut registry,
            "status_skips",
            "Status patches left out because only timestamps would change",
        );
        let watch_errors = counter(
            &mut registry,
            "watch_errors",
            "Errors of the watches and the controller queue",
        );
        let invalid_objects = counter(
            &mut registry,
            "invalid_objects",
            "Reconciles of resources that do not parse as their kind",
        );
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconcile",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let resource_gauge = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ResourceLabels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let resource_ready = resource_gauge(
            &mut registry,
            "resource_ready",
            "1 while the resource's Ready condition is True",
        );
        let resource_degraded = resource_gauge(
            &mut registry,
            "resource_degraded",
            "1 while the resource's Degraded condition is True",
        );
        let resource_window = resource_gauge(
            &mut registry,
            "resource_window",
            "Highest window its nodes report (absent until one does)",
        );
        Self {
            registry,
            resource_ready,
            resource_degraded,
            resource_window,
            resource_seen: Mutex::default(),
            reconciles,
            failures,
            duration,
            applies,
            status_writes,
            status_skips,
            watch_errors,
            invalid_objects,
            leader,
        }
    }

    fn inc(family: &Family<KindLabel, Counter>, kind: &str) {
        family.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    fn get(family: &Family<KindLabel, Counter>, kind: &str) -> u64 {
        family.get_or_create(&KindLabel { kind: kind.into() }).get()
    }

    pub fn applied(&self, kind: &str) {
        Self::inc(&self.applies, kind);
    }

    pub fn status_written(&self, kind: &str, written: bool) {
        Self::inc(
            if written {
                &self.status_writes
            } else {
                &self.status_skips
            },
            kind,
        );
    }

    pub fn watch_error(&self, kind: &str) {
        Self::inc(&self.watch_errors, kind);
    }

    pub fn invalid_object(&self, kind: &str) {
        Self::inc(&self.invalid_objects, kind);
    }

    /// Counts for one kind, read back (tests and the closing figures use them).
    pub fn counts(&self, kind: &str) -> Counts {
        Counts {
            reconciles: Self::get(&self.reconciles, kind),
            applies: Self::get(&self.applies, kind),
            status_writes: Self::get(&self.status_writes, kind),
            status_skips: Self::get(&self.status_skips, kind),
            watch_errors: Self::get(&self.watch_errors, kind),
            invalid_objects: Self::get(&self.invalid_objects, kind),
        }
    }

    pub fn reconciled(&self, kind: &str, took: Duration, error_kind: Option<&str>) {
        let label = KindLabel { kind: kind.into() };
        self.reconciles.get_or_create(&label).inc();
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if let Some(error) = error_kind {
            self.failures
                .get_or_create(&FailureLabels {
                    kind: kind.into(),
                    error: error.into(),
                })
                .inc();
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Record one resource's state after its reconcile.
    pub fn observe_resource(&self, kind: &str, namespace: &str, name: &str, state: ResourceState) {
        self.observe_resource_at(kind, namespace, name, state, Instant::now());
    }

    pub fn observe_resource_at(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        state: ResourceState,
        now: Instant,
    ) {
        let labels = ResourceLabels {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.resource_ready
            .get_or_create(&labels)
            .set(i64::from(state.ready));
        self.resource_degraded
            .get_or_create(&labels)
            .set(i64::from(state.degraded));
        match state.window {
            Some(w) => {
                self.resource_window
                    .get_or_create(&labels)
                    .set(i64::try_from(w).unwrap_or(i64::MAX));
            }
            None => {
                self.resource_window.remove(&labels);
            }
        }
        self.seen().insert(labels, now);
    }

    /// Drop a resource's series (it is being deleted).
    pub fn forget_resource(&self, kind: &str, namespace: &str, name: &str) {
        let labels = ResourceLabels {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.remove_resource(&labels);
        self.seen().remove(&labels);
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceLabels, Instant>> {
        // The map stays consistent even if a holder panicked: each entry is one insert.
        self.resource_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remove_resource(&self, labels: &ResourceLabels) {
        self.resource_ready.remove(labels);
        self.resource_degraded.remove(labels);
        self.resource_window.remove(labels);
    }

    /// Drop the series of resources not reconciled within [`RESOURCE_SERIES_TTL`].
    fn prune(&self, now: Instant) {
        let mut seen = self.seen();
        seen.retain(|labels, at| {
            let live = now.saturating_duration_since(*at) < RESOURCE_SERIES_TTL;
            if !live {
                self.remove_resource(labels);
            }
            live
        });
    }

    pub fn encode(&self) -> String {
        self.encode_at(Instant::now())
    }

    pub fn encode_at(&self, now: Instant) -> String {
        self.prune(now);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_by_kind_and_error() {
        let m = Metrics::new();
        m.reconciled("TemplarMiner", Duration::from_millis(3), None);
        m.reconciled("TemplarMiner", Duration::from_millis(5), Some("api"));
        m.set_leader(true);
        let text = m.encode();
        assert!(
            text.contains("templar_operator_reconciles_total{kind=\"TemplarMiner\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "templar_operator_reconcile_failures_total{kind=\"TemplarMiner\",error=\"api\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "templar_operator_reconcile_duration_seconds_count{kind=\"TemplarMiner\"} 2"
        ));
        assert!(text.contains("templar_operator_leader 1"), "{text}");
    }

    #[test]
    fn resource_series_follow_the_last_reconcile_and_age_out() {
        let m = Metrics::new();
        let t0 = Instant::now();
        let state = ResourceState {
            ready: false,
            degraded: true,
            window: Some(42),
        };
        m.observe_resource_at("TemplarMiner", "train", "a", state, t0);
        m.observe_resource_at(
            "TemplarValidator",
            "train",
            "v",
            ResourceState {
                ready: true,
                degraded: false,
                window: None,
            },
            t0 + RESOURCE_SERIES_TTL / 2,
        );
        let text = m.encode_at(t0 + Duration::from_secs(1));
        let a = r#"{kind="TemplarMiner",namespace="train",name="a"}"#;
        let v = r#"{kind="TemplarValidator",namespace="train",name="v"}"#;
        assert!(
            text.contains(&format!("templar_operator_resource_degraded{a} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("templar_operator_resource_ready{a} 0")),
            "{text}"
        );
        assert!(
            text.contains(&format!("templar_operator_resource_window{a} 42")),
            "{text}"
        );
        assert!(
            text.contains(&format!("templar_operator_resource_ready{v} 1")),
            "{text}"
        );
        assert!(
            !text.contains(&format!("templar_operator_resource_window{v}")),
            "{text}"
        );

        // Not reconciled for the TTL: gone; the other one stays.
        let text = m.encode_at(t0 + RESOURCE_SERIES_TTL);
        assert!(!text.contains(a), "{text}");
        assert!(
            text.contains(&format!("templar_operator_resource_ready{v} 1")),
            "{text}"
        );
        m.forget_resource("TemplarValidator", "train", "v");
        assert!(!m.encode_at(t0 + RESOURCE_SERIES_TTL).contains(v));
    }
}
