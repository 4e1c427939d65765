//! The controller daemon (`homestak serve`).

pub mod auth;
pub mod cert;
pub mod git;
pub mod reply;
pub mod repos;
pub mod seed;
pub mod state_dir;
pub mod throttle;
