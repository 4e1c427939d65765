//! The PVE 8.4 simulator.

pub mod form;
pub mod params;
