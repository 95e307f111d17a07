//! Reading another process's state from /proc.

use std::collections::BTreeMap;
use std::path::PathBuf;

use nix::unistd::Pid;

/// `/proc/<pid>/status` (or a task's), as key -> value.
#[derive(Debug)]
pub(crate) struct Status {
    path: String,
    fields: BTreeMap<String, String>,
}

impl Status {
    pub(crate) fn of(pid: Pid) -> Status {
        Status::read(format!("/proc/{pid}/status"))
    }

    pub(crate) fn of_task(pid: Pid, tid: i32) -> Status {
        Status::read(format!("/proc/{pid}/task/{tid}/status"))
    }

    fn read(path: String) -> Status {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let fields = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect();
        Status { path, fields }
    }

    /// A field with its whitespace normalised to single spaces.
    pub(crate) fn get(&self, key: &str) -> &str {
        self.fields.get(key).unwrap_or_else(|| panic!("{}: no {key} field", self.path))
    }
}

/// Thread ids of a process.
pub(crate) fn tasks(pid: Pid) -> Vec<i32> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// Open descriptors of a process.
pub(crate) fn fds(pid: Pid) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// Where a /proc link (`root`, `cwd`) of a process points.
pub(crate) fn link(pid: Pid, name: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/{name}")).expect("readlink")
}

/// (soft, hard) of a line of `/proc/<pid>/limits`, e.g. "Max core file size".
pub(crate) fn limit(pid: Pid, name: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in limits:\n{text}"));
    let mut words = line[name.len()..].split_whitespace();
    let soft = words.next().expect("soft").to_owned();
    let hard = words.next().expect("hard").to_owned();
    (soft, hard)
}

/// Threads of the calling process.
pub(crate) fn own_threads() -> usize {
    tasks(Pid::this()).len()
}
