//! Shared helpers of HyperCode's benchmark programs. The programs live in `src/bin/`; `bench/run`
//! builds and drives them and writes `BENCHMARKS.md`. Each prints one JSON object on stdout.

use std::time::Duration;

/// The server a program talks to over HTTP: `--url` and `--key` (or `HC_KEY`), flattened into
/// each program's arguments.
#[derive(Debug, clap::Args)]
// Without this, the doc comment above would become the help text of every program using it.
#[command(about = None, long_about = None)]
pub struct Server {
    /// Server base URL, e.g. http://127.0.0.1:8000
    #[arg(long)]
    pub url: String,
    /// API key.
    #[arg(long, env = "HC_KEY")]
    pub key: String,
}

impl Server {
    /// The absolute URL of `path` (which starts with `/`) on this server.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }
}

/// Percentile (0..=100) of already sorted samples, by nearest rank; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50/p90/p99/max of a set of millisecond samples, as JSON.
pub fn summary(mut samples: Vec<f64>) -> serde_json::Value {
    samples.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "n": samples.len(),
        "p50": percentile(&samples, 50.0),
        "p90": percentile(&samples, 90.0),
        "p99": percentile(&samples, 99.0),
        "max": samples.last(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
