//! Moderation before speech: every clause is checked before it may be
//! spoken. Built-in rules are blocklists by category (Chinese and English),
//! extended or replaced from the config; matching is done on a normalised
//! form, so full-width letters, case, and spaces, punctuation or zero-width
//! characters inserted between characters do not evade it. In scripts that
//! separate words (Latin, Greek, Cyrillic) a term must also begin and end
//! at word boundaries: it matches a run of whole words that spell it
//! ("k.i.l.l", "on-line casino"), never letters taken across words of
//! innocent text ("this hit" does not contain "shit").

use crate::config::ModerationConfig;
use std::collections::BTreeMap;
use unicode_normalization::UnicodeNormalization;

/// Built-in terms by category: clear-cut abuse of a livestream (illegal
/// gambling, fraud, drugs, weapons). Operators add their own in
/// `[moderation.blocklist]`, or turn these off with `builtin = false`.
const BUILTIN: &[(&str, &[&str])] = &[
    (
        "gambling",
        &[
            "网络赌博",
            "网上赌场",
            "博彩网站",
            "赌博网站",
            "online casino",
            "betting site",
        ],
    ),
    (
        "fraud",
        &[
            "代开发票",
            "洗钱",
            "刷单返利",
            "套现",
            "money laundering",
            "fake invoices",
        ],
    ),
    (
        "drugs",
        &[
            "冰毒",
            "海洛因",
            "摇头丸",
            "buy cocaine",
            "buy heroin",
            "buy meth",
        ],
    ),
    (
        "weapons",
        &[
            "制造炸弹",
            "自制枪支",
            "how to make a bomb",
            "buy a gun without",
        ],
    ),
];

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Matched a rule of this category.
    Block {
        category: String,
    },
}

