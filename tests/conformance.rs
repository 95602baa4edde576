//! The backend conformance suite: every line of the contract's async surface, run
//! against a real `redis-server` (spawned per test) and against `memory://`. The cases
//! live in `tests/cases/`, shared with Redlock's suite (`tests/redlock.rs`).

mod cases;
mod support;

use std::time::Duration;

use cases::exclusion_workload;
use leasehold::Client;
use support::RedisServer;

const SEC: Duration = Duration::from_secs(1);

/// A store for one test: a fresh redis-server (kept alive by the guard) or a private
/// memory store.
struct Store {
    client: Client,
    _server: Option<RedisServer>,
}

async fn redis_store() -> Store {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).await.expect("connect");
    Store {
        client,
        _server: Some(server),
    }
}

fn memory_store() -> Store {
    Store {
        client: Client::memory(),
        _server: None,
    }
}

/// Generates `redis::<case>` and `memory::<case>` for every conformance case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = super::redis_store().await;
                    super::cases::$case(&store.client).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = super::memory_store();
                    super::cases::$case(&store.client).await;
                }
            )*
        }
    };
}

conformance!(
    acquire_then_contention_is_not_obtained,
    same_value_reacquires_rearms_and_keeps_its_token,
    fencing_tokens_rise_across_acquisitions_and_survive_expiry,
    refresh_rearms_the_original_expiration,
    refresh_after_loss_is_not_held_and_leaves_the_new_owner_alone,
    ttl_reports_remaining_time_and_none_when_not_held,
    unlock_releases_and_a_stale_unlock_is_not_held,
    retry_waits_until_the_holder_releases,
    contention_exhausts_the_strategy_with_no_sleep_after_the_last_attempt,
    iterators_and_custom_strategies_plug_in,
    bad_input_is_rejected_before_any_io,
    many_tasks_never_hold_one_key_at_once,
    debug_output_never_shows_the_lock_value,
);

/// Negative control: the same checker catches overlaps when the "lock" does not
/// exclude (every worker locks its own key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_checker_catches_a_lock_that_does_not_exclude() {
    let c = Client::memory();
    let overlaps = exclusion_workload(12, 5, |worker| {
        let c = c.clone();
        async move {
            c.try_lock(&format!("own-key-{worker}"), "v", 10 * SEC)
                .await
                .unwrap()
        }
    })
    .await;
    assert!(overlaps > 0, "the checker must see overlapping holders");
}
