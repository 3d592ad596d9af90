//! templar-operator: reconciles TemplarMiner / TemplarValidator resources into node pods.
//!
//! `templar-operator crd` prints the CustomResourceDefinitions (also checked in as
//! `crds/templar.tplr.ai.yaml`). The controllers arrive with the operator issue; until then
//! any other command says so and exits non-zero, so no deployment mistakes it for one.

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("crd") => {
            print!("{}", templar_crds::crds_yaml());
            std::process::ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "templar-operator {}: usage: templar-operator crd (the {} controllers are not built yet)",
                env!("CARGO_PKG_VERSION"),
                templar_crds::API_GROUP
            );
            std::process::ExitCode::from(2)
        }
    }
}
