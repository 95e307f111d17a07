//! `yavipin_ipc::frame::decode` for each of the eight message enums that cross a process
//! boundary, on arbitrary frames (what a compromised netd, or a corrupted channel, could
//! send):
//!
//! - a frame longer than `MAX_FRAME` is refused; nothing panics or allocates without bound;
//! - a frame that decodes re-encodes (postcard) into at most as many bytes, never more than
//!   `MAX_FRAME`, and that encoding decodes into the same message: equal where the type
//!   has `PartialEq`, otherwise the same encoding again (which covers the key bytes) and the
//!   same `Debug` text;
//! - the secrets inside (the PSK in `ParentToKeyd::Init`, traffic secrets in `KeydToNetd`)
//!   print as `Psk(..)` / `TrafficSecret(..)`, never as bytes.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use yavipin_ipc::control::{KeydToParent, NetdToParent, ParentToKeyd, ParentToNetd};
use yavipin_ipc::frame::{FrameError, MAX_FRAME, decode};
use yavipin_ipc::scripts::{ParentToScripts, ScriptsToParent};
use yavipin_ipc::{KeydToNetd, NetdToKeyd};
use yavipin_proto::EpochKey;

/// Decodes `frame` as a `T`, and checks the round trip. Returns the decoded message.
fn round_trip<T: Serialize + DeserializeOwned + Debug>(frame: &[u8]) -> Option<T> {
    let first = match decode::<T>(frame) {
        Ok(message) => message,
        Err(FrameError::Oversize) => {
            assert!(frame.len() > MAX_FRAME, "a frame within the limit refused as oversize");
            return None;
        }
        Err(FrameError::Trailing(n)) => {
            assert!(n > 0 && n < frame.len());
            return None;
        }
        Err(FrameError::Decode(_)) => return None,
        Err(other) => panic!("decode reported an I/O-level error: {other}"),
    };
    assert!(frame.len() <= MAX_FRAME);
    let encoded = postcard::to_allocvec(&first).expect("a decoded message encodes");
    assert!(encoded.len() <= frame.len(), "the canonical encoding is longer than a frame that decoded");
    assert!(encoded.len() <= MAX_FRAME);
    let second = decode::<T>(&encoded).expect("a re-encoded message decodes");
    assert_eq!(postcard::to_allocvec(&second).expect("encodes"), encoded, "the round trip changed the message");
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
    Some(first)
}

fn assert_key_hidden(key: &EpochKey) {
    assert_eq!(format!("{:?}", key.secret), "TrafficSecret(..)");
    assert_eq!(format!("{key:?}"), format!("EpochKey {{ epoch: {:?}, secret: TrafficSecret(..) }}", key.epoch));
}

fuzz_target!(|frame: &[u8]| {
    if let Some(message) = round_trip::<ParentToNetd>(frame) {
        let again: ParentToNetd = decode(&postcard::to_allocvec(&message).expect("encodes")).expect("decodes");
        assert_eq!(message, again);
    }
    if let Some(message) = round_trip::<NetdToParent>(frame) {
        let again: NetdToParent = decode(&postcard::to_allocvec(&message).expect("encodes")).expect("decodes");
        assert_eq!(message, again);
    }
    if let Some(message) = round_trip::<KeydToParent>(frame) {
        let again: KeydToParent = decode(&postcard::to_allocvec(&message).expect("encodes")).expect("decodes");
        assert_eq!(message, again);
    }
    if let Some(message) = round_trip::<ParentToScripts>(frame) {
        let again: ParentToScripts = decode(&postcard::to_allocvec(&message).expect("encodes")).expect("decodes");
        assert_eq!(message, again);
    }
    if let Some(message) = round_trip::<ScriptsToParent>(frame) {
        let again: ScriptsToParent = decode(&postcard::to_allocvec(&message).expect("encodes")).expect("decodes");
        assert_eq!(message, again);
    }
    if let Some(ParentToKeyd::Init(init)) = round_trip::<ParentToKeyd>(frame) {
        assert_eq!(format!("{:?}", init.psk), "Psk(..)");
        assert!(format!("{init:?}").contains("psk: Psk(..)"));
    }
    round_trip::<NetdToKeyd>(frame);
    if let Some(message) = round_trip::<KeydToNetd>(frame) {
        let shown = format!("{message:?}");
        let keys: Vec<&EpochKey> = match &message {
            KeydToNetd::SendResponderAuth { recv_key, .. } => vec![recv_key],
            KeydToNetd::SessionKeys { send_key, recv_key, .. } => vec![send_key, recv_key],
            KeydToNetd::SendKey { key, .. } | KeydToNetd::RecvKey(key) => vec![key],
            KeydToNetd::SendInitiatorAuth { .. } | KeydToNetd::HandshakeFailed { .. } | KeydToNetd::RenewalDue => {
                vec![]
            }
        };
        for key in &keys {
            assert_key_hidden(key);
        }
        assert_eq!(shown.matches("TrafficSecret(..)").count(), keys.len());
    }
});
