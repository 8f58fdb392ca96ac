//! meteord as a library: the modules of the server, exposed so that tests,
//! fuzzers and benchmarks can drive the parsers directly. The binary is
//! `src/main.rs`.

pub mod base64;
pub mod channel;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod controller;
pub mod deadline;
pub mod http;
pub mod hub;
pub mod io;
pub mod log;
pub mod process;
pub mod proxies;
pub mod server;
pub mod state_file;
pub mod stats;
pub mod subscriber;
pub mod template;
pub mod token;
pub mod wsproto;
