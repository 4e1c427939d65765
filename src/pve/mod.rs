//! Typed PVE REST client.
