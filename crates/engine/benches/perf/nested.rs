//! Nested: the three-tier tree by one root run against the same tiers
//! converged one node after another (support/tiers.rs measures it, for
//! `--bench nested` too).

use crate::support::tiers::Figures;
use crate::table::{Table, ratio, secs, x};

pub fn rows(f: &Figures, scale: f64, t: &mut Table) {
    let row = "Nested";
    let one_by_one = f.one_by_one();
    t.add(row, "tree, one root run [nested]", secs(f.tree));
    t.add(
        row,
        "one node after another",
        format!(
            "{} ({})",
            secs(one_by_one),
            f.steps
                .iter()
                .map(|d| format!("{:.3}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" + ")
        ),
    );
    t.add(
        row,
        "one after another / tree",
        x(ratio(one_by_one.as_secs_f64(), f.tree.as_secs_f64())),
    );
    t.add(row, "no-op root run", secs(f.noop));
    t.goal(
        row,
        "no-op writes per tier",
        f.noop_writes
            .iter()
            .map(|(tier, n)| format!("{tier} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        "0 each",
        f.noop_writes.iter().all(|(_, n)| *n == 0),
    );
    t.note(
        "nested",
        format!(
            "Nested: pve > hv > {{app, hv2 > deep}}, child tiers real `homestak` daemons, \
             time scale {scale}"
        ),
    );
}
