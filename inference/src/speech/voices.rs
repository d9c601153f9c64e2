//! The installed voices behind one interface, and clauses that mix
//! languages: Latin-script words inside Mandarin text are spoken by the
//! English voice, Chinese inside English text by the Mandarin voice, each
//! resampled to the clause's voice rate and joined on one timeline.

use std::path::Path;

use burn::prelude::*;

use super::timeline::{Span, Timeline};
use super::tts::{ClauseSynthesis, EnglishTts, TtsError, VoiceInfo};
use super::zh::frontend::Piece;
use super::zh::{MandarinTts, ZhClause};
use crate::resample::Resampler;

/// Every voice that loaded.
pub struct Voices<B: Backend> {
    pub english: Option<EnglishTts<B>>,
    pub mandarin: Option<MandarinTts<B>>,
}

enum Part<B: Backend> {
    En(Box<ClauseSynthesis<B>>, Option<Resampler>),
    Zh(Box<ZhClause<B>>, Option<Resampler>),
}

/// One clause being synthesised, possibly in several voices.
pub struct Clause<B: Backend> {
    /// The whole clause at `timeline.sample_rate`, known before any audio.
    pub timeline: Timeline,
    parts: Vec<Part<B>>,
    current: usize,
}

impl<B: Backend> Clause<B> {
    pub fn done(&self) -> bool {
        self.current >= self.parts.len()
    }
}

fn is_han(c: char) -> bool {
    ('\u{3400}'..='\u{9fff}').contains(&c)
}

/// Rescales a timeline to `rate` and shifts it by `offset` samples (at `rate`).
fn shifted(t: &Timeline, rate: u32, offset: u64) -> Timeline {
    let k = |s: u64| offset + s * u64::from(rate) / u64::from(t.sample_rate.max(1));
    let map = |v: &[Span<String>]| -> Vec<Span<String>> {
        v.iter()
            .map(|s| Span {
                value: s.value.clone(),
                start: k(s.start),
                end: k(s.end),
            })
            .collect()
    };
    Timeline {
        sample_rate: rate,
        samples: k(t.samples),
        phonemes: map(&t.phonemes),
        words: map(&t.words),
        visemes: t
            .visemes
            .iter()
            .map(|s| Span {
                value: s.value,
                start: k(s.start),
                end: k(s.end),
            })
            .collect(),
    }
}

/// Output samples a part of `n` samples at `from` becomes at `to`.
fn resampled_len(n: u64, from: u32, to: u32) -> u64 {
    if from == to {
        n
    } else {
        (n * u64::from(to)).div_ceil(u64::from(from))
    }
}

impl<B: Backend> Voices<B> {
    /// Loads every voice under `models_dir`; the errors say what is missing.
    pub fn load(models_dir: &Path, device: &B::Device) -> (Self, Vec<TtsError>) {
        let mut errors = Vec::new();
        let english = EnglishTts::load(models_dir, device)
            .map_err(|e| errors.push(e))
            .ok();
        let mandarin = MandarinTts::load(models_dir, device)
            .map_err(|e| errors.push(e))
            .ok();
        (Self { english, mandarin }, errors)
    }

    pub fn list(&self) -> Vec<VoiceInfo> {
        let mut v = Vec::new();
        if let Some(e) = &self.english {
            v.push(e.info().clone());
        }
        if let Some(m) = &self.mandarin {
            v.push(m.info().clone());
        }
        v
    }

    /// Runs each voice's vocoder on its own batched worker from now on:
    /// chunks of clauses synthesised at the same time (on other threads)
    /// run together.
    pub fn batch(&mut self, config: &crate::batch::BatchConfig) -> std::io::Result<()> {
        if let Some(e) = self.english.as_mut() {
            e.batch(config.clone())?;
        }
        if let Some(m) = self.mandarin.as_mut() {
            m.batch(config.clone())?;
        }
        Ok(())
    }

    /// The counters of the voices' batched workers, by stage name.
    pub fn batch_stats(&self) -> Vec<(&'static str, std::sync::Arc<crate::batch::BatchStats>)> {
        let en = self.english.as_ref();
        let zh = self.mandarin.as_ref();
        [
            ("en_clauses", en.and_then(|e| e.clause_batch_stats())),
            ("en_vocoder", en.and_then(|e| e.batch_stats())),
            ("zh_acoustic", zh.and_then(|m| m.acoustic_batch_stats())),
            ("zh_vocoder", zh.and_then(|m| m.batch_stats())),
        ]
        .into_iter()
        .filter_map(|(stage, stats)| Some((stage, stats?.clone())))
        .collect()
    }

