#![doc = include_str!("../README.md")]
//!
//! This package holds the runnable examples (`quickstart.rs`, `custom_store.rs`); it
//! also compiles and runs the repository README's code as doc tests.
