//! The parent as a monitor of its workers: a sans-IO state machine that decides which of
//! their messages is permitted now and what the parent does about it.
//!
//! netd is the process that parses the network, so the parent treats it as keyd treats
//! netd: every message is checked against the state, and one that is not permitted ends the
//! daemon ([`Violation`]). What netd may ask:
//!
//! | message | permitted when | checked | effect |
//! |---------|----------------|---------|--------|
//! | `Ready` | first, once | — | netd is running |
//! | `TunnelUp { peer }` | ready, tunnel down | `peer` is a unicast address with a port | link up, then the up script |
//! | `TunnelDown { reason }` | ready, tunnel up | `reason` is a [`DownReason`] | link down, then the down script |
//! | `Mtu { path_mtu, inner_mtu }` | ready | `inner_mtu` within [`MIN_INNER_MTU`] and the configured MTU; `path_mtu − inner_mtu` is the tunnel's overhead over IPv4 or IPv6 | tun MTU set (clamped); a value already in effect is refused and counted |
//! | `Status(_)` | a status query asked netd and it has not answered | typed | the answer to `yavipin show` |
//!
//! keyd may send `Ready` once, first, and `Status` when asked. The script runner may send
//! `Ready` once, first, and `Finished` for the script it was told to run.
//!
//! A monitor that obeys every permitted message can still be made to work hard by a netd
//! that flaps: link and MTU changes are therefore applied through token buckets
//! ([`BURST`] at once, then one per [`REFILL`]); what arrives in between only moves the
//! *wanted* state, and when a token comes the latest wanted state is applied, so a burst of
//! changes costs at most one. Scripts follow the applied link state: at most one runs at a
//! time, they alternate (up, down, up, ...), and while one runs only the newest state is
//! remembered, so the queue holds at most one script; a flap that comes and goes while a
//! script runs runs no script at all. Values that reach a script's environment or a log
//! line are typed ([`SocketAddr`], [`DownReason`], numbers) and were checked above.
//!
//! Nothing here does I/O or reads a clock: the shell (`daemon.rs`) feeds messages and
//! `now`, applies the [`Action`]s from [`Monitor::poll_action`], and wakes up at
//! [`Monitor::poll_timeout`].

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use yavipin_ipc::control::{KeydStatus, KeydToParent, NetdStatus, NetdToParent};
use yavipin_ipc::reasons::DownReason;
use yavipin_ipc::scripts::{ScriptEvent, ScriptOutcome, ScriptsToParent};

use crate::config::TUNNEL_OVERHEAD;

/// Link or MTU changes applied at once before the rate limit holds them back.
pub const BURST: u32 = 4;
/// Time in which one more change becomes possible.
pub const REFILL: Duration = Duration::from_secs(1);
/// How long the workers have to answer a status query.
pub const QUERY_DEADLINE: Duration = Duration::from_secs(2);
/// The smallest inner MTU netd can report: the IPv4 minimum MTU (576) less the IPv4 and
/// UDP headers and the tunnel's overhead.
pub const MIN_INNER_MTU: u16 = 576 - IPV4_UDP - TUNNEL_OVERHEAD;
const IPV4_UDP: u16 = 20 + 8;
const IPV6_UDP: u16 = 40 + 8;

/// The worker a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// The network worker.
    Netd,
    /// The key worker.
    Keyd,
    /// The script runner.
    Scripts,
}

impl Worker {
    /// The name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Netd => "netd",
            Self::Keyd => "keyd",
            Self::Scripts => "script runner",
        }
    }
}

/// A message a worker was not permitted to send: the daemon stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {problem}", worker.name())]
pub struct Violation {
    /// Who sent it.
    pub worker: Worker,
    /// What was wrong.
    pub problem: Problem,
}

/// What was wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Anything before `Ready`.
    #[error("sent {0} before Ready")]
    NotReady(&'static str),
    /// `Ready` again.
    #[error("sent Ready twice")]
    ReadyAgain,
    /// `TunnelUp` while up.
    #[error("sent TunnelUp while the tunnel is up")]
    UpWhileUp,
    /// `TunnelDown` while down.
    #[error("sent TunnelDown while the tunnel is down")]
    DownWhileDown,
    /// A peer no datagram can come from.
    #[error("sent TunnelUp with the impossible peer {0}")]
    BadPeer(SocketAddr),
    /// An MTU report out of bounds or inconsistent.
    #[error("sent an impossible MTU: path {path_mtu}, inner {inner_mtu} (inner allowed {min}..={max})")]
    BadMtu {
        /// The path MTU reported.
        path_mtu: u16,
        /// The inner MTU reported.
        inner_mtu: u16,
        /// Smallest inner MTU allowed.
        min: u16,
        /// Largest inner MTU allowed.
        max: u16,
    },
    /// A status answer nobody asked for.
    #[error("sent a Status nobody asked for")]
    UnaskedStatus,
    /// The script runner reported a script it was not running.
    #[error("reported the {0} script finished, which it was not running")]
    NotRunning(ScriptEvent),
}

