//! One SQL text for both backends: the state DB is SQLite (one VM, the default) or PostgreSQL
//! (several replicas). Every statement of the store is written once with `$1..$n` parameters,
//! which both sqlx drivers take, and run through [`Sql`] on a [`Db`] (the pool) or a [`Tx`] (a
//! transaction). The few statements that must differ pick their text with [`Db::kind`].
//!
//! Values cross the boundary as [`Arg`]s (integers, text, booleans, each nullable): the only
//! kinds the schema uses. Rows decode through `sqlx::FromRow`, which the row types derive for
//! any driver.

use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use std::marker::PhantomData;

/// The state DB's connection pool.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which backend a [`Db`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl Db {
    pub fn kind(&self) -> Kind {
        match self {
            Db::Sqlite(_) => Kind::Sqlite,
            Db::Postgres(_) => Kind::Postgres,
        }
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// An open transaction: committed by [`Tx::commit`], rolled back when dropped.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.rollback().await,
            Tx::Postgres(t) => t.rollback().await,
        }
    }
}

/// Where a statement runs: the pool (a connection of its own) or an open transaction.
pub enum On<'c> {
    Db(&'c Db),
    Tx(&'c mut Tx),
}

impl<'c> From<&'c Db> for On<'c> {
    fn from(db: &'c Db) -> Self {
        On::Db(db)
    }
}

impl<'c> From<&'c mut Tx> for On<'c> {
    fn from(tx: &'c mut Tx) -> Self {
        On::Tx(tx)
    }
}

/// Where several statements run one after another: the pool or an open transaction (an
/// [`On`] is used up by one statement; this lends one per statement).
pub trait Conn {
    fn on(&mut self) -> On<'_>;
}

impl Conn for &Db {
    fn on(&mut self) -> On<'_> {
        On::Db(self)
    }
}

impl Conn for &mut Tx {
    fn on(&mut self) -> On<'_> {
        On::Tx(self)
    }
}

/// A parameter value.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(bool),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_string))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

/// A row type both drivers can decode.
pub trait Row:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> Row for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

/// What a statement that returns no rows did.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    rows: u64,
}

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.rows
    }
}

/// A statement and its parameters, decoding rows as `T`.
#[must_use = "a statement does nothing until it is run"]
pub struct Sql<T = ()> {
    text: String,
    args: Vec<Arg>,
    row: PhantomData<fn() -> T>,
}

/// A statement returning no rows (or whose rows are not read).
pub fn sql(text: impl Into<String>) -> Sql<()> {
    Sql {
        text: text.into(),
        args: Vec::new(),
        row: PhantomData,
    }
}

/// A statement whose rows decode as `T`.
pub fn sql_as<T: Row>(text: impl Into<String>) -> Sql<T> {
    Sql {
        text: text.into(),
        args: Vec::new(),
        row: PhantomData,
    }
}

/// Builds the driver's query from the text and arguments, then runs `$method` on `$exec`.
macro_rules! run {
    ($s:expr, $ctor:expr, $exec:expr, $method:ident) => {{
        let s = $s;
        let mut q = $ctor(sqlx::AssertSqlSafe(s.text));
        for a in s.args {
            q = match a {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
            };
        }
        q.$method($exec).await
    }};
}

/// Runs `$method` of the typed query on whichever backend `$on` is.
macro_rules! on_either {
    ($s:expr, $on:expr, $t:ty, $method:ident) => {
        match $on {
            On::Db(Db::Sqlite(p)) => run!($s, sqlx::query_as::<sqlx::Sqlite, $t>, p, $method),
            On::Db(Db::Postgres(p)) => run!($s, sqlx::query_as::<sqlx::Postgres, $t>, p, $method),
            On::Tx(Tx::Sqlite(t)) => {
                run!($s, sqlx::query_as::<sqlx::Sqlite, $t>, &mut **t, $method)
            }
            On::Tx(Tx::Postgres(t)) => {
                run!($s, sqlx::query_as::<sqlx::Postgres, $t>, &mut **t, $method)
            }
        }
    };
}

impl<T> Sql<T> {
    /// Adds the next parameter (`$1`, `$2`, ... in order).
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Runs the statement for its effect.
    pub async fn execute<'c>(self, on: impl Into<On<'c>>) -> Result<Done, sqlx::Error> {
        let rows = match on.into() {
            On::Db(Db::Sqlite(p)) => {
                run!(self, sqlx::query::<sqlx::Sqlite>, p, execute)?.rows_affected()
            }
            On::Db(Db::Postgres(p)) => {
                run!(self, sqlx::query::<sqlx::Postgres>, p, execute)?.rows_affected()
            }
            On::Tx(Tx::Sqlite(t)) => {
                run!(self, sqlx::query::<sqlx::Sqlite>, &mut **t, execute)?.rows_affected()
            }
            On::Tx(Tx::Postgres(t)) => {
                run!(self, sqlx::query::<sqlx::Postgres>, &mut **t, execute)?.rows_affected()
            }
        };
        Ok(Done { rows })
    }
}

impl Sql<()> {
    /// The parameters bound so far, with a text written after them (a statement whose text
    /// depends on how many rows were bound) and rows decoded as `T`.
    pub fn retype<T: Row>(self, text: impl Into<String>) -> Sql<T> {
        Sql {
            text: text.into(),
            args: self.args,
            row: PhantomData,
        }
    }
}

impl<T: Row> Sql<T> {
    pub async fn fetch_all<'c>(self, on: impl Into<On<'c>>) -> Result<Vec<T>, sqlx::Error> {
        on_either!(self, on.into(), T, fetch_all)
    }

    pub async fn fetch_optional<'c>(self, on: impl Into<On<'c>>) -> Result<Option<T>, sqlx::Error> {
        on_either!(self, on.into(), T, fetch_optional)
    }

    pub async fn fetch_one<'c>(self, on: impl Into<On<'c>>) -> Result<T, sqlx::Error> {
        on_either!(self, on.into(), T, fetch_one)
    }
}
