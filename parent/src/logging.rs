//! Logging for all three processes: one line per event on standard error, which the
//! workers inherit from the parent.
//!
//! In the foreground a line reads `yavipind[PID] ROLE: message`. Under systemd (the parent
//! sees `JOURNAL_STREAM` and tells the workers with `--journal`), each line instead starts
//! with its syslog priority, `<3>` to `<7>` (sd-daemon(3)), so journald files it under the
//! right level and no syslog socket is needed inside the workers' jail. Levels: error,
//! warning, info by default, debug with `--verbose`. Secrets never reach a log line: the
//! secret types print as `..` and no code formats key bytes.

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where log lines go and how they look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// A terminal or a plain file: the process and role are named on each line.
    Foreground,
    /// journald: the line starts with the syslog priority.
    Journal,
}

impl Sink {
    /// journald when the parent's standard error is connected to it.
    pub fn detect() -> Self {
        if std::env::var_os("JOURNAL_STREAM").is_some() { Self::Journal } else { Self::Foreground }
    }
}

struct Logger {
    role: &'static str,
    sink: Sink,
    max: LevelFilter,
}

fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.max
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let marker = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info | Level::Debug | Level::Trace => "",
        };
        // One write per line, so lines of the three processes never interleave mid-line.
        let line = match self.sink {
            Sink::Journal => format!("<{}>{}: {}\n", priority(record.level()), self.role, record.args()),
            Sink::Foreground => format!("yavipind[{}] {}: {marker}{}\n", std::process::id(), self.role, record.args()),
        };
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger for `role` ("parent", "netd" or "keyd").
pub fn init(role: &'static str, sink: Sink, verbose: bool) {
    let max = if verbose { LevelFilter::Debug } else { LevelFilter::Info };
    if log::set_boxed_logger(Box::new(Logger { role, sink, max })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Debug), 7);
    }
}
