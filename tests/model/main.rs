//! DOCS PLACEHOLDER

mod model;
mod properties;
mod state;

use stateright::{Checker, HasDiscoveries, Model, Path};

use model::{Action, Leasehold};
use properties::*;
use state::State;

/// The rules of protocol v2. [`Rules::V2`] is `src/` as it is; turning one flag off is
/// that rule's negative control.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// `acquire.lua` refuses an attempt numbered at or below the client's aborted record
    /// (off: the record is kept but not read).
    pub refuse_aborted: bool,
    /// `abort.lua` deletes the key only if one of its attempts created it (off: whenever
    /// the key holds the value).
    pub undo_only_what_it_created: bool,
    /// A call that ends holding the key aborts its earlier attempts with `undo = false`
    /// (off: with `undo = true`, as a call that ends without it).
    pub refuse_only_when_holding: bool,
    /// `Lease::expect`: before a same-value acquire or a refresh is sent, the held lease
    /// counts on no more than `sent + expiration`.
    pub expect_caps: bool,
    /// `Lease::confirm` sets the validity only for a write numbered above the last one
    /// confirmed (off: whatever is confirmed last wins).
    pub order_confirm: bool,
    /// `Leases::releasing`: a grant of an attempt numbered below the last release of the
    /// pair sent is not believed (tried again at once).
    pub release_marks: bool,
    /// `Lease::release` ends the lease for every handle before the release is sent (off:
    /// once it is answered).
    pub unlock_ends_lease_first: bool,
    /// An abort answered "deleted" marks the pair's lease lost (`Leases::released`).
    pub abort_marks_released: bool,
    /// Not in `src/` (a fix this model suggests): an undoing abort try that fails marks
    /// the pair's lease lost, since it may have deleted the key unheard.
    pub failed_abort_marks_lost: bool,
}

impl Rules {
    /// Protocol v2 as `src/` implements it.
    pub const V2: Rules = Rules {
        refuse_aborted: true,
        undo_only_what_it_created: true,
        refuse_only_when_holding: true,
        expect_caps: true,
        order_confirm: true,
        release_marks: true,
        unlock_ends_lease_first: true,
        abort_marks_released: true,
        failed_abort_marks_lost: false,
    };
    /// V2 with the fix for an abort answer lost after it deleted the key.
    pub const V2_FIXED: Rules = Rules {
        failed_abort_marks_lost: true,
        ..Rules::V2
    };
}

/// One `lock(k, v)` call of the client.
#[derive(Clone, Copy, Debug)]
pub struct CallSpec {
    /// Its expiration, in ticks.
    pub exp: u8,
    /// Attempts after the first (a retry strategy allowing that many).
    pub retries: u8,
    /// How many times the returned lock may be refreshed.
    pub refreshes: u8,
    /// Whether the returned lock may be unlocked.
    pub unlock: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub calls: Vec<CallSpec>,
    /// How many connections there may be: the first, and those that replaced it.
    pub conns: u8,
    /// How many tries an abort makes before it gives up.
    pub abort_tries: u8,
    /// Whether an abort try that reached the store may still time out (its answer lost).
    pub abort_answers_lost: bool,
    /// Whether a rival client (value `w`) may take the key once, and release it.
    pub rival: bool,
    /// Whether time passes (ticks): keys expire, leases lapse.
    pub time: bool,
    pub rules: Rules,
}

fn call(exp: u8, retries: u8, refreshes: u8, unlock: bool) -> CallSpec {
    CallSpec {
        exp,
        retries,
        refreshes,
        unlock,
    }
}

fn base(rules: Rules) -> Config {
    Config {
        calls: vec![call(2, 0, 0, true); 2],
        conns: 1,
        abort_tries: 2,
        abort_answers_lost: false,
        rival: true,
        time: false,
        rules,
    }
}

