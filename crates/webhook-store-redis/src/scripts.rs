//! The Lua scripts, each run atomically by Redis (`EVALSHA`, loaded again on
//! `NOSCRIPT` after a server restart).

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

const COMMON: &str = include_str!("lua/common.lua");

/// Every script, compiled once (hashed) per process.
pub(crate) struct Scripts {
    pub(crate) put_endpoint: Script,
    pub(crate) delete_endpoint: Script,
    pub(crate) list_endpoints: Script,
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) complete: Script,
    pub(crate) get_delivery: Script,
    pub(crate) get_event: Script,
    pub(crate) list_dead: Script,
    pub(crate) replay_one: Script,
    pub(crate) replay_batch: Script,
    pub(crate) prune_batch: Script,
    pub(crate) unfinished: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    put_endpoint: script(include_str!("lua/put_endpoint.lua")),
    delete_endpoint: script(include_str!("lua/delete_endpoint.lua")),
    list_endpoints: script(include_str!("lua/list_endpoints.lua")),
    enqueue: script(include_str!("lua/enqueue.lua")),
    claim: script(include_str!("lua/claim.lua")),
    complete: script(include_str!("lua/complete.lua")),
    get_delivery: script(include_str!("lua/get_delivery.lua")),
    get_event: script(include_str!("lua/get_event.lua")),
    list_dead: script(include_str!("lua/list_dead.lua")),
    replay_one: script(include_str!("lua/replay_one.lua")),
    replay_batch: script(include_str!("lua/replay_batch.lua")),
    prune_batch: script(include_str!("lua/prune_batch.lua")),
    unfinished: script(include_str!("lua/unfinished.lua")),
});
