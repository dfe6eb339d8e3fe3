//! The query catalog: versioned data, shipped with the program and reviewable by operators.
//!
//! Each query declares its level, its output columns with types, and what happens to each
//! column before the row may leave the site (kept, one-way hashed, or dropped). The collector
//! prepends the hashed hierarchy ID to every row, so rows correlate per hierarchy without
//! naming the customer.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::hash::Hasher;
use crate::ids::Level;
use crate::value::Value;

/// The catalog shipped with this build: its core file (which holds the version) and the
/// queries over the site's management services.
const BUILTIN: &str = concat!(
    include_str!("../catalog/catalog.toml"),
    "\n",
    include_str!("../catalog/services.toml")
);

/// Earlier catalogs, kept so runs of agents not yet upgraded are still understood and so
/// operators can see what changed between versions.
const EARLIER: &[&str] = &[
    include_str!("../catalog/history/2026.12.1.toml"),
    include_str!("../catalog/history/2026.11.1.toml"),
];

/// The name of the column the collector prepends to every row.
pub const HIERARCHY_COLUMN: &str = "hierarchy_id";

/// Why a catalog, or a row shaped by it, is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The TOML did not parse into a catalog.
    #[error("catalog does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    /// The catalog parsed but breaks a rule.
    #[error("catalog query {query}: {problem}")]
    Invalid {
        /// The offending query's id.
        query: String,
        /// What rule it breaks.
        problem: String,
    },
    /// A row's width differs from the declared columns.
    #[error("query {query}: row has {got} values, {expected} columns are declared")]
    RowWidth {
        /// The query.
        query: String,
        /// Values in the row.
        got: usize,
        /// Declared columns.
        expected: usize,
    },
    /// A value does not have its column's declared type.
    // The value itself is not shown: this message travels with the run, and a value in a
    // column of the wrong type may be anything, a name included.
    #[error("query {query}: column {column} is declared {expected} but holds a {} value", got.type_name())]
    ColumnType {
        /// The query.
        query: String,
        /// The column.
        column: String,
        /// The declared type.
        expected: ColumnType,
        /// The value found.
        got: Value,
    },
}

/// A versioned set of queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Version string; runs name it and receivers check they know it.
    pub version: String,
    /// The queries, in the order they run.
    #[serde(rename = "query")]
    pub queries: Vec<QueryDef>,
}

/// Where a query applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Primary sites only.
    Primary,
    /// The central administration site only.
    Cas,
    /// Every site.
    Both,
}

/// One query of the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryDef {
    /// Stable identifier, e.g. `B-OS-VERSIONS`.
    pub id: String,
    /// The lowest level at which this query's data is collected.
    pub level: Level,
    /// Functional area, as operators know it (site, client, content, ...).
    pub category: String,
    /// Which sites run it.
    #[serde(default = "Scope::both")]
    pub scope: Scope,
    /// What the query tells, in one sentence an operator can review.
    pub description: String,
    /// SQL text for the embedded SQLite site database.
    pub sqlite: String,
    /// SQL text for SQL Server (T-SQL), when written.
    #[serde(default)]
    pub tsql: Option<String>,
    /// Why the bundled TDS test engine cannot run the T-SQL text, when it cannot: the
    /// query is then cross-checked only against a real SQL Server.
    #[serde(default)]
    pub engine_gap: Option<String>,
    /// Declared output columns, in the order of the query's SELECT list.
    pub columns: Vec<ColumnDef>,
}

impl Scope {
    fn both() -> Self {
        Self::Both
    }
}

/// A declared output column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Declared type; values of another type fail the query.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// What happens to the value before it leaves the site.
    #[serde(default)]
    pub privacy: Privacy,
}

/// Types a result column can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Text.
    Text,
    /// Whole number.
    Int,
    /// Floating-point number.
    Real,
    /// Flag (0/1 in SQL).
    Bool,
}

impl ColumnType {
    /// Returns the type's name as declared in the catalog and sent on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Int => "int",
            Self::Real => "real",
            Self::Bool => "bool",
        }
    }

    /// Returns true when `value` may appear in a column of this type.
    pub fn admits(&self, value: &Value) -> bool {
        matches!(
            (self, value),
            (_, Value::Null)
                | (Self::Text, Value::Text(_))
                | (Self::Int, Value::Int(_))
                | (Self::Real, Value::Real(_))
                | (Self::Bool, Value::Bool(_))
        )
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a column's value before the row leaves the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    /// Not identifying (counts, versions, aggregates): sent as is.
    #[default]
    None,
    /// Identifying: replaced by its one-way hash.
    Hash,
    /// Read for the query's own use only; never sent.
    Drop,
    /// Identifying and sent in clear; allowed only in Full queries.
    Identifying,
}

