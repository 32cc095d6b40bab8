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
            ("corrected", &i.corrected_v2, i.corrected.max),
            ("service", &i.service_v2, i.service.max),
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

/// One interval read back from a log.
#[derive(Debug)]
pub struct ReadInterval {
    /// The tag (`corrected`, `service`), if any.
    pub tag: Option<String>,
    /// Start, seconds from the log's base time.
    pub start_s: f64,
    /// The interval's histogram (values as written: nanoseconds for gwbench's logs).
    pub hist: hdrhistogram::Histogram<u64>,
}

/// Reads every interval of an interval log (gwbench's or any v1.2/v1.3 writer's).
pub fn read(log: &[u8]) -> Result<Vec<ReadInterval>, String> {
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(log) {
        match entry.map_err(|e| format!("not an interval log ({e:?})"))? {
            LogEntry::Interval(i) => {
                let bytes = b64
                    .decode(i.encoded_histogram())
                    .map_err(|e| format!("bad base64 in an interval: {e}"))?;
                let hist: hdrhistogram::Histogram<u64> = de
                    .deserialize(&mut bytes.as_slice())
                    .map_err(|e| format!("bad histogram in an interval: {e:?}"))?;
                out.push(ReadInterval {
                    tag: i.tag().map(|t| t.as_str().to_string()),
                    start_s: i.start_timestamp().as_secs_f64(),
                    hist,
                });
            }
            LogEntry::StartTime(_) | LogEntry::BaseTime(_) => {}
        }
    }
    Ok(out)
}

/// A histogram from its base64 V2 (+ deflate) form, as a log line or the load JSON holds it.
pub fn decode_histogram(b64: &str) -> Result<hdrhistogram::Histogram<u64>, String> {
    use hdrhistogram::serialization::Deserializer;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64 in a histogram: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("bad histogram: {e:?}"))
}

/// Adds the intervals tagged `tag` into one (auto-resizing) histogram: percentiles of the whole
/// come from the merged counts, never from averaging the intervals' percentiles.
pub fn merge<'a>(
    intervals: impl IntoIterator<Item = &'a ReadInterval>,
    tag: &str,
) -> hdrhistogram::Histogram<u64> {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant figures");
    for i in intervals {
        if i.tag.as_deref() == Some(tag) {
            let _ = h.add(&i.hist);
        }
    }
    h
}
