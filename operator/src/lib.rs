//! templar-operator: turns TemplarMiner / TemplarValidator resources into the objects that
//! run the nodes. [`build`] holds the pure builders (no API calls); the reconcile loop that
//! applies them comes with the operator issue.

pub mod build;
