//! The controller daemon (`homestak serve`).
