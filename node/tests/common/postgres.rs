//! A throwaway PostgreSQL server for a test: `initdb` in a temporary
//! folder, `pg_ctl start` on a free loopback port (its socket in the same
//! folder), stopped and removed when dropped. Run as root (a CI
//! container), the server runs as the `postgres` system user, since
//! PostgreSQL refuses to run as root.
//!
//! No PostgreSQL installed is a failure, not a skip: the message says
//! how to install it.

use holdfast::cluster_up::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The superuser the test servers are created with (trusted on loopback).
pub const USER: &str = "holdfast";

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// The system user the server runs as (when the test runs as root).
    run_as: Option<String>,
}

/// The folder of `initdb`, `pg_ctl` and `postgres`: on the PATH, or the
/// newest of Debian's `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return dir;
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed: no initdb on the PATH or in \
             /usr/lib/postgresql/*/bin. Install it: apt-get install postgresql"
        ),
    }
}

impl PgServer {
    /// A new server with one database, `holdfast`, trusted on loopback.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("pg-").tempdir().unwrap();
        let run_as = nix::unistd::geteuid()
            .is_root()
            .then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            let u = nix::unistd::User::from_name(user)
                .unwrap()
                .unwrap_or_else(|| panic!("running as root needs the {user} system user"));
            nix::unistd::chown(dir.path(), Some(u.uid), Some(u.gid)).unwrap();
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            run_as,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let mut attempt = 0;
        loop {
            server.port = free_port().unwrap();
            match server.try_start() {
                Ok(()) => break,
                Err(e) if attempt < 2 => {
                    eprintln!("postgres did not start on {}: {e}; again", server.port);
                    attempt += 1;
                }
                Err(e) => panic!("postgres did not start: {e}"),
            }
        }
        server.sql("postgres", "CREATE DATABASE holdfast");
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The folder the server and its socket live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start` on the data folder (again, after a stop), waiting
    /// until the server accepts connections.
    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            ))
        }
    }

    /// Starts the server again on the same data folder and port.
    pub fn start_again(&self) {
        let mut tries = 0;
        while let Err(e) = self.try_start() {
            tries += 1;
            assert!(tries < 5, "postgres did not start again: {e}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, as
    /// a crash would (the next start replays the WAL).
    pub fn stop_immediate(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// `postgres://holdfast@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A client of database `db`, over loopback without TLS.
    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls).unwrap()
    }

    /// Runs `sql` on database `db`.
    pub fn sql(&self, db: &str, sql: &str) {
        self.client(db).batch_execute(sql).unwrap();
    }

    /// A new database.
    pub fn create_db(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// A file the server can read (its key must be its own, mode 0600).
    pub fn give(&self, name: &str, contents: &[u8]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some(user) = &self.run_as {
            let u = nix::unistd::User::from_name(user).unwrap().unwrap();
            nix::unistd::chown(&path, Some(u.uid), Some(u.gid)).unwrap();
        }
        path
    }

    /// Replaces the server's `pg_hba.conf` and sets `settings` (lines of
    /// `postgresql.conf`), then restarts it.
    pub fn reconfigure(&self, hba: &str, settings: &str) {
        let data = self.data();
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(settings);
        std::fs::write(&conf, text).unwrap();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
        self.start_again();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Two tests of `$case`, a function of `Option<&PgServer>`: `$sqlite`
/// runs it with the store in SQLite, `$postgres` with it in a throwaway
/// PostgreSQL server.
#[macro_export]
macro_rules! sqlite_and_postgres {
    ($case:ident: $sqlite:ident, $postgres:ident) => {
        #[test]
        fn $sqlite() {
            $case(None);
        }

        #[test]
        fn $postgres() {
            let pg = $crate::common::postgres::PgServer::start();
            $case(Some(&pg));
        }
    };
}
