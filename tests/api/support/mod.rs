//! What the tests stand on, apart from the tests themselves: starting a real PostgreSQL, the
//! service and its clients ([`helpers`]), and the real HTTP servers that play the other side: a
//! push service that verifies VAPID and decrypts every message ([`push_double`]) and a site the
//! service fetches from, a newsroom's CMS or a webhook receiver ([`origin`]).

pub mod helpers;
pub mod origin;
pub mod push_double;
