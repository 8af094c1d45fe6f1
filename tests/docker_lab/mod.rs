//! Containers for the healer's tests on the real Docker engine, through the `docker` CLI.
//!
//! The image `hypercode-test/busybox` (`FROM scratch` plus Debian's static busybox) is built
//! once per machine, when it is missing, and kept. Every container a test creates carries the
//! label `hypercode-test.lab=<the lab's id>` and is removed by that label when the lab is
//! dropped, also when the test fails. Each lab also has its own heal label, so the healer of one
//! test never sees another test's containers.

#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// The test image.
pub const IMAGE: &str = "hypercode-test/busybox";

/// Where Debian's `busybox-static` installs the binary.
const BUSYBOX: &str = "/bin/busybox";

/// Run `docker` with `args`; its trimmed stdout, or its stderr as the error.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("running docker: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `docker`, panicking on failure.
pub fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Build the test image unless it exists; one test process at a time builds it (a lock file),
/// so concurrent tests leave no untagged copies behind.
pub fn ensure_image() {
    if docker(&["image", "inspect", IMAGE]).is_ok() {
        return;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("hypercode-test-busybox.lock"))
        .expect("open the image lock file");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the image lock file");
    if docker(&["image", "inspect", IMAGE]).is_ok() {
        return;
    }
    assert!(
        std::path::Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: apt-get install busybox-static"
    );
    let dir = std::env::temp_dir().join(format!("hypercode-busybox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the build context");
    std::fs::copy(BUSYBOX, dir.join("busybox")).expect("copy busybox");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/tmp\"]\n\
         CMD [\"/bin/sh\"]\n",
    )
    .expect("write the Dockerfile");
    let built = docker(&["build", "-q", "-t", IMAGE, &dir.to_string_lossy()]);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = built {
        panic!("building {IMAGE}: {e}");
    }
}

/// A test's containers, removed on drop.
pub struct Lab {
    /// Unique per lab.
    pub id: String,
}

impl Lab {
    /// A new lab (building the image first if needed).
    pub fn new() -> Lab {
        ensure_image();
        let id = format!("{}-{:08x}", std::process::id(), rand_u32());
        Lab { id }
    }

    /// The label the healer of this lab heals (`key=value`).
    pub fn heal_label(&self) -> String {
        format!("hypercode-test.heal={}", self.id)
    }

    /// The environment that turns the healer on for this lab's containers.
    pub fn healer_env(&self, sweep_s: u64) -> Vec<(&'static str, String)> {
        vec![
            ("HYPERCODE_HEALER", "on".to_owned()),
            ("HYPERCODE_HEAL_LABEL", self.heal_label()),
            ("HYPERCODE_HEAL_SWEEP_S", sweep_s.to_string()),
        ]
    }

    /// Start a container named `<name>-<lab id>` running `command` (with `extra` options before
    /// the image); with the heal label when `healed`. Returns its full id.
    pub fn run(&self, name: &str, healed: bool, extra: &[&str], command: &[&str]) -> Container {
        let full_name = format!("{name}-{}", self.id);
        let lab_label = format!("hypercode-test.lab={}", self.id);
        let heal_label = self.heal_label();
        let mut args = vec!["run", "-d", "--name", &full_name, "--label", &lab_label];
        if healed {
            args.extend(["--label", &heal_label]);
        }
        args.extend(extra);
        args.push(IMAGE);
        args.extend(command);
        let id = must(&args);
        Container {
            id,
            name: full_name,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let filter = format!("label=hypercode-test.lab={}", self.id);
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let _ = docker(&["rm", "-f", id]);
            }
        }
    }
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    u32::from_ne_bytes(bytes)
}

/// One container of a lab.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its full id.
    pub id: String,
    /// Its name.
    pub name: String,
}

impl Container {
    /// `docker inspect -f <format>`.
    pub fn inspect(&self, format: &str) -> String {
        must(&["inspect", "-f", format, &self.id])
    }

    /// When it was last started (changes with every restart).
    pub fn started_at(&self) -> String {
        self.inspect("{{.State.StartedAt}}")
    }

    /// `running`, `exited`, ...
    pub fn status(&self) -> String {
        self.inspect("{{.State.Status}}")
    }

    /// Its health status (`healthy`, `unhealthy`, `starting`).
    pub fn health(&self) -> String {
        self.inspect("{{.State.Health.Status}}")
    }

    /// Kill its PID 1 from the host with SIGKILL: no Docker API call is involved.
    pub fn kill_from_host(&self) {
        let pid: i32 = self
            .inspect("{{.State.Pid}}")
            .parse()
            .expect("a running container's pid");
        assert!(pid > 0, "{} is not running", self.name);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the container's process from the host");
    }

    /// Wait until its status is `status`; panics after `timeout`.
    pub async fn wait_status(&self, status: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.status() != status {
            assert!(
                Instant::now() < deadline,
                "{} is not {status} after {timeout:?} (it is {})",
                self.name,
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until it was started again since `before` (its `StartedAt` then) and runs; how
    /// long that took. Panics after `timeout`.
    pub async fn wait_restarted(&self, before: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.started_at() != before && self.status() == "running" {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "{} was not restarted within {timeout:?} (status {}, started at {})",
                self.name,
                self.status(),
                self.started_at()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
