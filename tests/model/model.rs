//! The transitions: what each actor may do next, and what it changes.

use stateright::{Model, Property};

use crate::Config;
use crate::properties;
use crate::state::{AcqReply, Msg, Phase, REFUSED_RETRIES, Rival, State, TaskPhase};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Action {
    /// A call sends an attempt (its first, or after its pause).
    Begin(u8),
    /// A call takes the answer to its acquire, refresh or release.
    Answer(u8),
    /// A call's round trip times out.
    Timeout(u8),
    /// A call's future is dropped at its await point.
    Cancel(u8),
    Unlock(u8),
    Refresh(u8),
    AbortTry(u8),
    AbortAnswer(u8),
    AbortTimeout(u8),
    /// The store runs the oldest command on a connection.
    Deliver(u8),
    /// The current connection is replaced (new commands go to a fresh one).
    Replace,
    RivalLock,
    RivalUnlock,
    Tick,
}

pub struct Leasehold {
    pub cfg: Config,
}

impl Model for Leasehold {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State::initial(&self.cfg)]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for (i, call) in s.calls.iter().enumerate() {
            let i = i as u8;
            let spec = self.cfg.calls[usize::from(i)];
            match &call.phase {
                Phase::Idle => actions.push(Action::Begin(i)),
                Phase::Sleeping => {
                    actions.push(Action::Begin(i));
                    actions.push(Action::Cancel(i));
                }
                Phase::Acquiring { reply, .. } => {
                    if reply.is_some() {
                        actions.push(Action::Answer(i));
                    }
                    actions.push(Action::Timeout(i));
                    actions.push(Action::Cancel(i));
                }
                Phase::Refreshing { reply, .. } | Phase::Unlocking { reply, .. } => {
                    if reply.is_some() {
                        actions.push(Action::Answer(i));
                    }
                    actions.push(Action::Timeout(i));
                    actions.push(Action::Cancel(i));
                }
                Phase::Holding { .. } => {
                    if spec.unlock {
                        actions.push(Action::Unlock(i));
                    }
                    if call.refreshes > 0 {
                        actions.push(Action::Refresh(i));
                    }
                }
                Phase::Done => {}
            }
        }
        for (t, task) in s.tasks.iter().enumerate() {
            let t = t as u8;
            match task.phase {
                TaskPhase::Ready => actions.push(Action::AbortTry(t)),
                TaskPhase::Sending { reply, .. } => {
                    if reply.is_some() {
                        actions.push(Action::AbortAnswer(t));
                    }
                    if self.cfg.abort_timeouts {
                        actions.push(Action::AbortTimeout(t));
                    }
                }
                TaskPhase::Done => {}
            }
        }
        for (c, conn) in s.conns.iter().enumerate() {
            if !conn.is_empty() {
                actions.push(Action::Deliver(c as u8));
            }
        }
        if s.conns.len() < usize::from(self.cfg.conns) {
            actions.push(Action::Replace);
        }
        match s.rival {
            Rival::Ready if s.store.key.is_none() => actions.push(Action::RivalLock),
            Rival::Holding => actions.push(Action::RivalUnlock),
            _ => {}
        }
        if self.cfg.time {
            actions.push(Action::Tick);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let cfg = &self.cfg;
        let rules = &cfg.rules;
        let mut s = last.clone();
        match action {
            Action::Begin(i) => s.send_attempt(usize::from(i), cfg),
            Action::Answer(i) => {
                let i = usize::from(i);
                match s.calls[i].phase.clone() {
                    Phase::Acquiring {
                        attempt,
                        left,
                        reply: Some(reply),
                    } => {
                        // Granted before a release of the pair was sent: the release may
                        // have deleted it; not believed.
                        let unbelieved = matches!(reply, AcqReply::Acquired(_))
                            && rules.release_marks
                            && s.release_mark > attempt;
                        let reply = if unbelieved { AcqReply::Refused } else { reply };
                        if !(unbelieved && rules.unbelieved_grant_stays_unanswered) {
                            s.calls[i].last = None; // answered
                        }
                        match reply {
                            AcqReply::Acquired(token) => {
                                let lease = s.hold(token, left, attempt, rules);
                                s.calls[i].phase = Phase::Holding { lease };
                                s.drop_attempts(i, true, rules);
                            }
                            AcqReply::Refused if s.calls[i].refused < REFUSED_RETRIES => {
                                s.calls[i].refused += 1;
                                s.send_attempt(i, cfg);
                            }
                            AcqReply::Refused | AcqReply::Held => s.fail(i, rules),
                        }
                    }
                    Phase::Refreshing {
                        lease,
                        order,
                        left,
                        reply: Some(held),
                    } => {
                        if held {
                            s.confirm(lease, order, left, rules);
                        } else {
                            s.leases[usize::from(lease)].lost = true;
                        }
                        s.calls[i].phase = Phase::Holding { lease };
                    }
                    Phase::Unlocking {
                        lease,
                        reply: Some(_),
                    } => {
                        s.leases[usize::from(lease)].lost = true;
                        s.calls[i].phase = Phase::Done;
                    }
                    _ => unreachable!(),
                }
            }
            Action::Timeout(i) => {
                let i = usize::from(i);
                match s.calls[i].phase.clone() {
                    Phase::Acquiring { .. } => s.fail(i, rules),
                    Phase::Refreshing { lease, .. } => s.calls[i].phase = Phase::Holding { lease },
                    Phase::Unlocking { lease, .. } => {
                        s.leases[usize::from(lease)].lost = true;
                        s.calls[i].phase = Phase::Done;
                    }
                    _ => unreachable!(),
                }
            }
            Action::Cancel(i) => {
                let i = usize::from(i);
                match s.calls[i].phase.clone() {
                    Phase::Sleeping | Phase::Acquiring { .. } => {
                        s.calls[i].phase = Phase::Done;
                        s.drop_attempts(i, false, rules);
                    }
                    Phase::Refreshing { lease, .. } => s.calls[i].phase = Phase::Holding { lease },
                    Phase::Unlocking { .. } => s.calls[i].phase = Phase::Done,
                    _ => unreachable!(),
                }
            }
            Action::Unlock(i) => {
                let Phase::Holding { lease } = s.calls[usize::from(i)].phase else {
                    unreachable!()
                };
                s.calls[usize::from(i)].phase = Phase::Unlocking { lease, reply: None };
                if rules.unlock_ends_lease_first {
                    s.leases[usize::from(lease)].lost = true;
                }
                let order = s.next_write();
                s.release_mark = s.release_mark.max(order);
                s.send(Msg::Release { call: i });
            }
            Action::Refresh(i) => {
                let exp = cfg.calls[usize::from(i)].exp;
                let Phase::Holding { lease } = s.calls[usize::from(i)].phase else {
                    unreachable!()
                };
                let order = s.next_write();
                let call = &mut s.calls[usize::from(i)];
                call.refreshes -= 1;
                call.phase = Phase::Refreshing {
                    lease,
                    order,
                    left: exp,
                    reply: None,
                };
                s.expect(lease, exp, rules);
                s.send(Msg::Refresh { call: i, exp });
            }
            Action::AbortTry(t) => {
                let task = &mut s.tasks[usize::from(t)];
                let try_no = task.tries;
                task.tries += 1;
                task.phase = TaskPhase::Sending {
                    try_no,
                    reply: None,
                };
                let (attempts, undo) = (task.attempts, task.undo);
                if undo && rules.undoing_abort_marks_release {
                    let order = s.next_write();
                    s.release_mark = s.release_mark.max(order);
                }
                s.send(Msg::Abort {
                    task: t,
                    try_no,
                    attempts,
                    undo,
                });
            }
            Action::AbortAnswer(t) => {
                let task = &mut s.tasks[usize::from(t)];
                let deleted = task.phase
                    == TaskPhase::Sending {
                        try_no: task.tries - 1,
                        reply: Some(true),
                    };
                task.phase = TaskPhase::Done;
                if deleted && rules.abort_marks_released {
                    s.released();
                }
            }
            Action::AbortTimeout(t) => {
                let task = &mut s.tasks[usize::from(t)];
                let undo = task.undo;
                if task.tries < cfg.abort_tries {
                    task.phase = TaskPhase::Ready;
                } else {
                    task.phase = TaskPhase::Done; // given up
                }
                if undo && rules.failed_abort_marks_lost {
                    s.released();
                }
            }
            Action::Deliver(c) => s.deliver(usize::from(c), rules),
            Action::Replace => s.conns.push(Vec::new()),
            Action::RivalLock => s.rival_lock(),
            Action::RivalUnlock => {
                if s.store.key.is_some_and(|k| k.val == crate::state::Val::W) {
                    s.store.key = None;
                }
                s.rival = Rival::Done;
            }
            Action::Tick => {
                if !s.tick() {
                    return None;
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}
