//! Address and prefix allocation (sans-IO).

mod prefix;

pub use prefix::{AddrRange, Prefix};
