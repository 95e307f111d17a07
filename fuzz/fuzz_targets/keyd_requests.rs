//! keyd's request handler (`KeyDaemon::handle_netd`) with a real pre-shared key loaded,
//! driven the way a compromised netd could drive it: any sequence of `NetdToKeyd`
//! requests, built structurally with arbitrary contents, mixed with genuine handshake
//! messages from an honest peer holding the same key (relayed intact or tampered with),
//! Initiator and Responder Auths signed with the key but hostile inside (epochs at the end
//! of the 32-bit space, DH values 0, 1, p − 1, p), peer restarts, and time passing.
//!
//! Checked after every request:
//!
//! - nothing panics;
//! - a refused request (an error: keyd would end) produced no output;
//! - no output carries the PSK or `K_auth`: not in any message's bytes, not as a traffic
//!   secret, not in the `Debug` text of the output or of keyd itself;
//! - traffic secrets are never handed out twice, send keys move strictly forward, a
//!   receive epoch reported is answered only with keys at most two epochs ahead, and a
//!   send key is handed out only for the epoch after the one in use;
//! - keyd's answers and first keys follow the protocol text: when the peer's DH value is
//!   `g¹` the shared secret is keyd's own public value, so `auth_r`, `confirm_r` and the
//!   first traffic secrets of both directions are recomputed here and compared;
//! - an Initiator Auth whose `auth_i` does not verify, or a Responder Auth whose `auth_r`
//!   does not verify over keyd's own Initiator Auth (both computed here independently, from
//!   the protocol text), costs no modular exponentiation and is answered by nothing but a
//!   refusal;
//! - `BuildInitiatorAuth` is refused exactly when an initiation is pending, a send key asked
//!   for after an epoch never handed out is refused, and a receive epoch is accepted only
//!   if its key was handed out; an abandonment never produces output; timers only ever say
//!   `RenewalDue`.

#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use yavipin_fuzz::ops::keyd_requests::{DhChoice, EpochChoice, NonceChoice, Op};
use yavipin_fuzz::{
    Clock, KEY_ID, PSK, Session, contains, decode_ops, initiator_auth, k_auth, renderings, responder_auth,
    traffic_secret, transcript,
};
use yavipin_ipc::{KeydToNetd, NetdToKeyd};
use yavipin_keyd::{KeyDaemon, KeydConfig, KeydError};
use yavipin_proto::handshake::{
    Cookie, Group, InitiatorAuth, MAC_LEN, NONCE_LEN, Nonce, PARAMS_LEN, Params, ResponderAuth,
};
use yavipin_proto::keys::Psk;
use yavipin_proto::rng::Seeded;
use yavipin_proto::{Epoch, EpochKey};

const MAX_OPS: usize = 40;
/// Modular exponentiations per input (both daemons): each costs milliseconds.
const MODEXP_BUDGET: u64 = 10;
const GROUP: Group = Group::Modp2048;
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 4000);
const COOKIE: Cookie = [0xc0; 16];

struct Harness {
    clock: Clock,
    keyd: KeyDaemon<Seeded>,
    peer: KeyDaemon<Seeded>,
    peer_seed: u64,
    params: Params,
    k_auth: [u8; 32],
    forbidden: Vec<[u8; 32]>,
    forbidden_text: Vec<String>,
    /// Every traffic secret handed out.
    secrets: HashSet<[u8; 32]>,
    send_epochs: Vec<u32>,
    recv_epochs: Vec<u32>,
    nonces: Vec<Nonce>,
    /// keyd's last Initiator Auth, for the peer to answer.
    own_initiator_auth: Option<Vec<u8>>,
    /// keyd's last Responder Auth, and the receive epoch that came with it.
    own_responder_auth: Option<(Vec<u8>, u32)>,
    peer_pending: Option<Nonce>,
    /// The epoch the honest peer sends under.
    peer_send: Option<u32>,
    /// The first send key of the session keyd answered last, when computable here.
    expected_start: Option<(Epoch, [u8; 32])>,
    stopped: bool,
}

fn daemon(seed: u64) -> KeyDaemon<Seeded> {
    let mut psk = PSK;
    KeyDaemon::new(KeydConfig::default(), KEY_ID, Psk::new(&mut psk), Seeded::new(seed))
}

fn flip(mut message: Vec<u8>, flips: &[(u16, u8)]) -> Vec<u8> {
    if !message.is_empty() {
        for &(at, mask) in flips {
            let at = usize::from(at) % message.len();
            message[at] ^= mask;
        }
    }
    message
}