/// Every catalog this build ships, the current one first, parsed once per process: runs
/// and periods are checked against their catalog version one by one.
fn shipped() -> &'static [Catalog] {
    static SHIPPED: OnceLock<Vec<Catalog>> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        std::iter::once(BUILTIN)
            .chain(EARLIER.iter().copied())
            .filter_map(|text| Catalog::parse(text).ok())
            .collect()
    })
}

impl Catalog {
    /// Returns the catalog shipped with this build.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::parse(BUILTIN)
    }

    /// Returns the shipped catalog of the given version, if this build knows it: the
    /// current one, or an earlier one that agents not yet upgraded may still run.
    pub fn by_version(version: &str) -> Option<Self> {
        shipped().iter().find(|c| c.version == version).cloned()
    }

    /// Returns the versions this build knows, newest first.
    pub fn known_versions() -> Vec<String> {
        shipped().iter().map(|c| c.version.clone()).collect()
    }

    /// Parses and checks a catalog from TOML text.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let catalog: Catalog = toml::from_str(text)?;
        catalog.check()?;
        Ok(catalog)
    }

    /// Returns the query with this id.
    pub fn query(&self, id: &str) -> Option<&QueryDef> {
        self.queries.iter().find(|q| q.id == id)
    }

    /// Returns the queries collected at `level` (each level includes the lower ones).
    pub fn at_level(&self, level: Level) -> impl Iterator<Item = &QueryDef> {
        self.queries
            .iter()
            .filter(move |q| q.level.allowed_at(level))
    }

    fn check(&self) -> Result<(), CatalogError> {
        let mut ids = HashSet::new();
        for query in &self.queries {
            let invalid = |problem: &str| CatalogError::Invalid {
                query: query.id.clone(),
                problem: problem.to_owned(),
            };
            if !ids.insert(query.id.as_str()) {
                return Err(invalid("id is used twice"));
            }
            if query.columns.is_empty() {
                return Err(invalid("declares no columns"));
            }
            if query.sqlite.trim().is_empty() {
                return Err(invalid("has no SQLite text"));
            }
            let mut names = HashSet::new();
            for column in &query.columns {
                if column.name == HIERARCHY_COLUMN {
                    return Err(invalid("declares the reserved column hierarchy_id"));
                }
                if !names.insert(column.name.as_str()) {
                    return Err(invalid("declares a column twice"));
                }
                if column.privacy == Privacy::Identifying && query.level != Level::Full {
                    return Err(invalid(
                        "sends an identifying column in clear below the Full level",
                    ));
                }
                if column.privacy == Privacy::Hash && column.ty != ColumnType::Text {
                    return Err(invalid("hashes a column that is not text"));
                }
            }
            if query.columns.iter().all(|c| c.privacy == Privacy::Drop) {
                return Err(invalid("drops every column"));
            }
        }
        Ok(())
    }
}

impl QueryDef {
    /// Returns the columns as delivered: the hashed hierarchy ID, then every column not dropped.
    pub fn output_columns(&self) -> Vec<(String, ColumnType)> {
        std::iter::once((HIERARCHY_COLUMN.to_owned(), ColumnType::Text))
            .chain(
                self.columns
                    .iter()
                    .filter(|c| c.privacy != Privacy::Drop)
                    .map(|c| (c.name.clone(), c.ty)),
            )
            .collect()
    }

    /// Returns the output columns as a result set declares them on the wire, so every maker
    /// of sets names and types them alike.
    pub fn wire_columns(&self) -> Vec<hrs_proto::v1::Column> {
        self.output_columns()
            .into_iter()
            .map(|(name, ty)| hrs_proto::v1::Column {
                name,
                r#type: ty.as_str().to_owned(),
            })
            .collect()
    }

