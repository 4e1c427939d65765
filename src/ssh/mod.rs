//! SSH client.
