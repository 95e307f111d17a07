//! Seccomp policies: reviewed data, one file per process role, embedded in the binary.
//!
//! Each role's allow-list lives in `sandbox/seccomp/<role>.json` (`netd`, `keyd`, and
//! `parent` for the parent once it has set everything up), in seccompiler's JSON format:
//! one filter named after the role, `mismatch_action` `kill_process`, `match_action` `allow`, and
//! one rule per syscall (several rules for one syscall when each constrains arguments differently;
//! the rules of one syscall are or-ed, the conditions of one rule are and-ed).
//!
//! On top of seccompiler's format this module enforces, before compiling:
//! - every rule carries a non-empty `"comment"` saying why the syscall is needed;
//! - the actions are exactly `kill_process` / `allow`: the data cannot weaken the default;
//! - a rule may carry `"arch": ["x86_64"]` for a syscall that exists on one architecture only
//!   (`poll` and `epoll_wait` exist on `x86_64` only; glibc uses `ppoll` / `epoll_pwait` on
//!   aarch64); the field is removed before seccompiler sees the file;
//! - a syscall listed more than once must have argument conditions in every rule (seccompiler
//!   would silently drop an unconditional rule next to a conditional one);
//! - an empty filter is an error.

use std::collections::BTreeMap;
use std::fmt;

use seccompiler::{BpfProgram, TargetArch};
use serde_json::{Map, Value};

use crate::Role;

/// The processes with a seccomp policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The network worker.
    Netd,
    /// The key worker.
    Keyd,
    /// The parent, after setup.
    Parent,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Self; 3] = [Self::Netd, Self::Keyd, Self::Parent];

    /// The filter's name in its file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Netd => "netd",
            Self::Keyd => "keyd",
            Self::Parent => "parent",
        }
    }
}

impl From<Role> for Policy {
    fn from(role: Role) -> Self {
        match role {
            Role::Netd => Self::Netd,
            Role::Keyd => Self::Keyd,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The architectures the policies are written and tested for.
pub const SUPPORTED_ARCHES: [&str; 2] = ["x86_64", "aarch64"];

/// Why a policy could not be turned into a filter. Every variant is fatal for the jail.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The running (or requested) architecture has no reviewed policy.
    #[error("no seccomp policy for architecture {0:?} (supported: x86_64, aarch64)")]
    UnsupportedArch(String),
    /// The file is not valid JSON.
    #[error("policy {role}: invalid JSON: {source}")]
    Json {
        /// Filter name.
        role: String,
        /// Parser error.
        source: serde_json::Error,
    },
    /// The JSON does not have the expected shape.
    #[error("policy {role}: {problem}")]
    Shape {
        /// Filter name.
        role: String,
        /// What is wrong.
        problem: String,
    },
    /// The default action is not `kill_process` or the match action is not `allow`.
    #[error(
        "policy {role}: mismatch_action must be \"kill_process\" and match_action \"allow\", \
         got {mismatch} / {matched}"
    )]
    Actions {
        /// Filter name.
        role: String,
        /// The file's mismatch action.
        mismatch: String,
        /// The file's match action.
        matched: String,
    },
    /// No rule is left for this architecture.
    #[error("policy {role}: the filter is empty for {arch}")]
    Empty {
        /// Filter name.
        role: String,
        /// Architecture compiled for.
        arch: String,
    },
    /// A rule has no reason.
    #[error("policy {role}: syscall {syscall:?} has no \"comment\" saying why it is allowed")]
    MissingReason {
        /// Filter name.
        role: String,
        /// Syscall name of the rule.
        syscall: String,
    },
    /// A syscall is listed twice without conditions.
    #[error(
        "policy {role}: syscall {syscall:?} is listed more than once; that is only allowed when \
         every rule for it has argument conditions"
    )]
    Duplicate {
        /// Filter name.
        role: String,
        /// Syscall name.
        syscall: String,
    },
    /// A rule names an architecture that is not supported.
    #[error("policy {role}: syscall {syscall:?} names unknown architecture {arch:?}")]
    UnknownArch {
        /// Filter name.
        role: String,
        /// Syscall name.
        syscall: String,
        /// The unknown architecture.
        arch: String,
    },
    /// seccompiler rejected the filter (unknown syscall name, bad condition, ...).
    #[error("policy {role}: seccompiler: {source}")]
    Compile {
        /// Filter name.
        role: String,
        /// seccompiler's error.
        source: seccompiler::Error,
    },
}

/// One allowed syscall as written in the policy, with the reason it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Syscall name, as in the kernel's tables.
    pub syscall: String,
    /// Why the syscall is allowed.
    pub reason: String,
    /// Whether the rule constrains arguments.
    pub constrained: bool,
}

