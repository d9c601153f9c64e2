//! Huashen's machine-readable AI-generated label in H.264: an SEI
//! `user_data_unregistered` message (ITU-T H.264 D.1.7) carrying
//! [`AI_LABEL_UUID`] and a small JSON (`ai_generated`, `generator`,
//! `session`, `time_ms`). The server writes it (with every keyframe and once
//! a second); viewers, the load test and third-party tools read it. The
//! format is documented in docs/PRIVACY.md.

/// UUID identifying Huashen's AI-generated label in SEI user data.
pub const AI_LABEL_UUID: [u8; 16] = [
    0x8f, 0x1d, 0x8e, 0x4a, 0x2b, 0x6c, 0x4f, 0x7e, 0x9a, 0x51, 0x48, 0x55, 0x41, 0x53, 0x48, 0x4e,
];

/// SEI payload type of `user_data_unregistered`.
const USER_DATA_UNREGISTERED: u8 = 5;
/// NAL unit type of an SEI message.
const NAL_SEI: u8 = 6;

/// An Annex B SEI NAL unit labelling `session_id` (an API id: no characters
/// that JSON escapes) as made by `generator` (e.g. `huashen/0.1.0`) at
/// `time_ms` (Unix milliseconds).
pub fn label_nal(generator: &str, session_id: &str, time_ms: i64) -> Vec<u8> {
    let json = format!(
        "{{\"ai_generated\":true,\"generator\":\"{generator}\",\"session\":\"{session_id}\",\"time_ms\":{time_ms}}}"
    );
    let mut payload = AI_LABEL_UUID.to_vec();
    payload.extend_from_slice(json.as_bytes());
    // sei_message: payload type, size in 0xFF-prefixed bytes, payload.
    let mut rbsp = vec![USER_DATA_UNREGISTERED];
    let mut n = payload.len();
    while n >= 255 {
        rbsp.push(0xFF);
        n -= 255;
    }
    rbsp.push(n as u8);
    rbsp.extend_from_slice(&payload);
    rbsp.push(0x80); // rbsp_trailing_bits
    let mut nal = vec![0, 0, 0, 1, NAL_SEI];
    // Emulation prevention: no 00 00 0x (x <= 3) inside the NAL.
    let mut zeros = 0;
    for b in rbsp {
        if zeros >= 2 && b <= 3 {
            nal.push(3);
            zeros = 0;
        }
        nal.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    nal
}

/// Inserts `sei` into an Annex B access unit before its first slice (after
/// SPS/PPS), as H.264 orders them.
pub fn insert_before_first_slice(au: &[u8], sei: &[u8]) -> Vec<u8> {
    let mut i = 0;
    while i + 3 < au.len() {
        let start = if au[i..].starts_with(&[0, 0, 0, 1]) {
            Some(4)
        } else if au[i..].starts_with(&[0, 0, 1]) {
            Some(3)
        } else {
            None
        };
        if let Some(sc) = start
            && let Some(&header) = au.get(i + sc)
            && matches!(header & 0x1F, 1 | 5)
        {
            let mut out = Vec::with_capacity(au.len() + sei.len());
            out.extend_from_slice(&au[..i]);
            out.extend_from_slice(sei);
            out.extend_from_slice(&au[i..]);
            return out;
        }
        i += 1;
    }
    let mut out = sei.to_vec();
    out.extend_from_slice(au);
    out
}

/// Finds Huashen's AI-generated label (SEI user data with [`AI_LABEL_UUID`])
/// in an Annex B access unit and returns its JSON.
pub fn find_label(au: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 4 < au.len() {
        if au[i..].starts_with(&[0, 0, 1])
            && au[i + 3] & 0x1F == NAL_SEI
            && let Some(json) = label_in(&unescape(&au[i + 4..]))
        {
            return Some(json);
        }
        i += 1;
    }
    None
}

/// The RBSP of a NAL unit's body: emulation prevention undone, up to the
/// next start code.
fn unescape(body: &[u8]) -> Vec<u8> {
    let mut rbsp = vec![];
    let mut zeros = 0;
    for (j, &b) in body.iter().enumerate() {
        if body[j..].starts_with(&[0, 0, 1]) {
            break;
        }
        if !(zeros >= 2 && b == 3) {
            rbsp.push(b);
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    rbsp
}

/// The label's JSON if this SEI RBSP's first message is Huashen's label.
fn label_in(rbsp: &[u8]) -> Option<String> {
    if rbsp.first() != Some(&USER_DATA_UNREGISTERED) {
        return None;
    }
    let mut k = 1;
    let mut size = 0usize;
    while rbsp.get(k) == Some(&0xFF) {
        size += 255;
        k += 1;
    }
    size += usize::from(*rbsp.get(k)?);
    let payload = rbsp.get(k + 1..k + 1 + size)?;
    let json = payload.strip_prefix(&AI_LABEL_UUID)?;
    String::from_utf8(json.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access_unit() -> Vec<u8> {
        [
            &[0, 0, 0, 1, 0x67, 0x42, 0, 0x1f][..],
            &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80],
            &[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00],
        ]
        .concat()
    }

    #[test]
    fn label_round_trips_through_an_access_unit() {
        let sei = label_nal(
            "huashen/0.1.0",
            "se_0123456789abcdef0123456789abcdef",
            1_795_000_000_000,
        );
        let au = access_unit();
        let with = insert_before_first_slice(&au, &sei);
        // SPS, PPS, then SEI, then the IDR slice.
        let sei_at = with.windows(5).position(|w| w == [0, 0, 0, 1, 6]).unwrap();
        let idr_at = with
            .windows(5)
            .position(|w| w == [0, 0, 0, 1, 0x65])
            .unwrap();
        assert!(sei_at > 8 && sei_at < idr_at);
        let json = find_label(&with).unwrap();
        assert_eq!(
            json,
            "{\"ai_generated\":true,\"generator\":\"huashen/0.1.0\",\
             \"session\":\"se_0123456789abcdef0123456789abcdef\",\"time_ms\":1795000000000}"
        );
        assert!(find_label(&au).is_none());
    }

    #[test]
    fn long_labels_and_escaped_bytes_survive() {
        // Over 255 bytes of payload (size in two bytes), and a generator
        // whose bytes need emulation prevention once framed.
        let generator = format!("x{}", "\u{0}\u{0}\u{1}".repeat(100));
        let sei = label_nal(&generator, "se_1", 0);
        assert!(!sei[4..].windows(3).any(|w| w == [0, 0, 1]));
        let json = find_label(&insert_before_first_slice(&access_unit(), &sei)).unwrap();
        assert!(json.contains(&generator));
    }

    #[test]
    fn other_sei_is_not_a_label() {
        let mut sei = label_nal("huashen/0.1.0", "se_1", 0);
        sei[7] ^= 0xFF; // first UUID byte
        assert!(find_label(&sei).is_none());
        assert!(find_label(&[0, 0, 1, 6, 5]).is_none());
    }
}
