//! Shared integration-test support: real upstream servers (`upstreams`).
//! Include with `mod support;` from a test crate.
#![allow(dead_code)]

pub mod upstreams;
