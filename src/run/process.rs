//! Child processes of the same binary (`gwbench backends`, `gwbench gateway`), so that CPU is
//! accounted per process: spawn with an optional CPU pin, wait for the `ready` lines (with a
//! timeout; the child's stderr in the error if it dies), read CPU time from `/proc/PID/stat`,
//! and stop by PID on drop, on error and when the parent dies (PR_SET_PDEATHSIG). No orphans.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sched::CpuSet;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use thiserror::Error;

/// CPUs a process is pinned to; None leaves it to the scheduler.
pub type Cpus = Option<Vec<usize>>;

/// How long a child may take to print its ready lines.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A child that did not start.
#[derive(Debug, Error)]
#[error("{what} did not start: {reason}")]
pub struct SpawnError {
    /// Which child.
    pub what: String,
    /// Why, with the child's stderr when it exited.
    pub reason: String,
}

/// A running child process of ours; killed (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    /// Name for messages ("backends", "gateway").
    pub what: String,
    child: Child,
    /// Listeners from its ready lines: (kind, address).
    pub ready: Vec<(String, SocketAddr)>,
    /// The CPUs it is pinned to, if any.
    pub pinned: Option<Vec<usize>>,
    /// The end of what it wrote to stderr.
    stderr: StderrTail,
}

fn cpuset(cpus: &[usize]) -> nix::Result<CpuSet> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c)?;
    }
    Ok(set)
}

/// Pins the calling process's current thread (and the threads it creates later) to `cpus`.
pub fn pin_self(cpus: &[usize]) -> Result<(), String> {
    let set = cpuset(cpus).map_err(|e| format!("CPU set {cpus:?}: {e}"))?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| format!("pinning to CPUs {cpus:?}: {e}"))
}

/// CPU seconds (user + system, all threads) a process has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some((utime + stime) / hz)
}

impl ChildProcess {
    /// Spawns `gwbench <args>` (this same binary), pinned to `pin` if given, and waits for
    /// `expect` ready lines.
    pub fn spawn(
        what: &str,
        args: &[String],
        expect: usize,
        pin: Option<Vec<usize>>,
    ) -> Result<ChildProcess, SpawnError> {
        let fail = |reason: String| SpawnError {
            what: what.to_string(),
            reason,
        };
        let exe =
            std::env::current_exe().map_err(|e| fail(format!("cannot find this binary: {e}")))?;
        Self::spawn_program(what, &exe, args, expect, pin)
    }

    /// Spawns another program (`haproxy`, `redis-server`) the same way: pinned, killed with
    /// us, stopped by PID when dropped; `expect` is 0 when it prints no ready line (the
    /// caller then waits for its port).
    pub fn spawn_program(
        what: &str,
        program: &std::path::Path,
        args: &[String],
        expect: usize,
        pin: Option<Vec<usize>>,
    ) -> Result<ChildProcess, SpawnError> {
        Self::spawn_with_env(what, program, args, &[], expect, pin)
    }

    /// As [`ChildProcess::spawn_program`], with `env` added to the child's environment.
    pub fn spawn_with_env(
        what: &str,
        program: &std::path::Path,
        args: &[String],
        env: &[(&str, String)],
        expect: usize,
        pin: Option<Vec<usize>>,
    ) -> Result<ChildProcess, SpawnError> {
        let fail = |reason: String| SpawnError {
            what: what.to_string(),
            reason,
        };
        let mut child = start(program, args, env, pin.as_deref()).map_err(fail)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(fail("its output is not piped".into()));
        };
        let lines = read_lines(stdout);
        let mut me = ChildProcess {
            what: what.to_string(),
            child,
            ready: Vec::new(),
            pinned: pin,
            stderr: read_stderr(stderr),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while me.ready.len() < expect {
            let wait = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(line) => me.ready.extend(ready_line(&line)),
                Err(_) => return Err(fail(me.why_not_ready())),
            }
        }
        Ok(me)
    }

    /// Why the child gave no (more) ready lines: it exited (with its last stderr line), or it
    /// took too long.
    fn why_not_ready(&mut self) -> String {
        std::thread::sleep(Duration::from_millis(50)); // let stderr arrive
        let last = self.last_stderr_line().unwrap_or_default();
        match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited ({status}): {last}"),
            _ => format!("no ready line within {}s", READY_TIMEOUT.as_secs()),
        }
    }

    /// The last non-empty line the child wrote to its stderr, if any.
    pub fn last_stderr_line(&self) -> Option<String> {
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let line = tail.lines().rev().find(|l| !l.trim().is_empty())?;
        Some(line.trim().to_string())
    }

    /// Whether it has exited already (e.g. a port it was told to bind was taken).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first listener of `kind` (e.g. "rest", "http").
    pub fn addr(&self, kind: &str) -> Option<SocketAddr> {
        self.ready.iter().find(|(k, _)| k == kind).map(|(_, a)| *a)
    }

    /// CPU seconds used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid())
    }

    /// Stops the child: SIGTERM, up to 3 s to exit, then SIGKILL.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `program` with `args`, output piped, the parent-death signal set and pinned to
