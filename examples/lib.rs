//! Runnable examples of the webhook crates; see `quickstart.rs` and `custom_store.rs`.
