//! Object identifiers: a type prefix and 32 hex digits of a UUIDv7, so IDs
//! sort by creation time and say what they name.

use crate::error::ApiError;

pub const TENANT: &str = "tn_";
pub const API_KEY: &str = "ak_";
pub const AVATAR: &str = "av_";
pub const SESSION: &str = "se_";
pub const UTTERANCE: &str = "ut_";
pub const CONSENT: &str = "cs_";
pub const RECORDING: &str = "rc_";
pub const OUTPUT: &str = "ou_";
/// A server process sharing the records.
pub const NODE: &str = "nd_";

/// A new identifier with `prefix`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// Checks that `value` (the request field `field`) is an identifier with
/// `prefix`. Empty and malformed values are INVALID_ARGUMENT.
pub fn parse_id(field: &str, prefix: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(format!("{field} is required")));
    }
    let ok = value.len() == prefix.len() + 32
        && value.starts_with(prefix)
        && value[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ApiError::invalid(format!(
            "{field} must look like {prefix}<32 lowercase hex digits>, got {:?}",
            truncate(value, 80)
        )))
    }
}

/// At most `max` characters of `s`, for echoing client input in messages.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort() {
        let a = new_id(AVATAR);
        let b = new_id(AVATAR);
        assert_eq!(parse_id("avatar_id", AVATAR, &a).unwrap(), a);
        assert!(a < b, "v7 ids sort by time");
        assert!(parse_id("avatar_id", SESSION, &a).is_err());
        assert!(parse_id("avatar_id", AVATAR, "").is_err());
        assert!(parse_id("avatar_id", AVATAR, "av_XYZ").is_err());
        assert!(parse_id("x", AVATAR, &a.to_uppercase()).is_err());
    }

    #[test]
    fn truncate_is_char_safe() {
        assert_eq!(truncate("化身化身", 2), "化身…");
        assert_eq!(truncate("ab", 5), "ab");
    }
}
