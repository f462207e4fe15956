//! The IO edge: LMDB store, sockets, glommio shards, the clock. Everything
//! here drives the sans-IO cores in `server`, `pool` and `failover`.

pub mod bus;
pub mod store;
pub mod journal;
pub mod udp;
pub mod datapath;
pub mod sys;
pub mod observe;
pub mod shard;
pub mod server;
pub mod failover;
pub mod tls;
pub mod ddns;
pub mod operator;
pub mod leasequery;