/// The embedded policy text of a process.
pub fn source(policy: impl Into<Policy>) -> &'static str {
    match policy.into() {
        Policy::Netd => include_str!("../seccomp/netd.json"),
        Policy::Keyd => include_str!("../seccomp/keyd.json"),
        Policy::Parent => include_str!("../seccomp/parent.json"),
    }
}

/// The validated rules of a process's policy for an architecture, in file order.
pub fn rules(policy: impl Into<Policy>, arch: &str) -> Result<Vec<Rule>, PolicyError> {
    let policy = policy.into();
    Ok(select(policy.name(), source(policy), arch)?.1)
}

/// Compiles a process's policy for the running architecture.
pub fn compile(policy: impl Into<Policy>) -> Result<BpfProgram, PolicyError> {
    compile_for(policy, std::env::consts::ARCH)
}

/// Compiles a process's policy for a given architecture (any supported one, on any host).
pub fn compile_for(policy: impl Into<Policy>, arch: &str) -> Result<BpfProgram, PolicyError> {
    let policy = policy.into();
    compile_source(policy.name(), source(policy), arch)
}

/// Validates and compiles a policy text whose single filter is named `name`.
pub fn compile_source(name: &str, text: &str, arch: &str) -> Result<BpfProgram, PolicyError> {
    let target = target_arch(arch)?;
    let (json, _) = select(name, text, arch)?;
    let compiled = seccompiler::compile_from_json(json.as_bytes(), target)
        .map_err(|source| PolicyError::Compile { role: name.to_owned(), source })?;
    let program =
        compiled.into_iter().find_map(|(filter, program)| (filter == name).then_some(program)).unwrap_or_default();
    if program.is_empty() {
        return Err(PolicyError::Empty { role: name.to_owned(), arch: arch.to_owned() });
    }
    Ok(program)
}

fn target_arch(arch: &str) -> Result<TargetArch, PolicyError> {
    if !SUPPORTED_ARCHES.contains(&arch) {
        return Err(PolicyError::UnsupportedArch(arch.to_owned()));
    }
    TargetArch::try_from(arch).map_err(|_| PolicyError::UnsupportedArch(arch.to_owned()))
}