    /// Turns a row as read from the site database into the row that may leave the site:
    /// checks width and types, hashes and drops as declared, prepends the hierarchy hash.
    pub fn shape_row(
        &self,
        raw: Vec<Value>,
        hierarchy_hash: &str,
        hasher: &Hasher,
    ) -> Result<Vec<Value>, CatalogError> {
        if raw.len() != self.columns.len() {
            return Err(CatalogError::RowWidth {
                query: self.id.clone(),
                got: raw.len(),
                expected: self.columns.len(),
            });
        }
        let mut row = Vec::with_capacity(raw.len() + 1);
        row.push(Value::Text(hierarchy_hash.to_owned()));
        for (column, value) in self.columns.iter().zip(raw) {
            // SQL has no boolean type: flags arrive as 0/1.
            let value = match (column.ty, value) {
                (ColumnType::Bool, Value::Int(i)) => Value::Bool(i != 0),
                (ColumnType::Real, Value::Int(i)) => Value::Real(i as f64),
                (_, value) => value,
            };
            if !column.ty.admits(&value) {
                return Err(CatalogError::ColumnType {
                    query: self.id.clone(),
                    column: column.name.clone(),
                    expected: column.ty,
                    got: value,
                });
            }
            match (column.privacy, value) {
                (Privacy::Drop, _) => {}
                (Privacy::Hash, Value::Text(s)) => row.push(Value::Text(hasher.hash(&s))),
                (_, value) => row.push(value),
            }
        }
        Ok(row)
    }
}

/// A table, view or function a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The name as the query spells it, without brackets, quotes or a `dbo.` schema.
    pub name: String,
    /// True when the query calls it with arguments (a table-valued function).
    pub function: bool,
}

/// Returns what a SQL text reads: every name after `FROM`, `JOIN` or `APPLY`, leaving out
/// its own common table expressions and subqueries, each once in order of first use. Names
/// inside string literals and comments are not read.
pub fn sources(sql: &str) -> Vec<Source> {
    let tokens = sql_tokens(sql);
    let is_name = |t: &str| t.starts_with(|c: char| c.is_ascii_alphabetic() || "_[\"#".contains(c));
    let keyword = |t: &str, k: &str| t.eq_ignore_ascii_case(k);
    // A common table expression is `WITH name [(columns)] AS (` or `, name [(columns)] AS (`.
    let defines_cte = |i: usize| {
        let mut j = i + 2;
        if tokens.get(j) == Some(&"(") {
            while j < tokens.len() && tokens[j] != ")" {
                j += 1;
            }
            j += 1;
        }
        tokens.get(j).is_some_and(|t| keyword(t, "AS")) && tokens.get(j + 1) == Some(&"(")
    };
    let ctes: HashSet<String> = (0..tokens.len().saturating_sub(1))
        .filter(|&i| {
            (keyword(tokens[i], "WITH") || tokens[i] == ",")
                && is_name(tokens[i + 1])
                && defines_cte(i)
        })
        .map(|i| plain_name(tokens[i + 1]).to_ascii_lowercase())
        .collect();
    let mut found: Vec<Source> = Vec::new();
    for (i, pair) in tokens.windows(2).enumerate() {
        let reads = ["FROM", "JOIN", "APPLY"]
            .iter()
            .any(|k| keyword(pair[0], k));
        if !reads || !is_name(pair[1]) {
            continue;
        }
        let name = plain_name(pair[1]);
        if ctes.contains(&name.to_ascii_lowercase())
            || found.iter().any(|s| s.name.eq_ignore_ascii_case(&name))
        {
            continue;
        }
        let function = tokens.get(i + 2).is_some_and(|t| *t == "(");
        found.push(Source { name, function });
    }
    found
}

/// Splits SQL into names (with their dots and brackets), single punctuation marks and
/// string literals (as one `'` token), dropping whitespace and comments.
fn sql_tokens(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let part_of_name = |b: u8| b.is_ascii_alphanumeric() || b"_.[]\"@#$:".contains(&b);
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if sql[i..].starts_with("--") {
            i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
        } else if sql[i..].starts_with("/*") {
            i = sql[i + 2..].find("*/").map_or(bytes.len(), |n| i + n + 4);
        } else if b == b'\'' {
            // A literal ends at a quote not doubled.
            let mut j = i + 1;
            while j < bytes.len() {
                if bytes[j] == b'\'' {
                    if bytes.get(j + 1) == Some(&b'\'') {
                        j += 2;
                        continue;
                    }
                    break;
                }
                j += 1;
            }
            tokens.push("'");
            i = j + 1;
        } else if part_of_name(b) {
            let start = i;
            while i < bytes.len() && part_of_name(bytes[i]) {
                i += 1;
            }
            tokens.push(&sql[start..i]);
        } else {
            let len = sql[i..].chars().next().map_or(1, char::len_utf8);
            tokens.push(&sql[i..i + len]);
            i += len;
        }
    }
    tokens
}

