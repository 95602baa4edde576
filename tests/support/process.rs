//! Child processes that die with the test binary.
//!
//! Every server the harness starts goes through [`spawn`]. Clean-up comes in
//! three layers:
//!
//! 1. **Drop.** Each harness SIGKILLs and reaps its children and removes its
//!    temp directory when it is dropped (bounded: a child that will not die
//!    is left behind rather than hanging the test).
//! 2. **Parent-death signal (Linux).** Between fork and exec the child runs
//!    `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so the kernel kills it as soon as
//!    its parent goes, however the test binary ends: normal exit, a panic
//!    with `panic = "abort"`, or a SIGKILL from a timeout. The kernel sends
//!    that signal when the *thread* that forked the child exits, not the
//!    process, and libtest runs every test on a thread of its own: forking
//!    from the test's thread would kill a shared instance as soon as the test
//!    that happened to start it finished. So every child is forked by one
//!    spawner thread that lives as long as the process. A child whose parent
//!    died before the `prctl` took effect exits before `exec`.
//! 3. **`atexit`.** Statics are never dropped ([`super::RedisCluster::shared`]),
//!    so their temp directories would stay behind. [`at_exit`] registers
//!    clean-ups that a libc `atexit` handler runs when the binary exits
//!    normally, which libtest does whether tests passed or failed.
//!
//! No `libc` crate: the three C functions used (`prctl`, `kill`, `atexit`)
//! are declared here; std links the C library anyway.

use std::ffi::c_int;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use super::lock;

/// Bound on how long Drop / stop wait for a killed child to be reaped.
pub const REAP_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(unix)]
mod sys {
    use std::ffi::c_int;

    pub const SIGKILL: c_int = 9;
    pub const SIGTERM: c_int = 15;
    #[cfg(target_os = "linux")]
    pub const PR_SET_PDEATHSIG: c_int = 1;

    unsafe extern "C" {
        #[cfg(target_os = "linux")]
        pub fn prctl(option: c_int, ...) -> c_int;
        pub fn kill(pid: c_int, sig: c_int) -> c_int;
        pub fn atexit(cb: extern "C" fn()) -> c_int;
    }
}

/// The binary to run: `$env_var` if set, else `default` (looked up on `PATH`).
pub fn binary(env_var: &str, default: &str) -> String {
    std::env::var(env_var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Panic message for a binary that cannot be spawned.
pub fn missing_binary(bin: &str, env_var: &str, package: &str, err: &io::Error) -> String {
    format!(
        "cannot spawn `{bin}` ({err}); install it with `apt-get install -y {package}` \
         or point {env_var} at the binary"
    )
}

// ---------------------------------------------------------------------------
// spawn
// ---------------------------------------------------------------------------

type Job = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that the child dies with this process (see the module
/// docs). On Linux the fork happens on the long-lived spawner thread.
pub fn spawn(mut cmd: Command) -> io::Result<Child> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes two
        // async-signal-safe system calls; it does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                if sys::prctl(sys::PR_SET_PDEATHSIG, sys::SIGKILL as std::ffi::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if std::os::unix::process::parent_id() != parent {
                    return Err(io::Error::from_raw_os_error(3)); // ESRCH
                }
                Ok(())
            });
        }
        static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
        let tx = SPAWNER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("support-spawner".into())
                .spawn(move || {
                    // Runs until the process exits: the static sender is never dropped.
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .expect("spawning the support-spawner thread");
            tx
        });
        let (reply_tx, reply_rx) = mpsc::channel();
        tx.send((cmd, reply_tx))
            .map_err(|_| io::Error::other("support-spawner thread is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| io::Error::other("support-spawner thread is gone"))?
    }
    #[cfg(not(target_os = "linux"))]
    {
        cmd.spawn()
    }
}

