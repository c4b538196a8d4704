//! jitbot: just-in-time network access to Azure VMs, approved in chat.
//!
//! See `ARCHITECTURE.md` for the code map and the invariants.

pub mod access;
pub mod app;
pub mod azure;
pub mod chat;
pub mod command;
pub mod conditions;
pub mod config;
pub mod crashpoint;
pub mod decision;
#[cfg(feature = "demo")]
pub mod demo;
pub mod digest;
pub mod domain;
pub mod exposure;
pub mod http;
pub mod job;
pub mod limits;
pub mod lockdown;
pub mod messages;
pub mod metrics;
pub mod oidc;
pub mod outbox;
pub mod pages;
pub mod paths;
pub mod policy;
pub mod scan;
pub mod server;
pub mod service;
pub mod siem;
pub mod slack_socket;
pub mod store;
pub mod sweep;
pub mod telemetry;
pub mod worker;

/// Installs ring as the process's rustls crypto provider. Call first in `main` and in every test
/// harness: reqwest and azure_core are built without a provider and panic on first TLS use otherwise.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
