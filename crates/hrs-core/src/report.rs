//! Flat views of merged data for people: one line per result row, as an aligned table, CSV
//! or JSON. `hrs view` and the connection tool's export both print through here, so what an
//! operator reviews has the same shape wherever it comes from.

use std::io::{self, Write};

use hrs_proto::v1 as pb;
use serde::Serialize;

use crate::value::Value;

/// One result row with the context that names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlatRow {
    /// The period (ISO week).
    pub period: String,
    /// The site code, or its hash once data leaves the hierarchy.
    pub site: String,
    /// The catalog query.
    pub query_id: String,
    /// The query's level.
    pub level: String,
    /// Position of the row within its result set, from 0.
    pub row: usize,
    /// The row's columns by name.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// Output formats for flat rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Columns padded to align, for a terminal.
    Table,
    /// RFC 4180 CSV with a header line; `data` is one JSON object per row.
    Csv,
    /// A JSON array of row objects.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown format {other:?}: expected table, csv or json"
            )),
        }
    }
}

/// Returns one flat row per result row of one site's result sets.
pub fn flatten_site(period: &str, site: &str, results: &[pb::ResultSet]) -> Vec<FlatRow> {
    results
        .iter()
        .flat_map(|set| {
            set.rows
                .iter()
                .enumerate()
                .map(|(i, row)| result_row(period, site, set, i, row))
        })
        .collect()
}

/// Query id of the row describing the hierarchy's settings for a period.
pub const HIERARCHY_ROW: &str = "hierarchy";
/// Query id of the row describing when a site's collector ran.
pub const COLLECTOR_RUN_ROW: &str = "collector:run";
/// Query id of the rows giving the collector's statistics per query.
pub const COLLECTOR_QUERY_ROW: &str = "collector:query";

fn object(pairs: Vec<(&str, serde_json::Value)>) -> serde_json::Map<String, serde_json::Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Returns the collector's own statistics for one site: when it ran, and per query its
/// row count, duration and error. They travel with the data as Basic data, so an export
/// shows them like any result row.
pub fn collector_rows(period: &str, site: &pb::SiteResults) -> Vec<FlatRow> {
    collector_rows_of(
        period,
        &site.site,
        (&site.started_at, &site.finished_at),
        &site.results,
    )
}

/// [`collector_rows`] for a run's parts: its site, when it ran, and its result sets.
pub fn collector_rows_of(
    period: &str,
    site: &str,
    times: (&str, &str),
    results: &[pb::ResultSet],
) -> Vec<FlatRow> {
    let counted: Vec<(&pb::ResultSet, u64)> = results
        .iter()
        .map(|set| (set, set.rows.len() as u64))
        .collect();
    collector_rows_counted(period, site, times, &counted)
}

/// [`collector_rows_of`] for result sets whose rows are counted rather than held (read
/// from an encoding).
pub(crate) fn collector_rows_counted(
    period: &str,
    site: &str,
    (started_at, finished_at): (&str, &str),
    results: &[(&pb::ResultSet, u64)],
) -> Vec<FlatRow> {
    let row = |query_id: &str, row: usize, data| FlatRow {
        period: period.to_owned(),
        site: site.to_owned(),
        query_id: query_id.to_owned(),
        level: "Basic".to_owned(),
        row,
        data,
    };
    let failed = results.iter().filter(|(s, _)| !s.error.is_empty()).count();
    let mut out = vec![row(
        COLLECTOR_RUN_ROW,
        0,
        object(vec![
            ("started_at", started_at.into()),
            ("finished_at", finished_at.into()),
            ("queries", results.len().into()),
            ("failed", failed.into()),
        ]),
    )];
    out.extend(results.iter().enumerate().map(|(i, (set, rows))| {
        row(
            COLLECTOR_QUERY_ROW,
            i,
            object(vec![
                ("query_id", set.query_id.clone().into()),
                ("rows", (*rows).into()),
                ("duration_ms", set.duration_ms.into()),
                ("error", set.error.clone().into()),
            ]),
        )
    }));
    out
}

/// The flat row of one result row of `set` (its columns name the row's values).
pub(crate) fn result_row(
    period: &str,
    site: &str,
    set: &pb::ResultSet,
    index: usize,
    row: &pb::Row,
) -> FlatRow {
    let data = set
        .columns
        .iter()
        .zip(&row.values)
        .map(|(c, v)| (c.name.clone(), json_value(&Value::from(v))))
        .collect();
    FlatRow {
        period: period.to_owned(),
        site: site.to_owned(),
        query_id: set.query_id.clone(),
        level: set.level.clone(),
        row: index,
        data,
    }
}

/// The flat row describing a merged period's own settings (its sites left out).
pub(crate) fn hierarchy_row(period: &pb::MergedPeriod) -> FlatRow {
    FlatRow {
        period: period.period.clone(),
        site: String::new(),
        query_id: HIERARCHY_ROW.to_owned(),
        level: "Basic".to_owned(),
        row: 0,
        data: object(vec![
            ("hierarchy_hash", period.hierarchy_hash.clone().into()),
            ("level", period.level.clone().into()),
            ("mode", period.mode.clone().into()),
            ("catalog_version", period.catalog_version.clone().into()),
            ("missing_sites", period.missing_sites.clone().into()),
        ]),
    }
}

