//! Text in: one Speak call's text, split into clauses as it streams in
//! (each finished sentence goes out at once), each clause checked by
//! moderation before it may be spoken. A refused clause is audited (its
//! category, never its text) and reported as such; the text itself is
//! personal data and is never logged or stored.

use std::sync::Arc;

use huashen_inference::speech::clauses::ClauseSplitter;

use super::moderation::{Moderator, Verdict};
use crate::engines::speech::Utterance;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::store::{AuditEntry, Principal, Store};

/// Text intake shared by every session of the server.
#[derive(Clone)]
pub struct TextIngest {
    pub moderator: Arc<Moderator>,
    pub store: Store,
    /// Largest text one Speak call may carry, bytes.
    pub max_bytes: u64,
}

/// A clause out of the intake.
#[derive(Debug)]
pub enum Clause {
    /// Passed moderation: speak it.
    Speak(Utterance),
    /// Refused by moderation (audited): not spoken.
    Blocked { category: String },
}

/// One call's text on its way into one session.
pub struct TextStream {
    ingest: TextIngest,
    who: Principal,
    session_id: String,
    language: String,
    splitter: ClauseSplitter,
    total: u64,
}

impl TextIngest {
    /// Starts taking text for session `session_id` (speaking `language`)
    /// from `who`.
    pub fn open(&self, who: &Principal, session_id: &str, language: &str) -> TextStream {
        TextStream {
            ingest: self.clone(),
            who: who.clone(),
            session_id: session_id.to_owned(),
            language: language.to_owned(),
            splitter: ClauseSplitter::default(),
            total: 0,
        }
    }
}

impl TextStream {
    /// Takes the next piece of text (`flush`: what is pending is a clause
    /// now) and returns the clauses it completed, moderated.
    pub async fn push(&mut self, text: &str, flush: bool) -> ApiResult<Vec<Clause>> {
        self.total += text.len() as u64;
        if self.total > self.ingest.max_bytes {
            return Err(ApiError::ResourceExhausted(format!(
                "one Speak call carries at most {} bytes of text; start another call",
                self.ingest.max_bytes
            )));
        }
        let mut clauses = self.splitter.push(text);
        if flush {
            clauses.extend(self.splitter.flush());
        }
        self.moderate_all(clauses).await
    }

    /// The text has ended: what is pending is the last clause.
    pub async fn finish(&mut self) -> ApiResult<Vec<Clause>> {
        let last = self.splitter.flush();
        self.moderate_all(last.into_iter().collect()).await
    }

    async fn moderate_all(&self, clauses: Vec<String>) -> ApiResult<Vec<Clause>> {
        let mut out = Vec::with_capacity(clauses.len());
        for clause in clauses {
            out.push(self.moderate(clause).await?);
        }
        Ok(out)
    }

    async fn moderate(&self, text: String) -> ApiResult<Clause> {
        let verdict = self
            .ingest
            .moderator
            .review(&text, &self.language, &self.session_id)
            .await;
        match verdict {
            Verdict::Allow => Ok(Clause::Speak(Utterance {
                id: ids::new_id(ids::UTTERANCE),
                text,
            })),
            Verdict::Block { category } => {
                let entry = AuditEntry::new(
                    Some(&self.who),
                    "moderation.block",
                    self.session_id.clone(),
                    &category,
                );
                self.ingest
                    .store
                    .run(move |b| b.append_audit(&entry))
                    .await?;
                Ok(Clause::Blocked { category })
            }
        }
    }
}