/// Explore `cfg` exhaustively and require every invariant to hold.
fn holds(name: &str, cfg: Config) {
    let started = std::time::Instant::now();
    let swaps = cfg.conns > 1;
    let checker = Leasehold { cfg }.checker().threads(2).spawn_bfs().join();
    eprintln!(
        "{name}: {} unique states ({} generated), depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    for property in INVARIANTS {
        if let Some(path) = checker.discovery(property) {
            panic!("{name}: {property} fails:\n{}", trace(path));
        }
    }
    if swaps {
        checker.assert_any_discovery(REACHED);
    }
}

/// Explore `cfg` until `property` fails, and require that it does; the shortest
/// counterexample is printed.
fn breaks(name: &str, cfg: Config, property: &'static str) {
    let started = std::time::Instant::now();
    let checker = Leasehold { cfg }
        .checker()
        .threads(2)
        .finish_when(HasDiscoveries::AnyOf([property].into()))
        .spawn_bfs()
        .join();
    let path = checker.discovery(property).unwrap_or_else(|| {
        panic!(
            "{name}: expected a counterexample to {property} ({} states explored)",
            checker.unique_state_count()
        )
    });
    eprintln!(
        "{name}: {property} fails after {} unique states, {:.1?}:\n{}",
        checker.unique_state_count(),
        started.elapsed(),
        trace(path)
    );
}

fn trace(path: Path<State, Action>) -> String {
    let mut out = String::new();
    for (state, action) in path.into_vec() {
        match action {
            Some(action) => out.push_str(&format!("  {action:?}\n")),
            None => out.push_str(&format!("  => {state:?}\n")),
        }
    }
    out
}

/// Knobs: CALLS, EXP0, EXP1, RETRIES0, RETRIES1, REFRESHES0, REFRESHES1, UNLOCK, CONNS,
/// TRIES, LOST (abort answers lost), RIVAL, TIME, FIX=1 (V2_FIXED); X<RULE>=1 turns one
/// rule off: XREFUSE, XCREATED, XHOLDING, XEXPECT, XORDER, XMARKS, XENDFIRST, XRELEASED.
#[test]
#[ignore = "exploration by hand"]
fn explore() {
    let v = |k: &str, d: u8| {
        std::env::var(k)
            .ok()
            .and_then(|x| x.parse().ok())
            .unwrap_or(d)
    };
    let mut rules = if v("FIX", 0) == 1 {
        Rules::V2_FIXED
    } else {
        Rules::V2
    };
    let off = |flag: &mut bool, knob: &str| *flag &= v(knob, 0) != 1;
    off(&mut rules.refuse_aborted, "XREFUSE");
    off(&mut rules.undo_only_what_it_created, "XCREATED");
    off(&mut rules.refuse_only_when_holding, "XHOLDING");
    off(&mut rules.expect_caps, "XEXPECT");
    off(&mut rules.order_confirm, "XORDER");
    off(&mut rules.release_marks, "XMARKS");
    off(&mut rules.unlock_ends_lease_first, "XENDFIRST");
    off(&mut rules.abort_marks_released, "XRELEASED");
    let unlock = v("UNLOCK", 1) == 1;
    let calls = (0..v("CALLS", 2))
        .map(|i| {
            let k = |name: &str, d| v(&format!("{name}{}", i.min(1)), d);
            call(k("EXP", 2), k("RETRIES", 0), k("REFRESHES", 0), unlock)
        })
        .collect();
    let cfg = Config {
        calls,
        conns: v("CONNS", 2),
        abort_tries: v("TRIES", 2),
        abort_answers_lost: v("LOST", 1) == 1,
        rival: v("RIVAL", 1) == 1,
        time: v("TIME", 0) == 1,
        rules,
    };
    let started = std::time::Instant::now();
    let checker = Leasehold { cfg }.checker().threads(2).spawn_bfs().join();
    eprintln!(
        "{} unique states, depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    for property in INVARIANTS {
        if let Some(path) = checker.discovery(property) {
            eprintln!("{property} fails:\n{}", trace(path));
        }
    }
}
