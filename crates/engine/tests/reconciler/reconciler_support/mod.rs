//! The reconciler-test harness behind `tests/reconciler/main.rs`: the case
//! format ([`case`]), the steps ([`run`]), the checks ([`check`]), the
//! simulator's control API ([`control`]) and a release on loopback for the
//! image source ([`release`]).

pub mod case;
pub mod check;
pub mod control;
pub mod release;
pub mod run;
