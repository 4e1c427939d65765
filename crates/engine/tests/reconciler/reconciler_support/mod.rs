//! The reconciler-test harness behind `tests/reconciler/main.rs`: the case
//! format ([`case`]), the steps ([`run`]), the checks ([`check`]) and the
//! simulator's control API ([`control`]).

pub mod case;
pub mod check;
pub mod control;
pub mod run;
