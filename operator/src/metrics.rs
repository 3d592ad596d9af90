//! Operator metrics in the Prometheus text format: reconciles, failures by error kind,
//! reconcile duration, applies and status writes (skipped ones too), watcher errors,
//! resources that do not parse, leadership.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
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
        Self {
            registry,
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

    pub fn encode(&self) -> String {
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
}