impl Harness {
    fn new() -> Self {
        let k_auth = k_auth(&PSK);
        let forbidden = vec![PSK, k_auth];
        let forbidden_text = forbidden.iter().flat_map(|s| renderings(s)).collect();
        Self {
            clock: Clock::new(),
            keyd: daemon(1),
            peer: daemon(2),
            peer_seed: 2,
            params: Params::new(GROUP, KEY_ID),
            k_auth,
            forbidden,
            forbidden_text,
            secrets: HashSet::new(),
            send_epochs: Vec::new(),
            recv_epochs: Vec::new(),
            nonces: Vec::new(),
            own_initiator_auth: None,
            own_responder_auth: None,
            peer_pending: None,
            peer_send: None,
            expected_start: None,
            stopped: false,
        }
    }

    fn modexps(&self) -> u64 {
        self.keyd.modexps() + self.peer.modexps()
    }

    fn within_budget(&self) -> bool {
        self.modexps() < MODEXP_BUDGET
    }

    fn initiating(&self) -> bool {
        let shown = format!("{:?}", self.keyd);
        if shown.contains("initiating: true") {
            true
        } else {
            assert!(shown.contains("initiating: false"), "keyd's Debug no longer shows its state: {shown}");
            false
        }
    }

    fn epoch(&self, choice: &EpochChoice) -> Epoch {
        Epoch(match *choice {
            EpochChoice::Handed { index, offset } => {
                let all: Vec<u32> = self.send_epochs.iter().chain(&self.recv_epochs).copied().collect();
                let base = all.get(usize::from(index) % all.len().max(1)).copied().unwrap_or(0);
                base.wrapping_add(u32::from(offset % 4))
            }
            EpochChoice::Small(e) => u32::from(e),
            EpochChoice::Any(e) => e,
        })
    }

    /// No secret in `bytes` (a window of any length 32 equal to the PSK or `K_auth`).
    fn assert_clean_bytes(&self, bytes: &[u8], what: &str) {
        for secret in &self.forbidden {
            assert!(!contains(bytes, secret), "{what} carries the PSK or K_auth");
        }
    }

    fn assert_clean_text(&self, text: &str, what: &str) {
        for rendering in &self.forbidden_text {
            assert!(!text.contains(rendering.as_str()), "{what} prints the PSK or K_auth: {text}");
        }
    }

    fn check_key(&mut self, key: &EpochKey) {
        let secret = *key.secret.expose();
        self.assert_clean_bytes(&secret, "a traffic secret");
        assert!(self.secrets.insert(secret), "a traffic secret was handed out twice ({})", key.epoch);
        assert_eq!(format!("{:?}", key.secret), "TrafficSecret(..)");
    }

    fn send_key(&mut self, key: &EpochKey) {
        if let Some(&last) = self.send_epochs.iter().max() {
            assert!(key.epoch.0 > last, "send key {} after {last}: not strictly forward", key.epoch);
        }
        self.send_epochs.push(key.epoch.0);
        self.check_key(key);
    }

    fn recv_key(&mut self, key: &EpochKey) {
        self.recv_epochs.push(key.epoch.0);
        self.check_key(key);
    }

    /// Checks one of keyd's outputs and remembers what it handed out.
    fn output(&mut self, message: &KeydToNetd) {
        let shown = format!("{message:?}");
        self.assert_clean_text(&shown, "an output's Debug");
        match message {
            KeydToNetd::SendInitiatorAuth { ni, message } => {
                // Bytes 8..40 echo netd's nonce and cookie; the rest is keyd's own.
                assert!(message.len() >= PARAMS_LEN + NONCE_LEN);
                self.assert_clean_bytes(&message[PARAMS_LEN + NONCE_LEN..], "an Initiator Auth");
                assert_eq!(&message[PARAMS_LEN..PARAMS_LEN + NONCE_LEN], ni);
                self.own_initiator_auth = Some(message.clone());
            }
            KeydToNetd::SendResponderAuth { ni, peer, message, recv_key, restart: _ } => {
                // A new response replaces the one waiting for confirmation.
                self.expected_start = None;
                assert_eq!(*peer, PEER);
                assert_eq!(&message[PARAMS_LEN..PARAMS_LEN + NONCE_LEN], ni);
                self.assert_clean_bytes(message, "a Responder Auth");
                self.recv_key(recv_key);
                self.own_responder_auth = Some((message.clone(), recv_key.epoch.0));
            }
            KeydToNetd::SessionKeys { ni: _, send_key, recv_key, restart: _ } => {
                // Completing an initiation drops any response still waiting.
                self.expected_start = None;
                self.send_key(send_key);
                self.recv_key(recv_key);
            }
            KeydToNetd::SendKey { key, session_start } => {
                if *session_start && let Some((epoch, secret)) = self.expected_start.take() {
                    assert_eq!(key.epoch, epoch);
                    assert!(*key.secret.expose() == secret, "the responder's first send key is not TS_r2i[0]");
                }
                self.send_key(key);
            }
            KeydToNetd::RecvKey(key) => self.recv_key(key),
            KeydToNetd::HandshakeFailed { .. } | KeydToNetd::RenewalDue => {}
        }
    }

