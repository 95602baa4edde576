//! The model's state: the store, the connections, the client (leases, release mark,
//! detached aborts) and its `lock` calls, with the transitions each side makes.

use crate::{Config, Rules};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Val {
    /// The client's value.
    V,
    /// The rival's.
    W,
}

/// The lock key K: its value and the ticks left before it expires.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Key {
    pub val: Val,
    pub left: u8,
}

/// What created the key's current (or last) incarnation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Creator {
    Attempt(u8),
    Rival,
}

/// The store's state for one key: fixed-size, whatever happens (no set, no map).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Store {
    pub key: Option<Key>,
    /// The state S: the token of the key's current or last incarnation (0: none yet) and
    /// the attempt that created it. It outlives the key.
    pub token: u8,
    pub creator: Option<Creator>,
    /// The client's record of aborted attempts: the highest attempt number aborted (0:
    /// none; attempts are numbered from 1).
    pub aborted: u8,
}

// State per key is O(1): three scalars and the key.
const _: () = assert!(std::mem::size_of::<Store>() <= 8);

/// A command on a connection, on its way to the store.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Msg {
    Acquire {
        call: u8,
        attempt: u8,
        exp: u8,
    },
    Abort {
        task: u8,
        try_no: u8,
        attempts: u16,
        undo: bool,
    },
    Release {
        call: u8,
    },
    Refresh {
        call: u8,
        exp: u8,
    },
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AcqReply {
    Acquired(u8),
    Held,
    Refused,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Phase {
    /// Not started (it may never start).
    Idle,
    /// Acquire attempt `attempt` in flight: `left` is what is left of `sent +
    /// expiration`; `reply` once the store processed it.
    Acquiring {
        attempt: u8,
        left: u8,
        reply: Option<AcqReply>,
    },
    /// The pause before a retry.
    Sleeping,
    /// Returned a lock: a handle on lease `lease`.
    Holding {
        lease: u8,
    },
    /// A refresh, write number `order`, in flight.
    Refreshing {
        lease: u8,
        order: u8,
        left: u8,
        reply: Option<bool>,
    },
    Unlocking {
        lease: u8,
        reply: Option<bool>,
    },
    /// Returned an error, was cancelled, or unlocked.
    Done,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Call {
    pub phase: Phase,
    /// `Attempts`: the last attempt without an answer and the earlier ones (bits).
    pub last: Option<u8>,
    pub earlier: u16,
    /// Refusals in a row (tried again at once up to `REFUSED_RETRIES`).
    pub refused: u8,
    pub retries: u8,
    pub refreshes: u8,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum TaskPhase {
    /// About to send a try (the first, or after a failed one).
    Ready,
    /// Try `try_no` sent; `reply` (whether it deleted the key) once the store ran it.
    Sending {
        try_no: u8,
        reply: Option<bool>,
    },
    Done,
}

/// A detached abort (`Attempts::drop`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Task {
    /// The call that dropped its attempts, and whether it ended holding the key.
    pub call: u8,
    pub holds: bool,
    pub attempts: u16,
    pub undo: bool,
    pub phase: TaskPhase,
    pub tries: u8,
}

/// The shared lease of the key and value (`Lease`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Lease {
    pub token: u8,
    /// Ticks of validity left.
    pub left: u8,
    /// The number of the write whose confirmation set `left`.
    pub order: u8,
    pub lost: bool,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Rival {
    Ready,
    Holding,
    Done,
}

/// What the checker watches for beyond the state itself (set by transitions).
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub struct Flags {
    /// An abort deleted an incarnation that was held before each of its attempts began.
    pub undid_earlier: bool,
    /// An abort deleted the lock of a call that ended holding it.
    pub undid_returned: bool,
    /// An attempt that arrived after an abort naming it landed created the key.
    pub late_create: bool,
    /// A new incarnation's token was not above every earlier one.
    pub token_fell: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct State {
    pub store: Store,
    /// Commands per connection, oldest first; the last connection is the current one.
    pub conns: Vec<Vec<Msg>>,
    pub calls: Vec<Call>,
    pub leases: Vec<Lease>,
    /// The lease in the client's table (alive while a handle refers to it).
    pub table: Option<u8>,
    /// The client's write counter: attempts, refreshes and releases, in send order.
    pub next: u8,
    /// `Leases::releasing`: the number of the last release of the pair sent.
    pub release_mark: u8,
    pub tasks: Vec<Task>,
    pub rival: Rival,
    /// Per write number: for an attempt, the token of the key's incarnation held by `v` when it was
    /// sent (`None`: not held by `v`).
    pub pre: Vec<Option<u8>>,
    /// Attempts named by an abort that reached the store.
    pub aborts_landed: u16,
    pub flags: Flags,
}

pub const REFUSED_RETRIES: u8 = 3;

pub fn bit(id: u8) -> u16 {
    1 << id
}

impl State {
    pub fn initial(cfg: &Config) -> State {
        State {
            store: Store {
                key: None,
                token: 0,
                creator: None,
                aborted: 0,
            },
            conns: vec![Vec::new()],
            calls: cfg
                .calls
                .iter()
                .map(|spec| Call {
                    phase: Phase::Idle,
                    last: None,
                    earlier: 0,
                    refused: 0,
                    retries: spec.retries,
                    refreshes: spec.refreshes,
                })
                .collect(),
            leases: Vec::new(),
            table: None,
            next: 1,
            release_mark: 0,
            tasks: Vec::new(),
            rival: if cfg.rival { Rival::Ready } else { Rival::Done },
            pre: vec![None],
            aborts_landed: 0,
            flags: Flags::default(),
        }
    }

    pub fn send(&mut self, msg: Msg) {
        let c = self.conns.len() - 1;
        self.conns[c].push(msg);
    }

    /// `Leases::next_write`.
    pub fn next_write(&mut self) -> u8 {
        let order = self.next;
        assert!(order < 16, "write numbers are bits of a u16");
        self.next += 1;
        self.pre.push(None);
        order
    }

    /// Whether some handle the user holds (or is unlocking) refers to lease `l`.
    pub fn alive(&self, l: u8) -> bool {
        self.calls.iter().any(|c| {
            matches!(c.phase, Phase::Holding { lease } | Phase::Refreshing { lease, .. }
                | Phase::Unlocking { lease, .. } if lease == l)
        })
    }

    /// `Table::find`.
    pub fn find(&self) -> Option<u8> {
        self.table.filter(|&l| self.alive(l))
    }

    /// Whether lease `l` believes itself valid.
    pub fn believed(&self, l: u8) -> bool {
        let lease = self.leases[usize::from(l)];
        !lease.lost && lease.left > 0
    }

    pub fn v_holds(&self) -> bool {
        self.store.key.is_some_and(|k| k.val == Val::V)
    }

    /// `Lease::expect`: a write arming the key for `until` ticks is about to be sent.
    pub fn expect(&mut self, l: u8, until: u8, rules: &Rules) {
        let lease = &mut self.leases[usize::from(l)];
        if rules.expect_caps && !lease.lost {
            lease.left = lease.left.min(until);
        }
    }

    /// `Lease::confirm`: `false` if the lease is lost.
    pub fn confirm(&mut self, l: u8, order: u8, until: u8, rules: &Rules) -> bool {
        let lease = &mut self.leases[usize::from(l)];
        if lease.lost {
            return false;
        }
        if order > lease.order || !rules.order_confirm {
            lease.order = order;
            lease.left = until;
        }
        true
    }

    /// `Leases::hold`.
    pub fn hold(&mut self, token: u8, until: u8, order: u8, rules: &Rules) -> u8 {
        if let Some(l) = self.find() {
            if self.leases[usize::from(l)].token == token && self.confirm(l, order, until, rules) {
                return l;
            }
            self.leases[usize::from(l)].lost = true; // superseded
        }
        self.leases.push(Lease {
            token,
            left: until,
            order,
            lost: false,
        });
        let l = (self.leases.len() - 1) as u8;
        self.table = Some(l);
        l
    }

    /// `Leases::released`: the store deleted the key on the client's behalf.
    pub fn released(&mut self) {
        if let Some(l) = self.find() {
            self.leases[usize::from(l)].lost = true;
        }
    }

    /// `Attempts::drop` when call `i` ends, holding the key or not.
    pub fn drop_attempts(&mut self, i: usize, holds: bool, rules: &Rules) {
        let call = &mut self.calls[i];
        let mut attempts = call.earlier;
        if let Some(a) = call.last.take() {
            attempts |= bit(a);
        }
        call.earlier = 0;
        if attempts == 0 {
            return;
        }
        self.tasks.push(Task {
            call: i as u8,
            holds,
            attempts,
            undo: !holds || !rules.refuse_only_when_holding,
            phase: TaskPhase::Ready,
            tries: 0,
        });
    }

    /// A loop iteration failed: pause and try again, or return the error.
    pub fn fail(&mut self, i: usize, rules: &Rules) {
        let call = &mut self.calls[i];
        if call.retries > 0 {
            call.retries -= 1;
            call.phase = Phase::Sleeping;
        } else {
            call.phase = Phase::Done;
            self.drop_attempts(i, false, rules);
        }
    }

    /// One acquire attempt of call `i` (`Leases::acquire` up to the send).
    pub fn send_attempt(&mut self, i: usize, cfg: &Config) {
        let exp = cfg.calls[i].exp;
        let attempt = self.next_write();
        let call = &mut self.calls[i];
        if let Some(earlier) = call.last.replace(attempt) {
            call.earlier |= bit(earlier);
        }
        call.phase = Phase::Acquiring {
            attempt,
            left: exp,
            reply: None,
        };
        if let Some(l) = self.find() {
            self.expect(l, exp, &cfg.rules);
        }
        self.pre[usize::from(attempt)] = self.v_holds().then_some(self.store.token);
        self.send(Msg::Acquire {
            call: i as u8,
            attempt,
            exp,
        });
    }

    /// A new incarnation of the key is created with the next token.
    fn create(&mut self, val: Val, left: u8, creator: Creator) -> u8 {
        let token = self.store.token + 1;
        if token <= self.store.token {
            self.flags.token_fell = true;
        }
        self.store.token = token;
        self.store.creator = Some(creator);
        self.store.key = Some(Key { val, left });
        token
    }

    pub fn rival_lock(&mut self) {
        self.create(Val::W, 2, Creator::Rival);
        self.rival = Rival::Holding;
    }

    /// The store runs the oldest command on connection `c`.
    pub fn deliver(&mut self, c: usize, rules: &Rules) {
        let msg = self.conns[c].remove(0);
        match msg {
            Msg::Acquire { call, attempt, exp } => {
                let reply = if rules.refuse_aborted && self.store.aborted >= attempt {
                    AcqReply::Refused
                } else {
                    match &mut self.store.key {
                        Some(key) if key.val == Val::V => {
                            key.left = exp;
                            AcqReply::Acquired(self.store.token)
                        }
                        Some(_) => AcqReply::Held,
                        None => {
                            if self.aborts_landed & bit(attempt) != 0 {
                                self.flags.late_create = true;
                            }
                            AcqReply::Acquired(self.create(Val::V, exp, Creator::Attempt(attempt)))
                        }
                    }
                };
                if let Phase::Acquiring {
                    attempt: a,
                    reply: r,
                    ..
                } = &mut self.calls[usize::from(call)].phase
                    && *a == attempt
                {
                    *r = Some(reply);
                }
            }
            Msg::Abort {
                task,
                try_no,
                attempts,
                undo,
            } => {
                let highest = (15 - attempts.leading_zeros()) as u8;
                self.store.aborted = self.store.aborted.max(highest);
                self.aborts_landed |= attempts;
                let created = matches!(self.store.creator,
                    Some(Creator::Attempt(a)) if attempts & bit(a) != 0);
                let deleted =
                    undo && self.v_holds() && (created || !rules.undo_only_what_it_created);
                if deleted {
                    self.store.key = None;
                    let token = self.store.token;
                    let earlier = (0..16u8)
                        .filter(|&a| attempts & bit(a) != 0)
                        .all(|a| self.pre[usize::from(a)] == Some(token));
                    self.flags.undid_earlier |= earlier;
                    self.flags.undid_returned |= self.tasks[usize::from(task)].holds;
                }
                if let TaskPhase::Sending { try_no: t, reply } =
                    &mut self.tasks[usize::from(task)].phase
                    && *t == try_no
                {
                    *reply = Some(deleted);
                }
            }
            Msg::Release { call } => {
                let held = self.v_holds();
                if held {
                    self.store.key = None;
                }
                if let Phase::Unlocking { reply, .. } = &mut self.calls[usize::from(call)].phase {
                    *reply = Some(held);
                }
            }
            Msg::Refresh { call, exp } => {
                let held = self.v_holds();
                if let Some(key) = &mut self.store.key
                    && held
                {
                    key.left = exp;
                }
                if let Phase::Refreshing { reply, .. } = &mut self.calls[usize::from(call)].phase {
                    *reply = Some(held);
                }
            }
        }
    }

    /// One tick: keys expire, leases lapse. `false` if nothing changed.
    pub fn tick(&mut self) -> bool {
        let mut changed = false;
        let mut dec = |x: &mut u8| {
            if *x > 0 {
                *x -= 1;
                changed = true;
            }
        };
        if let Some(key) = &mut self.store.key {
            dec(&mut key.left);
            if key.left == 0 {
                self.store.key = None;
            }
        }
        for lease in &mut self.leases {
            dec(&mut lease.left);
        }
        for call in &mut self.calls {
            match &mut call.phase {
                Phase::Acquiring { left, .. } | Phase::Refreshing { left, .. } => dec(left),
                _ => {}
            }
        }
        changed
    }

    /// Every call ended (or never started, or holds its lock), every command was
    /// processed and every answer taken, every abort done.
    pub fn quiescent(&self) -> bool {
        self.calls
            .iter()
            .all(|c| matches!(c.phase, Phase::Idle | Phase::Holding { .. } | Phase::Done))
            && self.conns.iter().all(Vec::is_empty)
            && self.tasks.iter().all(|t| t.phase == TaskPhase::Done)
    }

    /// An abort that deleted the key is on its way back: the client learns the loss
    /// when it takes the answer (`Leases::released`).
    pub fn loss_in_transit(&self) -> bool {
        self.tasks.iter().any(|t| {
            matches!(
                t.phase,
                TaskPhase::Sending {
                    reply: Some(true),
                    ..
                }
            )
        })
    }
}