/// `pin` when given.
fn start(
    program: &std::path::Path,
    args: &[String],
    env: &[(&str, String)],
    pin: Option<&[usize]>,
) -> Result<Child, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own: a Ctrl-C at the terminal is the parent's to handle (it keeps
        // what finished, then stops its children), not a signal that stops the children mid-run.
        .process_group(0);
    let pin_set = pin
        .map(cpuset)
        .transpose()
        .map_err(|e| format!("CPU set: {e}"))?;
    // SAFETY: between fork and exec the closure only makes async-signal-safe system calls
    // (prctl, sched_setaffinity) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
            if let Some(set) = &pin_set {
                nix::sched::sched_setaffinity(Pid::from_raw(0), set)
                    .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("spawn: {e}"))
}

/// The child's stdout, line by line, on a channel.
fn read_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The last bytes a child wrote to stderr (at most [`STDERR_TAIL`]), for error messages.
type StderrTail = std::sync::Arc<std::sync::Mutex<String>>;

/// How much of a child's stderr is kept.
const STDERR_TAIL: usize = 8 * 1024;

/// Reads the child's stderr so that the pipe never fills up, keeping its tail.
fn read_stderr(mut stderr: std::process::ChildStderr) -> StderrTail {
    let tail = StderrTail::default();
    let keep = tail.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            let mut t = keep.lock().unwrap_or_else(|e| e.into_inner());
            t.push_str(&String::from_utf8_lossy(&buf[..n]));
            if t.len() > STDERR_TAIL {
                let mut cut = t.len() - STDERR_TAIL;
                while !t.is_char_boundary(cut) {
                    cut += 1;
                }
                t.drain(..cut);
            }
        }
    });
    tail
}

/// CPU seconds (user + system) so far of process `pid` and every live descendant of it (a
/// server's workers), from `/proc`.
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let mut total = cpu_seconds(pid)?;
    let mut parents = vec![pid];
    let procs: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    while let Some(parent) = parents.pop() {
        for &(child, _) in procs.iter().filter(|(_, pp)| *pp == parent) {
            total += cpu_seconds(child).unwrap_or(0.0);
            parents.push(child);
        }
    }
    Some(total)
}

/// The parent of process `pid`, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A program a run needs is not installed: the one-line error says where it comes from.
#[derive(Debug, thiserror::Error)]
#[error("{who} needs `{program}`, which is not installed ({origin})")]
pub struct Missing {
    /// What needs it (`--gateway nginx`).
    pub who: String,
    /// The program.
    pub program: &'static str,
    /// Where to get it.
    pub origin: Source,
}

/// Where a program comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A Debian package of this name.
    Debian(&'static str),
    /// Not in Debian: how to get it, in a few words.
    Elsewhere(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Debian(package) => write!(f, "Debian: apt-get install -y {package}"),
            Source::Elsewhere(how) => f.write_str(how),
        }
    }
}

/// The path of `program` on PATH, or in the system directories a package puts servers in
/// (`/usr/sbin` is not on every user's PATH).
pub fn find(
    program: &'static str,
    package: &'static str,
    who: &str,
) -> Result<std::path::PathBuf, Missing> {
    find_from(program, Source::Debian(package), who)
}

/// [`find`] for a program from `source`.
pub fn find_from(
    program: &'static str,
    source: Source,
    who: &str,
) -> Result<std::path::PathBuf, Missing> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Missing {
            who: who.to_string(),
            program,
            origin: source,
        })
}

/// A free port on 127.0.0.1 for a program that must be told its port (HAProxy, Redis).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `addr` accepts connections, or fails after `within` or when `child` exits
/// (then with the last line it wrote to stderr).
pub fn wait_listening(
    child: &mut ChildProcess,
    addr: SocketAddr,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if child.exited() {
            std::thread::sleep(Duration::from_millis(50)); // let its last words arrive
            let last = child.last_stderr_line().unwrap_or_default();
            anyhow::bail!("{} exited before listening on {addr}: {last}", child.what);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} did not listen on {addr} within {}s",
                child.what,
                within.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Starts a program that must be told its port(s) (HAProxy, Redis, nginx): a free port is
/// only free until someone else takes it, so a start that fails is tried again with fresh
/// ports (three times in all). `start` spawns with the given ports and names the address to
/// wait for.
pub fn with_free_ports<T>(
    ports: usize,
    mut start: impl FnMut(&[u16]) -> anyhow::Result<(ChildProcess, SocketAddr, T)>,
) -> anyhow::Result<(ChildProcess, T)> {
    let mut last = None;
    for _ in 0..3 {
        let picked = (0..ports)
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (mut child, addr, extra) = start(&picked)?;
        match wait_listening(&mut child, addr, Duration::from_secs(10)) {
            Ok(()) => return Ok((child, extra)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no free port")))
}

/// `ready <kind> <addr>` as (kind, address).
fn ready_line(line: &str) -> Option<(String, SocketAddr)> {
    let mut f = line.split_whitespace();
    match (f.next(), f.next(), f.next()) {
        (Some("ready"), Some(kind), Some(addr)) => Some((kind.to_string(), addr.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_of_this_process() {
        // Burn CPU until the kernel's tick counter moves (bounded, so /proc being wrong fails).
        let t = Instant::now();
        while cpu_seconds(std::process::id()).unwrap() == 0.0
            && t.elapsed() < Duration::from_secs(10)
        {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(cpu_seconds(std::process::id()).unwrap() > 0.0);
        assert!(cpu_seconds(u32::MAX).is_none());
    }
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh directory under the system's temp dir, named after `what`.
    pub fn new(what: &str) -> std::io::Result<TempDir> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gwbench-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl TempDir {
    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
