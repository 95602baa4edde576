//! The Lua scripts (kept as files next to this one) and the commands that call them.
//!
//! Calls go out as `EVALSHA`; a server that does not know the script (after a restart
//! or `SCRIPT FLUSH`) gets the same call as `EVAL`, which runs and caches it in one
//! round trip.

use std::io::Write;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{Arg, Cmd, RedisWrite, Script};

use super::keys::{ABORTED, FENCE, Publish, RELEASED, SIDECAR_EXTRA, STATE, Sidecar, TOKEN};
use crate::store::{AttemptId, Fence};

/// Whether a call may go out again once it may have reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// A read, or a write whose second run changes nothing the first did not (an acquire
    /// names its attempt, a refresh re-arms the same value, an abort refuses what it
    /// already refused, a fenced write sets the same value under the same token): tried
    /// again after any failure another try could fix, a connection lost after the call
    /// went out included.
    Safe,
    /// A write whose second run would not be the first one's (a release would report
    /// `NotHeld`, a forced release delete what was taken since): tried again only after a
    /// failure that says it did not run — a reply refusing it (a redirect, `TRYAGAIN`,
    /// `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, `READONLY`) or a connection that could not
    /// be made. A connection lost after it went out ends the call with
    /// [`Error::Indeterminate`](crate::Error::Indeterminate).
    Never,
}

pub(crate) static ACQUIRE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/acquire.lua"), Resend::Safe));
pub(crate) static REFRESH: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/refresh.lua"), Resend::Safe));
pub(crate) static RELEASE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/release.lua"), Resend::Never));
pub(crate) static ABORT: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/abort.lua"), Resend::Safe));
pub(crate) static FENCED: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/fenced.lua"), Resend::Safe));
pub(crate) static PTTL: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/pttl.lua"), Resend::Safe));
pub(crate) static INSPECT: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/inspect.lua"), Resend::Safe));
pub(crate) static OBSERVE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/observe.lua"), Resend::Safe));
pub(crate) static FORCE_RELEASE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("lua/force_release.lua"), Resend::Never));

use crate::store::ABORT_MEMORY;

/// How much longer than its lock a key's state (its last token) lives: the next
/// acquisition within that time takes the token after it; a later one takes the server's
/// clock in microseconds, which is above it unless the server's clock went back by more
/// than this.
pub(crate) const STATE_MEMORY: Duration = Duration::from_secs(60 * 60);

/// A script, its SHA1, and whether a call of it may be sent again once it may have
/// reached the server.
pub(crate) struct Lua {
    pub(crate) code: &'static str,
    sha: String,
    pub(crate) resend: Resend,
}

impl Lua {
    fn new(code: &'static str, resend: Resend) -> Self {
        let sha = Script::new(code).get_hash().to_owned();
        Lua { code, sha, resend }
    }

    /// `EVALSHA <sha> <numkeys>`, with room reserved for the rest: `payload` bytes of
    /// keys and values plus a few integers, so that building the command costs one
    /// allocation per buffer and never regrows them.
    fn evalsha(&self, numkeys: u8, payload: usize) -> Cmd {
        // EVALSHA, sha1, numkeys, up to 5 keys, values and ids, a few integers.
        let mut cmd = Cmd::with_capacity(12, "EVALSHA".len() + 40 + 1 + payload + 60);
        cmd.arg("EVALSHA").arg(&self.sha).arg(numkeys);
        cmd
    }

    /// The same call as `EVAL <code> …`.
    pub(crate) fn eval(&self, evalsha: &Cmd) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.code);
        for arg in evalsha.args_iter().skip(2) {
            if let Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }
}

/// Expirations travel as whole milliseconds (`PX`, `PEXPIRE`).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The longest attempt id: 16 hex digits, `:`, 20 digits.
const ATTEMPT_ID_LEN: usize = 37;

/// The sidecar suffix of a client's record of aborted attempts on a key.
fn write_aborted(sidecar: &Sidecar<'_>, client: u64, cmd: &mut Cmd) {
    let mut suffix = [0u8; ABORTED.len() + 16];
    suffix[..ABORTED.len()].copy_from_slice(ABORTED.as_bytes());
    write!(&mut suffix[ABORTED.len()..], "{client:016x}").expect("16 hex digits fit");
    let suffix = std::str::from_utf8(&suffix).expect("ASCII");
    sidecar.write(suffix, &mut cmd.writer_for_next_arg());
}

