//! Outbound HTTP to URLs that people give us (feeds, webhook endpoints), safely: see
//! [`client`] for the rules every request follows, [`addr`] for what counts as a public
//! address (shared with the push sender).
//!
//! Never fetch an admin's URL with a plain `reqwest::Client`: it would follow redirects into the
//! internal network and resolve names to loopback.

pub mod addr;
pub mod client;

pub use addr::{HostRule, PrivateHosts, is_public};
pub use client::{Fetched, NetError, OutRequest, Outbound, user_agent};