/// Returns every flat row of a merged period: the hierarchy's settings, then per site (in
/// site order) the collector's statistics and one row per result row.
pub fn flatten(period: &pb::MergedPeriod) -> Vec<FlatRow> {
    let mut sites: Vec<&pb::SiteResults> = period.sites.iter().collect();
    sites.sort_by(|a, b| a.site.cmp(&b.site));
    std::iter::once(hierarchy_row(period))
        .chain(sites.into_iter().flat_map(|s| {
            let mut rows = collector_rows(&period.period, s);
            rows.extend(flatten_site(&period.period, &s.site, &s.results));
            rows
        }))
        .collect()
}

fn json_value(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Text(s) => s.clone().into(),
        Value::Int(i) => (*i).into(),
        Value::Real(r) => serde_json::Number::from_f64(*r)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::Bool(b) => (*b).into(),
    }
}

const HEADER: [&str; 6] = ["period", "site", "query_id", "level", "row", "data"];

fn cells(row: &FlatRow) -> [String; 6] {
    [
        row.period.clone(),
        row.site.clone(),
        row.query_id.clone(),
        row.level.clone(),
        row.row.to_string(),
        serde_json::Value::Object(row.data.clone()).to_string(),
    ]
}

/// CSV of flat rows written one at a time, so an export of any size holds one row.
pub struct CsvRows<W: Write> {
    writer: csv::Writer<W>,
}

impl<W: Write> CsvRows<W> {
    /// Starts the CSV on `out` with its header line.
    pub fn new(out: W) -> io::Result<Self> {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(HEADER)?;
        Ok(Self { writer })
    }

    /// Writes one row.
    pub fn write(&mut self, row: &FlatRow) -> io::Result<()> {
        Ok(self.writer.write_record(cells(row))?)
    }

    /// Flushes what is buffered.
    pub fn finish(mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Writes rows in the chosen format.
pub fn write(out: &mut dyn Write, rows: &[FlatRow], format: Format) -> io::Result<()> {
    match format {
        Format::Csv => {
            let mut csv = CsvRows::new(out)?;
            for row in rows {
                csv.write(row)?;
            }
            csv.finish()
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, rows)?;
            writeln!(out)
        }
        Format::Table => {
            let lines: Vec<[String; 6]> = rows.iter().map(cells).collect();
            let mut widths = HEADER.map(str::len);
            for line in &lines {
                for (w, cell) in widths.iter_mut().zip(line) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let header = HEADER.map(str::to_owned);
            for line in std::iter::once(&header).chain(&lines) {
                let mut text = String::new();
                for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
                    if i + 1 == line.len() {
                        text.push_str(cell);
                    } else {
                        text.push_str(&format!("{cell:<w$}  "));
                    }
                }
                writeln!(out, "{}", text.trim_end())?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period() -> pb::MergedPeriod {
        let set = pb::ResultSet {
            query_id: "Q".into(),
            level: "Basic".into(),
            columns: vec![
                pb::Column {
                    name: "os".into(),
                    r#type: "text".into(),
                },
                pb::Column {
                    name: "n".into(),
                    r#type: "int".into(),
                },
            ],
            rows: vec![pb::Row {
                values: vec![
                    (&Value::Text("Windows, 11".into())).into(),
                    (&Value::Int(7)).into(),
                ],
            }],
            error: String::new(),
            duration_ms: 0,
        };
        pb::MergedPeriod {
            period: "2026-W48".into(),
            sites: vec![
                pb::SiteResults {
                    site: "P02".into(),
                    results: vec![set.clone()],
                    ..Default::default()
                },
                pb::SiteResults {
                    site: "P01".into(),
                    results: vec![set],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn csv_has_one_line_per_row_in_site_order() {
        let rows = flatten(&period());
        let mut out = Vec::new();
        write(&mut out, &rows, Format::Csv).expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "period,site,query_id,level,row,data");
        assert!(lines[1].starts_with("2026-W48,,hierarchy,Basic,0,"));
        // Per site: the collector's run, its one query, then the query's row.
        assert!(lines[2].starts_with("2026-W48,P01,collector:run,Basic,0,"));
        assert!(lines[3].starts_with("2026-W48,P01,collector:query,Basic,0,"));
        assert!(lines[3].contains(r#"""query_id"":""Q"""#), "{}", lines[3]);
        assert_eq!(
            lines[4],
            r#"2026-W48,P01,Q,Basic,0,"{""os"":""Windows, 11"",""n"":7}""#
        );
        assert!(lines[5].starts_with("2026-W48,P02,collector:run,"));
        assert_eq!(lines.len(), 8);
    }

    #[test]
    fn table_aligns_columns() {
        let rows = flatten(&period());
        let mut out = Vec::new();
        write(&mut out, &rows, Format::Table).expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        let starts: Vec<Option<usize>> = text.lines().map(|l| l.find("Basic")).collect();
        assert_eq!(starts[1], starts[2]);
    }
}
