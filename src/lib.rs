//! mailshare: a mail-proxy gateway that shares client conversations with
//! colleagues at the level a TOML policy allows.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`engine`] | pure sharing decisions: capture rules, read rules, contacts, threads |
//! | [`mail`] | raw RFC 5322 bytes → [`engine::MessageFacts`] + borrowed content (mail-parser) |
//! | [`store`] | the narrow [`store::Store`] trait and its sled backend, blobs, group commit |
//! | [`config`] | `mailshare.toml` and `policy.toml`: parsing, validation, diagnostics |
//! | [`diag`] | `file:line:column: message` diagnostics shared by config checks |
//! | [`admin`] | the JSON HTTP API: tokens, per-level views, timelines, search, sharing, metrics |
//! | [`ingest`] | the capture path shared by `mailshare ingest` and the protocol adapters |
//! | [`gateway`] | run-time state the adapters share: store, policy in force, capture service, budget |
//! | [`metrics`] | the Prometheus registry and the shared metrics |
//! | [`net`] | TLS configuration and the limited accept loop |
//! | [`smtp`] | SMTP submission relay: sans-IO session, DATA framer, EHLO/AUTH stages, async driver |
//! | [`imap`] | the IMAP proxy: pre-login server, byte-faithful relay, capture of fetched and appended mail |
//! | [`shutdown`] | shutdown signal and session drain |
//! | [`control`] | the running server's local control socket (`mailshare backup` while serving) |
//! | [`app`] | composition root: commands that load config, open the store, serve |
//! | [`logging`] | tracing subscriber: human or JSON, level from config or `RUST_LOG` |
//!
//! Dependencies point one way: `admin → gateway, engine, store, metrics`;
//! `smtp → gateway, ingest, mail, engine, net, metrics, shutdown, config`;
//! `imap → gateway, ingest, mail, engine, net, shutdown`;
//! `ingest → store, mail, engine`; `store → engine`;
//! `mail → engine`; `config → engine, diag`; `engine → diag` at most.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod control;
pub mod diag;
pub mod engine;
pub mod gateway;
pub mod imap;
pub mod ingest;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod shutdown;
pub mod smtp;
pub mod store;
