//! tandem: a DHCPv6 server (RFC 9915, which obsoletes RFC 8415) built around the DHCPv6 failover
//! protocol (RFC 8156).
//!
//! Layering: `wire` (codec), `server`, `pool` and `failover` are sans-IO and
//! deterministic; only `runtime` touches sockets, disks and clocks.

pub mod cli;
pub mod config;
pub mod ddns;
pub mod failover;
pub mod lease;
pub mod leasequery;
pub mod pool;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod sim;
pub mod wire;