    /// Sends keyd one request and checks what comes back; returns the outputs.
    fn request(&mut self, message: NetdToKeyd) -> Option<Vec<KeydToNetd>> {
        let now = self.clock.now();
        let result = self.keyd.handle_netd(now, message);
        let outputs: Vec<KeydToNetd> = std::iter::from_fn(|| self.keyd.poll_output()).collect();
        yavipin_fuzz::trace!("  -> {result:?} {outputs:?}");
        self.assert_clean_text(&format!("{:?}", self.keyd), "keyd's Debug");
        match result {
            Ok(()) => {
                for output in &outputs {
                    self.output(output);
                }
                Some(outputs)
            }
            Err(error) => {
                assert!(outputs.is_empty(), "keyd refused a request ({error}) but still answered: {outputs:?}");
                // keyd ends here; nothing after this counts.
                self.stopped = true;
                None
            }
        }
    }

    /// An Initiator Auth relayed to keyd; unless it is authentic, it costs nothing.
    fn initiator_auth(&mut self, message: Vec<u8>, silent: bool) -> Option<Vec<KeydToNetd>> {
        let authentic = InitiatorAuth::parse(&message, &self.params)
            .is_ok_and(|m| initiator_auth(&self.k_auth, m.signed) == *m.auth);
        let before = self.keyd.modexps();
        let outputs = self.request(NetdToKeyd::InitiatorAuthReceived { message, peer: PEER, peer_silent: silent });
        if !authentic {
            assert_eq!(self.keyd.modexps(), before, "an unauthenticated Initiator Auth cost an exponentiation");
            if let Some(outputs) = &outputs {
                assert!(
                    outputs.iter().all(|o| matches!(o, KeydToNetd::HandshakeFailed { .. })),
                    "an unauthenticated Initiator Auth was answered: {outputs:?}"
                );
            }
        }
        outputs
    }

    fn responder_auth(&mut self, message: Vec<u8>) -> Option<Vec<KeydToNetd>> {
        // Authentic: its auth_r verifies over keyd's own last Initiator Auth.
        let genuine = match (&self.own_initiator_auth, ResponderAuth::parse(&message, &self.params)) {
            (Some(initiation), Ok(answer)) => responder_auth(&self.k_auth, initiation, answer.signed) == *answer.auth,
            _ => false,
        };
        let before = self.keyd.modexps();
        let outputs = self.request(NetdToKeyd::ResponderAuthReceived { message });
        if !genuine {
            assert_eq!(self.keyd.modexps(), before, "a forged Responder Auth cost an exponentiation");
            if let Some(outputs) = &outputs {
                assert!(
                    outputs.iter().all(|o| matches!(o, KeydToNetd::HandshakeFailed { .. })),
                    "a forged Responder Auth completed a handshake: {outputs:?}"
                );
            }
        }
        outputs
    }

    fn send_key_wanted(&mut self, current: Epoch) {
        let handed = self.send_epochs.iter().max().copied();
        let now = self.clock.now();
        let result = self.keyd.handle_netd(now, NetdToKeyd::SendKeyWanted { current });
        let outputs: Vec<KeydToNetd> = std::iter::from_fn(|| self.keyd.poll_output()).collect();
        yavipin_fuzz::trace!("  -> {result:?} {outputs:?}");
        let never_handed_out = handed.is_none_or(|h| current.0 > h);
        match result {
            Ok(()) => {
                assert!(!never_handed_out, "a send key wanted after {current}, never handed out, was not refused");
                assert!(outputs.len() <= 1, "one request, several send keys");
                for output in &outputs {
                    let KeydToNetd::SendKey { key, session_start: false } = output else {
                        panic!("SendKeyWanted answered with {output:?}")
                    };
                    assert_eq!(Some(key.epoch), current.next(), "a send key for another epoch than the next");
                    self.output(output);
                }
            }
            Err(error) => {
                assert!(outputs.is_empty(), "keyd refused ({error}) but still answered");
                assert!(
                    never_handed_out || error == KeydError::EpochsExhausted,
                    "a step after {current}, handed out, was refused: {error}"
                );
                self.stopped = true;
            }
        }
    }