/// `EVALSHA <acquire> 4 <key> <state> <aborted> <earlier layout's fence counter> <val>
/// <ms> <attempt> <seq> <state memory> <label>`.
pub(crate) fn acquire(
    key: &str,
    val: &str,
    expiration: Duration,
    attempt: AttemptId,
    label: &str,
) -> Cmd {
    let payload =
        4 * key.len() + 3 * SIDECAR_EXTRA + 16 + val.len() + 2 * ATTEMPT_ID_LEN + label.len();
    let mut cmd = ACQUIRE.evalsha(4, payload);
    let sidecar = Sidecar::of(key);
    cmd.arg(key);
    sidecar.write(STATE, &mut cmd.writer_for_next_arg());
    write_aborted(&sidecar, attempt.client, &mut cmd);
    sidecar.write(FENCE, &mut cmd.writer_for_next_arg());
    cmd.arg(val).arg(millis(expiration));
    write_attempt(attempt, &mut cmd);
    cmd.arg(attempt.seq).arg(millis(STATE_MEMORY)).arg(label);
    cmd
}

fn write_attempt(attempt: AttemptId, cmd: &mut Cmd) {
    write!(cmd.writer_for_next_arg(), "{attempt}").expect("writing to memory");
}

/// `<key> <state>`, for the scripts that need the key's state.
fn key_and_state<'k>(lua: &Lua, key: &'k str, payload: usize) -> (Cmd, Sidecar<'k>) {
    let mut cmd = lua.evalsha(2, 2 * key.len() + SIDECAR_EXTRA + payload);
    let sidecar = Sidecar::of(key);
    cmd.arg(key);
    sidecar.write(STATE, &mut cmd.writer_for_next_arg());
    (cmd, sidecar)
}

pub(crate) fn refresh(key: &str, val: &str, expiration: Duration) -> Cmd {
    let (mut cmd, _) = key_and_state(&REFRESH, key, val.len());
    cmd.arg(val)
        .arg(millis(expiration))
        .arg(millis(STATE_MEMORY));
    cmd
}

/// Write how a release is announced, and on which channel (nothing without
/// notifications).
fn write_announcement(key: &str, sidecar: &Sidecar<'_>, publish: Option<Publish>, cmd: &mut Cmd) {
    match publish {
        Some(publish) => {
            cmd.arg(publish.arg());
            sidecar.write(RELEASED, &mut cmd.writer_for_next_arg());
        }
        None => {
            cmd.arg("").arg(key);
        }
    }
}

/// `EVALSHA <release> 1 <key> <val> <announce> <channel>`.
pub(crate) fn release(key: &str, val: &str, publish: Option<Publish>) -> Cmd {
    let mut cmd = RELEASE.evalsha(1, 2 * key.len() + SIDECAR_EXTRA + val.len());
    cmd.arg(key).arg(val);
    write_announcement(key, &Sidecar::of(key), publish, &mut cmd);
    cmd
}

/// `EVALSHA <abort> 3 <key> <state> <aborted> <val> <ms> <announce> <channel> <highest
/// seq> <attempts…>`; every attempt is of one client. Without `undo` no attempt is named:
/// they are refused, and nothing they created is deleted.
pub(crate) fn abort(
    key: &str,
    val: &str,
    attempts: &[AttemptId],
    undo: bool,
    answered: bool,
    publish: Option<Publish>,
) -> Cmd {
    let payload =
        4 * key.len() + 3 * SIDECAR_EXTRA + 16 + val.len() + (attempts.len() + 1) * ATTEMPT_ID_LEN;
    let mut cmd = ABORT.evalsha(3, payload);
    let sidecar = Sidecar::of(key);
    cmd.arg(key);
    sidecar.write(STATE, &mut cmd.writer_for_next_arg());
    write_aborted(&sidecar, attempts.first().map_or(0, |a| a.client), &mut cmd);
    cmd.arg(val).arg(millis(ABORT_MEMORY));
    write_announcement(key, &sidecar, publish, &mut cmd);
    // 0: every attempt was answered, so none can land later: no record is kept.
    cmd.arg(if answered {
        0
    } else {
        attempts.iter().map(|a| a.seq).max().unwrap_or(0)
    });
    if undo {
        for &attempt in attempts {
            write_attempt(attempt, &mut cmd);
        }
    }
    cmd
}

pub(crate) fn pttl(key: &str, val: &str) -> Cmd {
    let mut cmd = PTTL.evalsha(1, key.len() + val.len());
    cmd.arg(key).arg(val);
    cmd
}

pub(crate) fn inspect(key: &str) -> Cmd {
    key_and_state(&INSPECT, key, 0).0
}

/// `EVALSHA <observe> 2 <key> <state>`.
pub(crate) fn observe(key: &str) -> Cmd {
    key_and_state(&OBSERVE, key, 0).0
}

/// `EVALSHA <force_release> 2 <key> <state> <announce> <channel> <token> <holder>`: delete
/// the key only while its incarnation has fencing `token` (decimal text, `""`: any) and
/// `holder` holds it (as [`observe`] saw it, `""`: any).
pub(crate) fn force_release(key: &str, token: &str, holder: &str, publish: Option<Publish>) -> Cmd {
    // The announcement (a flag and the channel: key + sidecar), the token and the holder.
    let payload = key.len() + SIDECAR_EXTRA + token.len() + holder.len();
    let (mut cmd, sidecar) = key_and_state(&FORCE_RELEASE, key, payload);
    write_announcement(key, &sidecar, publish, &mut cmd);
    cmd.arg(token).arg(holder);
    cmd
}

