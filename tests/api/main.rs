//! Black-box tests: the real server on a loopback port, signed requests exactly as Slack sends
//! them, and in-process fakes of Slack, ARM and Entra. Assertions are on what the fakes received
//! and what the database holds.
//!
//! # Every test runs on SQLite and on PostgreSQL
//!
//! Wrap the tests of a file in `backends! { … }`, each written as an ordinary `#[tokio::test]`:
//!
//! ```ignore
//! use crate::helpers::*;
//!
//! backends! {
//! #[tokio::test]
//! async fn deny_closes_the_request() {
//!     let app = spawn_app().await; // a fresh database of the variant's backend
//!     // …
//! }
//! }
//! ```
//!
//! Each test becomes a module with two tests, `deny_closes_the_request::sqlite` and
//! `deny_closes_the_request::postgres` (filter with `cargo test --test api postgres`). The body
//! runs unchanged: `spawn_app()`/`spawn_app_with()` read the backend from a task-local and create
//! a fresh database (a temp file, or `jitbot_t_<random>` on the server named by
//! `JITBOT_TEST_POSTGRES_URL`, dropped when the test ends). Without that variable the Postgres
//! variant prints `SKIPPED …` and passes, unless `JITBOT_TEST_REQUIRE_POSTGRES=1` (CI), then it
//! fails. Arguments of `#[tokio::test(…)]` and attributes after it (`#[ignore]`, …) apply to both
//! variants. The body becomes an `async` block, so it must not `return` a value. Only test
//! functions go inside the macro: keep helper functions and `use` lines outside it.
//!
//! `postgres_tests! { … }` is the same for tests that only make sense on PostgreSQL (several
//! replicas on one database): it makes only the `::postgres` variant.

/// One variant of a test: `name` in the test's module, run on database `db` with Slack over
/// `transport`; `{ attrs }` are the test's own attributes (`#[tokio::test(…)]` and the rest).
macro_rules! variant {
    ($name:ident, $db:ident, $transport:ident, { $($attrs:tt)* } $body:block) => {
        $($attrs)*
        async fn $name() {
            $crate::helpers::run_test_over(
                $crate::helpers::Db::$db,
                $crate::helpers::Transport::$transport,
                concat!(module_path!(), "::", stringify!($name)),
                async $body,
            )
            .await
        }
    };
}

/// Turns each `#[tokio::test] async fn name() { … }` into `name::sqlite` and `name::postgres`.
macro_rules! backends {
    ($(
        $(#[doc = $doc:literal])*
        #[tokio::test $(($($args:tt)*))?]
        $(#[$attr:meta])*
        async fn $name:ident() $body:block
    )*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            variant!(sqlite, Sqlite, Http, { #[tokio::test $(($($args)*))?] $(#[$attr])* } $body);
            variant!(postgres, Postgres, Http, { #[tokio::test $(($($args)*))?] $(#[$attr])* } $body);
        }
    )*};
}

/// Like `backends!`, but only the `::postgres` variant (tests of several replicas).
macro_rules! postgres_tests {
    ($(
        $(#[doc = $doc:literal])*
        #[tokio::test $(($($args:tt)*))?]
        $(#[$attr:meta])*
        async fn $name:ident() $body:block
    )*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            variant!(postgres, Postgres, Http, { #[tokio::test $(($($args)*))?] $(#[$attr])* } $body);
        }
    )*};
}

/// Like `backends!`, plus `name::socket_sqlite`: the same body with Slack's commands and clicks
/// sent over Socket Mode (envelopes on the fake Slack's WebSocket, answered in the ack) instead
/// of signed HTTP posts. `TestApp`'s `slash`, `click`, `press` and friends pick the transport,
/// so the body is unchanged. (`cargo test --test api sqlite` runs both transports.)
macro_rules! slack_transports {
    ($(
        $(#[doc = $doc:literal])*
        #[tokio::test $(($($args:tt)*))?]
        $(#[$attr:meta])*
        async fn $name:ident() $body:block
    )*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            variant!(sqlite, Sqlite, Http, { #[tokio::test $(($($args)*))?] $(#[$attr])* } $body);
            variant!(postgres, Postgres, Http, { #[tokio::test $(($($args)*))?] $(#[$attr])* } $body);
            variant!(socket_sqlite, Sqlite, Socket, { #[tokio::test $(($($args)*))?] $(#[$attr])* } $body);
        }
    )*};
}

mod helpers;

mod approvals;
mod arm_faults;
mod browser;
mod buttons;
mod conditions;
mod database;
mod discord;
mod forms;
mod groups;
mod http_limits;
mod lifecycle;
mod limits;
mod links;
mod ops;
mod reconcile;
mod replay;
mod replicas;
mod restart;
mod secrets;
mod security;
mod siem;
mod socket;
mod step_up;
mod vm;