/// SIGKILL + bounded reap (a child that refuses to die is left behind rather
/// than hanging the test).
pub fn kill_and_reap(mut child: Child) {
    let _ = child.kill();
    let _ = reap(&mut child, REAP_TIMEOUT);
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub fn reap(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Sends `SIGTERM`, waits up to `timeout` for a clean exit, then SIGKILLs.
pub fn terminate_and_reap(mut child: Child, timeout: Duration) {
    #[cfg(unix)]
    {
        if let Ok(pid) = c_int::try_from(child.id()) {
            // SAFETY: plain syscall on a pid we own and have not reaped yet.
            unsafe { sys::kill(pid, sys::SIGTERM) };
            if reap(&mut child, timeout).is_some() {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = timeout;
    kill_and_reap(child);
}

/// Sends `SIGSTOP` (`stop = true`) or `SIGCONT` to `child`: a frozen process
/// keeps its sockets open but answers nothing, like a host that hangs.
#[cfg(unix)]
pub fn freeze(child: &Child, stop: bool) {
    // SIGSTOP / SIGCONT are 19 / 18 on Linux, 17 / 19 on the BSDs and macOS.
    #[cfg(target_os = "linux")]
    let (sigstop, sigcont) = (19, 18);
    #[cfg(not(target_os = "linux"))]
    let (sigstop, sigcont) = (17, 19);
    let pid = c_int::try_from(child.id()).expect("pid fits in c_int");
    // SAFETY: plain syscall on a pid we own and have not reaped yet.
    unsafe { sys::kill(pid, if stop { sigstop } else { sigcont }) };
}

// ---------------------------------------------------------------------------
// at_exit
// ---------------------------------------------------------------------------

type ExitJob = Box<dyn FnOnce() + Send>;

static AT_EXIT: Mutex<Vec<ExitJob>> = Mutex::new(Vec::new());

/// Runs `f` when the process exits normally (libc `atexit`), for clean-up of
/// statics that are never dropped. Jobs run in reverse order of
/// registration; a panicking job is contained.
pub fn at_exit(f: impl FnOnce() + Send + 'static) {
    static REGISTER: OnceLock<()> = OnceLock::new();
    REGISTER.get_or_init(|| {
        #[cfg(unix)]
        // SAFETY: registers a plain `extern "C" fn` that never unwinds.
        unsafe {
            sys::atexit(run_at_exit);
        }
    });
    lock(&AT_EXIT).push(Box::new(f));
}

#[cfg(unix)]
extern "C" fn run_at_exit() {
    // try_lock: another thread may still be running (and hold the lock) when
    // the main thread exits; better to skip the clean-up than to hang.
    let jobs = match AT_EXIT.try_lock() {
        Ok(mut jobs) => std::mem::take(&mut *jobs),
        Err(std::sync::TryLockError::Poisoned(p)) => std::mem::take(&mut *p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for job in jobs.into_iter().rev() {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

// ---------------------------------------------------------------------------
// Service: one restartable server process
// ---------------------------------------------------------------------------

/// One server process with a fixed command line and a log file, restartable
/// (same arguments, same ports, same directory). Killed on Drop. `&self`
/// everywhere so that harnesses can hand out shared references.
pub struct Service {
    /// For messages, e.g. "redis cluster node 127.0.0.1:7000".
    pub name: String,
    program: String,
    env_var: &'static str,
    package: &'static str,
    args: Vec<String>,
    log: PathBuf,
    /// The child writes its log to stdout/stderr (etcd) instead of a file of its own.
    capture_output: bool,
    child: Mutex<Option<Child>>,
    /// How the last child ended, once reaped by a status check.
    last_exit: Mutex<Option<ExitStatus>>,
}

impl Service {
    /// A service that is not running yet. `program` comes from
    /// [`binary`]`(env_var, …)`; `package` is named in the panic message when
    /// it is missing.
    pub fn new(
        name: impl Into<String>,
        (program, env_var, package): (String, &'static str, &'static str),
        args: Vec<String>,
        log: PathBuf,
        capture_output: bool,
    ) -> Service {
        Service {
            name: name.into(),
            program,
            env_var,
            package,
            args,
            log,
            capture_output,
            child: Mutex::new(None),
            last_exit: Mutex::new(None),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Spawns the process (panics if the binary is missing). Does not wait
    /// for readiness: see [`wait_ready`](Self::wait_ready).
    pub fn spawn(&self) {
        let mut guard = lock(&self.child);
        assert!(guard.is_none(), "{}: already running", self.name);
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(Stdio::null());
        if self.capture_output {
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap_or_else(|e| {
                        panic!("{}: opening {}: {e}", self.name, self.log.display())
                    })
            };
            cmd.stdout(open()).stderr(open());
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = spawn(cmd).unwrap_or_else(|e| {
            panic!(
                "{}: {}",
                self.name,
                missing_binary(&self.program, self.env_var, self.package, &e)
            )
        });
        *guard = Some(child);
        *lock(&self.last_exit) = None;
    }

    /// Polls `ready` until it holds (-> `Ok`), the process is gone (-> `Err`
    /// with the log tail; also when it had exited before the call) or
    /// `deadline` passes (the process is killed, `Err`).
    pub fn wait_ready(
        &self,
        deadline: Instant,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        loop {
            if !self.is_running() {
                let status = match *lock(&self.last_exit) {
                    Some(status) => status.to_string(),
                    None => "killed".to_string(),
                };
                return Err(format!(
                    "{} exited early ({status}); log tail:\n{}",
                    self.name,
                    self.log_tail(20)
                ));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "{} did not become ready in time; log tail:\n{}",
                    self.name,
                    self.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the child process is alive (a frozen one counts as alive).
    /// A child found dead is reaped; its status is kept for `wait_ready`.
    pub fn is_running(&self) -> bool {
        let mut guard = lock(&self.child);
        match guard.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(result) => {
                *lock(&self.last_exit) = result.ok().flatten();
                *guard = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL and reap. Idempotent.
    pub fn kill(&self) {
        if let Some(child) = lock(&self.child).take() {
            kill_and_reap(child);
        }
    }

    /// SIGTERM, up to `timeout` for a clean exit, then SIGKILL. Idempotent.
    pub fn terminate(&self, timeout: Duration) {
        if let Some(child) = lock(&self.child).take() {
            terminate_and_reap(child, timeout);
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`). Panics when not running.
    #[cfg(unix)]
    pub fn freeze(&self, stop: bool) {
        let guard = lock(&self.child);
        let child = guard
            .as_ref()
            .unwrap_or_else(|| panic!("{}: not running", self.name));
        freeze(child, stop);
    }

    /// True if the log contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains(needle))
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of the file at `path` (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
