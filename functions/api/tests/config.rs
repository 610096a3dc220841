//! The api bootstrap refuses to start without its configuration, naming what is missing.
#![allow(clippy::expect_used)]

#[path = "../../missing_config.rs"]
mod missing_config;

#[test]
fn names_every_missing_variable() {
    missing_config::check(env!("CARGO_BIN_EXE_api"));
}