/// Checks the policy text and keeps the rules for `arch`. Returns seccompiler JSON (without the
/// `arch` fields) and the rule list.
fn select(name: &str, text: &str, arch: &str) -> Result<(String, Vec<Rule>), PolicyError> {
    target_arch(arch)?;
    let shape = |problem: &dyn fmt::Display| PolicyError::Shape { role: name.to_owned(), problem: problem.to_string() };
    let mut top: Map<String, Value> =
        serde_json::from_str(text).map_err(|source| PolicyError::Json { role: name.to_owned(), source })?;
    if top.len() != 1 || !top.contains_key(name) {
        let names: Vec<&String> = top.keys().collect();
        return Err(shape(&format_args!("the file must hold exactly one filter, named {name:?}; found {names:?}")));
    }
    let Some(Value::Object(filter)) = top.get_mut(name) else {
        return Err(shape(&"the filter must be a JSON object"));
    };
    let action = |key: &str| filter.get(key).and_then(Value::as_str).unwrap_or("<missing>").to_owned();
    let (mismatch, matched) = (action("mismatch_action"), action("match_action"));
    if mismatch != "kill_process" || matched != "allow" {
        return Err(PolicyError::Actions { role: name.to_owned(), mismatch, matched });
    }
    let Some(Value::Array(all_rules)) = filter.get_mut("filter") else {
        return Err(shape(&"\"filter\" must be an array of rules"));
    };

    let mut kept = Vec::with_capacity(all_rules.len());
    let mut rules = Vec::with_capacity(all_rules.len());
    // syscall -> (rules seen, all of them constrained)
    let mut seen: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    for mut rule in all_rules.drain(..) {
        let Value::Object(fields) = &mut rule else {
            return Err(shape(&"every rule must be a JSON object"));
        };
        let Some(syscall) = fields.get("syscall").and_then(Value::as_str).map(str::to_owned) else {
            return Err(shape(&"every rule needs a \"syscall\" string"));
        };
        let reason = fields.get("comment").and_then(Value::as_str).map(str::trim).unwrap_or_default().to_owned();
        if reason.is_empty() {
            return Err(PolicyError::MissingReason { role: name.to_owned(), syscall });
        }
        if let Some(arches) = fields.remove("arch") {
            let Value::Array(arches) = arches else {
                return Err(shape(&format_args!("{syscall}: \"arch\" must be an array")));
            };
            let mut applies = false;
            for a in &arches {
                let a = a.as_str().unwrap_or_default();
                if !SUPPORTED_ARCHES.contains(&a) {
                    return Err(PolicyError::UnknownArch { role: name.to_owned(), syscall, arch: a.to_owned() });
                }
                applies |= a == arch;
            }
            if !applies {
                continue;
            }
        }
        let constrained = fields.get("args").and_then(Value::as_array).is_some_and(|args| !args.is_empty());
        let entry = seen.entry(syscall.clone()).or_insert((0, true));
        entry.0 += 1;
        entry.1 &= constrained;
        if entry.0 > 1 && !entry.1 {
            return Err(PolicyError::Duplicate { role: name.to_owned(), syscall });
        }
        rules.push(Rule { syscall, reason, constrained });
        kept.push(rule);
    }
    if kept.is_empty() {
        return Err(PolicyError::Empty { role: name.to_owned(), arch: arch.to_owned() });
    }
    *all_rules = kept;
    Ok((Value::Object(top).to_string(), rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Policy; 3] = Policy::ALL;

    /// Syscalls no worker may ever make once jailed: file access, new sockets, process creation
    /// and replacement, debugging, identity changes, kernel-state changes.
    const NEVER: &[&str] = &[
        "open",
        "openat",
        "openat2",
        "creat",
        "execve",
        "execveat",
        "fork",
        "vfork",
        "clone",
        "clone3",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "socket",
        "socketpair",
        "connect",
        "bind",
        "listen",
        "accept",
        "accept4",
        "setuid",
        "setgid",
        "setresuid",
        "setresgid",
        "setgroups",
        "capset",
        "prctl",
        "seccomp",
        "chroot",
        "chdir",
        "fchdir",
        "mount",
        "umount2",
        "pivot_root",
        "unshare",
        "setns",
        "kill",
        "tkill",
        "ioctl",
        "pkey_mprotect",
        "memfd_create",
        "userfaultfd",
        "perf_event_open",
        "bpf",
        "io_uring_setup",
        "keyctl",
        "add_key",
        "request_key",
        "init_module",
        "finit_module",
        "kexec_load",
        "reboot",
        "epoll_create1",
        "epoll_create",
        "dup",
        "dup2",
        "dup3",
        "mknod",
        "mknodat",
        "unlinkat",
        "renameat2",
        "linkat",
        "symlinkat",
        "mkdirat",
        "statx",
        "newfstatat",
        "fstat",
    ];

    /// Of [`NEVER`], what the parent alone may do: accept control clients, remove its
    /// control socket at exit (chrooted into the run directory), reap its children.
    const PARENT_ONLY: &[&str] = &["accept4", "unlink", "unlinkat"];

    /// Syscalls netd needs and keyd must not have.
    const NETD_ONLY: &[&str] = &["readv", "writev", "recvmmsg", "sendmmsg", "epoll_wait", "epoll_pwait", "epoll_ctl"];

    #[test]
    fn every_policy_compiles_on_every_arch() {
        for role in ROLES {
            for arch in SUPPORTED_ARCHES {
                let program = compile_for(role, arch).expect("policy compiles");
                assert!(!program.is_empty(), "{role} on {arch}");
            }
        }
    }

    #[test]
    fn running_arch_is_supported() {
        for role in ROLES {
            compile(role).expect("the build machine's architecture has a policy");
        }
    }

    #[test]
    fn every_rule_has_a_reason_and_nothing_dangerous_is_allowed() {
        for role in ROLES {
            for arch in SUPPORTED_ARCHES {
                for rule in rules(role, arch).expect("valid policy") {
                    assert!(rule.reason.len() > 10, "{role}/{arch}: {} has a weak reason", rule.syscall);
                    let parent_may = role == Policy::Parent && PARENT_ONLY.contains(&rule.syscall.as_str());
                    assert!(parent_may || !NEVER.contains(&rule.syscall.as_str()), "{role} allows {}", rule.syscall);
                    if role == Policy::Keyd {
                        assert!(!NETD_ONLY.contains(&rule.syscall.as_str()), "keyd allows {}", rule.syscall);
                    }
                }
            }
        }
    }

    #[test]
    fn executable_memory_and_fcntl_are_constrained() {
        for role in ROLES {
            for arch in SUPPORTED_ARCHES {
                for rule in rules(role, arch).expect("valid policy") {
                    if ["mmap", "mprotect", "fcntl", "tgkill", "rt_sigaction"].contains(&rule.syscall.as_str()) {
                        assert!(rule.constrained, "{role}/{arch}: {} must constrain arguments", rule.syscall);
                    }
                }
            }
        }
    }

    #[test]
    fn arch_specific_rules_are_selected() {
        let names = |role: Role, arch| -> Vec<String> {
            rules(role, arch).expect("valid").into_iter().map(|r| r.syscall).collect()
        };
        let x86 = names(Role::Netd, "x86_64");
        let arm = names(Role::Netd, "aarch64");
        assert!(x86.iter().any(|s| s == "poll") && x86.iter().any(|s| s == "epoll_wait"));
        assert!(!arm.iter().any(|s| s == "poll" || s == "epoll_wait"));
        // Apart from the legacy x86_64 syscalls, both architectures allow the same set.
        let x86_rest: Vec<_> = x86.iter().filter(|s| *s != "poll" && *s != "epoll_wait").collect();
        assert_eq!(x86_rest, arm.iter().collect::<Vec<_>>());
    }

    fn filter(rules: &str) -> String {
        format!(r#"{{"t": {{"mismatch_action": "kill_process", "match_action": "allow", "filter": [{rules}]}}}}"#)
    }

    #[test]
    fn empty_filter_is_an_error() {
        let err = compile_source("t", &filter(""), "x86_64").expect_err("empty");
        assert!(matches!(err, PolicyError::Empty { .. }), "{err}");
        // A filter whose only rule is for another architecture is empty too.
        let text = filter(r#"{"syscall": "poll", "arch": ["x86_64"], "comment": "event loop"}"#);
        let err = compile_source("t", &text, "aarch64").expect_err("empty on aarch64");
        assert!(matches!(err, PolicyError::Empty { .. }), "{err}");
        compile_source("t", &text, "x86_64").expect("one rule on x86_64");
    }

    #[test]
    fn a_rule_without_reason_is_an_error() {
        for rule in [r#"{"syscall": "read"}"#, r#"{"syscall": "read", "comment": "  "}"#] {
            let err = compile_source("t", &filter(rule), "x86_64").expect_err("no reason");
            assert!(matches!(err, PolicyError::MissingReason { .. }), "{err}");
        }
    }

    #[test]
    fn weaker_actions_are_an_error() {
        let text = r#"{"t": {"mismatch_action": "log", "match_action": "allow",
            "filter": [{"syscall": "read", "comment": "because"}]}}"#;
        let err = compile_source("t", text, "x86_64").expect_err("log");
        assert!(matches!(err, PolicyError::Actions { .. }), "{err}");
    }

    #[test]
    fn unconditional_duplicate_is_an_error() {
        let text = filter(
            r#"{"syscall": "fcntl", "comment": "all"},
               {"syscall": "fcntl", "comment": "some",
                "args": [{"index": 1, "type": "dword", "op": "eq", "val": 3}]}"#,
        );
        let err = compile_source("t", &text, "x86_64").expect_err("duplicate");
        assert!(matches!(err, PolicyError::Duplicate { .. }), "{err}");
    }

    #[test]
    fn unknown_syscalls_and_arches_are_errors() {
        let err = compile_source("t", &filter(r#"{"syscall": "poll", "comment": "x"}"#), "aarch64")
            .expect_err("no poll on aarch64");
        assert!(matches!(err, PolicyError::Compile { .. }), "{err}");
        let err = compile_source("t", &filter(r#"{"syscall": "read", "arch": ["sparc"], "comment": "x"}"#), "x86_64")
            .expect_err("sparc");
        assert!(matches!(err, PolicyError::UnknownArch { .. }), "{err}");
        let err = compile_for(Role::Netd, "riscv64").expect_err("riscv64 not reviewed");
        assert!(matches!(err, PolicyError::UnsupportedArch(_)), "{err}");
    }

    /// The parent keeps only what supervision needs: no way to open, create, execute or
    /// signal anything, no socket of its own making, no privilege change.
    #[test]
    fn the_parent_policy_is_the_workers_plus_little() {
        for arch in SUPPORTED_ARCHES {
            let parent: Vec<String> =
                rules(Policy::Parent, arch).expect("valid").into_iter().map(|r| r.syscall).collect();
            for never in
                ["socket", "execve", "execveat", "clone", "clone3", "fork", "vfork", "kill", "ptrace", "openat"]
            {
                assert!(!parent.iter().any(|s| s == never), "the parent allows {never}");
            }
            let unlink = if arch == "x86_64" { "unlink" } else { "unlinkat" };
            for needed in ["accept4", "wait4", "sendmsg", "recvmsg", "sendto", "recvfrom", unlink] {
                assert!(parent.iter().any(|s| s == needed), "the parent needs {needed} on {arch}");
            }
        }
    }

    #[test]
    fn the_file_holds_exactly_the_role() {
        let err = compile_source("netd", source(Role::Keyd), "x86_64").expect_err("wrong name");
        assert!(matches!(err, PolicyError::Shape { .. }), "{err}");
    }
}
