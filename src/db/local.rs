//! A private PostgreSQL server for when no `DATABASE_URL` is given.
//!
//! `sondakika serve` on a fresh machine runs its own cluster from the installed server binaries,
//! with its files under the data directory so alerts survive a restart. The same code gives the
//! tests a throwaway cluster in a temporary directory.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then the cluster is owned by and run as
//! the `postgres` system user (the one Debian's packages create), by switching user in the child
//! process. No `sudo` is needed.
//!
//! The server listens on a Unix socket inside its own directory only (no TCP) unless a port is
//! asked for, and trusts local connections: nothing outside this machine can reach it.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid, User};
use sqlx::postgres::PgConnectOptions;

const DB_USER: &str = "sondakika";
const DB_NAME: &str = "sondakika";

/// A running private cluster. Dropping it stops the server if this value started it.
#[derive(Debug)]
pub struct LocalPostgres {
    dir: PathBuf,
    port: u16,
    tcp: bool,
    die_with_parent: bool,
    bin: PathBuf,
    child: Option<Child>,
}

impl LocalPostgres {
    /// Starts (creating if needed) the cluster in `dir`, or connects to the one already running
    /// there. `tcp_port`: also listen on 127.0.0.1 at that port (tests use it so that a second
    /// process can be handed a plain URL).
    pub fn start(dir: &Path, bin_dir: Option<&Path>, tcp_port: Option<u16>) -> anyhow::Result<Self> {
        Self::start_with(dir, bin_dir, tcp_port, false)
    }

    /// Like [`start`](Self::start); with `die_with_parent` the server is killed when the thread
    /// that started it exits (Linux `PR_SET_PDEATHSIG`). Test suites use it from a thread that
    /// lives as long as the process, so that no server outlives the tests.
    pub fn start_with(
        dir: &Path,
        bin_dir: Option<&Path>,
        tcp_port: Option<u16>,
        die_with_parent: bool,
    ) -> anyhow::Result<Self> {
        let bin = match bin_dir {
            Some(b) => b.to_path_buf(),
            None => find_bin_dir()?,
        };
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        let run_as = RunAs::detect()?;
        let port = tcp_port.unwrap_or(5432);
        let mut this = Self {
            dir: dir.clone(),
            port,
            tcp: tcp_port.is_some(),
            die_with_parent,
            bin: bin.clone(),
            child: None,
        };

        if let Some(user) = &run_as {
            user.check_reachable(&dir)?;
        }
        if !dir.join("PG_VERSION").exists() {
            this.initdb(&bin, run_as.as_ref())?;
        }
        if let Some(running_port) = this.running_port() {
            // Another sondakika process (or an earlier one that was killed) runs the cluster:
            // share it rather than fight over the lock file.
            this.port = running_port;
            this.wait_ready(Duration::from_secs(30))?;
            tracing::info!(dir = %dir.display(), "using the private PostgreSQL that is already running");
            return Ok(this);
        }
        this.spawn(&bin, run_as.as_ref())?;
        this.wait_ready(Duration::from_secs(60))?;
        tracing::info!(dir = %dir.display(), "started a private PostgreSQL");
        Ok(this)
    }

