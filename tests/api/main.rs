//! Black-box tests: the real server on a loopback port, signed requests exactly as Slack sends
//! them, and in-process fakes of Slack, ARM and Entra. Assertions are on what the fakes received
//! and what the database holds.

mod helpers;

mod approvals;
mod arm_faults;
mod lifecycle;
mod ops;
mod restart;
mod security;
