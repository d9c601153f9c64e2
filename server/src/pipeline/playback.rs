//! A session's playback buffer: synthesised clauses with their word,
//! phoneme and viseme timings, read 20 ms at a time by the media thread on
//! the session clock, and the mouth shapes of the host's live voice. The
//! speech engine writes into it as a [`SpeechSink`]; it holds at most
//! `max_buffered` samples (a writer waits while it is full). Interrupt
//! bumps the generation and empties it at once.

use super::clock::{AUDIO_FRAME, AUDIO_RATE};
use crate::engines::speech::{SpeechSink, Utterance};
use huashen_inference::speech::timeline::{Timeline, Viseme};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// What the media thread reports while playing, in samples of the session
/// clock (48 kHz).
#[derive(Debug, Clone, PartialEq)]
pub enum PlaybackEvent {
    Started {
        utterance_id: String,
        text: String,
        sample: u64,
    },
    Word {
        utterance_id: String,
        word: String,
        start: u64,
        end: u64,
    },
    Phoneme {
        utterance_id: String,
        phoneme: String,
        viseme: &'static str,
        start: u64,
        end: u64,
    },
    Finished {
        utterance_id: String,
        interrupted: bool,
        sample: u64,
    },
    /// The host's live voice went on air (see `voice.rs`).
    VoiceStarted { sample: u64 },
    /// The host's voice has been silent for a moment.
    VoiceStopped { sample: u64 },
}

struct Segment {
    id: String,
    text: String,
    /// (word, start, end) in 48 kHz samples from the segment's start.
    words: Vec<(String, u64, u64)>,
    phonemes: Vec<(String, Viseme, u64, u64)>,
    /// Mouth shapes for the face (silence left out).
    visemes: Vec<(Viseme, u64, u64)>,
    pcm: VecDeque<i16>,
    complete: bool,
    played: u64,
    /// Session sample of the first played sample.
    start: Option<u64>,
    next_word: usize,
    next_phoneme: usize,
}

#[derive(Default)]
struct PlayState {
    segments: VecDeque<Segment>,
    buffered: usize,
    generation: u64,
}

/// The audio a session is about to play.
pub struct Playback {
    state: Mutex<PlayState>,
    space: Condvar,
    max_buffered: usize,
    /// Mouth shapes of the host's live voice, on the session clock (the
    /// lip-sync model writes them ahead of the voice's audio).
    voice_visemes: Mutex<VecDeque<(Viseme, u64, u64)>>,
}

