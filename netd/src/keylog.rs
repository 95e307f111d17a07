//! A key log for one end-to-end test, compiled only with the `test-keylog` feature.
//!
//! The test that proves old traffic keys are erased (`parent/tests/attacks.rs`,
//! `old_traffic_keys_leave_memory`) must know the keys to look for them in netd's and
//! keyd's memory, and only netd ever sees them. With the feature, netd logs each traffic
//! secret keyd hands it, with its direction and epoch, as it arrives. The feature is off by
//! default and enabled by no package, install script or CI build except that test's own
//! build in `target/keylog`; a normal build contains neither this code nor its format string
//! (`the_normal_build_has_no_key_log` checks the release binary).

use std::fmt::Write;

use yavipin_ipc::KeydToNetd;
use yavipin_proto::EpochKey;

/// Logs the traffic secrets `message` carries.
pub(crate) fn record(message: &KeydToNetd) {
    let keys: [Option<(&str, &EpochKey)>; 2] = match message {
        KeydToNetd::SendResponderAuth { recv_key, .. } => [Some(("recv", recv_key)), None],
        KeydToNetd::SessionKeys { send_key, recv_key, .. } => [Some(("send", send_key)), Some(("recv", recv_key))],
        KeydToNetd::SendKey { key, .. } => [Some(("send", key)), None],
        KeydToNetd::RecvKey(key) => [Some(("recv", key)), None],
        KeydToNetd::SendInitiatorAuth { .. } | KeydToNetd::HandshakeFailed { .. } | KeydToNetd::RenewalDue => {
            [None, None]
        }
    };
    for (direction, key) in keys.into_iter().flatten() {
        let hex = key.secret.expose().iter().fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        log::info!("TEST-KEYLOG {direction} epoch {} secret {hex}", key.epoch.0);
    }
}
