//! A fresh database on the test PostgreSQL server, dropped at the end (for
//! this crate's tests and its integration tests).

/// `TEST_POSTGRES`: connection settings of a server the tests
/// may create databases on (`scripts/test-postgres.sh start` prints
/// them; scripts/test.sh sets them). Unset: the PostgreSQL tests are
/// skipped, except under CI where that is an error.
pub fn base() -> Option<String> {
    match std::env::var("TEST_POSTGRES") {
        Ok(s) if !s.trim().is_empty() => Some(s),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "TEST_POSTGRES is unset: scripts/test.sh starts a PostgreSQL server for these tests"
            )
        }
        _ => {
            eprintln!("skipped: TEST_POSTGRES is unset (scripts/test.sh sets it)");
            None
        }
    }
}

pub struct TestDb {
    base: String,
    pub name: String,
}

/// Runs `sql` as the test server's administrator, on a thread of its
/// own (the blocking client must not run on an async runtime's thread).
pub fn admin(sql: String) -> Result<(), ::postgres::Error> {
    let base = base().expect("TEST_POSTGRES");
    std::thread::spawn(move || {
        let mut admin =
            ::postgres::Client::connect(&format!("{base} dbname=postgres"), ::postgres::NoTls)?;
        admin.batch_execute(&sql)
    })
    .join()
    .expect("admin thread")
}

impl TestDb {
    pub fn create() -> Option<Self> {
        let base = base()?;
        let name = format!("huashen_t_{}", uuid::Uuid::now_v7().simple());
        admin(format!("CREATE DATABASE {name}")).expect("test PostgreSQL reachable");
        Some(Self { base, name })
    }

    /// Connection settings for this database.
    pub fn url(&self) -> String {
        format!("{} dbname={}", self.base, self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}
