//! jitbot: just-in-time network access to Azure VMs, approved in chat.
//! See ARCHITECTURE.md for the code map and invariants.

pub mod azure;
pub mod chat;
pub mod sim;