/// The link state netd reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A session is established with `peer`.
    Up {
        /// The peer's endpoint.
        peer: SocketAddr,
    },
    /// No session.
    Down {
        /// Why, if the tunnel was ever up.
        reason: Option<DownReason>,
    },
}

impl Link {
    fn is_up(self) -> bool {
        matches!(self, Self::Up { .. })
    }

    fn event(self) -> ScriptEvent {
        if self.is_up() { ScriptEvent::Up } else { ScriptEvent::Down }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the link up or down. `coalesced` changes netd asked for since the last applied
    /// one were absorbed by the rate limit.
    SetLink {
        /// The state to set.
        link: Link,
        /// Changes absorbed since the last one applied.
        coalesced: u64,
    },
    /// Set the tun device's MTU.
    SetMtu {
        /// The MTU.
        mtu: u16,
        /// The path MTU netd reported with it.
        path_mtu: u16,
    },
    /// Tell the script runner to run a script.
    RunScript {
        /// Which.
        event: ScriptEvent,
        /// The peer, for the up script.
        peer: Option<SocketAddr>,
    },
    /// A script ended.
    ScriptFinished {
        /// Which.
        event: ScriptEvent,
        /// How.
        outcome: ScriptOutcome,
    },
    /// Ask both workers for their status.
    AskStatus,
    /// The answer to the status query: both statuses, or `None` when a worker missed the
    /// deadline.
    StatusAnswer(Option<Box<(NetdStatus, KeydStatus)>>),
}

/// What the configuration tells the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The configured (or default) tun MTU: the largest inner MTU netd may report.
    pub max_inner_mtu: u16,
    /// The lowest MTU the device may be given (1280 with IPv6 inside, else 576).
    pub mtu_floor: u16,
    /// An up script is configured.
    pub up_script: bool,
    /// A down script is configured.
    pub down_script: bool,
}

impl MonitorConfig {
    fn has_script(self, event: ScriptEvent) -> bool {
        match event {
            ScriptEvent::Up => self.up_script,
            ScriptEvent::Down => self.down_script,
        }
    }

    /// What the device gets for a report of `inner_mtu`.
    fn device_mtu(self, inner_mtu: u16) -> u16 {
        inner_mtu.min(self.max_inner_mtu).max(self.mtu_floor)
    }
}

/// A token bucket: [`BURST`] tokens, one more per [`REFILL`].
#[derive(Debug, Clone)]
struct Bucket {
    tokens: u32,
    /// When the next token arrives, while the bucket is not full.
    refill_at: Option<Instant>,
}

impl Bucket {
    fn new() -> Self {
        Self { tokens: BURST, refill_at: None }
    }

    fn refill(&mut self, now: Instant) {
        while let Some(at) = self.refill_at.filter(|&at| at <= now) {
            self.tokens += 1;
            self.refill_at = (self.tokens < BURST).then_some(at + REFILL);
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        if self.refill_at.is_none() {
            self.refill_at = Some(now + REFILL);
        }
        true
    }

    /// When a token comes, if none is left.
    fn next_token(&self) -> Option<Instant> {
        if self.tokens == 0 { self.refill_at } else { None }
    }
}

/// A status query in flight.
#[derive(Debug)]
struct Query {
    deadline: Instant,
    netd: Option<NetdStatus>,
    keyd: Option<KeydStatus>,
}

/// Counters of what the monitor absorbed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorCounters {
    /// Link changes netd asked for that the rate limit coalesced with later ones.
    pub coalesced_links: u64,
    /// MTU reports that changed nothing (the value was in effect or already wanted).
    pub unchanged_mtus: u64,
    /// MTU reports coalesced with later ones by the rate limit.
    pub coalesced_mtus: u64,
    /// Scripts started.
    pub scripts_started: u64,
}