pub(crate) fn fenced(access: &Fence<'_>) -> Cmd {
    let Fence {
        resource,
        token,
        holder,
        write,
    } = *access;
    let payload =
        2 * resource.len() + SIDECAR_EXTRA + holder.map_or(0, str::len) + write.map_or(0, str::len);
    let mut cmd = FENCED.evalsha(2, payload);
    cmd.arg(resource);
    Sidecar::of(resource).write(TOKEN, &mut cmd.writer_for_next_arg());
    cmd.arg(token).arg(holder.unwrap_or(""));
    match write {
        Some(value) => cmd.arg("set").arg(value),
        None => cmd.arg("get"),
    };
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTEMPT: AttemptId = AttemptId {
        client: 0xfeed,
        seq: 7,
    };

    fn aborted_record(key: &str) -> String {
        Sidecar::of(key).name("aborted000000000000feed")
    }

    #[test]
    fn commands_pack_to_the_plain_redis_rs_bytes() {
        for key in ["job", "app:job", "user:{42}:job", "a}b", "a{b", "ключ"] {
            let sidecar = Sidecar::of(key);
            let plain = redis::cmd("EVALSHA")
                .arg(&ACQUIRE.sha)
                .arg(4)
                .arg(key)
                .arg(sidecar.name(STATE))
                .arg(aborted_record(key))
                .arg(sidecar.name(FENCE))
                .arg("value")
                .arg(30_000u64)
                .arg("000000000000feed:7")
                .arg(7)
                .arg(3_600_000u64)
                .arg("")
                .get_packed_command();
            let cmd = acquire(key, "value", Duration::from_secs(30), ATTEMPT, "");
            assert_eq!(cmd.get_packed_command(), plain, "{key:?}");
        }
    }

    #[test]
    fn the_eval_fallback_carries_the_same_keys_and_arguments() {
        let cmd = acquire("job", "value", Duration::from_secs(30), ATTEMPT, "host");
        let eval = ACQUIRE.eval(&cmd);
        let sidecar = Sidecar::of("job");
        let plain = redis::cmd("EVAL")
            .arg(ACQUIRE.code)
            .arg(4)
            .arg("job")
            .arg(sidecar.name(STATE))
            .arg(aborted_record("job"))
            .arg(sidecar.name(FENCE))
            .arg("value")
            .arg(30_000u64)
            .arg("000000000000feed:7")
            .arg(7)
            .arg(3_600_000u64)
            .arg("host")
            .get_packed_command();
        assert_eq!(eval.get_packed_command(), plain);
    }

    #[test]
    fn only_the_writes_that_must_not_run_twice_are_never_sent_again() {
        for never in [&RELEASE, &FORCE_RELEASE] {
            assert_eq!(never.resend, Resend::Never, "{}", never.code);
        }
        for safe in [
            &ACQUIRE, &REFRESH, &ABORT, &FENCED, &PTTL, &INSPECT, &OBSERVE,
        ] {
            assert_eq!(safe.resend, Resend::Safe, "{}", safe.code);
        }
    }

    #[test]
    fn a_forced_release_names_the_token_and_the_holder_it_observed() {
        let cmd = force_release("job", "1796645970059664", "ab12", None);
        let plain = redis::cmd("EVALSHA")
            .arg(&FORCE_RELEASE.sha)
            .arg(2)
            .arg("job")
            .arg(Sidecar::of("job").name(STATE))
            .arg("")
            .arg("job")
            .arg("1796645970059664")
            .arg("ab12")
            .get_packed_command();
        assert_eq!(cmd.get_packed_command(), plain);
    }

    #[test]
    fn a_release_names_the_key_only() {
        let cmd = release("job", "value", None);
        let plain = redis::cmd("EVALSHA")
            .arg(&RELEASE.sha)
            .arg(1)
            .arg("job")
            .arg("value")
            .arg("")
            .arg("job")
            .get_packed_command();
        assert_eq!(cmd.get_packed_command(), plain);
    }

    #[test]
    fn an_abort_names_every_attempt_and_the_highest() {
        let second = AttemptId { seq: 8, ..ATTEMPT };
        let cmd = abort(
            "job",
            "value",
            &[second, ATTEMPT],
            true,
            false,
            Some(Publish::Sharded),
        );
        let plain = redis::cmd("EVALSHA")
            .arg(&ABORT.sha)
            .arg(3)
            .arg("job")
            .arg(Sidecar::of("job").name(STATE))
            .arg(aborted_record("job"))
            .arg("value")
            .arg(3_600_000u64)
            .arg("s")
            .arg(Sidecar::of("job").name(RELEASED))
            .arg(8)
            .arg("000000000000feed:8")
            .arg("000000000000feed:7")
            .get_packed_command();
        assert_eq!(cmd.get_packed_command(), plain);
    }
}
