//! Running model-written programs (HumanEval's completions) without trusting them. Each program
//! runs in its own Python process (`python -I`, isolated from the user's environment) in a
//! folder of its own, with:
//!
//! - **no network**: a new network namespace (only a loopback that is down); for a user other
//!   than root, inside a new user namespace, which unprivileged users may create;
//! - **no writes outside its folder**: Landlock (Linux ≥ 5.13), which also denies TCP where the
//!   kernel's Landlock handles it (≥ 6.7);
//! - **limits**: CPU time, address space, processes (`RLIMIT_NPROC`: as root the program runs as
//!   `nobody`, since the kernel never counts root's processes), file size, no core dumps;
//! - **a timeout**: the program's own alarm after `timeout` (as HF `code_eval`'s
//!   `check_correctness`), and the whole process group killed a second later whatever it does.
//!
//! Where the kernel refuses a network namespace, nothing runs unless the user allows it
//! (`allow_unsandboxed`). The isolation is built from raw system calls (libc) and the `landlock`
//! crate rather than a container runtime, because a run starts thousands of programs and must
//! not need one installed. Everything done in the child between `fork` and `exec` is a system
//! call on data prepared before the fork (no allocation).

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, ABI,
};
use rayon::prelude::*;

/// The user root's programs run as (`nobody` on Debian and most systems).
const NOBODY: libc::uid_t = 65534;

/// The largest file a program may write (its error output included).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Runs the program with the harness's `exec(program, {})`: a `BaseException` (a `SystemExit`
/// too) is a failure, and an alarm after the time limit a timeout.
const DRIVER: &str = r#"
import signal, sys, os
class _TimedOut(BaseException):
    pass
def _alarm(signum, frame):
    raise _TimedOut()
signal.signal(signal.SIGALRM, _alarm)
signal.setitimer(signal.ITIMER_REAL, float(sys.argv[1]))
try:
    with open("program.py", encoding="utf-8") as f:
        source = f.read()
    exec(compile(source, "program.py", "exec"), {})
except _TimedOut:
    os._exit(3)
except BaseException as e:
    sys.stderr.write("failed: %s\n" % (str(e) or type(e).__name__,))
    sys.stderr.flush()
    os._exit(1)
signal.setitimer(signal.ITIMER_REAL, 0)
os._exit(0)
"#;

/// How programs are confined.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The Python interpreter (a name on `PATH` or a path).
    pub python: String,
    /// Wall-clock seconds a program may run.
    pub timeout: Duration,
    /// Address space a program may map, in bytes.
    pub memory_bytes: u64,
    /// Processes (and threads) a program may have at once.
    pub max_processes: u64,
    /// Run without a network namespace where the kernel refuses one.
    pub allow_unsandboxed: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            python: "python3".into(),
            timeout: Duration::from_secs(3),
            memory_bytes: 1 << 30,
            max_processes: 16,
            allow_unsandboxed: false,
        }
    }
}

/// How one program ended, in `check_correctness`'s words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran to the end without an exception.
    Passed,
    /// It raised (the exception's text), was killed by a limit, or could not start.
    Failed(String),
    /// It ran past the timeout.
    TimedOut,
}

impl Outcome {
    /// `passed`, `failed: …` or `timed out`, as HF `code_eval` reports.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Failed(why) => format!("failed: {why}"),
            Outcome::TimedOut => "timed out".into(),
        }
    }
}

/// A checked way of running untrusted Python programs.
#[derive(Debug)]
pub struct Sandbox {
    options: SandboxOptions,
    /// The interpreter's real executable (not a shell shim, which the confined user may not run).
    python: PathBuf,
    /// Whether programs get a network namespace of their own.
    network_namespace: bool,
    /// Whether Landlock confines writes.
    landlock: bool,
    /// Whether programs run as `nobody` (herd runs as root).
    as_nobody: bool,
}