impl Playback {
    /// `max_buffered`: most audio held, in 48 kHz samples.
    pub fn new(max_buffered: usize) -> Self {
        Self {
            state: Mutex::new(PlayState::default()),
            space: Condvar::new(),
            max_buffered: max_buffered.max(AUDIO_FRAME as usize * 10),
            voice_visemes: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds a mouth shape of the live voice for clock samples `from..to`
    /// (extending the last one when it is the same shape and adjoins), and
    /// forgets shapes that ended over a second before `from`.
    pub fn push_voice_viseme(&self, viseme: Viseme, from: u64, to: u64) {
        let mut q = self.voice_visemes.lock().unwrap_or_else(|p| p.into_inner());
        match q.back_mut() {
            Some(last) if last.0 == viseme && last.2 >= from => last.2 = last.2.max(to),
            _ => q.push_back((viseme, from, to)),
        }
        let horizon = from.saturating_sub(u64::from(AUDIO_RATE));
        while q.front().is_some_and(|s| s.2 < horizon) {
            q.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlayState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Whether anything is playing or waiting to play.
    pub fn is_active(&self) -> bool {
        !self.lock().segments.is_empty()
    }

    /// Opens a segment for `utt` with its timeline. False when `generation`
    /// is stale (interrupted).
    fn begin_clause(&self, generation: u64, utt: &Utterance, timeline: &Timeline) -> bool {
        let mut s = self.lock();
        if s.generation != generation {
            return false;
        }
        let scale = |v: u64| v * u64::from(AUDIO_RATE) / u64::from(timeline.sample_rate.max(1));
        s.segments.push_back(Segment {
            id: utt.id.clone(),
            text: utt.text.clone(),
            words: timeline
                .words
                .iter()
                .map(|w| (w.value.clone(), scale(w.start), scale(w.end)))
                .collect(),
            phonemes: timeline
                .phonemes
                .iter()
                .map(|p| {
                    let v = timeline.viseme_at((p.start + p.end) / 2);
                    (p.value.clone(), v, scale(p.start), scale(p.end))
                })
                .collect(),
            visemes: timeline
                .visemes
                .iter()
                .filter(|v| v.value != Viseme::Sil)
                .map(|v| (v.value, scale(v.start), scale(v.end)))
                .collect(),
            pcm: VecDeque::new(),
            complete: false,
            played: 0,
            start: None,
            next_word: 0,
            next_phoneme: 0,
        });
        true
    }

    /// Appends audio to the last segment, waiting while the buffer is full.
    /// False when interrupted.
    fn append_audio(&self, generation: u64, pcm: &[i16]) -> bool {
        let mut s = self.lock();
        loop {
            if s.generation != generation {
                return false;
            }
            if s.buffered + pcm.len() <= self.max_buffered || s.buffered == 0 {
                break;
            }
            s = self
                .space
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.buffered += pcm.len();
        if let Some(seg) = s.segments.back_mut() {
            seg.pcm.extend(pcm);
        }
        true
    }

    fn complete_clause(&self, generation: u64) {
        let mut s = self.lock();
        if s.generation == generation
            && let Some(seg) = s.segments.back_mut()
        {
            seg.complete = true;
        }
    }

    /// Reports the visemes of what is playing (and of what follows it
    /// seamlessly) that overlap session samples [`from`, `to`), as
    /// `f(viseme, start, end)` in session samples. Speech not yet started
    /// has no place on the clock and is left out. The live voice's mouth
    /// shapes come first.
    pub fn visemes(&self, from: u64, to: u64, f: &mut dyn FnMut(Viseme, u64, u64)) {
        for &(v, a, b) in self
            .voice_visemes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if b > from && a < to {
                f(v, a, b);
            }
        }
        let s = self.lock();
        let mut next_start = None;
        for seg in &s.segments {
            let Some(base) = seg.start.or(next_start) else {
                break;
            };
            for &(v, a, b) in &seg.visemes {
                if base + b > from && base + a < to {
                    f(v, base + a, base + b);
                }
            }
            if !seg.complete {
                break;
            }
            // The next clause starts when this one's audio runs out.
            next_start = Some(base + seg.played + seg.pcm.len() as u64);
        }
    }

    /// Pauses for `samples` (the host is talking): the clause playing
    /// moves later on the clock, so its words and mouth shapes stay with
    /// its audio when it resumes.
    pub fn hold(&self, samples: u64) {
        let mut s = self.lock();
        if let Some(seg) = s.segments.front_mut()
            && let Some(start) = seg.start.as_mut()
        {
            *start += samples;
        }
    }

    /// Drops everything queued and playing. Returns the number of
    /// utterances cut; the one playing is reported finished (interrupted)
    /// at `sample`.
    pub fn interrupt(&self, sample: u64, events: &mut Vec<PlaybackEvent>) -> u32 {
        let mut s = self.lock();
        s.generation += 1;
        let n = s.segments.len() as u32;
        for seg in s.segments.drain(..) {
            if seg.start.is_some() {
                events.push(PlaybackEvent::Finished {
                    utterance_id: seg.id,
                    interrupted: true,
                    sample,
                });
            }
        }
        s.buffered = 0;
        drop(s);
        self.space.notify_all();
        n
    }

    /// Fills one 20 ms frame starting at session sample `sample` (silence
    /// where nothing plays) and reports what started, was said and ended.
    pub fn fill(&self, out: &mut [i16], sample: u64, events: &mut Vec<PlaybackEvent>) {
        out.fill(0);
        let mut s = self.lock();
        let mut pos = 0usize;
        let mut freed = 0usize;
        while pos < out.len() {
            let Some(seg) = s.segments.front_mut() else {
                break;
            };
            if seg.start.is_none() {
                if seg.pcm.is_empty() && !seg.complete {
                    break; // first audio not synthesised yet
                }
                seg.start = Some(sample + pos as u64);
                events.push(PlaybackEvent::Started {
                    utterance_id: seg.id.clone(),
                    text: seg.text.clone(),
                    sample: sample + pos as u64,
                });
            }
            let n = seg.pcm.len().min(out.len() - pos);
            for (o, v) in out[pos..pos + n].iter_mut().zip(seg.pcm.drain(..n)) {
                *o = v;
            }
            pos += n;
            freed += n;
            seg.played += n as u64;
            let base = seg.start.unwrap_or(sample);
            while let Some((w, a, b)) = seg.words.get(seg.next_word)
                && *a < seg.played
            {
                events.push(PlaybackEvent::Word {
                    utterance_id: seg.id.clone(),
                    word: w.clone(),
                    start: base + a,
                    end: base + b,
                });
                seg.next_word += 1;
            }
            while let Some((p, v, a, b)) = seg.phonemes.get(seg.next_phoneme)
                && *a < seg.played
            {
                events.push(PlaybackEvent::Phoneme {
                    utterance_id: seg.id.clone(),
                    phoneme: p.clone(),
                    viseme: v.name(),
                    start: base + a,
                    end: base + b,
                });
                seg.next_phoneme += 1;
            }
            if seg.pcm.is_empty() {
                if seg.complete {
                    events.push(PlaybackEvent::Finished {
                        utterance_id: seg.id.clone(),
                        interrupted: false,
                        sample: sample + pos as u64,
                    });
                    s.segments.pop_front();
                } else {
                    // Synthesis is behind: the rest of the frame is silent.
                    crate::metrics::METRICS
                        .speech_underrun_seconds
                        .inc_by((out.len() - pos) as f64 / f64::from(AUDIO_RATE));
                    break;
                }
            }
        }
        s.buffered = s.buffered.saturating_sub(freed);
        drop(s);
        if freed > 0 {
            self.space.notify_all();
        }
    }
}

impl SpeechSink for Playback {
    fn generation(&self) -> u64 {
        Playback::generation(self)
    }
    fn begin(&self, generation: u64, utterance: &Utterance, timeline: &Timeline) -> bool {
        self.begin_clause(generation, utterance, timeline)
    }
    fn append(&self, generation: u64, pcm: &[i16]) -> bool {
        self.append_audio(generation, pcm)
    }
    fn complete(&self, generation: u64) {
        self.complete_clause(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huashen_inference::speech::timeline::Span;
    use std::sync::Arc;

    fn timeline(samples: u64) -> Timeline {
        Timeline {
            sample_rate: 48000,
            samples,
            phonemes: vec![],
            visemes: vec![],
            words: vec![
                Span {
                    value: "a".into(),
                    start: 0,
                    end: 500,
                },
                Span {
                    value: "b".into(),
                    start: 1500,
                    end: 2000,
                },
            ],
        }
    }

    #[test]
    fn plays_in_order_reports_words_and_interrupts() {
        let p = Playback::new(48000);
        let utt = |id: &str| Utterance {
            id: id.into(),
            text: "t".into(),
        };
        let g = p.generation();
        assert!(p.begin(g, &utt("u1"), &timeline(2000)));
        assert!(p.append(g, &vec![1i16; 2000]));
        p.complete(g);
        assert!(p.begin(g, &utt("u2"), &timeline(2000)));
        assert!(p.append(g, &vec![2i16; 1000]));
        let mut frame = vec![0i16; 960];
        let mut ev = vec![];
        p.fill(&mut frame, 0, &mut ev);
        assert!(frame.iter().all(|&v| v == 1));
        assert!(
            matches!(&ev[0], PlaybackEvent::Started { utterance_id, sample: 0, .. } if utterance_id == "u1")
        );
        assert!(matches!(&ev[1], PlaybackEvent::Word { word, .. } if word == "a"));
        ev.clear();
        p.fill(&mut frame, 960, &mut ev);
        ev.clear();
        // u1 ends at 2000: the frame switches to u2 mid-way.
        p.fill(&mut frame, 1920, &mut ev);
        assert_eq!(frame[79], 1);
        assert_eq!(frame[80], 2);
        assert!(ev.iter().any(|e| matches!(e, PlaybackEvent::Finished { utterance_id, interrupted: false, sample: 2000 } if utterance_id == "u1")));
        assert!(ev.iter().any(|e| matches!(e, PlaybackEvent::Started { utterance_id, sample: 2000, .. } if utterance_id == "u2")));
        ev.clear();
        let n = p.interrupt(2880, &mut ev);
        assert_eq!(n, 1);
        assert!(matches!(
            &ev[0],
            PlaybackEvent::Finished {
                interrupted: true,
                ..
            }
        ));
        // Stale work is refused after an interrupt.
        assert!(!p.append(g, &[3; 10]));
        assert!(!p.is_active());
        p.fill(&mut frame, 2880, &mut ev);
        assert!(frame.iter().all(|&v| v == 0));
    }

    #[test]
    fn a_writer_waiting_on_a_full_buffer_is_released_by_interrupt() {
        let p = Arc::new(Playback::new(9600));
        let g = p.generation();
        let utt = Utterance {
            id: "u".into(),
            text: "t".into(),
        };
        assert!(p.begin(g, &utt, &timeline(100_000)));
        assert!(p.append(g, &vec![1i16; 9600]));
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || p.append(g, &[1i16; 960]))
        };
        std::thread::sleep(Duration::from_millis(150));
        assert!(!writer.is_finished(), "the writer waits for space");
        p.interrupt(0, &mut Vec::new());
        assert!(!writer.join().unwrap(), "released, told it was interrupted");
    }

    #[test]
    fn hold_moves_the_clause_playing_later_on_the_clock() {
        let p = Playback::new(48000);
        let g = p.generation();
        let utt = Utterance {
            id: "u".into(),
            text: "t".into(),
        };
        assert!(p.begin(g, &utt, &timeline(2000)));
        assert!(p.append(g, &vec![1i16; 2000]));
        p.complete(g);
        let mut frame = vec![0i16; 960];
        let mut ev = vec![];
        p.fill(&mut frame, 0, &mut ev);
        // The host talks for two frames: nothing plays, the clause waits.
        p.hold(960);
        p.hold(960);
        ev.clear();
        p.fill(&mut frame, 2880, &mut ev);
        assert!(frame.iter().all(|&v| v == 1), "resumes where it paused");
        // Word "b" (1500 samples into the clause) is now 1920 later.
        assert!(
            ev.iter()
                .any(|e| matches!(e, PlaybackEvent::Word { word, start, .. } if word == "b" && *start == 1500 + 1920)),
            "{ev:?}"
        );
        let mut visemes = vec![];
        p.visemes(0, 10_000, &mut |_, a, _| visemes.push(a));
        assert!(visemes.iter().all(|&a| a >= 1920));
    }
}
