#![doc = include_str!("../README.md")]

mod codec;
mod error;
mod scripts;
mod store;

pub use store::{RedisOptions, RedisStore};

/// The connection pool crate (and through it `deadpool_redis::redis`), for
/// [`RedisStore::from_pool`].
pub use deadpool_redis;
