//! In-process emulators of the outside services jitbot talks to: Azure Resource Manager,
//! the Entra ID token endpoint, the Slack Web API and the Discord REST API.
//!
//! They serve two purposes: the explicitly chosen *simulated Azure backend* (`jitbot demo`,
//! `azure.backend = "simulated"`) and the black-box tests. They behave like the real services
//! in the ways that matter to jitbot (see `shared/reference/PROTOCOLS.md`) and record what they
//! received so tests can assert on it.

pub mod arm;
pub mod discord;
pub mod discord_user;
pub mod entra;
pub mod slack;
pub mod slack_user;