    fn recv_epoch_started(&mut self, epoch: Epoch) {
        let handed = self.recv_epochs.contains(&epoch.0);
        let Some(outputs) = self.request(NetdToKeyd::RecvEpochStarted { epoch }) else { return };
        assert!(handed, "receive {epoch} accepted, but its key was never handed out");
        for output in &outputs {
            match output {
                KeydToNetd::RecvKey(key) => {
                    assert!(key.epoch > epoch && key.epoch.0 - epoch.0 <= 2, "receive key {} for {epoch}", key.epoch);
                }
                KeydToNetd::SendKey { session_start: true, .. } => {}
                other => panic!("RecvEpochStarted answered with {other:?}"),
            }
        }
    }

    fn build(&mut self, ni: Nonce, cookie: Cookie) {
        let mut echoed = ni.to_vec();
        echoed.extend_from_slice(&cookie);
        if self.forbidden.iter().any(|s| echoed == s) {
            // netd echoing the key it already knows into a message is not a leak by keyd.
            return;
        }
        let pending = self.initiating();
        self.nonces.push(ni);
        let now = self.clock.now();
        let result = self.keyd.handle_netd(now, NetdToKeyd::BuildInitiatorAuth { ni, cookie });
        let outputs: Vec<KeydToNetd> = std::iter::from_fn(|| self.keyd.poll_output()).collect();
        yavipin_fuzz::trace!("  -> {result:?} {outputs:?}");
        match result {
            Ok(()) => {
                assert!(!pending, "a second initiation was built while one was pending");
                let [KeydToNetd::SendInitiatorAuth { ni: built, .. }] = outputs.as_slice() else {
                    panic!("BuildInitiatorAuth answered with {outputs:?}")
                };
                assert_eq!(*built, ni);
                self.output(&outputs[0]);
            }
            Err(error) => {
                assert!(outputs.is_empty());
                assert!(
                    pending && error == KeydError::InitiationPending || error == KeydError::EpochsExhausted,
                    "BuildInitiatorAuth refused with {error}, pending: {pending}"
                );
                self.stopped = true;
            }
        }
    }

    /// Runs `op` on the honest peer; its refusals do not matter, its outputs are returned.
    fn peer_request(&mut self, message: NetdToKeyd) -> Vec<KeydToNetd> {
        let _ = self.peer.handle_netd(self.clock.now(), message);
        let outputs: Vec<KeydToNetd> = std::iter::from_fn(|| self.peer.poll_output()).collect();
        for output in &outputs {
            match output {
                KeydToNetd::SessionKeys { send_key: key, .. } | KeydToNetd::SendKey { key, .. } => {
                    self.peer_send = Some(key.epoch.0);
                }
                _ => {}
            }
        }
        outputs
    }

    fn peer_initiates(&mut self, ni: Nonce, silent: bool, flips: &[(u16, u8)]) {
        if let Some(pending) = self.peer_pending.take() {
            self.peer_request(NetdToKeyd::InitiationAbandoned { ni: pending });
        }
        let outputs = self.peer_request(NetdToKeyd::BuildInitiatorAuth { ni, cookie: COOKIE });
        let Some(message) = outputs.into_iter().find_map(|o| match o {
            KeydToNetd::SendInitiatorAuth { message, .. } => Some(message),
            _ => None,
        }) else {
            return;
        };
        self.peer_pending = Some(ni);
        self.nonces.push(ni);
        self.initiator_auth(flip(message, flips), silent);
    }

    fn peer_answers(&mut self, flips: &[(u16, u8)]) {
        let Some(initiation) = self.own_initiator_auth.clone() else { return };
        if let Some(pending) = self.peer_pending.take() {
            self.peer_request(NetdToKeyd::InitiationAbandoned { ni: pending });
        }
        let outputs = self.peer_request(NetdToKeyd::InitiatorAuthReceived {
            message: initiation,
            peer: PEER,
            peer_silent: false,
        });
        let Some(answer) = outputs.into_iter().find_map(|o| match o {
            KeydToNetd::SendResponderAuth { message, .. } => Some(message),
            _ => None,
        }) else {
            return;
        };
        self.responder_auth(flip(answer, flips));
    }