    /// Connection options for the `sondakika` database.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.dir).port(self.port).username(DB_USER).database(DB_NAME)
    }

    /// A URL another process can use (TCP clusters only).
    pub fn url(&self) -> Option<String> {
        self.tcp.then(|| format!("postgres://{DB_USER}@127.0.0.1:{}/{DB_NAME}", self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server if this value started it: fast shutdown, then wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            // SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port and files.
    pub fn restart(&mut self, bin_dir: Option<&Path>) -> anyhow::Result<()> {
        self.stop();
        let bin = match bin_dir {
            Some(b) => b.to_path_buf(),
            None => find_bin_dir()?,
        };
        let run_as = RunAs::detect()?;
        self.spawn(&bin, run_as.as_ref())?;
        self.wait_ready(Duration::from_secs(60))
    }

    fn initdb(&self, bin: &Path, run_as: Option<&RunAs>) -> anyhow::Result<()> {
        if let Some(user) = run_as {
            user.chown(&self.dir)?;
        }
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;
        let mut cmd = Command::new(bin.join("initdb"));
        cmd.arg("-D")
            .arg(&self.dir)
            .args(["-U", DB_USER, "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(user) = run_as {
            user.apply(&mut cmd);
        }
        let out = cmd.output().with_context(|| format!("running {}", bin.join("initdb").display()))?;
        if !out.status.success() {
            bail!(
                "initdb failed for {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // Create the application database in single-user mode: no server needs to run for it.
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("--single")
            .arg("-D")
            .arg(&self.dir)
            .arg("postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(user) = run_as {
            user.apply(&mut cmd);
        }
        let mut child = cmd.spawn().context("running postgres --single")?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(format!("CREATE DATABASE {DB_NAME};\n").as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("creating the database failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    fn spawn(&mut self, bin: &Path, run_as: Option<&RunAs>) -> anyhow::Result<()> {
        let listen = if self.tcp { "127.0.0.1" } else { "" };
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .context("opening the PostgreSQL log")?;
        if let Some(user) = run_as {
            user.chown(&self.dir.join("server.log"))?;
        }
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.dir)
            .arg("-k")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", &format!("listen_addresses={listen}")])
            // Enough for several sondakika processes and the test suite's parallel databases.
            .args(["-c", "max_connections=300"])
            .args(["-c", "shared_buffers=128MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(user) = run_as {
            user.apply(&mut cmd);
        }
        // Own process group: a Ctrl-C in the terminal reaches sondakika, which then stops the
        // server in order, instead of PostgreSQL dying under live connections.
        cmd.process_group(0);
        if self.die_with_parent {
            // The crate's one `unsafe`: `pre_exec` runs in the forked child, where only
            // async-signal-safe calls are sound. SAFETY: prctl is async-signal-safe, and nothing
            // else runs between fork and exec.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.join("postgres").display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The port of a server already running on this directory, if any.
    fn running_port(&self) -> Option<u16> {
        let pid_file = fs::read_to_string(self.dir.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid: i32 = lines.next()?.trim().parse().ok()?;
        let port: u16 = lines.nth(2)?.trim().parse().ok()?;
        // Signal 0 checks that the process exists without touching it.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).ok()?;
        Some(port)
    }

    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let socket = self.dir.join(format!(".s.PGSQL.{}", self.port));
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "PostgreSQL exited at start ({status}); last log lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            // The socket appears before the server accepts sessions ("the database system is
            // starting up", longer after a crash); pg_isready asks the server itself.
            if socket.exists()
                && Command::new(self.bin.join("pg_isready"))
                    .arg("-q")
                    .arg("-h")
                    .arg(&self.dir)
                    .arg("-p")
                    .arg(self.port.to_string())
                    .status()
                    .is_ok_and(|s| s.success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("PostgreSQL in {} did not become ready in {limit:?}", self.dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest installed PostgreSQL server binaries.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server binaries under /usr/lib/postgresql; install them \
             (`apt-get install postgresql`), set `pg_bin_dir`, or set DATABASE_URL"
        ),
    }
}

/// The unprivileged user a root process runs PostgreSQL as.
struct RunAs {
    uid: Uid,
    gid: Gid,
    name: String,
}

impl RunAs {
    fn detect() -> anyhow::Result<Option<Self>> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let user = User::from_name("postgres")?.context(
            "running as root, PostgreSQL needs the `postgres` system user to run as \
             (it comes with Debian's postgresql packages)",
        )?;
        Ok(Some(Self { uid: user.uid, gid: user.gid, name: user.name }))
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        cmd.env("HOME", "/tmp");
    }

    fn chown(&self, path: &Path) -> anyhow::Result<()> {
        nix::unistd::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("giving {} to the {} user", path.display(), self.name))
    }

    /// Every parent directory must be searchable by the server's user. A checkout under a
    /// private home (e.g. /root, mode 0700) is not: then the `postgres` user is granted the
    /// right to pass through (ACL `--x`: no listing, no reading), which is the narrowest change
    /// that lets the cluster live under `./data` as documented.
    fn check_reachable(&self, dir: &Path) -> anyhow::Result<()> {
        for parent in dir.ancestors().skip(1) {
            let meta = fs::metadata(parent)?;
            let mode = meta.permissions().mode();
            use std::os::unix::fs::MetadataExt;
            let passable = mode & 0o001 != 0
                || (meta.uid() == self.uid.as_raw() && mode & 0o100 != 0)
                || (meta.gid() == self.gid.as_raw() && mode & 0o010 != 0);
            if passable {
                continue;
            }
            let granted = Command::new("setfacl")
                .arg("-m")
                .arg(format!("u:{}:--x", self.name))
                .arg(parent)
                .status()
                .is_ok_and(|s| s.success());
            if granted {
                tracing::warn!(
                    dir = %parent.display(),
                    "let the `{}` user pass through this directory (ACL u:{}:--x) so that PostgreSQL can reach its data",
                    self.name, self.name
                );
                continue;
            }
            bail!(
                "PostgreSQL runs as the `{user}` user, which cannot reach {dir} because {parent} is \
                 closed to it; allow passing through with `setfacl -m u:{user}:x {parent}` (package \
                 `acl`) or `chmod o+x {parent}`, choose a `data_dir` elsewhere (e.g. \
                 /var/lib/sondakika), or set DATABASE_URL",
                user = self.name,
                dir = dir.display(),
                parent = parent.display()
            );
        }
        Ok(())
    }
}