#[derive(Clone)]
pub struct Moderator {
    enabled: bool,
    rules: Vec<Rule>,
    webhook: Option<Webhook>,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

#[derive(Clone)]
struct Webhook {
    url: http::Uri,
    /// Signs every request (`X-Huashen-Signature`).
    secret: crate::config::Secret,
    timeout: std::time::Duration,
    fail_open: bool,
    client: HttpClient,
}

/// The signature of a webhook request sent at Unix time `timestamp`:
/// `sha256=` and the hex HMAC-SHA256, keyed by the webhook secret, of
/// `<timestamp>.<body>`. The service recomputes it (and refuses old
/// timestamps) to know the request is Huashen's and unaltered.
pub fn webhook_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Category given when the webhook cannot answer and the clause is refused.
pub const WEBHOOK_UNAVAILABLE: &str = "moderation_unavailable";

/// One blocked term.
#[derive(Clone)]
struct Rule {
    category: String,
    /// Normalised ([`normalise`]).
    term: String,
    /// Written in a script that separates words: matched on whole words.
    spaced: bool,
}

/// Lowercased NFKC with everything but letters and digits removed.
pub fn normalise(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// Lowercased NFKC words: the runs of letters and digits (anything else
/// separates them).
fn words(text: &str) -> Vec<String> {
    let lowered: String = text.nfkc().flat_map(char::to_lowercase).collect();
    lowered
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Latin, Greek, Cyrillic (and digits): scripts whose words are separated.
fn spaced_script(term: &str) -> bool {
    term.chars().all(|c| (c as u32) < 0x0530)
}

/// True when some run of consecutive whole `words` spells `term`.
fn spelled_by_words(words: &[String], term: &str) -> bool {
    (0..words.len()).any(|i| {
        let mut spelled = String::new();
        for w in &words[i..] {
            spelled.push_str(w);
            if !term.starts_with(spelled.as_str()) {
                return false;
            }
            if spelled.len() == term.len() {
                return true;
            }
        }
        false
    })
}

impl Moderator {
    pub fn new(config: &ModerationConfig) -> Self {
        let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if config.builtin {
            for (cat, terms) in BUILTIN {
                lists
                    .entry((*cat).to_owned())
                    .or_default()
                    .extend(terms.iter().map(|t| (*t).to_owned()));
            }
        }
        for (cat, terms) in &config.blocklist {
            lists
                .entry(cat.clone())
                .or_default()
                .extend(terms.iter().cloned());
        }
        let rules = lists
            .into_iter()
            .flat_map(|(cat, terms)| {
                terms
                    .into_iter()
                    .map(|t| normalise(&t))
                    .filter(|t| !t.is_empty())
                    .map(move |term| Rule {
                        category: cat.clone(),
                        spaced: spaced_script(&term),
                        term,
                    })
            })
            .collect();
        let webhook = config
            .webhook_url
            .parse::<http::Uri>()
            .ok()
            .filter(|_| !config.webhook_url.is_empty())
            .map(|url| {
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(crate::util::tls_client_config())
                    .https_or_http()
                    .enable_http1()
                    .build();
                Webhook {
                    url,
                    secret: config.webhook_secret.clone(),
                    timeout: config.webhook_timeout,
                    fail_open: config.webhook_fail_open,
                    client: hyper_util::client::legacy::Client::builder(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .build(https),
                }
            });
        Self {
            enabled: config.enabled,
            rules,
            webhook,
        }
    }

    /// Checks a clause: the blocklists first, then the webhook (if any).
    pub async fn review(&self, text: &str, language: &str, session_id: &str) -> Verdict {
        let verdict = self.check(text);
        if verdict != Verdict::Allow || !self.enabled {
            return verdict;
        }
        match &self.webhook {
            None => Verdict::Allow,
            Some(w) => {
                match tokio::time::timeout(w.timeout, w.ask(text, language, session_id)).await {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => w.unavailable(&e),
                    Err(_) => w.unavailable("no answer in time"),
                }
            }
        }
    }

    /// Checks what would be spoken.
    pub fn check(&self, text: &str) -> Verdict {
        if !self.enabled {
            return Verdict::Allow;
        }
        let compact = normalise(text);
        let words = words(text);
        for rule in &self.rules {
            let found = if rule.spaced {
                spelled_by_words(&words, &rule.term)
            } else {
                // Scripts without spaces between words (Chinese).
                compact.contains(rule.term.as_str())
            };
            if found {
                return Verdict::Block {
                    category: rule.category.clone(),
                };
            }
        }
        Verdict::Allow
    }
}

impl Webhook {
    async fn ask(&self, text: &str, language: &str, session_id: &str) -> Result<Verdict, String> {
        use http_body_util::BodyExt;
        let body =
            serde_json::json!({"text": text, "language": language, "session_id": session_id})
                .to_string();
        let timestamp = crate::store::now_ms() / 1000;
        let signature = webhook_signature(self.secret.0.as_bytes(), timestamp, body.as_bytes());
        let req = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-huashen-timestamp", timestamp.to_string())
            .header("x-huashen-signature", signature)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        match v.get("allow").and_then(serde_json::Value::as_bool) {
            Some(true) => Ok(Verdict::Allow),
            Some(false) => Ok(Verdict::Block {
                category: v
                    .get("category")
                    .and_then(serde_json::Value::as_str)
                    .filter(|c| !c.is_empty() && c.len() <= 32)
                    .unwrap_or("webhook")
                    .to_owned(),
            }),
            None => Err("the answer has no boolean `allow`".into()),
        }
    }

    fn unavailable(&self, why: &str) -> Verdict {
        tracing::warn!(
            reason = why,
            fail_open = self.fail_open,
            "moderation webhook failed"
        );
        if self.fail_open {
            Verdict::Allow
        } else {
            Verdict::Block {
                category: WEBHOOK_UNAVAILABLE.into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moderator() -> Moderator {
        let mut cfg = ModerationConfig::default();
        cfg.blocklist
            .insert("brand".into(), vec!["竞品店铺".into(), "Rival Shop".into()]);
        Moderator::new(&cfg)
    }

    #[test]
    fn blocks_terms_despite_evasion() {
        let m = moderator();
        let block = |t: &str| m.check(t);
        assert_eq!(block("欢迎来到直播间"), Verdict::Allow);
        assert_eq!(
            block("今天教大家 网络赌博 技巧"),
            Verdict::Block {
                category: "gambling".into()
            }
        );
        assert_eq!(
            block("网 络 赌 博"),
            Verdict::Block {
                category: "gambling".into()
            }
        );
        assert_eq!(
            block("网·络·赌·博"),
            Verdict::Block {
                category: "gambling".into()
            }
        );
        assert_eq!(
            block("网\u{200b}络赌博"),
            Verdict::Block {
                category: "gambling".into()
            }
        );
        assert_eq!(
            block("ＯＮＬＩＮＥ ＣＡＳＩＮＯ"),
            Verdict::Block {
                category: "gambling".into()
            }
        );
        assert_eq!(
            block("try our On-Line Casino!"),
            Verdict::Block {
                category: "gambling".into()
            }
        );
        assert_eq!(
            block("去 竞品 店铺 看看"),
            Verdict::Block {
                category: "brand".into()
            }
        );
        assert_eq!(
            block("rival-shop"),
            Verdict::Block {
                category: "brand".into()
            }
        );
        assert_eq!(
            block("Casino Royale is streaming online tonight"),
            Verdict::Allow
        );
        assert_eq!(block("洗手液买一送一"), Verdict::Allow);
    }

    /// Terms in Latin script match whole words only: innocent text whose
    /// words, run together, happen to contain a term passes; the term
    /// spelled out across separators is still caught.
    #[test]
    fn latin_terms_respect_word_boundaries() {
        let mut cfg = ModerationConfig::default();
        cfg.blocklist
            .insert("rude".into(), vec!["shit".into(), "ass".into()]);
        let m = Moderator::new(&cfg);
        let rude = Verdict::Block {
            category: "rude".into(),
        };
        for innocent in [
            "this hit single is great",
            "a class assignment",
            "the assassin's creed",
            "Try our ONLINE shop; the casino is closed",
        ] {
            assert_eq!(m.check(innocent), Verdict::Allow, "{innocent}");
        }
        for evasive in [
            "s.h.i.t",
            "S H I T",
            "sh-it",
            "what a sh\u{200b}it",
            "ＳＨＩＴ",
            "you ass",
        ] {
            assert_eq!(m.check(evasive), rude, "{evasive}");
        }
    }

    #[test]
    fn can_be_turned_off_or_reduced() {
        let cfg = ModerationConfig {
            builtin: false,
            ..Default::default()
        };
        assert_eq!(Moderator::new(&cfg).check("网络赌博"), Verdict::Allow);
        let cfg = ModerationConfig {
            enabled: false,
            ..Default::default()
        };
        assert_eq!(Moderator::new(&cfg).check("网络赌博"), Verdict::Allow);
    }
}
