//! The operations the stateful targets read from their input, one module per target.
//!
//! An input is a sequence of operations encoded with postcard (a variant index, then the
//! fields; byte strings carry their length). The fuzzer mutates those bytes; the seed
//! generator (`examples/gen_seeds.rs`) writes meaningful sequences with the same types, so
//! the seeds in `fuzz/seeds/` are real protocol scenarios rather than noise.

use serde::{Deserialize, Serialize};

/// A nonce or cookie: 16 bytes.
pub type Bytes16 = [u8; 16];

/// `data_open`, tampering mode.
pub mod data_open {
    use super::{Deserialize, Serialize};

    /// What a genuine packet carries.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Kind {
        /// An IPv4 packet.
        Ipv4,
        /// An IPv6 packet.
        Ipv6,
        /// Another protocol, with its ethertype.
        Other(u16),
        /// A control message.
        Control,
    }

    /// A payload to seal.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Payload {
        /// These bytes.
        Bytes(Vec<u8>),
        /// `len` copies of `byte`: long and compressible.
        Repeated {
            /// The byte.
            byte: u8,
            /// How many (reduced modulo the largest inner packet plus 64).
            len: u16,
        },
    }

    /// A change to a datagram before it is delivered.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Mutation {
        /// XOR `mask` into the byte at `at` (modulo the length).
        Flip {
            /// Position.
            at: u16,
            /// Bits to flip.
            mask: u8,
        },
        /// Cut to `to` bytes (modulo the length plus one).
        Truncate {
            /// New length.
            to: u16,
        },
        /// Append bytes.
        Append(Vec<u8>),
    }

    /// One step.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Op {
        /// The sender seals a packet.
        Seal {
            /// Its kind.
            kind: Kind,
            /// Its payload.
            payload: Payload,
        },
        /// The receiver gets sealed packet number `packet` (modulo their count), changed.
        Deliver {
            /// Which packet.
            packet: u8,
            /// Changes, in order.
            mutations: Vec<Mutation>,
        },
        /// The sender moves to its next epoch (up to 6).
        SenderNextEpoch,
        /// The receiver is given the key of `epoch` (modulo 8).
        ReceiverInstall {
            /// The epoch.
            epoch: u8,
        },
        /// Time passes (modulo 120 s).
        Advance {
            /// Milliseconds.
            millis: u32,
        },
    }
}

/// `tunnel_datagram`.
pub mod tunnel_datagram {
    use super::{Bytes16, Deserialize, Serialize};

    /// One step. `initiator` picks the tunnel (the initiating one, or the responder-only
    /// one); `from` picks a source address.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Op {
        /// Any datagram.
        Datagram {
            /// Which tunnel.
            initiator: bool,
            /// Source address.
            from: u8,
            /// The UDP payload.
            bytes: Vec<u8>,
        },
        /// A well-formed Request.
        Request {
            /// Which tunnel.
            initiator: bool,
            /// Source address.
            from: u8,
            /// Its nonce.
            ni: Bytes16,
        },
        /// An Initiator Auth echoing the `which`-th cookie the tunnel handed out, from the
        /// address it went to or from `elsewhere`.
        EchoCookie {
            /// Which tunnel.
            initiator: bool,
            /// Which cookie.
            which: u8,
            /// Another source address, if any.
            elsewhere: Option<u8>,
            /// The announced epoch.
            epoch: u32,
            /// DH value and `auth_i` (padded or cut to length).
            tail: Vec<u8>,
        },
        /// A Cookie Reply to the initiating tunnel, for its current nonce if `current`.
        CookieReply {
            /// Source address.
            from: u8,
            /// Use the nonce of the Request under way.
            current: bool,
            /// The nonce otherwise.
            ni: Bytes16,
            /// The cookie.
            cookie: Bytes16,
        },
        /// A Responder Auth for the initiating tunnel's current nonce.
        ResponderAuth {
            /// Source address.
            from: u8,
            /// The rest of the message (padded or cut to length).
            tail: Vec<u8>,
        },
        /// Time passes (modulo 10 minutes); timers run at their deadlines.
        Advance {
            /// Milliseconds.
            millis: u32,
        },
    }
}