/// The parent's decisions about its workers' messages.
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    netd_ready: bool,
    keyd_ready: bool,
    scripts_ready: bool,
    /// What netd last reported.
    reported: Link,
    /// What the device has.
    applied: Link,
    link_bucket: Bucket,
    link_changes_waiting: u64,
    /// The MTU netd wants (device value) and the path MTU it came with.
    wanted_mtu: Option<(u16, u16)>,
    applied_mtu: Option<u16>,
    mtu_bucket: Bucket,
    /// The state whose script was last started or skipped (the tunnel starts down).
    scripted: ScriptEvent,
    running: Option<ScriptEvent>,
    query: Option<Query>,
    /// Status answers asked for and not yet received (a late answer is discarded).
    owed: [bool; 2],
    actions: VecDeque<Action>,
    counters: MonitorCounters,
}

/// The shortest description of a message, for errors.
fn netd_kind(message: &NetdToParent) -> &'static str {
    match message {
        NetdToParent::Status(_) => "Status",
        NetdToParent::Ready => "Ready",
        NetdToParent::TunnelUp { .. } => "TunnelUp",
        NetdToParent::TunnelDown { .. } => "TunnelDown",
        NetdToParent::Mtu { .. } => "Mtu",
    }
}

/// A peer endpoint a datagram can have come from: a unicast address and a port.
fn possible_peer(peer: SocketAddr) -> bool {
    let unicast = match peer.ip() {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast()),
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
    };
    unicast && peer.port() != 0
}

impl Monitor {
    /// A monitor for a tunnel that is down, with no worker ready yet.
    pub fn new(config: MonitorConfig) -> Self {
        Self {
            config,
            netd_ready: false,
            keyd_ready: false,
            scripts_ready: false,
            reported: Link::Down { reason: None },
            applied: Link::Down { reason: None },
            link_bucket: Bucket::new(),
            link_changes_waiting: 0,
            wanted_mtu: None,
            // The device was created with the configured MTU.
            applied_mtu: Some(config.max_inner_mtu),
            mtu_bucket: Bucket::new(),
            scripted: ScriptEvent::Down,
            running: None,
            query: None,
            owed: [false; 2],
            actions: VecDeque::new(),
            counters: MonitorCounters::default(),
        }
    }

    /// What the monitor absorbed so far.
    pub fn counters(&self) -> MonitorCounters {
        self.counters
    }

    /// Whether each worker said `Ready`: netd, keyd.
    pub fn ready(&self) -> (bool, bool) {
        (self.netd_ready, self.keyd_ready)
    }

    /// A message from netd.
    pub fn handle_netd(&mut self, now: Instant, message: NetdToParent) -> Result<(), Violation> {
        let violation = |problem| Violation { worker: Worker::Netd, problem };
        if !self.netd_ready && message != NetdToParent::Ready {
            return Err(violation(Problem::NotReady(netd_kind(&message))));
        }
        match message {
            NetdToParent::Ready if self.netd_ready => return Err(violation(Problem::ReadyAgain)),
            NetdToParent::Ready => self.netd_ready = true,
            NetdToParent::TunnelUp { .. } if self.reported.is_up() => return Err(violation(Problem::UpWhileUp)),
            NetdToParent::TunnelUp { peer } if !possible_peer(peer) => return Err(violation(Problem::BadPeer(peer))),
            NetdToParent::TunnelUp { peer } => self.report_link(now, Link::Up { peer }),
            NetdToParent::TunnelDown { .. } if !self.reported.is_up() => {
                return Err(violation(Problem::DownWhileDown));
            }
            NetdToParent::TunnelDown { reason } => self.report_link(now, Link::Down { reason: Some(reason) }),
            NetdToParent::Mtu { path_mtu, inner_mtu } => {
                let max = self.config.max_inner_mtu;
                let overhead = path_mtu.checked_sub(inner_mtu).and_then(|o| o.checked_sub(TUNNEL_OVERHEAD));
                if !(MIN_INNER_MTU..=max).contains(&inner_mtu) || !matches!(overhead, Some(IPV4_UDP | IPV6_UDP)) {
                    return Err(violation(Problem::BadMtu { path_mtu, inner_mtu, min: MIN_INNER_MTU, max }));
                }
                self.report_mtu(now, self.config.device_mtu(inner_mtu), path_mtu);
            }
            NetdToParent::Status(_) if !self.owed[0] => return Err(violation(Problem::UnaskedStatus)),
            NetdToParent::Status(status) => {
                self.owed[0] = false;
                if let Some(query) = &mut self.query {
                    query.netd = Some(status);
                }
                self.answer_if_complete();
            }
        }
        Ok(())
    }