    fn signed(&mut self, ni: Nonce, epoch: Epoch, value: &DhChoice, silent: bool) {
        let p = yavipin_keyd::dh::prime_bytes(GROUP);
        let len = GROUP.value_len();
        let small = |v: u8| {
            let mut bytes = vec![0u8; len];
            bytes[len - 1] = v;
            bytes
        };
        let mut value = match value {
            DhChoice::Zero => small(0),
            DhChoice::One => small(1),
            DhChoice::Two => small(2),
            DhChoice::PrimeMinusOne => {
                let mut bytes = p.to_vec();
                bytes[len - 1] -= 1;
                bytes
            }
            DhChoice::Prime => p.to_vec(),
            DhChoice::Bytes(bytes) => bytes.clone(),
        };
        value.resize(len, 0xff);
        let generator = value == small(2);
        let mut message = InitiatorAuth::encode_signed(&self.params, &ni, &COOKIE, epoch, &value);
        let auth = initiator_auth(&self.k_auth, &message);
        message.extend_from_slice(&auth);
        assert_eq!(message.len(), GROUP.initiator_auth_len());
        assert_eq!(auth.len(), MAC_LEN);
        self.nonces.push(ni);
        let Some(outputs) = self.initiator_auth(message.clone(), silent) else { return };
        if !generator {
            return;
        }
        // g^x = g¹: the shared secret is keyd's own public value, so the whole answer and
        // the first keys can be checked against the protocol text.
        let mut outputs = outputs.iter();
        let Some(KeydToNetd::SendResponderAuth { message: answer, recv_key, .. }) = outputs.next() else { return };
        let parsed = ResponderAuth::parse(answer, &self.params).expect("keyd's Responder Auth parses");
        assert_eq!((parsed.ni, parsed.dh_value.len()), (ni, len));
        let t = transcript(&message, parsed.signed);
        assert_eq!(*parsed.auth, responder_auth(&self.k_auth, &message, parsed.signed), "auth_r is not the protocol's");
        let session = Session::derive(parsed.dh_value, &ni, &parsed.nr, &t);
        assert_eq!(*parsed.confirm, session.confirm_tag(&t), "confirm_r is not the protocol's");
        assert_eq!(recv_key.epoch, epoch);
        assert!(
            *recv_key.secret.expose() == traffic_secret(&session.initiator_to_responder, 0),
            "the first receive key is not TS_i2r[0]"
        );
        if let Some(KeydToNetd::RecvKey(next)) = outputs.next() {
            assert_eq!(next.epoch.0, epoch.0 + 1);
            assert!(*next.secret.expose() == traffic_secret(&session.initiator_to_responder, 1), "not TS_i2r[1]");
        }
        self.expected_start = Some((parsed.epoch, traffic_secret(&session.responder_to_initiator, 0)));
    }

    /// A Responder Auth to keyd's own initiation with `g^y = g¹`, signed with the key.
    fn signed_answer(&mut self, nr: Nonce, epoch: Epoch, confirm: bool) {
        let Some(initiation) = self.own_initiator_auth.clone() else { return };
        let own = InitiatorAuth::parse(&initiation, &self.params).expect("keyd's Initiator Auth parses");
        let mut two = vec![0u8; GROUP.value_len()];
        two[GROUP.value_len() - 1] = 2;
        let mut message = ResponderAuth::encode_signed(&self.params, &own.ni, &nr, epoch, &two);
        let t = transcript(&initiation, &message);
        // The shared secret (g^x)^1 is keyd's public value.
        let session = Session::derive(own.dh_value, &own.ni, &nr, &t);
        message.extend_from_slice(&responder_auth(&self.k_auth, &initiation, &message));
        message.extend_from_slice(&if confirm { session.confirm_tag(&t) } else { [0x5c; 32] });
        let (ni, send_epoch) = (own.ni, own.epoch);
        let Some(outputs) = self.responder_auth(message) else { return };
        let mut outputs = outputs.iter();
        let Some(KeydToNetd::SessionKeys { ni: done, send_key, recv_key, .. }) = outputs.next() else { return };
        assert!(confirm, "a session completed with a wrong confirm_r");
        assert_eq!(*done, ni);
        assert_eq!((send_key.epoch, recv_key.epoch), (send_epoch, epoch));
        assert!(*send_key.secret.expose() == traffic_secret(&session.initiator_to_responder, 0), "not TS_i2r[0]");
        assert!(*recv_key.secret.expose() == traffic_secret(&session.responder_to_initiator, 0), "not TS_r2i[0]");
        if let Some(KeydToNetd::RecvKey(next)) = outputs.next() {
            assert_eq!(next.epoch.0, epoch.0 + 1);
            assert!(*next.secret.expose() == traffic_secret(&session.responder_to_initiator, 1), "not TS_r2i[1]");
        }
    }