/// `keyd_requests`.
pub mod keyd_requests {
    use super::{Bytes16, Deserialize, Serialize};

    /// An epoch.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum EpochChoice {
        /// One of the epochs keyd handed out (by index), plus `offset` (modulo 4).
        Handed {
            /// Which.
            index: u8,
            /// How far past it.
            offset: u8,
        },
        /// A small epoch.
        Small(u8),
        /// Any epoch.
        Any(u32),
    }

    /// A nonce.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum NonceChoice {
        /// The nonce of one of the initiations seen (by index).
        Known(u8),
        /// Any nonce.
        Any(Bytes16),
    }

    /// A Diffie-Hellman value.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum DhChoice {
        /// 0.
        Zero,
        /// 1.
        One,
        /// 2: valid.
        Two,
        /// p − 1.
        PrimeMinusOne,
        /// p.
        Prime,
        /// These bytes, padded with 0xff or cut to length.
        Bytes(Vec<u8>),
    }

    /// One step.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Op {
        /// netd asks for an Initiator Auth.
        Build {
            /// Nonce.
            ni: Bytes16,
            /// Cookie.
            cookie: Bytes16,
        },
        /// netd abandons an initiation.
        Abandon(NonceChoice),
        /// netd forwards these bytes as an Initiator Auth.
        InitiatorAuth {
            /// The message.
            message: Vec<u8>,
            /// `peer_silent`.
            silent: bool,
        },
        /// netd forwards these bytes as a Responder Auth.
        ResponderAuth {
            /// The message.
            message: Vec<u8>,
        },
        /// netd asks for the send key after this epoch.
        SendKeyWanted(EpochChoice),
        /// netd reports the peer heard under this epoch.
        RecvEpochStarted(EpochChoice),
        /// The honest peer initiates; netd relays its Initiator Auth with bits flipped.
        PeerInitiates {
            /// The peer's nonce.
            ni: Bytes16,
            /// `peer_silent`.
            silent: bool,
            /// (position, mask) pairs.
            flips: Vec<(u16, u8)>,
        },
        /// keyd's last Initiator Auth goes to the honest peer; netd relays the answer with
        /// bits flipped.
        PeerAnswers {
            /// (position, mask) pairs.
            flips: Vec<(u16, u8)>,
        },
        /// The honest peer completes the handshake keyd answered last.
        PeerTakesAnswer,
        /// An Initiator Auth signed with the key, hostile inside.
        Signed {
            /// Nonce.
            ni: Bytes16,
            /// Announced epoch.
            epoch: EpochChoice,
            /// DH value.
            value: DhChoice,
            /// `peer_silent`.
            silent: bool,
        },
        /// A Responder Auth to keyd's own last initiation, signed with the key, hostile
        /// inside. Its DH value is 2 = g¹, so the shared secret is keyd's own public value
        /// and `confirm_r` can be computed here: valid if `confirm`, else garbage.
        SignedAnswer {
            /// The responder's nonce.
            nr: Bytes16,
            /// Announced epoch.
            epoch: EpochChoice,
            /// A valid `confirm_r`.
            confirm: bool,
        },
        /// The initiator's first packet under the session keyd answered last.
        Confirm,
        /// The data plane's next chain step.
        StepSend,
        /// The peer heard under one of the receive epochs handed out (by index).
        StepRecv(u8),
        /// The honest peer moves its sending to its next epoch, and its first packet
        /// under it arrives.
        PeerStepSend,
        /// The honest peer loses its state.
        PeerRestart,
        /// Time passes (modulo 20 minutes); timers run at their deadlines.
        Advance {
            /// Seconds.
            seconds: u16,
        },
    }
}
