//! Subscriber tokens for private channels: HS256 JSON Web Tokens, and the
//! primitives under them, written out so the server needs no crypto crate:
//! SHA-256 (`sha256`), HMAC and a constant-time comparison (`hmac`),
//! base64url (`base64url`), a strict JSON reader (`json`), channel
//! patterns (`pattern`), and reading, verifying and minting tokens (`jwt`).
//!
//! This module imports nothing from the rest of the server: the subscriber
//! side (`subscriber::private`) decides what a request needs and calls it.

pub mod base64url;
pub mod hmac;
pub mod json;
pub mod jwt;
pub mod pattern;
pub mod sha256;

pub use jwt::{CLOCK_SKEW, Claims, MAX_TOKEN_BYTES, Refusal, mint, verify};