    /// A message from keyd.
    pub fn handle_keyd(&mut self, message: KeydToParent) -> Result<(), Violation> {
        let violation = |problem| Violation { worker: Worker::Keyd, problem };
        match message {
            KeydToParent::Ready if self.keyd_ready => return Err(violation(Problem::ReadyAgain)),
            KeydToParent::Ready => self.keyd_ready = true,
            KeydToParent::Status(_) if !self.keyd_ready => return Err(violation(Problem::NotReady("Status"))),
            KeydToParent::Status(_) if !self.owed[1] => return Err(violation(Problem::UnaskedStatus)),
            KeydToParent::Status(status) => {
                self.owed[1] = false;
                if let Some(query) = &mut self.query {
                    query.keyd = Some(status);
                }
                self.answer_if_complete();
            }
        }
        Ok(())
    }

    /// A message from the script runner.
    pub fn handle_scripts(&mut self, message: ScriptsToParent) -> Result<(), Violation> {
        let violation = |problem| Violation { worker: Worker::Scripts, problem };
        match message {
            ScriptsToParent::Ready if self.scripts_ready => return Err(violation(Problem::ReadyAgain)),
            ScriptsToParent::Ready => self.scripts_ready = true,
            ScriptsToParent::Finished { event, .. } if self.running != Some(event) => {
                return Err(violation(Problem::NotRunning(event)));
            }
            ScriptsToParent::Finished { event, outcome } => {
                self.running = None;
                self.actions.push_back(Action::ScriptFinished { event, outcome });
            }
        }
        self.run_script();
        Ok(())
    }

    /// `yavipin show` wants the workers' status. Returns at once if a query is in flight
    /// (the caller waits for its answer) or an earlier answer is still owed (the caller
    /// tries again at its next wake-up).
    pub fn handle_status_wanted(&mut self, now: Instant) {
        if self.query.is_some() || self.owed.iter().any(|&owed| owed) {
            return;
        }
        self.query = Some(Query { deadline: now + QUERY_DEADLINE, netd: None, keyd: None });
        self.owed = [true; 2];
        self.actions.push_back(Action::AskStatus);
    }

    /// Whether a status query is waiting for answers.
    pub fn status_pending(&self) -> bool {
        self.query.is_some()
    }

