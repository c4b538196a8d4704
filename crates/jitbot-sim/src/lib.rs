//! In-process emulators of the outside services jitbot talks to: Azure Resource Manager,
//! the Entra ID token endpoint, the Slack Web API, the Discord REST API and the SIEM receivers
//! (a signed webhook, Azure Monitor's Logs Ingestion API), plus what Slack and
//! Discord send to jitbot (`slack_user`, `discord_user`: signed requests).
//!
//! They serve two purposes: the explicitly chosen *simulated Azure backend* (`jitbot demo`,
//! `azure.backend = "simulated"`, only in builds with jitbot's `demo` feature) and the black-box
//! tests and benchmark. They behave like the real services in the ways that matter to jitbot (see
//! `shared/reference/PROTOCOLS.md`) and record what they received so tests can assert on it.
//!
//! This crate does not depend on jitbot (jitbot's `demo` feature depends on it): it speaks the
//! services' wire formats with types of its own, so it also checks jitbot's client from outside.

pub mod arm;
pub mod discord;
pub mod discord_user;
pub mod entra;
pub mod siem;
pub mod slack;
pub mod slack_socket;
pub mod slack_user;
