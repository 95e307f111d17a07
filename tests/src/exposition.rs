//! Reading the Prometheus text exposition format back, for the tests of
//! `yavipin show --metrics`: the prometheus-parse crate for the values, and the Prometheus
//! project's own checker, `promtool check metrics`, for the format and its naming rules.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Parses `text`, failing the test if the parser passed over any sample line (it skips
/// what it cannot read rather than refusing it).
pub fn parse(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parse");
    let sample_lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
    assert_eq!(scrape.samples.len(), sample_lines, "lines the parser did not take:\n{text}");
    scrape
}

/// The value of the sample of `name` with exactly `labels`, if there is one.
pub fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let sample = scrape.samples.iter().find(|s| {
        s.metric == name && s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
    })?;
    match sample.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => Some(v),
        ref other => panic!("{name}: not a counter or gauge: {other:?}"),
    }
}

/// Whether `scrape` documents `name` with a `# HELP` line.
pub fn has_help(scrape: &prometheus_parse::Scrape, name: &str) -> bool {
    scrape.docs.contains_key(name)
}

/// `promtool`: `$PROMTOOL`, or the first in PATH. `.ci/run` provides it; without it the
/// callers skip the check loudly.
pub fn promtool() -> Option<PathBuf> {
    let named = std::env::var_os("PROMTOOL").map(PathBuf::from).filter(|p| p.is_file());
    named.or_else(|| {
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths).map(|dir| dir.join("promtool")).find(|p| p.is_file())
    })
}

/// Runs `promtool check metrics` on `text`: `Err` with what it said unless it accepted the
/// text without a word (it prints lint problems, such as a counter without `_total`).
pub fn promtool_check(promtool: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("piped").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() && said.trim().is_empty() { Ok(()) } else { Err(said) }
}
