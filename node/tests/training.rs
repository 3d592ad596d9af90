//! The tiny model learns the embedded corpus under both update rules, through the whole
//! window pipeline (pages, local work, compression, payload bytes, validation, merge, step).

use tch::Device;
use templar_node::data::{Pages, embedded_tokens};
use templar_node::hparams::Hparams;
use templar_node::train::train_alone;

fn hparams(file: &str) -> Hparams {
    // The runtime value: a target dir shared between checkouts may hold a build made elsewhere.
    let dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let path = format!("{dir}/../hparams/{file}");
    Hparams::load(std::path::Path::new(&path)).expect("hyperparameters file")
}

fn check_learns(hp: &Hparams, windows: u64) {
    let pages = Pages::new(embedded_tokens().unwrap(), hp.data.seq_len).unwrap();
    let mut seen = 0;
    let report = train_alone(hp, &pages, windows, 0, Device::Cpu, |p| {
        assert!(p.loss.is_finite());
        seen += 1;
    })
    .unwrap();
    assert_eq!(seen, windows);
    let drop = 1.0 - report.final_eval_loss / report.initial_eval_loss;
    eprintln!(
        "{:?}: held-out loss {:.3} -> {:.3} ({:.0}% lower), {:.0} tokens/s, payload {} B",
        hp.outer.mode,
        report.initial_eval_loss,
        report.final_eval_loss,
        drop * 100.0,
        report.tokens_per_sec,
        report.payload_bytes
    );
    // Measured: 33% (DeMo) and 39% (SparseLoCo) on x86-64. The bar sits far below that, so float
    // differences between CPUs cannot cross it, and far above what an untrained or broken
    // pipeline shows (a few tenths of a percent inside the warm-up).
    assert!(drop >= 0.20, "loss fell only {:.1}%", drop * 100.0);
}

#[test]
fn tiny_model_learns_with_sparseloco() {
    check_learns(&hparams("tiny-sparseloco.toml"), 30);
}

#[test]
fn tiny_model_learns_with_demo() {
    check_learns(&hparams("tiny-demo.toml"), 250);
}
