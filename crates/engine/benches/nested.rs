//! `make bench`, nested part: a three-tier tree against the simulator (see
//! `support/tiers.rs` for what is measured; `--bench perf` prints the same
//! figures in its table).
//!
//! Environment: `BENCH_TIME_SCALE` (default 0.01), `HOMESTAK_BIN` (default
//! `target/<profile>/homestak` beside this executable).

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{env, tiers};

fn main() {
    homestak_tls::install_crypto_provider();
    // `cargo test --all-targets` runs this without `--bench`: skip the
    // minute of real work there; figures come from `make bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("nested bench: run with `make bench`");
        return;
    }
    let scale: f64 = env("BENCH_TIME_SCALE", 0.01);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let f = rt.block_on(tiers::measure(scale));
    let one_by_one = f.one_by_one();
    println!("nested bench: three tiers (pve > hv > {{app, hv2 > deep}}), time scale {scale}");
    println!("  tree, one root run       {:>8.3} s", f.tree.as_secs_f64());
    println!(
        "  one node after another   {:>8.3} s  ({})",
        one_by_one.as_secs_f64(),
        f.steps
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" + ")
    );
    println!(
        "  one after another / tree {:>8.2}x",
        one_by_one.as_secs_f64() / f.tree.as_secs_f64()
    );
    println!("  no-op root run           {:>8.3} s", f.noop.as_secs_f64());
    let per_tier: Vec<String> = f
        .noop_writes
        .iter()
        .map(|(tier, n)| format!("{tier} {n}"))
        .collect();
    println!("  no-op writes per tier    {}", per_tier.join(", "));
}
