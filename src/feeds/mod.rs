//! Feeds in: RSS, Atom and JSON feeds an admin registers (a CMS's "son dakika" category feed),
//! polled by every `serve` process in turn, whose new items become drafts an editor sends with a
//! click (`suggest`) or alerts at once (`auto`).
//!
//! - [`domain`]: a feed's settings, parsed at the edge; the filters;
//! - [`parse`]: a fetched document → items fit for an alert, via [`text`]; every pass over the
//!   document's text is linear in its length;
//! - [`bounded`]: the threads parsing runs on, with a deadline that shutdown does not wait for;
//! - [`store`]: the tables, the lease that gives each feed to one poller at a time, and the
//!   unique item key that makes each item act once;
//! - [`poller`]: the worker;
//! - [`live`]: the drafts list each process keeps for the consoles' live stream.
//!
//! Fetching goes through [`crate::net::Outbound`] only: the SSRF rules, bounded size and time.

pub mod bounded;
pub mod domain;
pub mod live;
pub mod parse;
pub mod poller;
pub mod store;
pub mod text;
