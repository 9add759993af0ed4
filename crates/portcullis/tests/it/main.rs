//! Integration tests: real portcullis processes, the real sample upstream, real HTTP on loopback.
//!
//! One test binary (`it`) so the harness compiles once. Every network operation is bounded by a
//! timeout, and every child process is killed when its handle drops.

#![allow(unreachable_pub, missing_debug_implementations, clippy::unwrap_used)]

mod by_hand;
mod cimd;
mod cli;
mod connections;
mod doctor;
mod faults;
mod gateway;
mod hostile;
mod observe;
mod profiles;
mod proxy;
mod support;
mod tls;
mod upstream_idp;
mod verify;
