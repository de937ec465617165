//! Schema migrations: numbered steps, applied in order in one transaction
//! at connect, recorded in `schema_version` (one row per component). A
//! database whose schema is newer than this build's is refused; so is a
//! database that holds the other component's tables (the archive and the
//! chat store each need a database of their own: both have a `kv`).

use postgres::Client;

/// A component's schema: its name in `schema_version` and its steps.
/// Step `i` (from 0) takes the schema from version `i` to `i + 1`; a
/// step, once released, never changes: a change is a new step.
pub struct Schema {
    pub component: &'static str,
    pub steps: &'static [&'static str],
}

impl Schema {
    /// The version this build writes and understands.
    pub fn version(&self) -> i32 {
        self.steps.len() as i32
    }
}

/// Serialises the migrations of concurrent connections (any constant
/// would do; this one spells "holdfast").
const MIGRATION_LOCK: i64 = 0x686f_6c64_6661_7374;

/// Why the database could not be brought to this build's schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A statement of the migration itself (its lock, its bookkeeping).
    #[error("schema migration: {}", describe(.0))]
    Statement(#[source] postgres::Error),
    /// The database belongs to another component.
    #[error("this database holds the {found}'s tables: give the {wanted} a database of its own")]
    OtherComponent { found: String, wanted: &'static str },
    /// A newer build migrated the database.
    #[error(
        "the {component} has schema version {found}, newer than version {understood} this build understands; \
         use a newer holdfast"
    )]
    Newer {
        component: &'static str,
        found: i32,
        understood: i32,
    },
    /// One step of the migration (numbered from 1).
    #[error("migration step {step}: {}", describe(.source))]
    Step {
        step: usize,
        #[source]
        source: postgres::Error,
    },
}

/// Brings the database to `schema`'s version, or says why it cannot.
pub(crate) fn migrate(client: &mut Client, schema: &Schema) -> Result<(), SchemaError> {
    let failed = SchemaError::Statement;
    let mut tx = client.transaction().map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed)?;
    // Created only when missing: a node whose role may not create tables
    // still connects to a database an administrator migrated.
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .map_err(failed)?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE schema_version (\
                 component TEXT PRIMARY KEY, \
                 version   INTEGER NOT NULL)",
        )
        .map_err(failed)?;
    }
    let mut found = 0;
    for row in tx
        .query("SELECT component, version FROM schema_version", &[])
        .map_err(failed)?
    {
        let (component, version): (String, i32) = (row.get(0), row.get(1));
        if component == schema.component {
            found = version;
        } else {
            return Err(SchemaError::OtherComponent {
                found: component,
                wanted: schema.component,
            });
        }
    }
    if found > schema.version() {
        return Err(SchemaError::Newer {
            component: schema.component,
            found,
            understood: schema.version(),
        });
    }
    for (i, step) in schema.steps.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(step).map_err(|source| SchemaError::Step {
            step: i + 1,
            source,
        })?;
    }
    if found < schema.version() {
        tx.execute(
            "INSERT INTO schema_version (component, version) VALUES ($1, $2) \
             ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
            &[&schema.component, &schema.version()],
        )
        .map_err(failed)?;
    }
    tx.commit().map_err(failed)
}

/// The server's message when it sent one (with its SQLSTATE), else the
/// client's.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
