//! yavipind: a point-to-point VPN daemon. Run as root with a configuration file; it starts
//! its two jailed workers by re-executing itself with `--role`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use yavipin_parent::logging::{self, Sink};
use yavipin_parent::spawn::WorkerRole;

/// yavipind runs one tunnel: a root parent opens the tun device and the UDP socket, then
/// starts two jailed workers, netd (all packet cryptography) and keyd (all long-lived
/// secrets). See yavipind(8) and yavipind.conf(5).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The tunnel's configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE", required_unless_present = "role")]
    config: Option<PathBuf>,
    /// Validate the configuration and the key file, then exit.
    #[arg(long)]
    check: bool,
    /// Log more.
    #[arg(short, long)]
    verbose: bool,
    /// Internal: run as a worker (started by the parent only).
    #[arg(long, hide = true, value_enum)]
    role: Option<WorkerRole>,
    /// Internal: the account a worker drops to.
    #[arg(long, hide = true, default_value = "yavipin")]
    user: String,
    /// Internal: a worker logs for journald (priority prefixes).
    #[arg(long, hide = true)]
    journal: bool,
    /// Internal: inherited channel descriptors of a worker.
    #[arg(long = "channel", hide = true)]
    channels: Vec<i32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match (args.role, args.config) {
        (Some(role), _) => {
            logging::init(role.name(), if args.journal { Sink::Journal } else { Sink::Foreground }, args.verbose);
            yavipin_parent::worker::run(role, &args.user, &args.channels)
        }
        (None, Some(config)) if args.check => match yavipin_parent::daemon::check(&config) {
            Ok(_) => {
                println!("{}: configuration and key file are valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("yavipind: {e}");
                ExitCode::from(2)
            }
        },
        (None, Some(config)) => {
            let sink = Sink::detect();
            logging::init("parent", sink, args.verbose);
            match yavipin_parent::daemon::run(&config, sink, args.verbose) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        (None, None) => {
            eprintln!("yavipind: --config FILE is required");
            ExitCode::from(2)
        }
    }
}
