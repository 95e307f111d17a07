//! The manuals: yavipind.conf(5) documents exactly the keys the configuration parser
//! accepts, with the parser's defaults; every configuration shown in a manual parses; the
//! example matches docs/example.toml; yavipin(8) covers every subcommand; and the roff is
//! clean for mandoc and groff.
//!
//! The accepted keys are derived from the parser itself, not from a list kept here: each
//! table is probed with an unknown key, and the parser's "unknown field, expected one of"
//! error lists the fields it accepts there.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{have, repo, run, text};
use yavipin_parent::config::Config;

const PAGES: [&str; 3] = ["man/yavipind.8", "man/yavipind.conf.5", "man/yavipin.8"];
const CONF_PAGE: &str = "man/yavipind.conf.5";

/// Keys by table; the top level is the table "".
type Keys = BTreeMap<String, BTreeSet<String>>;

fn page(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Undoes the roff escapes the manuals use in literal text.
fn unescape(roff: &str) -> String {
    let text = roff.replace("\\(dq", "\"").replace("\\(ga", "`").replace("\\-", "-").replace("\\&", "");
    text.replace("\\e", "\\")
}

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("probe.toml"), text).map_err(|e| e.to_string())
}

// ---- What the manual documents ----

/// A key's documented default: table, key, TOML value.
struct Default {
    table: String,
    key: String,
    value: String,
}

/// The keys of yavipind.conf(5): each `.It Ic key` under the `.Ss` heading of its table
/// (`.Ss Top-level keys`, or a heading naming `[table]`); a table named in a heading is
/// also a documented top-level key. Also the defaults given as "The default is" and a
/// `.Ql value` line.
fn documented() -> (Keys, Vec<Default>) {
    let text = page(CONF_PAGE);
    let mut keys = Keys::new();
    let mut defaults = Vec::new();
    let mut table: Option<String> = None;
    let mut key: Option<String> = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(heading) = line.strip_prefix(".Ss ") {
            key = None;
            table = if heading == "Top-level keys" {
                Some(String::new())
            } else if let Some((_, rest)) = heading.split_once('[') {
                let name = rest.split_once(']').expect("a closed [table] in the heading").0.to_owned();
                keys.entry(String::new()).or_default().insert(name.clone());
                Some(name)
            } else {
                None
            };
            if let Some(table) = &table {
                keys.entry(table.clone()).or_default();
            }
        } else if line.starts_with(".Sh ") {
            (table, key) = (None, None);
        } else if let Some(rest) = line.strip_prefix(".It Ic ") {
            let name = rest.split_whitespace().next().expect("a key name").to_owned();
            let table = table.as_ref().unwrap_or_else(|| panic!("key {name} documented outside a table heading"));
            assert!(keys.entry(table.clone()).or_default().insert(name.clone()), "{name} documented twice");
            key = Some(name);
        } else if line == "The default is" {
            let next = lines.next().unwrap_or_default();
            let value =
                next.strip_prefix(".Ql ").unwrap_or_else(|| panic!("`The default is` then `.Ql value`: {next}"));
            let value = unescape(value.strip_suffix(" .").unwrap_or(value));
            let key = key.clone().expect("a default belongs to a key");
            defaults.push(Default { table: table.clone().expect("in a table"), key, value });
        }
    }
    (keys, defaults)
}

// ---- What the parser accepts ----

const BOGUS: &str = "yavipin_undocumented_probe";

/// The fields the parser accepts in `table` ("" for the top level), or `None` if `table`
/// is not a table: the parser's error for an unknown key lists them.
fn accepted_fields(table: &str) -> Option<BTreeSet<String>> {
    let probe = if table.is_empty() { format!("{BOGUS} = 1\n") } else { format!("[{table}]\n{BOGUS} = 1\n") };
    let error = parse(&probe).expect_err("an unknown key is refused");
    let rest = error.split_once(&format!("unknown field `{BOGUS}`, "))?.1;
    let fields = if let Some(list) = rest.strip_prefix("expected one of ") {
        list
    } else if let Some(one) = rest.strip_prefix("expected ") {
        one
    } else {
        assert!(rest.starts_with("there are no fields"), "unexpected error: {error}");
        ""
    };
    // serde: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`".
    let names = fields.split(", ").flat_map(|f| f.split(" or "));
    Some(names.filter(|f| !f.is_empty()).map(|f| f.trim().trim_matches('`').to_owned()).collect())
}

/// Every table and its fields, from the parser: the top level, and each top-level field
/// that turns out to be a table.
fn accepted() -> Keys {
    let top = accepted_fields("").expect("the top level is a table");
    let mut keys = Keys::new();
    for field in &top {
        if let Some(fields) = accepted_fields(field) {
            keys.insert(field.clone(), fields);
        }
    }
    keys.insert(String::new(), top);
    keys
}

