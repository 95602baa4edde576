//! The invariants, checked in every reachable state, and one `sometimes` property
//! against a vacuous model.

use stateright::Property;

use crate::model::Leasehold;
use crate::state::{Phase, State};

pub const HELD: &str = "(1) a lock believed valid is held in the store for v";
pub const NO_GHOST: &str = "(2) no ghost lock once quiescent";
pub const NOT_EARLIER: &str = "(3) an abort never deletes a lock held before its attempts";
pub const NOT_RETURNED: &str = "(4) an abort never deletes the lock its call returned";
pub const NO_LATE_CREATE: &str = "(5) an attempt landing after its abort never creates a lock";
pub const TOKEN: &str = "(6) a lock believed valid names the key's current token";
pub const RISING: &str = "(7) tokens strictly rise";
pub const REACHED: &str = "a lock is held after a connection was replaced";

pub const INVARIANTS: [&str; 7] = [
    HELD,
    NO_GHOST,
    NOT_EARLIER,
    NOT_RETURNED,
    NO_LATE_CREATE,
    TOKEN,
    RISING,
];

pub fn all() -> Vec<Property<Leasehold>> {
    vec![
        Property::always(HELD, |_, s| held_lease_is_held(s)),
        Property::always(NO_GHOST, |_, s| no_ghost(s)),
        Property::always(NOT_EARLIER, |_, s: &State| !s.flags.undid_earlier),
        Property::always(NOT_RETURNED, |_, s: &State| !s.flags.undid_returned),
        Property::always(NO_LATE_CREATE, |_, s: &State| !s.flags.late_create),
        Property::always(TOKEN, |_, s| held_lease_names_the_token(s)),
        Property::always(RISING, |_, s: &State| !s.flags.token_fell),
        Property::sometimes(REACHED, |_, s: &State| {
            s.conns.len() > 1
                && s.calls
                    .iter()
                    .any(|c| matches!(c.phase, Phase::Holding { .. }))
        }),
    ]
}

/// Every lock a call holds and believes valid passes `check` with its lease's token —
/// unless an abort that deleted the key is on its way back (the client learns of that
/// loss when it takes the answer: `Leases::released`).
fn believed_locks(s: &State, check: impl Fn(u8) -> bool) -> bool {
    s.loss_in_transit()
        || s.calls.iter().all(|c| match c.phase {
            Phase::Holding { lease } | Phase::Refreshing { lease, .. } if s.believed(lease) => {
                check(s.leases[usize::from(lease)].token)
            }
            _ => true,
        })
}

fn held_lease_is_held(s: &State) -> bool {
    believed_locks(s, |_| s.v_holds())
}

fn held_lease_names_the_token(s: &State) -> bool {
    believed_locks(s, |token| !s.v_holds() || s.store.token == token)
}

fn no_ghost(s: &State) -> bool {
    !s.quiescent()
        || s.calls
            .iter()
            .any(|c| matches!(c.phase, Phase::Holding { .. }))
        || !s.v_holds()
}
