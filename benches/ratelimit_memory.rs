//! Memory per active rate-limit key: RSS before and after 1,000,000 distinct keys go through
//! the gateway's key store (keys shaped as the layer makes them, `key:<api key>`), then after
//! pruning once they are idle. Run: `cargo bench --bench ratelimit_memory`.

use std::num::NonZeroU32;
use std::time::Duration;

use gwbench::gateway::middleware::{GovernorStore, KeyStore};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let keys = 1_000_000u32;
    let store = GovernorStore::new(
        NonZeroU32::new(100_000).unwrap(),
        Duration::from_secs(1),
        NonZeroU32::new(10_000).unwrap(),
        usize::MAX,
    );
    let before = rss_kib();
    for i in 0..keys {
        store.check(&format!("key:client-{i:08}"));
    }
    let after = rss_kib();
    println!(
        "{} keys held; RSS {before} KiB -> {after} KiB: {:.0} bytes per active key",
        store.len(),
        (after.saturating_sub(before)) as f64 * 1024.0 / f64::from(keys)
    );
    std::thread::sleep(Duration::from_millis(200)); // every burst refills: all keys idle
    store.prune();
    println!(
        "after pruning idle keys: {} keys held, RSS {} KiB",
        store.len(),
        rss_kib()
    );
}