#[test]
fn the_probe_finds_the_parsers_tables() {
    // A sanity check of the method, not a list to keep up to date: the two required
    // fields are found, in the right places.
    let keys = accepted();
    assert!(keys[""].contains("key_file"));
    assert!(keys["interface"].contains("addresses"));
    assert!(!keys.contains_key("key_file"), "a string is not a table");
}

#[test]
fn the_manual_documents_exactly_the_accepted_keys() {
    let (documented, _) = documented();
    let accepted = accepted();
    for (table, fields) in &accepted {
        let docs = documented.get(table).unwrap_or_else(|| panic!("table [{table}] is not documented in {CONF_PAGE}"));
        let missing: Vec<_> = fields.difference(docs).collect();
        assert!(missing.is_empty(), "accepted in [{table}] but not documented in {CONF_PAGE}: {missing:?}");
    }
    for (table, docs) in &documented {
        let fields = accepted.get(table).unwrap_or_else(|| panic!("{CONF_PAGE} documents [{table}], not a table"));
        let unknown: Vec<_> = docs.difference(fields).collect();
        assert!(unknown.is_empty(), "documented in [{table}] but refused by the parser: {unknown:?}");
    }
}

/// docs/example.toml with every commented-out `#key = value` line enabled.
fn example_with_every_key() -> String {
    let example = fs::read_to_string(repo().join("docs/example.toml")).expect("example");
    example
        .lines()
        .map(|line| {
            let candidate = line.strip_prefix('#').unwrap_or(line);
            let is_setting = candidate
                .split_once(" = ")
                .is_some_and(|(key, _)| !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            if is_setting { candidate } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_configuration_setting_every_documented_key_parses() {
    let text = example_with_every_key();
    // Unknown keys are refused, so this proves each key set here is accepted...
    parse(&text).unwrap_or_else(|e| panic!("the example with every key enabled is refused: {e}\n{text}"));
    // ...and here is what it sets, which must be every documented key.
    let table: toml::Table = toml::from_str(&text).expect("TOML");
    let mut set = Keys::new();
    for (key, value) in &table {
        set.entry(String::new()).or_default().insert(key.clone());
        if let toml::Value::Table(inner) = value {
            set.insert(key.clone(), inner.keys().cloned().collect());
        }
    }
    let (documented, _) = documented();
    assert_eq!(set, documented, "docs/example.toml should show every documented key, set or commented out");
}

#[test]
fn the_documented_defaults_are_the_parsers() {
    let (_, defaults) = documented();
    assert!(defaults.len() >= 8, "defaults found: {}", defaults.len());
    let config = |extra: Option<&Default>| {
        let mut text = String::new();
        let mut tables: BTreeMap<&str, String> = BTreeMap::new();
        tables.insert("interface", "addresses = [\"10.99.0.1/30\"]\n".to_owned());
        text.push_str("key_file = \"/etc/yavipin/home.key\"\n");
        if let Some(d) = extra {
            let line = format!("{} = {}\n", d.key, d.value);
            if d.table.is_empty() { text.push_str(&line) } else { tables.entry(&d.table).or_default().push_str(&line) }
        }
        for (table, body) in tables {
            text.push_str(&["[", table, "]\n", &body].concat());
        }
        parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    };
    let plain = config(None);
    for d in &defaults {
        assert_eq!(config(Some(d)), plain, "{CONF_PAGE}: the default of {} is not {}", d.key, d.value);
    }
}

/// The `.Bd -literal` blocks of a manual, unescaped.
fn literal_blocks(path: &str) -> Vec<String> {
    let text = page(path);
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        if line.starts_with(".Bd -literal") {
            current = Some(Vec::new());
        } else if line == ".Ed" {
            if let Some(lines) = current.take() {
                blocks.push(unescape(&(lines.join("\n") + "\n")));
            }
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    blocks
}

#[test]
fn every_configuration_in_the_manuals_parses() {
    let mut seen = 0;
    for path in ["man/yavipind.8", CONF_PAGE] {
        for block in literal_blocks(path).iter().filter(|b| b.lines().any(|l| l.starts_with("key_file = "))) {
            parse(block).unwrap_or_else(|e| panic!("{path}: a configuration does not parse: {e}\n{block}"));
            seen += 1;
        }
    }
    assert!(seen >= 5, "configurations found: {seen}");
}

#[test]
fn the_manuals_example_is_docs_example_toml() {
    let example = fs::read_to_string(repo().join("docs/example.toml")).expect("example");
    let first = example.lines().next().expect("non-empty");
    let blocks = literal_blocks(CONF_PAGE);
    let block = blocks
        .iter()
        .find(|b| b.starts_with(first))
        .unwrap_or_else(|| panic!("{CONF_PAGE} has no block starting like docs/example.toml: {first}"));
    for (n, (ours, theirs)) in block.lines().zip(example.lines()).enumerate() {
        assert_eq!(ours, theirs, "{CONF_PAGE} differs from docs/example.toml at its line {}", n + 1);
    }
    assert_eq!(block.lines().count(), example.lines().count(), "{CONF_PAGE}: example length differs");
}

#[test]
fn yavipin_8_documents_every_subcommand() {
    let help = text(&run(["--help"]).stdout);
    let list = help.split("Commands:\n").nth(1).expect("Commands:");
    let manual = page("man/yavipin.8");
    for command in list.lines().take_while(|l| l.starts_with("  ")).filter_map(|l| l.split_whitespace().next()) {
        if command != "help" {
            assert!(manual.lines().any(|l| l == format!(".Cm {command}")), "yavipin.8 has no synopsis for {command}");
            assert!(manual.lines().any(|l| l.starts_with(&format!(".It Cm {command}"))), "no entry for {command}");
        }
    }
}

/// The block of yavipin(8) whose first line is `# PATH`, without that line, and the name.
fn unit_in_yavipin_8(path: &str) -> (String, String) {
    let block = literal_blocks("man/yavipin.8")
        .into_iter()
        .find(|b| b.starts_with(&format!("# {path}\n")))
        .unwrap_or_else(|| panic!("yavipin.8 has no block for {path}"));
    let name = Path::new(path).file_name().expect("a file name").to_string_lossy().into_owned();
    (name, block.split_once('\n').expect("lines").1.to_owned())
}

#[test]
fn the_metrics_timer_of_yavipin_8_is_valid_and_its_service_writes_the_metrics_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (service_name, service) = unit_in_yavipin_8("/etc/systemd/system/yavipin-metrics.service");
    let (timer_name, timer) = unit_in_yavipin_8("/etc/systemd/system/yavipin-metrics.timer");
    let (service_path, timer_path) = (dir.path().join(&service_name), dir.path().join(&timer_name));
    fs::write(&service_path, &service).expect("write");
    fs::write(&timer_path, &timer).expect("write");
    if have("systemd-analyze") {
        let out = Command::new("systemd-analyze").arg("verify").arg(&service_path).arg(&timer_path).output();
        let out = out.expect("run systemd-analyze");
        let report = text(&out.stdout) + &text(&out.stderr);
        assert!(out.status.success() && report.is_empty(), "systemd-analyze verify:\n{report}");
    } else {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
    }

    // The service's command, run as systemd would (continued lines joined), into a scratch
    // directory in place of node_exporter's, with this build's yavipin.
    let joined = service.replace("\\\n", " ");
    let exec = joined.lines().find_map(|l| l.strip_prefix("ExecStart=/bin/sh -c '")).expect("ExecStart=/bin/sh -c");
    let command = exec.strip_suffix('\'').expect("a quoted command");
    let collector = tempfile::tempdir().expect("tempdir");
    let command = command.replace("/var/lib/prometheus/node-exporter", &collector.path().display().to_string());
    let path =
        format!("{}:{}", common::yavipin().parent().expect("dir").display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("/bin/sh").arg("-c").arg(&command).env("PATH", path).output().expect("run sh");
    assert!(out.status.success(), "{command}: {}", text(&out.stderr));
    let written: Vec<String> = fs::read_dir(collector.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, ["yavipin.prom"], "only the finished file is left");
    let metrics = fs::read_to_string(collector.path().join("yavipin.prom")).expect("read");
    let scrape = yavipin_tests::exposition::parse(&metrics);
    assert!(yavipin_tests::exposition::has_help(&scrape, "yavipin_tunnel_up"), "{metrics}");
}

#[test]
fn mandoc_finds_nothing_to_warn_about() {
    if !have("mandoc") {
        eprintln!("SKIPPED: mandoc is not installed (apt-get install mandoc)");
        return;
    }
    for path in PAGES {
        // Warnings and errors; style hints about pages not installed here are left out.
        let out = Command::new("mandoc").args(["-T", "lint", "-W", "warning"]).arg(repo().join(path)).output();
        let out = out.expect("run mandoc");
        let report = text(&out.stdout) + &text(&out.stderr);
        assert!(out.status.success() && report.is_empty(), "mandoc -T lint {path}:\n{report}");
    }
}

#[test]
fn groff_finds_nothing_to_warn_about() {
    if !have("groff") {
        eprintln!("SKIPPED: groff is not installed (apt-get install groff-base)");
        return;
    }
    for path in PAGES {
        let out = Command::new("groff").args(["-mdoc", "-ww", "-z"]).arg(repo().join(path)).output();
        let out = out.expect("run groff");
        let report = text(&out.stdout) + &text(&out.stderr);
        assert!(out.status.success() && report.is_empty(), "groff -mdoc -ww {path}:\n{report}");
    }
}