    /// Time passed: rate-limited changes and the query deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.apply_link(now);
        self.apply_mtu(now);
        if self.query.as_ref().is_some_and(|q| q.deadline <= now) {
            self.query = None;
            self.actions.push_back(Action::StatusAnswer(None));
        }
    }

    /// When [`Self::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = (self.reported != self.applied).then(|| self.link_bucket.next_token()).flatten();
        let mtu = (self.wanted_mtu.map(|(mtu, _)| mtu) != self.applied_mtu).then(|| self.mtu_bucket.next_token());
        [link, mtu.flatten(), self.query.as_ref().map(|q| q.deadline)].into_iter().flatten().min()
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn report_link(&mut self, now: Instant, link: Link) {
        self.reported = link;
        self.link_changes_waiting += 1;
        self.apply_link(now);
    }

    fn apply_link(&mut self, now: Instant) {
        if self.reported.is_up() == self.applied.is_up() {
            // Nothing for the kernel to do: either nothing changed, or a flap came and went
            // while the rate limit held it (perhaps with another peer or reason).
            self.counters.coalesced_links += self.link_changes_waiting;
            self.link_changes_waiting = 0;
            self.applied = self.reported;
            return;
        }
        if !self.link_bucket.take(now) {
            return;
        }
        let coalesced = self.link_changes_waiting.saturating_sub(1);
        self.counters.coalesced_links += coalesced;
        self.link_changes_waiting = 0;
        self.applied = self.reported;
        self.actions.push_back(Action::SetLink { link: self.applied, coalesced });
        self.run_script();
    }

    fn report_mtu(&mut self, now: Instant, mtu: u16, path_mtu: u16) {
        let latest = self.wanted_mtu.map(|(wanted, _)| wanted).or(self.applied_mtu);
        if latest == Some(mtu) {
            self.counters.unchanged_mtus += 1;
            return;
        }
        if self.wanted_mtu.is_some_and(|(wanted, _)| Some(wanted) != self.applied_mtu) {
            // A value still held back by the rate limit is replaced.
            self.counters.coalesced_mtus += 1;
        }
        self.wanted_mtu = Some((mtu, path_mtu));
        self.apply_mtu(now);
    }

    fn apply_mtu(&mut self, now: Instant) {
        let Some((mtu, path_mtu)) = self.wanted_mtu else { return };
        if self.applied_mtu == Some(mtu) || !self.mtu_bucket.take(now) {
            return;
        }
        self.applied_mtu = Some(mtu);
        self.actions.push_back(Action::SetMtu { mtu, path_mtu });
    }

    /// Starts the script for the applied state when none runs and that state's script has
    /// not run yet; a state without a script counts as handled.
    fn run_script(&mut self) {
        let event = self.applied.event();
        if self.running.is_some() || event == self.scripted {
            return;
        }
        if self.config.has_script(event) && !self.scripts_ready {
            // The runner is not running yet: the script starts once it says Ready.
            return;
        }
        self.scripted = event;
        if !self.config.has_script(event) {
            return;
        }
        let peer = match self.applied {
            Link::Up { peer } => Some(peer),
            Link::Down { .. } => None,
        };
        self.running = Some(event);
        self.counters.scripts_started += 1;
        self.actions.push_back(Action::RunScript { event, peer });
    }

    fn answer_if_complete(&mut self) {
        if let Some(Query { netd: Some(_), keyd: Some(_), .. }) = &self.query
            && let Some(Query { netd: Some(netd), keyd: Some(keyd), .. }) = self.query.take()
        {
            self.actions.push_back(Action::StatusAnswer(Some(Box::new((netd, keyd)))));
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Up { peer } => write!(f, "tunnel up with {peer}"),
            Self::Down { reason: Some(reason) } => write!(f, "tunnel down: {reason}"),
            Self::Down { reason: None } => f.write_str("tunnel down"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PEER: &str = "198.18.0.2:5555";

    fn config(up_script: bool, down_script: bool) -> MonitorConfig {
        MonitorConfig { max_inner_mtu: 1435, mtu_floor: 1280, up_script, down_script }
    }

    fn peer() -> SocketAddr {
        PEER.parse().expect("address")
    }

    fn up() -> NetdToParent {
        NetdToParent::TunnelUp { peer: peer() }
    }

    fn down() -> NetdToParent {
        NetdToParent::TunnelDown { reason: DownReason::PeerShutdown }
    }

    /// A monitor whose workers and script runner are ready.
    fn ready(config: MonitorConfig) -> (Monitor, Instant) {
        let now = Instant::now();
        let mut m = Monitor::new(config);
        m.handle_netd(now, NetdToParent::Ready).expect("ready");
        m.handle_keyd(KeydToParent::Ready).expect("ready");
        m.handle_scripts(ScriptsToParent::Ready).expect("ready");
        (m, now)
    }

    fn actions(m: &mut Monitor) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn problem(result: Result<(), Violation>) -> Problem {
        result.expect_err("must be refused").problem
    }

    #[test]
    fn each_message_only_in_its_state() {
        let now = Instant::now();
        let mut m = Monitor::new(config(false, false));
        for early in [up(), down(), NetdToParent::Mtu { path_mtu: 1500, inner_mtu: 1455 }] {
            assert!(matches!(
                problem(Monitor::new(config(false, false)).handle_netd(now, early)),
                Problem::NotReady(_)
            ));
        }
        m.handle_netd(now, NetdToParent::Ready).expect("first Ready");
        assert_eq!(problem(m.handle_netd(now, NetdToParent::Ready)), Problem::ReadyAgain);
        assert_eq!(problem(m.handle_netd(now, down())), Problem::DownWhileDown);
        m.handle_netd(now, up()).expect("up when down");
        assert_eq!(problem(m.handle_netd(now, up())), Problem::UpWhileUp);
        m.handle_netd(now, down()).expect("down when up");
        assert_eq!(problem(m.handle_netd(now, NetdToParent::Status(NetdStatus::default()))), Problem::UnaskedStatus);
        assert_eq!(problem(m.handle_keyd(KeydToParent::Status(KeydStatus::default()))), Problem::NotReady("Status"));
        m.handle_keyd(KeydToParent::Ready).expect("keyd ready");
        assert_eq!(problem(m.handle_keyd(KeydToParent::Ready)), Problem::ReadyAgain);
        assert_eq!(problem(m.handle_keyd(KeydToParent::Status(KeydStatus::default()))), Problem::UnaskedStatus);
        let finished = ScriptsToParent::Finished { event: ScriptEvent::Up, outcome: ScriptOutcome::Succeeded };
        assert_eq!(problem(m.handle_scripts(finished)), Problem::NotRunning(ScriptEvent::Up));
        let violation = m.handle_netd(now, NetdToParent::Ready).expect_err("refused");
        assert_eq!(violation.to_string(), "netd sent Ready twice");
    }

    #[test]
    fn impossible_peers_and_mtus_are_violations() {
        let (mut m, now) = ready(config(false, false));
        for peer in ["0.0.0.0:5555", "198.18.0.2:0", "[::]:1", "224.0.0.1:5555", "255.255.255.255:1", "[ff02::1]:5"] {
            let peer: SocketAddr = peer.parse().expect("address");
            assert_eq!(problem(m.handle_netd(now, NetdToParent::TunnelUp { peer })), Problem::BadPeer(peer));
        }
        // The inner MTU within MIN_INNER_MTU..=1435, the path MTU 45 (IPv4) or 65 (IPv6) above it.
        for (path_mtu, inner_mtu) in
            [(1500, 1436), (9000, 8955), (575, 530), (1500, 1454), (1500, 1500), (100, 200), (0, 0)]
        {
            assert!(
                matches!(
                    problem(m.handle_netd(now, NetdToParent::Mtu { path_mtu, inner_mtu })),
                    Problem::BadMtu { .. }
                ),
                "{path_mtu}/{inner_mtu}"
            );
        }
        for (path_mtu, inner_mtu) in [(1480, 1435), (1500, 1435), (576, MIN_INNER_MTU), (1280, 1215)] {
            m.handle_netd(now, NetdToParent::Mtu { path_mtu, inner_mtu }).expect("possible");
        }
    }

    #[test]
    fn mtus_are_clamped_applied_once_and_rate_limited() {
        let (mut m, now) = ready(config(false, false));
        // The configured MTU is in effect: reporting it changes nothing.
        m.handle_netd(now, NetdToParent::Mtu { path_mtu: 1480, inner_mtu: 1435 }).expect("ok");
        assert_eq!(actions(&mut m), []);
        assert_eq!(m.counters().unchanged_mtus, 1);
        // Below the IPv6 floor: the device gets 1280.
        m.handle_netd(now, NetdToParent::Mtu { path_mtu: 1200, inner_mtu: 1155 }).expect("ok");
        assert_eq!(actions(&mut m), [Action::SetMtu { mtu: 1280, path_mtu: 1200 }]);
        m.handle_netd(now, NetdToParent::Mtu { path_mtu: 1250, inner_mtu: 1185 }).expect("ok");
        assert_eq!(actions(&mut m), [], "1280 again");
        // A burst: BURST changes go through (one used above), the rest wait for tokens and
        // only the newest is applied.
        let mut applied = 0;
        for inner in 1300..1400 {
            m.handle_netd(now, NetdToParent::Mtu { path_mtu: inner + 45, inner_mtu: inner }).expect("ok");
            applied += actions(&mut m).len();
        }
        assert_eq!(applied, BURST as usize - 1);
        let wake = m.poll_timeout().expect("a change waits");
        assert_eq!(wake, now + REFILL);
        m.handle_timeout(wake);
        assert_eq!(actions(&mut m), [Action::SetMtu { mtu: 1399, path_mtu: 1444 }]);
        assert_eq!(m.poll_timeout(), None, "nothing waits");
    }

    #[test]
    fn a_flapping_netd_costs_at_most_the_burst_and_the_last_state_wins() {
        let (mut m, now) = ready(config(false, false));
        let mut set = 0;
        for _ in 0..1000 {
            m.handle_netd(now, up()).expect("up");
            m.handle_netd(now, down()).expect("down");
            set += actions(&mut m).iter().filter(|a| matches!(a, Action::SetLink { .. })).count();
        }
        m.handle_netd(now, up()).expect("up");
        set += actions(&mut m).len();
        assert_eq!(set, BURST as usize);
        // The link ended down after BURST (even) changes; netd says up: applied at the refill.
        let wake = m.poll_timeout().expect("waiting");
        m.handle_timeout(wake);
        assert!(matches!(actions(&mut m).as_slice(), [Action::SetLink { link: Link::Up { .. }, .. }]));
        assert_eq!(m.counters().coalesced_links, 2 * 1000 + 1 - u64::from(BURST) - 1, "every other report coalesced");
    }

    #[test]
    fn scripts_run_one_at_a_time_alternate_and_a_flap_meanwhile_runs_nothing() {
        let (mut m, now) = ready(config(true, true));
        m.handle_netd(now, up()).expect("up");
        assert_eq!(
            actions(&mut m),
            [
                Action::SetLink { link: Link::Up { peer: peer() }, coalesced: 0 },
                Action::RunScript { event: ScriptEvent::Up, peer: Some(peer()) }
            ]
        );
        // Down and up again while the up script runs: the link follows, no script starts.
        m.handle_netd(now, down()).expect("down");
        m.handle_netd(now, up()).expect("up");
        assert!(actions(&mut m).iter().all(|a| matches!(a, Action::SetLink { .. })));
        let finished = |event| ScriptsToParent::Finished { event, outcome: ScriptOutcome::Succeeded };
        m.handle_scripts(finished(ScriptEvent::Up)).expect("finished");
        assert_eq!(
            actions(&mut m),
            [Action::ScriptFinished { event: ScriptEvent::Up, outcome: ScriptOutcome::Succeeded }]
        );
        // Down: the down script; up meanwhile: the up script after it.
        m.handle_netd(now, down()).expect("down");
        let started: Vec<_> = actions(&mut m).into_iter().filter(|a| matches!(a, Action::RunScript { .. })).collect();
        assert_eq!(started, [Action::RunScript { event: ScriptEvent::Down, peer: None }]);
        m.handle_netd(now, up()).expect("up");
        assert!(!actions(&mut m).iter().any(|a| matches!(a, Action::RunScript { .. })));
        assert_eq!(problem(m.handle_scripts(finished(ScriptEvent::Up))), Problem::NotRunning(ScriptEvent::Up));
        m.handle_scripts(finished(ScriptEvent::Down)).expect("finished");
        // That last up waits for a token (four changes so far): then the link and its script.
        assert!(!actions(&mut m).iter().any(|a| matches!(a, Action::RunScript { .. })));
        let wake = m.poll_timeout().expect("a change waits");
        m.handle_timeout(wake);
        assert_eq!(
            actions(&mut m),
            [
                Action::SetLink { link: Link::Up { peer: peer() }, coalesced: 0 },
                Action::RunScript { event: ScriptEvent::Up, peer: Some(peer()) }
            ]
        );
    }

    #[test]
    fn scripts_wait_for_the_runner_and_missing_ones_are_skipped() {
        let now = Instant::now();
        let mut m = Monitor::new(config(false, true));
        m.handle_netd(now, NetdToParent::Ready).expect("ready");
        m.handle_netd(now, up()).expect("up");
        m.handle_netd(now, down()).expect("down");
        assert!(!actions(&mut m).iter().any(|a| matches!(a, Action::RunScript { .. })), "runner not ready");
        m.handle_scripts(ScriptsToParent::Ready).expect("ready");
        assert_eq!(actions(&mut m), [Action::RunScript { event: ScriptEvent::Down, peer: None }]);
    }

    #[test]
    fn status_queries_wait_for_both_answers_or_the_deadline_and_late_answers_are_dropped() {
        let (mut m, now) = ready(config(false, false));
        m.handle_status_wanted(now);
        m.handle_status_wanted(now);
        assert_eq!(actions(&mut m), [Action::AskStatus], "one query for both clients");
        m.handle_netd(now, NetdToParent::Status(NetdStatus::default())).expect("asked");
        assert_eq!(problem(m.handle_netd(now, NetdToParent::Status(NetdStatus::default()))), Problem::UnaskedStatus);
        m.handle_keyd(KeydToParent::Status(KeydStatus::default())).expect("asked");
        assert!(matches!(actions(&mut m).as_slice(), [Action::StatusAnswer(Some(_))]));
        // keyd misses the deadline: the clients get an error, its late answer is dropped,
        // and no new query starts while it is owed.
        m.handle_status_wanted(now);
        assert_eq!(actions(&mut m), [Action::AskStatus]);
        m.handle_netd(now, NetdToParent::Status(NetdStatus::default())).expect("asked");
        assert_eq!(m.poll_timeout(), Some(now + QUERY_DEADLINE));
        m.handle_timeout(now + QUERY_DEADLINE);
        assert_eq!(actions(&mut m), [Action::StatusAnswer(None)]);
        m.handle_status_wanted(now + QUERY_DEADLINE);
        assert_eq!(actions(&mut m), [], "keyd still owes an answer");
        m.handle_keyd(KeydToParent::Status(KeydStatus::default())).expect("late but asked");
        assert_eq!(actions(&mut m), []);
        m.handle_status_wanted(now + QUERY_DEADLINE);
        assert_eq!(actions(&mut m), [Action::AskStatus]);
    }

    /// What a hostile netd (or an unlucky run) can send, and time passing.
    #[derive(Debug, Clone)]
    enum Input {
        Up(u8),
        Down,
        Mtu(u16, bool),
        Wait(u16),
        ScriptDone,
        Query,
        Answer,
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            4 => any::<u8>().prop_map(Input::Up),
            4 => Just(Input::Down),
            2 => (500u16..1500, any::<bool>()).prop_map(|(m, v6)| Input::Mtu(m, v6)),
            2 => (0u16..3000).prop_map(Input::Wait),
            2 => Just(Input::ScriptDone),
            1 => Just(Input::Query),
            1 => Just(Input::Answer),
        ]
    }

    proptest! {
        /// Whatever netd sends: it is refused exactly when the table says, the link changes
        /// alternate and stay within the rate limit, at most one script runs and scripts
        /// alternate, and once time passes the device shows what netd said last.
        #[test]
        fn the_monitor_holds_its_invariants(inputs in proptest::collection::vec(input(), 1..200)) {
            let (mut m, start) = ready(config(true, true));
            let mut now = start;
            let (mut up_now, mut link_up, mut link_changes) = (false, false, 0u32);
            let (mut running, mut last_script, mut mtu_changes) = (None, ScriptEvent::Down, 0u32);
            let mut netd_owes_status = false;
            for input in inputs {
                let result = match input {
                    Input::Up(host) => {
                        let peer = SocketAddr::from(([198, 18, 0, host], 5555));
                        let result = m.handle_netd(now, NetdToParent::TunnelUp { peer });
                        prop_assert_eq!(result.is_ok(), !up_now, "{:?}", result);
                        up_now = true;
                        result
                    }
                    Input::Down => {
                        let result = m.handle_netd(now, down());
                        prop_assert_eq!(result.is_ok(), up_now);
                        up_now = false;
                        result
                    }
                    Input::Mtu(inner, v6) => {
                        let path_mtu = inner + if v6 { 65 } else { 45 };
                        let result = m.handle_netd(now, NetdToParent::Mtu { path_mtu, inner_mtu: inner });
                        prop_assert_eq!(result.is_ok(), (MIN_INNER_MTU..=1435).contains(&inner));
                        result
                    }
                    Input::Wait(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        if m.poll_timeout().is_some_and(|at| at <= now) {
                            m.handle_timeout(now);
                        }
                        Ok(())
                    }
                    Input::ScriptDone => match running.take() {
                        Some(event) => m.handle_scripts(ScriptsToParent::Finished { event, outcome: ScriptOutcome::TimedOut }),
                        None => Ok(()),
                    },
                    Input::Query => {
                        m.handle_status_wanted(now);
                        Ok(())
                    }
                    Input::Answer => {
                        // A Status is permitted once per query netd was asked.
                        let result = m.handle_netd(now, NetdToParent::Status(NetdStatus::default()));
                        prop_assert_eq!(result.is_ok(), netd_owes_status);
                        netd_owes_status = false;
                        result
                    }
                };
                if result.is_err() {
                    // The daemon would stop here.
                    return Ok(());
                }
                while let Some(action) = m.poll_action() {
                    match action {
                        Action::SetLink { link, .. } => {
                            prop_assert_ne!(link.is_up(), link_up, "link changes alternate");
                            link_up = link.is_up();
                            link_changes += 1;
                        }
                        Action::SetMtu { mtu, .. } => {
                            prop_assert!((1280..=1435).contains(&mtu));
                            mtu_changes += 1;
                        }
                        Action::RunScript { event, peer } => {
                            prop_assert!(running.is_none(), "two scripts at once");
                            prop_assert_ne!(event, last_script, "scripts alternate");
                            prop_assert_eq!(peer.is_some(), event == ScriptEvent::Up);
                            running = Some(event);
                            last_script = event;
                        }
                        Action::AskStatus => netd_owes_status = true,
                        Action::ScriptFinished { .. } | Action::StatusAnswer(_) => {}
                    }
                }
                let refills = u32::try_from((now - start).as_millis() / REFILL.as_millis()).unwrap_or(u32::MAX);
                prop_assert!(link_changes <= BURST + refills, "{} link changes in {:?}", link_changes, now - start);
                prop_assert!(mtu_changes <= BURST + refills);
            }
            // Time passes: the device shows netd's last word.
            for _ in 0..2 {
                now += REFILL;
                m.handle_timeout(now);
            }
            while let Some(action) = m.poll_action() {
                if let Action::SetLink { link, .. } = action {
                    link_up = link.is_up();
                }
            }
            prop_assert_eq!(link_up, up_now);
        }
    }
}