impl Sandbox {
    /// Finds the interpreter and checks that a program can be confined on this machine: refuses
    /// (saying why and what to do) when the kernel gives no network namespace, unless
    /// `allow_unsandboxed`.
    pub fn new(options: SandboxOptions) -> Result<Sandbox> {
        if options.timeout.is_zero() {
            bail!("the code timeout must be more than 0 seconds");
        }
        let out = Command::new(&options.python)
            .args(["-I", "-c", "import sys; print(sys.executable)"])
            .output()
            .with_context(|| {
                format!(
                    "cannot run `{}` to execute generated code: install Python 3 or name one \
                     with --python",
                    options.python
                )
            })?;
        let executable = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || executable.is_empty() {
            bail!(
                "`{} -I` did not start: {}",
                options.python,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let as_nobody = unsafe { libc::geteuid() } == 0;
        let mut sandbox = Sandbox {
            options,
            python: PathBuf::from(executable),
            network_namespace: true,
            landlock: landlock_available(),
            as_nobody,
        };
        match sandbox.run("pass") {
            Outcome::Passed => {}
            outcome if sandbox.options.allow_unsandboxed => {
                eprintln!(
                    "warning: programs run WITHOUT a network namespace ({}); \
                     --allow-unsandboxed was given",
                    outcome.describe()
                );
                sandbox.network_namespace = false;
                if let outcome @ (Outcome::Failed(_) | Outcome::TimedOut) = sandbox.run("pass") {
                    bail!(
                        "Python does not run even unconfined: {}",
                        outcome.describe()
                    );
                }
            }
            outcome => bail!(
                "generated code cannot be confined here ({}): the kernel must allow a new \
                 network namespace (unprivileged: `sysctl kernel.unprivileged_userns_clone=1` or \
                 `user.max_user_namespaces` > 0). To run it unconfined anyway, at your own risk, \
                 pass --allow-unsandboxed",
                outcome.describe()
            ),
        }
        Ok(sandbox)
    }

    /// One line saying how programs are confined (for the run's log).
    pub fn describe(&self) -> String {
        format!(
            "{} -I; network: {}; writes: {}; limits: {:.1} s, {} MiB, {} processes{}",
            self.python.display(),
            if self.network_namespace {
                "own namespace (none)"
            } else {
                "HOST NETWORK (unsandboxed)"
            },
            if self.landlock {
                "own folder only (Landlock)"
            } else {
                "unconfined (no Landlock in this kernel)"
            },
            self.options.timeout.as_secs_f64(),
            self.options.memory_bytes >> 20,
            self.options.max_processes,
            if self.as_nobody { "; as nobody" } else { "" },
        )
    }

    /// Runs `programs` on `workers` threads (a pool of its own: the work is waiting on child
    /// processes), outcomes in the programs' order.
    pub fn run_all(&self, programs: &[String], workers: usize) -> Result<Vec<Outcome>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .build()
            .context("starting the program runners")?;
        Ok(pool.install(|| programs.par_iter().map(|p| self.run(p)).collect()))
    }

    /// Runs one program and says how it ended.
    pub fn run(&self, program: &str) -> Outcome {
        match self.try_run(program) {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(format!("could not run: {e:#}")),
        }
    }

    fn try_run(&self, program: &str) -> Result<Outcome> {
        let folder = tempfile::Builder::new()
            .prefix("herd-code-")
            .tempdir()
            .context("making the program's folder")?;
        let dir = folder.path();
        std::fs::write(dir.join("program.py"), program)?;
        let stderr_path = dir.join("stderr.txt");
        let stderr = File::create(&stderr_path)?;
        if self.as_nobody {
            for p in [dir, &dir.join("program.py"), &stderr_path] {
                std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY))?;
            }
        }
        let mut ruleset = if self.landlock {
            Some(write_confinement(dir)?)
        } else {
            None
        };
        let mut command = Command::new(&self.python);
        command
            .args(["-I", "-X", "utf8", "-c", DRIVER])
            .arg(format!("{}", self.options.timeout.as_secs_f64()))
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        let confinement = Confinement {
            network_namespace: self.network_namespace,
            as_nobody: self.as_nobody,
            limits: [
                (
                    libc::RLIMIT_CPU,
                    self.options.timeout.as_secs_f64().ceil() as u64 + 1,
                ),
                (libc::RLIMIT_AS, self.options.memory_bytes),
                (libc::RLIMIT_NPROC, self.options.max_processes),
                (libc::RLIMIT_FSIZE, MAX_FILE_BYTES),
                (libc::RLIMIT_CORE, 0),
            ],
        };
        // SAFETY: the closure runs in the forked child before exec; it only makes system calls
        // on values prepared before the fork and allocates nothing.
        unsafe {
            command.pre_exec(move || confinement.enter(ruleset.take()));
        }
        let start = Instant::now();
        let mut child = command.spawn().context("starting Python")?;
        let group = child.id() as libc::pid_t;
        let deadline = self.options.timeout + Duration::from_secs(1);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if start.elapsed() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        // Whatever the program started dies with it.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let Some(status) = status else {
            child.wait()?;
            return Ok(Outcome::TimedOut);
        };
        use std::os::unix::process::ExitStatusExt;
        Ok(match (status.code(), status.signal()) {
            (Some(0), _) => Outcome::Passed,
            (Some(3), _) => Outcome::TimedOut,
            (_, Some(libc::SIGXCPU)) => Outcome::TimedOut,
            (_, Some(signal)) => Outcome::Failed(format!("killed by signal {signal}")),
            (None, None) => Outcome::Failed(format!("ended with {status}")),
            (Some(code), _) => {
                let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let last = text.lines().rev().find(|l| !l.trim().is_empty());
                let why = last.map_or_else(
                    || format!("exit status {code}"),
                    |l| l.trim_start_matches("failed: ").to_string(),
                );
                Outcome::Failed(why)
            }
        })
    }
}