/// A name without brackets or quotes, and without a leading `dbo.` schema.
fn plain_name(token: &str) -> String {
    let name: String = token.chars().filter(|c| !"[]\"".contains(*c)).collect();
    match name.get(..4) {
        Some(schema) if schema.eq_ignore_ascii_case("dbo.") => name[4..].to_owned(),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
version = "test-1"
[[query]]
id = "Q1"
level = "Basic"
category = "site"
description = "servers"
sqlite = "select name, role, n, ok, secret from t"
columns = [
  { name = "server", type = "text", privacy = "hash" },
  { name = "role", type = "text" },
  { name = "n", type = "int" },
  { name = "ok", type = "bool" },
  { name = "secret", type = "text", privacy = "drop" },
]
"#;

    #[test]
    fn builtin_catalog_parses_and_spans_every_level() {
        let catalog = Catalog::builtin().expect("builtin catalog");
        for level in [Level::Basic, Level::Enhanced, Level::Full] {
            assert!(catalog.queries.iter().any(|q| q.level == level), "{level}");
        }
        assert!(catalog.queries.len() >= 25);
    }

    #[test]
    fn shaping_hashes_drops_and_prepends_the_hierarchy() {
        let catalog = Catalog::parse(SMALL).expect("parses");
        let q = catalog.query("Q1").expect("Q1");
        let row = q
            .shape_row(
                vec![
                    Value::Text("P01".into()),
                    Value::Text("SQL Server".into()),
                    Value::Int(4),
                    Value::Int(1),
                    Value::Text("hunter2".into()),
                ],
                "H",
                &Hasher::Plain,
            )
            .expect("shapes");
        assert_eq!(
            row,
            vec![
                Value::Text("H".into()),
                Value::Text(crate::hash::hash_value("P01")),
                Value::Text("SQL Server".into()),
                Value::Int(4),
                Value::Bool(true),
            ]
        );
        let names: Vec<String> = q.output_columns().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["hierarchy_id", "server", "role", "n", "ok"]);
    }

    #[test]
    fn shaping_refuses_wrong_width_and_types() {
        let catalog = Catalog::parse(SMALL).expect("parses");
        let q = catalog.query("Q1").expect("Q1");
        assert!(q.shape_row(vec![Value::Null], "H", &Hasher::Plain).is_err());
        let wrong_type = vec![
            Value::Null,
            Value::Null,
            Value::Text("four".into()),
            Value::Null,
            Value::Null,
        ];
        assert!(matches!(
            q.shape_row(wrong_type, "H", &Hasher::Plain),
            Err(CatalogError::ColumnType { .. })
        ));
    }

    #[test]
    fn identifying_columns_below_full_are_refused() {
        let text = SMALL.replace("privacy = \"hash\"", "privacy = \"identifying\"");
        assert!(matches!(
            Catalog::parse(&text),
            Err(CatalogError::Invalid { .. })
        ));
    }

    #[test]
    fn sources_are_what_follows_from_join_and_apply_not_ctes_literals_or_comments() {
        let sql = "WITH daily AS (SELECT day FROM [dbo].[v_R_System] s), rates(x) AS (SELECT 1 FROM daily) \
                   SELECT * FROM rates r JOIN v_GS_OPERATING_SYSTEM os ON os.ResourceID = r.x \
                   LEFT JOIN (SELECT 1 FROM sys.databases) d ON 1 = 1 \
                   CROSS APPLY fn_rbac_R_System(@UserSIDs) f \
                   JOIN v_r_system again ON 1 = 1 \
                   WHERE name <> 'FROM invented' -- JOIN commented\n /* FROM hidden */";
        let names: Vec<(String, bool)> = sources(sql)
            .into_iter()
            .map(|s| (s.name, s.function))
            .collect();
        assert_eq!(
            names,
            [
                ("v_R_System".to_owned(), false),
                ("v_GS_OPERATING_SYSTEM".to_owned(), false),
                ("sys.databases".to_owned(), false),
                ("fn_rbac_R_System".to_owned(), true),
            ]
        );
        assert_eq!(sources("SELECT 1")[..], []);
        assert_eq!(
            sources("SELECT * FROM \"site_system\"")[0].name,
            "site_system"
        );
    }

    #[test]
    fn every_builtin_query_reads_something() {
        let catalog = Catalog::builtin().expect("the shipped catalog loads");
        for query in catalog.at_level(Level::Full) {
            assert!(!sources(&query.sqlite).is_empty(), "{} (sqlite)", query.id);
            if let Some(tsql) = &query.tsql {
                assert!(!sources(tsql).is_empty(), "{} (t-sql)", query.id);
            }
        }
    }
}
