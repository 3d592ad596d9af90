//! Test infrastructure shared by the workspace's test suites, never linked into a binary
//! (a dev-dependency only):
//! - [`garage`]: a real S3 server (Garage) started per test on loopback;
//! - [`fake_api`]: an in-memory Kubernetes API server (lists, watch streams, resource
//!   versions, an event per write) under which the operator's controllers run in tests,
//!   since no kube-apiserver can run on the project's machines (feature `kube`, so that the
//!   torch crates' tests build without kube).

#[cfg(feature = "kube")]
pub mod fake_api;
pub mod garage;
