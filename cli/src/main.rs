//! yavipin: the administration tool of the yavipind VPN daemon. It generates pre-shared
//! keys, validates configuration files, shows running tunnels' state (as text, JSON or
//! Prometheus metrics) and prints its own shell completions. It needs no privilege beyond
//! access to the files and control sockets it is given.

#![forbid(unsafe_code)]

mod check;
mod completion;
mod genkey;
mod metrics;
mod show;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

const ABOUT: &str = "Administration tool of yavipind: generate keys, check configurations, show tunnels";

// The long texts are wrapped by hand: clap prints them as they are.
const LONG_ABOUT: &str = "Administration tool of yavipind, the point-to-point VPN daemon.

`yavipin genkey` creates the pre-shared key both peers share, `yavipin check`
validates a tunnel's configuration and key file as the daemon will, and
`yavipin show` reports running tunnels' state. See yavipin(8), yavipind(8)
and yavipind.conf(5).

Example, setting up the tunnel `home` (the service yavipind@home reads
/etc/yavipin/home.toml):
    yavipin genkey /etc/yavipin/home.key
    cp /usr/share/doc/yavipin/example.toml /etc/yavipin/home.toml  # edit it
    yavipin check /etc/yavipin/home.toml
    systemctl enable --now yavipind@home";

const GENKEY_ABOUT: &str = "Generate a new pre-shared key into FILE (mode 0600), or to stdout with -";

const GENKEY_LONG_ABOUT: &str = "Generate a new 256-bit pre-shared key from the operating system's random
source and write it as 64 lowercase hexadecimal digits and a newline, the
format yavipind reads.

FILE is created with mode 0600 whatever the umask; it is never readable by
anyone else, not even for a moment. An existing FILE is never overwritten:
remove it first to replace a key (the peer then needs the new key too).
With `-` as FILE, the key goes to standard output.

yavipind accepts only a key file owned by root with mode 0600 or 0400: run
this as root, or change the owner afterwards (chown root: FILE).

Both peers use the same key: copy it to the other host over a secure channel
such as ssh, never by e-mail or chat, and never into a file others can read.

Example:
    yavipin genkey /etc/yavipin/home.key
    ssh root@peer 'umask 077; cat > /etc/yavipin/home.key' \\
        < /etc/yavipin/home.key";

const CHECK_ABOUT: &str = "Validate a configuration and its key file, as `yavipind --check` does";

const CHECK_LONG_ABOUT: &str = "Validate a tunnel's configuration file exactly as `yavipind --check -c FILE`
does: the TOML syntax, every key and value (unknown keys are errors), the key
file it names (present, a regular file, owned by root, mode 0600 or 0400,
64 hexadecimal digits) and the account the workers run as.

On success it prints one line and exits 0. Otherwise it prints what is wrong,
naming the file, line and column, and the key concerned, and exits 1.

Run it after each edit, before restarting the tunnel; the service unit runs
the same check before every start.

Example:
    yavipin check /etc/yavipin/home.toml";

const SHOW_ABOUT: &str = "Show running tunnels' state (peer, handshakes, epoch, MTU, traffic, drops)";

const SHOW_LONG_ABOUT: &str = "Show the state of the tunnel on DEVICE, or of every running tunnel, asked from
each running yavipind over its control socket /run/yavipin/DEVICE.sock:

  peer         the peer's current endpoint, address and port
  state        tunnel up or down, and whether the peer is reachable
  handshake    time since the last completed handshake; handshakes
               initiated and answered, and keyd's counters
  epoch        the current key epoch, in each direction
  mtu          the path MTU measured on the underlay
  transfer     packets and bytes, sent and received
  compression  the compression ratio achieved, when compression is on
  drops        packets dropped, by reason (malformed, bad MAC, replayed,
               unknown key, ...)

Without DEVICE, every tunnel whose daemon answers is shown, one block each
(in the order of their device names); with --short, one line each. With
--json, the same fields are printed as one JSON object for DEVICE, or as an
array of them for every tunnel. With --metrics, the counters are printed in
the Prometheus text format, labelled with the device (see yavipin(8) for a
timer that feeds node_exporter's textfile collector).

It never prints figures it did not get from a daemon: a DEVICE with no running
daemon is an error (exit 1), and so is a running tunnel that cannot be asked.

Example:
    yavipin show
    yavipin show --short
    yavipin show --json home0
    yavipin show --metrics";

const COMPLETION_ABOUT: &str = "Print the completion script of yavipin for a shell (bash, zsh or fish)";

const COMPLETION_LONG_ABOUT: &str = "Print the script that makes SHELL complete yavipin's commands and options,
for bash, zsh or fish. The Debian package and install.sh install all three
where those shells look for them; to load one by hand, for the current shell
only:

  bash   source <(yavipin completion bash)
  zsh    yavipin completion zsh > ~/.zfunc/_yavipin   (with ~/.zfunc in fpath)
  fish   yavipin completion fish | source

Example:
    yavipin completion bash > /etc/bash_completion.d/yavipin";

/// yavipin's command line.
#[derive(Debug, Parser)]
#[command(
    name = "yavipin",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(about = GENKEY_ABOUT, long_about = GENKEY_LONG_ABOUT)]
    Genkey {
        /// The key file to create (it must not exist), or `-` for standard output.
        #[arg(value_name = "FILE")]
        file: OsString,
    },
    #[command(about = CHECK_ABOUT, long_about = CHECK_LONG_ABOUT)]
    Check {
        /// The tunnel's configuration file, e.g. /etc/yavipin/home.toml.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    #[command(about = SHOW_ABOUT, long_about = SHOW_LONG_ABOUT)]
    Show {
        /// The tunnel's device (`name` in [interface]); without it, every running tunnel.
        #[arg(value_name = "DEVICE", value_parser = show::parse_device)]
        device: Option<String>,
        /// Print JSON: one object for DEVICE, an array for every tunnel.
        #[arg(long, group = "format")]
        json: bool,
        /// One line per tunnel.
        #[arg(long, group = "format")]
        short: bool,
        /// Print the counters in the Prometheus text exposition format.
        #[arg(long, group = "format")]
        metrics: bool,
    },
    #[command(about = COMPLETION_ABOUT, long_about = COMPLETION_LONG_ABOUT)]
    Completion {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: completion::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::Genkey { file } => ("genkey", genkey::run(&file).map_err(|e| e.to_string())),
        Command::Check { file } => ("check", check::run(&file).map_err(|e| e.to_string())),
        Command::Show { device, json, short, metrics } => {
            let format = match (json, short, metrics) {
                (true, _, _) => show::Format::Json,
                (_, true, _) => show::Format::Short,
                (_, _, true) => show::Format::Metrics,
                _ => show::Format::Text,
            };
            ("show", show::run(device.as_deref(), format).map_err(|e| e.to_string()))
        }
        Command::Completion { shell } => {
            completion::print(shell, &mut Cli::command());
            ("completion", Ok(()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("yavipin {name}: {message}");
            ExitCode::FAILURE
        }
    }
}