/// What the child does to itself between fork and exec.
struct Confinement {
    network_namespace: bool,
    as_nobody: bool,
    limits: [(libc::__rlimit_resource_t, u64); 5],
}

impl Confinement {
    fn enter(&self, ruleset: Option<RulesetCreated>) -> io::Result<()> {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        unsafe {
            if self.network_namespace {
                let flags = if self.as_nobody {
                    libc::CLONE_NEWNET
                } else {
                    libc::CLONE_NEWUSER | libc::CLONE_NEWNET
                };
                check(libc::unshare(flags))?;
            }
            if self.as_nobody {
                drop_root()?;
            }
            for &(resource, value) in &self.limits {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                check(libc::setrlimit(resource, &limit))?;
            }
        }
        if let Some(ruleset) = ruleset {
            ruleset
                .restrict_self()
                .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
        }
        Ok(())
    }
}

/// Becomes `nobody`, keeping only the right to read files (root's own Python, say under
/// `/root/.pyenv`, must stay readable) as an ambient capability that survives exec. Root's
/// processes are never counted against `RLIMIT_NPROC`; nobody's are.
unsafe fn drop_root() -> io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_DAC_READ_SEARCH: u32 = 2;
    let check = |r: libc::c_long| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    check(libc::setgroups(0, std::ptr::null()) as libc::c_long)?;
    check(libc::setgid(NOBODY) as libc::c_long)?;
    check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) as libc::c_long)?;
    check(libc::setuid(NOBODY) as libc::c_long)?;
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let read = 1u32 << CAP_DAC_READ_SEARCH;
    let data = [
        CapData {
            effective: read,
            permitted: read,
            inheritable: read,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    check(libc::syscall(libc::SYS_capset, &header, data.as_ptr()))?;
    check(libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_RAISE,
        CAP_DAC_READ_SEARCH as libc::c_ulong,
        0,
        0,
    ) as libc::c_long)?;
    Ok(())
}

/// The Landlock ABI herd asks for; older kernels give what they have.
const LANDLOCK_ABI: ABI = ABI::V5;

/// Whether this kernel enforces Landlock (its first ABI at least).
fn landlock_available() -> bool {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create())
        .is_ok()
}

/// A Landlock ruleset letting a program read and execute anything but write only under
/// `folder`, and make or accept no TCP connection.
fn write_confinement(folder: &Path) -> Result<RulesetCreated> {
    let abi = LANDLOCK_ABI;
    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .create()?
        .add_rule(PathBeneath::new(
            PathFd::new("/")?,
            AccessFs::from_read(abi),
        ))?
        .add_rule(PathBeneath::new(
            PathFd::new("/dev/null")?,
            AccessFs::from_read(abi) | AccessFs::WriteFile,
        ))?
        .add_rule(PathBeneath::new(
            PathFd::new(folder)?,
            AccessFs::from_all(abi),
        ))?;
    Ok(ruleset)
}