    /// Starts `text` in voice `voice_id`; other-script runs go to the other
    /// voice when it is installed (and are skipped when not).
    pub fn begin(&self, voice_id: &str, text: &str, speed: f32) -> Result<Clause<B>, TtsError> {
        let en = self.english.as_ref().filter(|e| e.info().id == voice_id);
        let zh = self.mandarin.as_ref().filter(|m| m.info().id == voice_id);
        let (rate, runs) = if let Some(zh) = zh {
            (zh.info().sample_rate, self.mandarin_runs(zh, text))
        } else if let Some(en) = en {
            (en.info().sample_rate, self.english_runs(text))
        } else {
            return Err(TtsError::UnknownVoice(voice_id.to_string()));
        };
        let mut parts = Vec::new();
        let mut timeline = Timeline {
            sample_rate: rate,
            ..Timeline::default()
        };
        let mut last_err = None;
        for run in runs {
            let started = match run {
                Run::Zh(pieces) => self.mandarin.as_ref().map(|m| {
                    m.begin_pieces(&pieces, speed).map(|c| {
                        let t = c.timeline.clone();
                        (Part::Zh(Box::new(c), None), t)
                    })
                }),
                Run::En(words) => self.english.as_ref().map(|e| {
                    e.begin(&words, speed).map(|c| {
                        let t = c.timeline.clone();
                        (Part::En(Box::new(c), None), t)
                    })
                }),
            };
            match started {
                Some(Ok((mut part, t))) => {
                    let from = t.sample_rate;
                    if from != rate {
                        let r = Some(Resampler::new(from, rate));
                        match &mut part {
                            Part::En(_, slot) | Part::Zh(_, slot) => *slot = r,
                        }
                    }
                    let offset = timeline.samples;
                    let s = shifted(&t, rate, offset);
                    timeline.phonemes.extend(s.phonemes);
                    timeline.words.extend(s.words);
                    timeline.visemes.extend(s.visemes);
                    timeline.samples = offset + resampled_len(t.samples, from, rate);
                    parts.push(part);
                }
                Some(Err(e)) => last_err = Some(e),
                None => {}
            }
        }
        if parts.is_empty() {
            return Err(last_err.unwrap_or(TtsError::Empty));
        }
        Ok(Clause {
            timeline,
            parts,
            current: 0,
        })
    }

    fn mandarin_runs(&self, zh: &MandarinTts<B>, text: &str) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        for p in zh.analyse(text) {
            match p {
                Piece::Latin(w) if self.english.is_some() => runs.push(Run::En(w)),
                Piece::Latin(_) => {}
                other => match runs.last_mut() {
                    Some(Run::Zh(v)) => v.push(other),
                    _ => runs.push(Run::Zh(vec![other])),
                },
            }
        }
        // A run of pauses only says nothing.
        runs.retain(|r| match r {
            Run::Zh(v) => v.iter().any(|p| matches!(p, Piece::Syllable(_))),
            Run::En(w) => w.chars().any(|c| c.is_alphanumeric()),
        });
        runs
    }

    fn english_runs(&self, text: &str) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        let mut cur = String::new();
        let mut cur_han = false;
        let flush = |cur: &mut String, han: bool, runs: &mut Vec<Run>| {
            if cur.trim().is_empty() {
                cur.clear();
                return;
            }
            let s = std::mem::take(cur);
            if !han {
                runs.push(Run::En(s));
            } else if let Some(m) = &self.mandarin {
                runs.push(Run::Zh(m.analyse(&s)));
            }
        };
        for c in text.chars() {
            let han = is_han(c) || (cur_han && !c.is_ascii());
            if han != cur_han && !cur.is_empty() {
                flush(&mut cur, cur_han, &mut runs);
            }
            cur_han = han;
            cur.push(c);
        }
        flush(&mut cur, cur_han, &mut runs);
        runs
    }

    /// The next chunk of the clause's audio at `timeline.sample_rate`, or
    /// `None` when it is complete.
    pub fn next_chunk(&self, c: &mut Clause<B>) -> Option<Vec<f32>> {
        loop {
            let part = c.parts.get_mut(c.current)?;
            let (chunk, done, resampler) = match part {
                Part::En(p, r) => {
                    let en = self.english.as_ref()?;
                    let chunk = en.next_chunk(p);
                    (chunk, p.done(), r)
                }
                Part::Zh(p, r) => {
                    let zh = self.mandarin.as_ref()?;
                    let chunk = zh.next_chunk(p);
                    (chunk, p.done(), r)
                }
            };
            if done {
                c.current += 1;
            }
            let mut out = match (chunk, resampler.as_mut()) {
                (Some(chunk), Some(r)) => {
                    let mut out = Vec::new();
                    r.push(&chunk, &mut out);
                    out
                }
                (Some(chunk), None) => chunk,
                (None, _) => Vec::new(),
            };
            if done && let Some(r) = resampler.as_mut() {
                r.finish(&mut out);
            }
            if !out.is_empty() || c.done() {
                return (!out.is_empty()).then_some(out);
            }
        }
    }
}

enum Run {
    Zh(Vec<Piece>),
    En(String),
}
