//! Address and prefix allocation (sans-IO).

mod alloc;
pub mod hash;
mod prefix;
pub mod reserved;

pub use alloc::{HASH_PROBES, Slice, SlotAllocator};
pub use prefix::{AddrRange, Prefix};
