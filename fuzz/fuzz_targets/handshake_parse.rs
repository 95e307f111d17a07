//! Every wire parser of `yavipin_proto` (`docs/PROTOCOL.md` sections 1 and 2) on arbitrary
//! bytes, against an oracle written from the protocol text:
//!
//! - a message parses only at the one length its group gives it, and then re-encoding what
//!   was read gives back exactly the same bytes (nothing is skipped or reinterpreted);
//! - a refusal names the first check that fails, in the documented order: length, type,
//!   version, suite, group, key id, padding;
//! - the data header parses exactly the flag bytes with bit 7 and the reserved bits clear,
//!   and writes them back unchanged.
//!
//! Each parser runs against the parameters of both groups, with the key id the bytes
//! carry (so that valid messages are reachable) and with a fixed one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use yavipin_fuzz::KEY_ID;
use yavipin_proto::data::{DataHeader, HeaderError};
use yavipin_proto::handshake::{
    COOKIE_REPLY_LEN, CookieReply, Group, InitiatorAuth, MAC_LEN, NONCE_LEN, PARAMS_LEN, Params, REQUEST_LEN, Request,
    ResponderAuth, WireError, responder_auth_ni,
};
use yavipin_proto::{DATA_HEADER_LEN, msg_type};

/// The refusal the protocol text prescribes for `bytes` as a message of `message_type`,
/// whose valid length is `len`; `None` if it must parse.
fn expected_error(bytes: &[u8], params: Params, message_type: u8, len: usize) -> Option<WireError> {
    if bytes.len() != len {
        return Some(WireError::BadLength);
    }
    let key_id = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if bytes[0] != message_type {
        Some(WireError::BadType)
    } else if bytes[1] != params.version {
        Some(WireError::BadVersion)
    } else if bytes[2] != params.suite {
        Some(WireError::BadSuite)
    } else if bytes[3] != params.group.id() {
        Some(WireError::BadGroup)
    } else if key_id != params.key_id {
        Some(WireError::BadKeyId)
    } else if message_type == msg_type::REQUEST && bytes[PARAMS_LEN + NONCE_LEN..].iter().any(|&b| b != 0) {
        Some(WireError::BadPadding)
    } else {
        None
    }
}

/// The valid length of a message whose size depends on its group: the group it names if
/// known, else ours.
fn sized_len(bytes: &[u8], params: Params, len_for: fn(Group) -> usize) -> usize {
    match bytes.get(3) {
        Some(&id) if bytes.len() >= PARAMS_LEN => len_for(Group::from_id(id).unwrap_or(params.group)),
        // Shorter than the header: no length is right.
        _ => usize::MAX,
    }
}

fn check_request(bytes: &[u8], params: Params) {
    let expected = expected_error(bytes, params, msg_type::REQUEST, REQUEST_LEN);
    match Request::parse(bytes, &params) {
        Ok(request) => {
            assert_eq!(expected, None, "accepted what the protocol refuses");
            assert_eq!(Request::encode(&params, &request.ni)[..], *bytes, "Request does not re-encode");
        }
        Err(error) => assert_eq!(Some(error), expected, "Request refused for the wrong reason"),
    }
}

fn check_cookie_reply(bytes: &[u8], params: Params) {
    let expected = expected_error(bytes, params, msg_type::COOKIE_REPLY, COOKIE_REPLY_LEN);
    match CookieReply::parse(bytes, &params) {
        Ok(reply) => {
            assert_eq!(expected, None, "accepted what the protocol refuses");
            assert_eq!(
                CookieReply::encode(&params, &reply.ni, &reply.cookie)[..],
                *bytes,
                "Cookie Reply does not re-encode"
            );
        }
        Err(error) => assert_eq!(Some(error), expected, "Cookie Reply refused for the wrong reason"),
    }
}

fn check_initiator_auth(bytes: &[u8], params: Params) {
    let len = sized_len(bytes, params, Group::initiator_auth_len);
    let expected = expected_error(bytes, params, msg_type::INITIATOR_AUTH, len);
    match InitiatorAuth::parse(bytes, &params) {
        Ok(message) => {
            assert_eq!(expected, None, "accepted what the protocol refuses");
            assert_eq!(bytes.len(), params.group.initiator_auth_len());
            assert_eq!(message.dh_value.len(), params.group.value_len());
            let mut encoded =
                InitiatorAuth::encode_signed(&params, &message.ni, &message.cookie, message.epoch, message.dh_value);
            assert_eq!(encoded, message.signed, "the signed part is not everything before auth_i");
            encoded.extend_from_slice(message.auth);
            assert_eq!(encoded, bytes, "Initiator Auth does not re-encode");
        }
        Err(error) => assert_eq!(Some(error), expected, "Initiator Auth refused for the wrong reason"),
    }
}

fn check_responder_auth(bytes: &[u8], params: Params) {
    let len = sized_len(bytes, params, Group::responder_auth_len);
    let expected = expected_error(bytes, params, msg_type::RESPONDER_AUTH, len);
    match ResponderAuth::parse(bytes, &params) {
        Ok(message) => {
            assert_eq!(expected, None, "accepted what the protocol refuses");
            assert_eq!(bytes.len(), params.group.responder_auth_len());
            assert_eq!(message.dh_value.len(), params.group.value_len());
            assert_eq!(responder_auth_ni(bytes), Some(message.ni));
            let mut encoded =
                ResponderAuth::encode_signed(&params, &message.ni, &message.nr, message.epoch, message.dh_value);
            assert_eq!(encoded, message.signed, "the signed part is not everything before auth_r");
            encoded.extend_from_slice(message.auth);
            encoded.extend_from_slice(message.confirm);
            assert_eq!(encoded.len(), message.signed.len() + 2 * MAC_LEN);
            assert_eq!(encoded, bytes, "Responder Auth does not re-encode");
        }
        Err(error) => assert_eq!(Some(error), expected, "Responder Auth refused for the wrong reason"),
    }
}

fn check_data_header(bytes: &[u8]) {
    let result = DataHeader::parse(bytes);
    match bytes.first_chunk::<DATA_HEADER_LEN>() {
        None => assert_eq!(result, Err(HeaderError::TooShort)),
        Some(head) if head[0] & msg_type::HANDSHAKE_BIT != 0 => assert_eq!(result, Err(HeaderError::NotData)),
        Some(head) if head[0] & 0x0c != 0 => assert_eq!(result, Err(HeaderError::Reserved)),
        Some(head) => {
            let header = result.expect("a valid data header");
            assert_eq!(header.to_bytes(), *head, "data header does not re-encode");
            assert_eq!(header.seq, u32::from_be_bytes(head[1..].try_into().expect("4 bytes")));
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    check_data_header(bytes);
    assert_eq!(responder_auth_ni(bytes).is_some(), bytes.len() >= PARAMS_LEN + NONCE_LEN);
    let carried = bytes.get(4..8).map_or(KEY_ID, |id| u32::from_be_bytes(id.try_into().expect("4 bytes")));
    for group in Group::ALL {
        for key_id in [carried, KEY_ID] {
            let params = Params::new(group, key_id);
            check_request(bytes, params);
            check_cookie_reply(bytes, params);
            check_initiator_auth(bytes, params);
            check_responder_auth(bytes, params);
        }
    }
});
