//! templar-operator: reconciles TemplarMiner / TemplarValidator resources into node pods.
//! The controllers arrive with the operator issue; until then the binary says so and exits
//! non-zero, so no deployment mistakes it for a working controller.

fn main() -> std::process::ExitCode {
    eprintln!(
        "templar-operator {}: the {} controllers are not built yet",
        env!("CARGO_PKG_VERSION"),
        templar_crds::API_GROUP
    );
    std::process::ExitCode::from(2)
}