    fn advance(&mut self, by: Duration) {
        let target = self.clock.now() + by;
        loop {
            let next = [self.keyd.poll_timeout(), self.peer.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(at) if at <= target => {
                    self.clock.set(at);
                    let now = self.clock.now();
                    if self.keyd.poll_timeout().is_some_and(|t| t <= now) {
                        self.keyd.handle_timeout(now);
                        while let Some(output) = self.keyd.poll_output() {
                            yavipin_fuzz::trace!("  timer -> {output:?}");
                            assert!(matches!(output, KeydToNetd::RenewalDue), "a timer produced {output:?}");
                        }
                    }
                    if self.peer.poll_timeout().is_some_and(|t| t <= now) {
                        self.peer.handle_timeout(now);
                        while self.peer.poll_output().is_some() {}
                    }
                }
                _ => break,
            }
        }
        self.clock.set(target);
    }

    fn run(&mut self, op: Op) {
        yavipin_fuzz::trace!("op {op:?}");
        match op {
            Op::Build { ni, cookie } if self.within_budget() => self.build(ni, cookie),
            Op::Abandon(choice) => {
                let ni = match choice {
                    NonceChoice::Known(i) => match self.nonces.get(usize::from(i) % self.nonces.len().max(1)) {
                        Some(ni) => *ni,
                        None => return,
                    },
                    NonceChoice::Any(ni) => ni,
                };
                if let Some(outputs) = self.request(NetdToKeyd::InitiationAbandoned { ni }) {
                    assert!(outputs.is_empty(), "an abandonment was answered: {outputs:?}");
                }
            }
            Op::InitiatorAuth { message, silent } if self.within_budget() => {
                self.initiator_auth(message, silent);
            }
            Op::ResponderAuth { message } if self.within_budget() => {
                self.responder_auth(message);
            }
            Op::SendKeyWanted(choice) => self.send_key_wanted(self.epoch(&choice)),
            Op::RecvEpochStarted(choice) => self.recv_epoch_started(self.epoch(&choice)),
            Op::PeerInitiates { ni, silent, flips } if self.within_budget() => self.peer_initiates(ni, silent, &flips),
            Op::PeerAnswers { flips } if self.within_budget() => self.peer_answers(&flips),
            Op::PeerTakesAnswer if self.within_budget() => {
                if let Some((answer, _)) = self.own_responder_auth.clone() {
                    self.peer_request(NetdToKeyd::ResponderAuthReceived { message: answer });
                }
            }
            Op::Signed { ni, epoch, value, silent } if self.within_budget() => {
                let epoch = self.epoch(&epoch);
                self.signed(ni, epoch, &value, silent);
            }
            Op::SignedAnswer { nr, epoch, confirm } if self.within_budget() => {
                let epoch = self.epoch(&epoch);
                self.signed_answer(nr, epoch, confirm);
            }
            Op::Confirm => {
                if let Some((_, epoch)) = self.own_responder_auth {
                    self.recv_epoch_started(Epoch(epoch));
                }
            }
            Op::StepSend => {
                if let Some(&current) = self.send_epochs.iter().max() {
                    self.send_key_wanted(Epoch(current));
                }
            }
            Op::StepRecv(index) => {
                if let Some(&epoch) = self.recv_epochs.get(usize::from(index) % self.recv_epochs.len().max(1)) {
                    self.recv_epoch_started(Epoch(epoch));
                }
            }
            Op::PeerStepSend => {
                let Some(current) = self.peer_send else { return };
                self.peer_request(NetdToKeyd::SendKeyWanted { current: Epoch(current) });
                if let Some(next) = self.peer_send.filter(|&next| next != current) {
                    self.recv_epoch_started(Epoch(next));
                }
            }
            Op::PeerRestart => {
                self.peer_seed += 1;
                self.peer = daemon(self.peer_seed);
                self.peer_pending = None;
                self.peer_send = None;
            }
            Op::Advance { seconds } => self.advance(Duration::from_secs(u64::from(seconds % 1200))),
            // Over the exponentiation budget.
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    for op in decode_ops::<Op>(data, MAX_OPS) {
        h.run(op);
        if h.stopped {
            break;
        }
    }
});
