//! The integration tests of homestak-ssh: one binary, one module per concern.

mod loopback;
mod openssh;
