//! The controller daemon, `homestak serve`: one HTTPS server per PVE tier
//! that serves what VMs need while they bootstrap, and runs the GitOps
//! loop that keeps the tier converged.
//!
//! # Endpoints
//! - The seed's, unchanged for VMs and their bootstrap scripts
//!   ([`seed`]): `GET /health`, `GET /specs`, `GET /spec/{identity}`
//!   (posture auth) and `GET /{repo}.git/...` (dumb-HTTP git and raw files,
//!   [`repos`], behind the repo token).
//! - What a new host installs homestak from ([`install`]): `GET
//!   /install.sh` and `GET /bin/homestak`, behind the repo token.
//! - The reconciler API and `/metrics` ([`api`], [`metrics`]), behind
//!   scoped API tokens ([`auth`]). Its request and answer types, and a
//!   typed client, are `homestak_api::v1` and `homestak_api::Client`: the
//!   daemon serves exactly the types its clients read.
//! - The status page ([`ui`]): `GET /ui`, a read-only HTML view behind a
//!   read-scope token (a login form that sets a cookie).
//!
//! # The loop
//! [`watch`] notices changes under the site-config (debounced);
//! [`source`] reads `controller.yaml` ([`policy`]) and the manifests at the
//! repository's `HEAD` (or the working tree); [`reconciler`] keeps them
//! with the subtrees parents handed over, queues them, and its one worker
//! hands one at a time to the [`engine::Engine`] ([`converge`]:
//! `homestak_engine::reconcile::Engine::run_once`, the same path as
//! `homestak reconcile --once`), which plans, converges and records.
//! Periodic resyncs catch drift. Everything durable — what was applied,
//! the subtrees parents handed over, the lease, the events [`events`]
//! serves — is in the engine's one store; [`legacy`] imports the
//! `controller.json` older versions kept beside it.
//!
//! # Lifecycle
//! [`server::Daemon::start`] prepares everything that can fail;
//! [`server::Daemon::run`] serves until a shutdown future resolves
//! ([`shutdown`]), then stops in order. Every connection goes through
//! [`conn`] first (caps at accept, before TLS, and timeouts; [`fds`] keeps
//! descriptors for the reconciler), every request through [`http`]: the
//! auth-failure [`throttle`] and its [`tarpit`], bodies read only after auth, metrics and logs
//! that never carry a token.

pub mod api;
pub mod auth;
pub mod cert;
pub mod conn;
pub mod converge;
pub mod engine;
pub mod events;
pub mod fds;
pub mod git;
pub mod http;
pub mod install;
pub mod lease;
pub mod legacy;
pub mod metrics;
pub mod policy;
pub mod reconciler;
pub mod reply;
pub mod repos;
pub mod seed;
pub mod server;
pub mod shutdown;
pub mod site_cell;
pub mod source;
pub mod tarpit;
pub mod throttle;
pub mod ui;
pub mod watch;

pub use engine::{Engine, StatusRequest};
pub use server::{Config, Control, Daemon};
