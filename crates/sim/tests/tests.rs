//! The integration tests of homestak-sim: one binary, one module per concern.

mod api;
mod control;
mod guest;
mod host;
mod nested;
mod replay;
mod support;
mod vm;