/// The unbiased estimator of pass@k (Chen et al. 2021): of `n` programs of which `c` pass, the
/// chance that at least one of `k` drawn without replacement passes,
/// `1 − C(n−c, k) / C(n, k)`, computed as the product HF `code_eval` computes.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox::new(SandboxOptions {
            timeout: Duration::from_millis(1500),
            ..SandboxOptions::default()
        })
        .expect("this machine confines programs")
    }

    #[test]
    fn pass_at_k_is_the_closed_form() {
        // 1 − C(n−c, k)/C(n, k) with exact binomials.
        fn binomial(n: u64, k: u64) -> f64 {
            (1..=k).fold(1u128, |acc, i| acc * (n - k + i) as u128 / i as u128) as f64
        }
        for (n, c, k) in [
            (20, 3, 10),
            (20, 0, 1),
            (20, 1, 1),
            (10, 5, 10),
            (100, 7, 20),
        ] {
            let expected = if n - c < k {
                1.0
            } else {
                1.0 - binomial(n - c, k) / binomial(n, k)
            };
            let got = pass_at_k(n as usize, c as usize, k as usize);
            assert!(
                (got - expected).abs() < 1e-12,
                "{n} {c} {k}: {got} vs {expected}"
            );
        }
        // HF code_eval's numpy product, to the last bit.
        assert_eq!(pass_at_k(5, 2, 1), 0.3999999999999999);
    }

    #[test]
    fn a_program_passes_fails_or_times_out() {
        let s = sandbox();
        assert_eq!(s.run("assert sum(range(4)) == 6\n"), Outcome::Passed);
        match s.run("def f():\n    return 1\nassert f() == 2, 'wrong'\n") {
            Outcome::Failed(why) => assert_eq!(why, "wrong"),
            other => panic!("{other:?}"),
        }
        // exit() is a BaseException: a failure, as under the harness's exec.
        assert!(matches!(
            s.run("import sys\nsys.exit(0)\n"),
            Outcome::Failed(_)
        ));
        let start = Instant::now();
        assert_eq!(s.run("while True:\n    pass\n"), Outcome::TimedOut);
        assert_eq!(
            s.run(
                "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass\n"
            ),
            Outcome::TimedOut
        );
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn the_network_is_out_of_reach() {
        // A server on the host's loopback is reachable from here but not from the sandbox.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connect = format!(
            "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        );
        let host = Command::new("python3")
            .args(["-I", "-c", &connect])
            .status()
            .unwrap();
        assert!(host.success(), "the host itself can connect");
        listener.accept().unwrap();
        match sandbox().run(&connect) {
            Outcome::Failed(why) => assert!(
                why.contains("unreachable") || why.contains("refused") || why.contains("ermission"),
                "{why}"
            ),
            other => panic!("the sandbox reached the host: {other:?}"),
        }
    }

    #[test]
    fn writes_stay_in_the_programs_folder() {
        let outside = tempfile::tempdir().unwrap();
        // World-writable, so that only the sandbox (not file permissions) can stop the write.
        std::fs::set_permissions(
            outside.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let target = outside.path().join("escaped.txt");
        let program = format!(
            "open('inside.txt', 'w').write('ok')\nassert open('inside.txt').read() == 'ok'\n\
             open({:?}, 'w').write('escaped')\n",
            target.display().to_string()
        );
        match sandbox().run(&program) {
            Outcome::Failed(why) => assert!(why.contains("ermission denied"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!target.exists(), "a write escaped the sandbox");
    }

    #[test]
    fn memory_and_processes_are_limited() {
        let s = sandbox();
        match s.run("x = bytearray(4 << 30)\n") {
            Outcome::Failed(why) => assert!(why.is_empty() || why.contains("Memory"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A fork bomb stops at the process limit; its children die with it.
        let bomb = "import os, time\nn = 0\ntry:\n    for _ in range(200):\n        \
                    if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        \
                    n += 1\nexcept OSError:\n    pass\nassert n < 16, n\n";
        assert_eq!(s.run(bomb), Outcome::Passed);
    }
}
