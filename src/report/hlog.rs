//! HdrHistogram interval logs (format v1.3, as Java's `HistogramLogWriter` writes and
//! `HistogramLogProcessor` reads): header comments, the legend, then one line per interval and
//! tag with the histogram in V2 + deflate, base64-encoded. Times are seconds from `BaseTime`,
//! the maximum in milliseconds.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

use crate::load::recorder::IntervalRecord;

/// Renders the intervals as an interval log; tags `corrected` and `service`.
pub fn render(start: SystemTime, intervals: &[IntervalRecord]) -> String {
    let epoch = start
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut out = String::new();
    let _ = writeln!(out, "#[Histogram log format version 1.3]");
    let _ = writeln!(
        out,
        "#[Written by gwbench {}; values in nanoseconds]",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(out, "#[StartTime: {epoch:.3} (seconds since epoch)]");
    let _ = writeln!(out, "#[BaseTime: {epoch:.3} (seconds since epoch)]");
    let _ = writeln!(out, "#[MaxValueDivisor: 1000000.000]");
    let _ = writeln!(
        out,
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    for i in intervals {
        for (tag, bytes, max) in [
            ("corrected", &i.corrected_v2, i.corrected[2]),
            ("service", &i.service_v2, i.service[2]),
        ] {
            let _ = writeln!(
                out,
                "Tag={tag},{:.3},{:.3},{:.3},{}",
                i.start.as_secs_f64(),
                i.length.as_secs_f64(),
                max as f64 / 1e6,
                b64.encode(bytes)
            );
        }
    }
    out
}
