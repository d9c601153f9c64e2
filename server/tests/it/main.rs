//! Integration tests: each module is one scenario against a real server
//! (bound to port 0 on loopback) driven by real tonic clients. One test
//! binary keeps link time down; modules keep scenarios apart.

mod common;

mod auth_and_tenancy;
mod avatars;
mod bad_input;
mod browser;
mod console;
mod hardening;
mod loadtest;
mod logs;
mod media;
mod metrics;
mod moderation;
mod output_faults;
mod privacy;
mod process;
mod recordings;
mod reflection_health_web;
mod rtmp;
mod sessions;
mod shared_storage;
mod speech;
mod voice;
mod whip_egress;
