//! Request validation shared by the services: every rule returns an
//! INVALID_ARGUMENT (or FAILED_PRECONDITION for consent) that names the field
//! and says what is allowed.

use crate::error::{ApiError, ApiResult};
use crate::ids::{self, truncate};
use crate::store::{Consent, Millis, now_ms};
use base64::Engine;
use huashen_protos::v1;
use std::collections::{BTreeMap, HashMap};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;
const MAX_LABELS: usize = 16;
const MAX_LABEL_LEN: usize = 64;
/// Clock skew allowed for a client-supplied consent time.
const CONSENT_SKEW_MS: Millis = 5 * 60 * 1000;

/// A required text field of at most `max` characters, trimmed of nothing.
pub fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(format!("{field} is required")));
    }
    optional_text(field, value, max)
}

/// An optional text field of at most `max` characters without control
/// characters.
pub fn optional_text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let n = value.chars().count();
    if n > max {
        return Err(ApiError::invalid(format!(
            "{field} is {n} characters long; at most {max} are allowed"
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value.to_owned())
}

pub fn labels(
    field: &str,
    labels: &HashMap<String, String>,
) -> ApiResult<BTreeMap<String, String>> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::invalid(format!(
            "{field} has {} entries; at most {MAX_LABELS} are allowed",
            labels.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (k, v) in labels {
        text(&format!("{field} key"), k, MAX_LABEL_LEN)?;
        optional_text(&format!("{field}[{:?}]", truncate(k, 64)), v, MAX_LABEL_LEN)?;
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// Page size and the id to continue before.
pub fn page(p: Option<&v1::PageRequest>, prefix: &str) -> ApiResult<(usize, Option<String>)> {
    let Some(p) = p else {
        return Ok((DEFAULT_PAGE_SIZE, None));
    };
    let size = match p.page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n if n > MAX_PAGE_SIZE => {
            return Err(ApiError::invalid(format!(
                "page.page_size is {n}; at most {MAX_PAGE_SIZE} is allowed"
            )));
        }
        n => n,
    };
    if p.page_token.is_empty() {
        return Ok((size, None));
    }
    let bad = || ApiError::invalid("page.page_token is not a token returned by this list call");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&p.page_token)
        .map_err(|_| bad())?;
    let id = String::from_utf8(raw).map_err(|_| bad())?;
    ids::parse_id("page.page_token", prefix, &id).map_err(|_| bad())?;
    Ok((size, Some(id)))
}

/// Token for the page after `last_id`, or empty when `got < size`.
pub fn next_token(got: usize, size: usize, last_id: Option<&str>) -> String {
    match last_id {
        Some(id) if got == size => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id),
        _ => String::new(),
    }
}

fn consent_missing(what: &str) -> ApiError {
    ApiError::FailedPrecondition(format!(
        "consent is incomplete: {what}. Enrollment needs a consent record from the depicted person \
         (or a parent or guardian for a minor under 14) before the portrait is processed"
    ))
}

/// Validates a consent record. Missing or incomplete consent is
/// FAILED_PRECONDITION; oversize fields are INVALID_ARGUMENT.
pub fn consent(c: Option<&v1::ConsentRecord>) -> ApiResult<Consent> {
    let c = c.ok_or_else(|| consent_missing("start.consent is missing"))?;
    let required = |field: &str, v: &str, max: usize| -> ApiResult<String> {
        if v.trim().is_empty() {
            return Err(consent_missing(&format!("start.consent.{field} is empty")));
        }
        optional_text(&format!("start.consent.{field}"), v, max)
    };
    let uploader = required("uploader", &c.uploader, 200)?;
    let subject_name = required("subject_name", &c.subject_name, 200)?;
    if !c.subject_consented {
        return Err(consent_missing(
            "start.consent.subject_consented is false; the depicted person must agree",
        ));
    }
    let guardian_name = optional_text("start.consent.guardian_name", &c.guardian_name, 200)?;
    if c.subject_is_minor && guardian_name.trim().is_empty() {
        return Err(consent_missing(
            "the subject is a minor, so start.consent.guardian_name (the consenting parent or guardian) is required",
        ));
    }
    let purpose = required("purpose", &c.purpose, 1000)?;
    let policy_version = required("policy_version", &c.policy_version, 64)?;
    let now = now_ms();
    let consented_at = match &c.consented_at {
        None => now,
        Some(ts) => {
            if !(0..1_000_000_000).contains(&ts.nanos) {
                return Err(ApiError::invalid(
                    "start.consent.consented_at has invalid nanos",
                ));
            }
            let ms = ts
                .seconds
                .checked_mul(1000)
                .and_then(|s| s.checked_add(i64::from(ts.nanos) / 1_000_000))
                .ok_or_else(|| ApiError::invalid("start.consent.consented_at is out of range"))?;
            if ms > now + CONSENT_SKEW_MS {
                return Err(consent_missing(
                    "start.consent.consented_at is in the future",
                ));
            }
            if ms < 0 {
                return Err(ApiError::invalid(
                    "start.consent.consented_at is before 1970",
                ));
            }
            ms
        }
    };
    Ok(Consent {
        id: ids::new_id(ids::CONSENT),
        uploader,
        subject_name,
        subject_consented: true,
        subject_is_minor: c.subject_is_minor,
        guardian_name,
        purpose,
        consented_at,
        policy_version,
        recorded_at: now,
    })
}

pub fn timestamp(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> v1::ConsentRecord {
        v1::ConsentRecord {
            uploader: "operator".into(),
            subject_name: "Wang Fang".into(),
            subject_consented: true,
            subject_is_minor: false,
            guardian_name: String::new(),
            purpose: "product livestreams".into(),
            consented_at: None,
            policy_version: "2026-01".into(),
        }
    }

    fn code(e: ApiError) -> tonic::Code {
        tonic::Status::from(e).code()
    }

    #[test]
    fn consent_rules() {
        assert!(consent(Some(&good())).is_ok());
        assert_eq!(
            code(consent(None).unwrap_err()),
            tonic::Code::FailedPrecondition
        );
        let mut c = good();
        c.subject_consented = false;
        assert_eq!(
            code(consent(Some(&c)).unwrap_err()),
            tonic::Code::FailedPrecondition
        );
        let mut c = good();
        c.subject_is_minor = true;
        assert_eq!(
            code(consent(Some(&c)).unwrap_err()),
            tonic::Code::FailedPrecondition
        );
        c.guardian_name = "Parent".into();
        assert!(consent(Some(&c)).is_ok());
        let mut c = good();
        c.consented_at = Some(timestamp(now_ms() + 3_600_000));
        assert_eq!(
            code(consent(Some(&c)).unwrap_err()),
            tonic::Code::FailedPrecondition
        );
        let mut c = good();
        c.purpose = "x".repeat(1001);
        assert_eq!(
            code(consent(Some(&c)).unwrap_err()),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn paging_tokens() {
        let id = ids::new_id(ids::AVATAR);
        let tok = next_token(2, 2, Some(&id));
        let (n, before) = page(
            Some(&v1::PageRequest {
                page_size: 2,
                page_token: tok,
            }),
            ids::AVATAR,
        )
        .unwrap();
        assert_eq!((n, before.as_deref()), (2, Some(id.as_str())));
        assert_eq!(next_token(1, 2, Some(&id)), "");
        let bad = v1::PageRequest {
            page_size: 0,
            page_token: "!!".into(),
        };
        assert!(page(Some(&bad), ids::AVATAR).is_err());
        let big = v1::PageRequest {
            page_size: 501,
            page_token: String::new(),
        };
        assert!(page(Some(&big), ids::AVATAR).is_err());
    }

    #[test]
    fn text_and_labels() {
        assert!(text("f", "  ", 5).is_err());
        assert!(text("f", "abcdef", 5).is_err());
        assert!(text("f", "a\u{0}b", 5).is_err());
        assert!(text("f", "化身", 2).is_ok());
        let many: HashMap<String, String> =
            (0..17).map(|i| (i.to_string(), String::new())).collect();
        assert!(labels("labels", &many).is_err());
    }
}
