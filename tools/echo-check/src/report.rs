//! A run's report, as a table for people and as one JSON object for other
//! programs' CI.

use std::fmt::Write as _;

use serde_json::json;

use crate::Report;

/// The table: a heading, then per check its id, verdict and evidence on
/// one line and what it proves on the next, then the totals.
pub fn table(report: &Report) -> String {
    let width = report
        .results
        .iter()
        .map(|result| result.id.len())
        .max()
        .unwrap_or(0);
    let mut out = format!("echo-check {}\n", report.target);
    for result in &report.results {
        let _ = writeln!(
            out,
            "{:<width$}  {}  {}",
            result.id,
            result.outcome.verdict.name().to_uppercase(),
            result.outcome.detail
        );
        let _ = writeln!(out, "{:<width$}        proves: {}", "", result.proves);
    }
    let skipped = report.results.len() - report.passed() - report.failed();
    let _ = writeln!(
        out,
        "{} passed, {} failed, {skipped} skipped",
        report.passed(),
        report.failed()
    );
    out
}

/// The JSON object: `{"target", "checks": [{"id", "result", "detail"}],
/// "passed", "failed"}`.
pub fn json(report: &Report) -> String {
    let checks: Vec<_> = report
        .results
        .iter()
        .map(|result| {
            json!({
                "id": result.id,
                "result": result.outcome.verdict.name(),
                "detail": result.outcome.detail,
                "proves": result.proves,
                "seconds": result.elapsed.as_secs_f64(),
            })
        })
        .collect();
    json!({
        "target": report.target.to_string(),
        "checks": checks,
        "passed": report.passed(),
        "failed": report.failed(),
    })
    .to_string()
}
