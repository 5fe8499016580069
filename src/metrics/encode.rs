//! The series the endpoint reports, written out by `prometheus-client`
//! from one `Snapshot`: every value is read once, when the scrape is
//! answered, and encoded through the crate's `Collector` interface (the one
//! made for values computed at scrape time), so no metric object is kept
//! between scrapes and nothing is counted twice.
//!
//! Names follow Prometheus's conventions: base units (bytes, seconds) in
//! the name, counters ending in `_total`. A counter or a gauge with a unit
//! is declared with its name without the suffix the crate adds.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, prometheus_text, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::http::Format;
use super::process::Process;
use crate::summary::Summary;

/// Everything one scrape reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    /// The event loops' totals, open connections included.
    pub summary: Summary,
    /// The process, if `/proc` could be read.
    pub process: Option<Process>,
}

/// `snapshot` as the text of one response body, in `format`.
pub fn encode(snapshot: Snapshot, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut body = String::with_capacity(8 * 1024);
    // Writing to a String cannot fail, and the collector returns only the
    // writer's errors.
    let _ = match format {
        Format::Prometheus => prometheus_text::encode(&mut body, &registry),
        Format::OpenMetrics => text::encode(&mut body, &registry),
    };
    body
}

/// A `Snapshot` for the registry of one scrape.
#[derive(Debug)]
struct SnapshotCollector(Snapshot);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Snapshot { summary, process } = self.0;
        let closes = summary.closes;
        gauge(
            &mut encoder,
            "echod_connections_open",
            "Echo connections open now.",
            None,
            summary.open_connections as u64,
        )?;
        counter(
            &mut encoder,
            "echod_connections_accepted",
            "Echo connections accepted and served.",
            None,
            summary.accepted,
        )?;
        counters(
            &mut encoder,
            "echod_connections_rejected",
            "Echo connections accepted and closed at once, by the limit or rule that refused them.",
            &[
                (
                    "max_connections",
                    summary
                        .rejected
                        .saturating_sub(summary.rejected_per_ip)
                        .saturating_sub(summary.denied)
                        .saturating_sub(summary.rejected_untrusted),
                ),
                ("max_connections_per_ip", summary.rejected_per_ip),
                ("denied", summary.denied),
                ("proxy_untrusted", summary.rejected_untrusted),
            ],
        )?;
        counters(
            &mut encoder,
            "echod_connections_closed",
            "Echo connections closed, by the reason their close line gives; a client that \
             closed without sending a byte counts as probe.",
            &[
                ("peer_finished", closes.peer_finished),
                ("line_too_long", closes.line_too_long),
                ("idle_timeout", closes.idle_timeout),
                ("send_timeout", closes.send_timeout),
                ("line_timeout", closes.line_timeout),
                ("evicted", closes.evicted),
                ("out_of_memory", closes.out_of_memory),
                ("displaced", closes.displaced),
                ("server_shutdown", closes.server_shutdown),
                ("shutdown_timeout", closes.shutdown_timeout),
                ("error", closes.error),
                ("probe", closes.probes),
                ("proxy_header_malformed", closes.proxy_header_malformed),
                ("proxy_header_timeout", closes.proxy_header_timeout),
                ("denied", closes.denied),
                ("max_connections_per_ip", closes.max_connections_per_ip),
            ],
        )?;
        counter(
            &mut encoder,
            "echod_lines_echoed",
            "Complete lines received to be echoed.",
            None,
            summary.lines,
        )?;
        counter(
            &mut encoder,
            "echod_bytes_received",
            "Bytes read from echo clients.",
            None,
            summary.bytes_received,
        )?;
        counter(
            &mut encoder,
            "echod_bytes_sent",
            "Bytes written back to echo clients.",
            None,
            summary.bytes,
        )?;
        gauge(
            &mut encoder,
            "echod_readers_paused",
            "Echo connections not read from now because their client is not reading its echoes.",
            None,
            summary.paused_connections as u64,
        )?;
        gauge(
            &mut encoder,
            "echod_buffer",
            "Buffer storage the echo connections hold now.",
            Some(&Unit::Bytes),
            summary.buffer_bytes as u64,
        )?;
        if let Some(budget) = summary.buffer_budget_bytes {
            gauge(
                &mut encoder,
                "echod_buffer_budget",
                "The memory budget over the connections' buffer storage (--max-memory).",
                Some(&Unit::Bytes),
                budget as u64,
            )?;
        }
        let info = encoder.encode_descriptor(
            "echod_build_info",
            "The running echod's version; always 1.",
            None,
            MetricType::Gauge,
        )?;
        {
            let mut info = info;
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            ConstGauge::new(1u64).encode(info.encode_family(&labels)?)?;
        }
        if let Some(process) = process {
            let cpu = encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            ConstCounter::new(process.cpu_seconds).encode(cpu)?;
            gauge(
                &mut encoder,
                "process_resident_memory",
                "Resident memory size.",
                Some(&Unit::Bytes),
                process.resident_memory_bytes,
            )?;
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors.",
                None,
                process.open_fds,
            )?;
            gauge(
                &mut encoder,
                "process_max_fds",
                "The limit on open file descriptors.",
                None,
                process.max_fds,
            )?;
            let start = encoder.encode_descriptor(
                "process_start_time",
                "Start time of the process since the Unix epoch.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(process.start_time_seconds).encode(start)?;
        }
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// One counter family with a `reason` label, a series for each reason.
fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    by_reason: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(reason, value) in by_reason {
        let labels = [("reason", reason)];
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut summary = Summary {
            accepted: 5,
            open_connections: 2,
            lines: 7,
            bytes: 70,
            bytes_received: 71,
            rejected: 3,
            rejected_per_ip: 1,
            buffer_bytes: 512,
            buffer_budget_bytes: Some(1024),
            ..Summary::default()
        };
        summary.closes.peer_finished = 3;
        Snapshot {
            summary,
            process: Some(Process {
                cpu_seconds: 1.5,
                resident_memory_bytes: 4096,
                open_fds: 9,
                max_fds: 1024,
                start_time_seconds: 1.7e9,
            }),
        }
    }

    #[test]
    fn prometheus_text_names_counters_with_their_total() {
        let body = encode(snapshot(), Format::Prometheus);
        for line in [
            "# TYPE echod_connections_accepted_total counter",
            "echod_connections_accepted_total 5",
            "echod_connections_open 2",
            "echod_connections_rejected_total{reason=\"max_connections\"} 2",
            "echod_connections_rejected_total{reason=\"max_connections_per_ip\"} 1",
            "echod_connections_rejected_total{reason=\"denied\"} 0",
            "echod_connections_closed_total{reason=\"peer_finished\"} 3",
            "echod_connections_closed_total{reason=\"probe\"} 0",
            "echod_lines_echoed_total 7",
            "echod_bytes_received_total 71",
            "echod_bytes_sent_total 70",
            "echod_readers_paused 0",
            "echod_buffer_bytes 512",
            "echod_buffer_budget_bytes 1024",
            "process_cpu_seconds_total 1.5",
            "process_resident_memory_bytes 4096",
            "process_open_fds 9",
            "process_max_fds 1024",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
        }
        let build = format!(
            "echod_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(body.lines().any(|l| l == build), "{body}");
        assert!(!body.contains("# EOF"), "{body}");
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let body = encode(snapshot(), Format::OpenMetrics);
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(
            body.contains("\n# TYPE echod_connections_accepted counter\n"),
            "{body}"
        );
        assert!(
            body.contains("\nechod_connections_accepted_total 5\n"),
            "{body}"
        );
    }

    #[test]
    fn no_budget_no_budget_series() {
        let mut snapshot = snapshot();
        snapshot.summary.buffer_budget_bytes = None;
        snapshot.process = None;
        let body = encode(snapshot, Format::Prometheus);
        assert!(!body.contains("echod_buffer_budget_bytes"), "{body}");
        assert!(!body.contains("process_"), "{body}");
        assert!(body.contains("echod_buffer_bytes 512"), "{body}");
    }
}
