//! The data: sentences, and clips of speech with exact viseme timings
//! from the project's TTS voices and espeak-ng's voices.

use std::time::Instant;

use huashen_inference::Cpu;
use huashen_inference::face::animate::VisemeSpan;
use huashen_inference::face::lipsync::RATE;
use huashen_inference::resample::Resampler;
use huashen_inference::speech::espeak::{self, EspeakVoice};
use huashen_inference::speech::timeline::Viseme;
use huashen_inference::speech::voices::Voices;
use huashen_inference::speech::zh::frontend::Piece;

use crate::common::*;

/// espeak-ng variants heard in training.
pub(crate) const TRAIN_EN: &[&str] = &[
    "en-us+m1",
    "en-us+m2",
    "en-us+m3",
    "en-us+f1",
    "en-us+f2",
    "en-us+klatt",
    "en-us+klatt2",
    "en-gb+m4",
    "en-gb+f3",
    "en-gb-scotland+m5",
    "en-us+Andy",
    "en-us+belinda",
];
pub(crate) const TRAIN_ZH: &[&str] = &[
    "cmn-latn-pinyin+m1",
    "cmn-latn-pinyin+m2",
    "cmn-latn-pinyin+f1",
    "cmn-latn-pinyin+f2",
    "cmn-latn-pinyin+klatt",
];
/// Never heard in training.
pub(crate) const HELD_OUT_EN: &[&str] = &[
    "en-us+m7",
    "en-us+f5",
    "en-us+klatt4",
    "en-gb-x-rp+m6",
    "en-029+Annie",
];
pub(crate) const HELD_OUT_ZH: &[&str] = &[
    "cmn-latn-pinyin+m7",
    "cmn-latn-pinyin+f4",
    "cmn-latn-pinyin+klatt3",
];

pub(crate) fn resample(pcm: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to {
        return pcm.to_vec();
    }
    let mut r = Resampler::new(from, to);
    let mut out = Vec::new();
    r.push(pcm, &mut out);
    r.finish(&mut out);
    out
}

/// espeak-ng phoneme names (IPA) → visemes, as the timeline's table maps
/// IPA, plus the Mandarin symbols espeak-ng writes its own way.
pub(crate) fn espeak_viseme(name: &str) -> Viseme {
    let n = name.trim_start_matches(['ˈ', 'ˌ']);
    if n.is_empty() || n.starts_with('_') {
        return Viseme::Sil;
    }
    if n.starts_with("ts.") || n.starts_with("s.") || n.starts_with("tɕ") || n.starts_with('ɕ') {
        return Viseme::CH;
    }
    if n.starts_with("tʃ") || n.starts_with("dʒ") {
        return Viseme::CH;
    }
    if n.starts_with("ts") {
        return Viseme::SS;
    }
    if n.starts_with("i.") {
        return Viseme::IH;
    }
    for c in n.chars() {
        if let Some(v) = Viseme::for_ipa(c) {
            return v;
        }
        match c {
            'χ' => return Viseme::KK,
            'ɤ' | 'ø' | 'œ' => return Viseme::E,
            _ => {}
        }
    }
    Viseme::E
}

pub(crate) fn espeak_clip(text: &str, voice: &EspeakVoice) -> Option<Clip> {
    let s = espeak::synthesize(text, voice).ok()?;
    let rate = f64::from(s.sample_rate);
    let phonemes: Vec<_> = s
        .phonemes
        .iter()
        .filter(|(p, _)| !p.starts_with('('))
        .collect();
    let mut spans = Vec::new();
    for (i, (name, start)) in phonemes.iter().enumerate() {
        let end = phonemes
            .get(i + 1)
            .map(|p| p.1)
            .unwrap_or(s.pcm.len() as u64);
        if end > *start {
            spans.push(VisemeSpan {
                viseme: espeak_viseme(name),
                start: *start as f64 / rate,
                end: end as f64 / rate,
            });
        }
    }
    if spans.is_empty() || s.pcm.is_empty() {
        return None;
    }
    Some(Clip {
        pcm: resample(&s.pcm, s.sample_rate, RATE),
        spans,
    })
}

pub(crate) fn tts_clip(voices: &Voices<Cpu>, voice: &str, text: &str, speed: f32) -> Option<Clip> {
    let mut clause = voices.begin(voice, text, speed).ok()?;
    let mut pcm = Vec::new();
    while let Some(c) = voices.next_chunk(&mut clause) {
        pcm.extend(c);
    }
    let t = clause.timeline;
    let rate = f64::from(t.sample_rate);
    let spans = t
        .visemes
        .iter()
        .map(|s| VisemeSpan {
            viseme: s.value,
            start: s.start as f64 / rate,
            end: s.end as f64 / rate,
        })
        .collect();
    Some(Clip {
        pcm: resample(&pcm, t.sample_rate, RATE),
        spans,
    })
}

/// Tone-number pinyin of a Chinese sentence, for espeak-ng's Mandarin.
pub(crate) fn pinyin(voices: &Voices<Cpu>, text: &str) -> String {
    let Some(zh) = voices.mandarin.as_ref() else {
        return String::new();
    };
    let mut out = String::new();
    for piece in zh.analyse(text) {
        match piece {
            Piece::Syllable(s) => {
                out.push_str(&s.pinyin.replace('ü', "v"));
                out.push(' ');
            }
            Piece::Pause => out.push_str(", "),
            Piece::Latin(l) => out.push_str(&l),
        }
    }
    out.push('.');
    out
}

// ------------------------------------------------------------ augmentation

pub(crate) struct Corpus {
    pub(crate) en: Vec<String>,
    pub(crate) zh: Vec<String>,
}

pub(crate) fn split(lines: &str) -> (Vec<String>, Vec<String>) {
    let all: Vec<String> = lines
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    // Every seventh sentence is held out for evaluation.
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, l) in all.into_iter().enumerate() {
        if i % 7 == 3 { &mut test } else { &mut train }.push(l);
    }
    (train, test)
}

pub(crate) fn espeak_voice(rng: &mut Rng, name: &str, vary: bool) -> EspeakVoice {
    let mut v = EspeakVoice::new(name);
    if vary {
        v.rate = rng.range(130.0, 230.0) as i32;
        v.pitch = rng.range(20.0, 80.0) as i32;
        v.range = rng.range(15.0, 85.0) as i32;
    }
    v
}

pub(crate) fn progress(what: &str, done: usize, total: usize, started: Instant) {
    if done == total || done.is_multiple_of(25) {
        eprintln!(
            "  {what}: {done}/{total} ({:.0} s)",
            started.elapsed().as_secs_f32()
        );
    }
}

pub(crate) fn training_clips(
    voices: &Voices<Cpu>,
    corpus: &Corpus,
    rng: &mut Rng,
    quick: bool,
) -> Vec<Clip> {
    let started = Instant::now();
    let mut clips = Vec::new();
    let per_voice = if quick { 4 } else { 36 };
    let jobs: Vec<(&str, bool)> = TRAIN_EN
        .iter()
        .map(|v| (*v, true))
        .chain(TRAIN_ZH.iter().map(|v| (*v, false)))
        .collect();
    for (i, (voice, en)) in jobs.iter().enumerate() {
        for _ in 0..per_voice {
            let text = if *en {
                corpus.en[rng.below(corpus.en.len())].clone()
            } else {
                pinyin(voices, &corpus.zh[rng.below(corpus.zh.len())])
            };
            let v = espeak_voice(rng, voice, true);
            if let Some(c) = espeak_clip(&text, &v) {
                clips.push(c);
            }
        }
        progress("espeak-ng voices", i + 1, jobs.len(), started);
    }
    let tts_n = if quick {
        3
    } else {
        corpus.en.len() + corpus.en.len() / 2
    };
    for i in 0..tts_n {
        let text = &corpus.en[i % corpus.en.len()];
        if let Some(c) = tts_clip(voices, "en-US-joe", text, rng.range(0.8, 1.25)) {
            clips.push(c);
        }
        progress("en-US-joe", i + 1, tts_n, started);
    }
    let zh_n = if quick {
        3
    } else {
        corpus.zh.len() + corpus.zh.len() / 2
    };
    for i in 0..zh_n {
        let text = &corpus.zh[i % corpus.zh.len()];
        if let Some(c) = tts_clip(voices, "zh-CN-baker", text, rng.range(0.8, 1.25)) {
            clips.push(c);
        }
        progress("zh-CN-baker", i + 1, zh_n, started);
    }
    clips
}

/// Evaluation sets: name → clips.
pub(crate) fn evaluation_clips(
    voices: &Voices<Cpu>,
    corpus: &Corpus,
    quick: bool,
) -> Vec<(String, Vec<Clip>)> {
    let take = |v: &Vec<String>| if quick { v.len().min(2) } else { v.len() };
    let mut sets = Vec::new();
    let mut held = Vec::new();
    for voice in HELD_OUT_EN {
        for text in corpus.en.iter().take(take(&corpus.en)) {
            held.extend(espeak_clip(text, &EspeakVoice::new(voice)));
        }
    }
    sets.push(("held-out espeak-ng English voices (5)".to_string(), held));
    let mut held = Vec::new();
    for voice in HELD_OUT_ZH {
        for text in corpus.zh.iter().take(take(&corpus.zh)) {
            held.extend(espeak_clip(&pinyin(voices, text), &EspeakVoice::new(voice)));
        }
    }
    sets.push(("held-out espeak-ng Mandarin voices (3)".to_string(), held));
    let joe = corpus
        .en
        .iter()
        .take(take(&corpus.en))
        .filter_map(|t| tts_clip(voices, "en-US-joe", t, 1.0))
        .collect();
    sets.push(("en-US-joe, unseen sentences (voice seen)".to_string(), joe));
    let baker = corpus
        .zh
        .iter()
        .take(take(&corpus.zh))
        .filter_map(|t| tts_clip(voices, "zh-CN-baker", t, 1.0))
        .collect();
    sets.push((
        "zh-CN-baker, unseen sentences (voice seen)".to_string(),
        baker,
    ));
    sets
}

// ------------------------------------------------------------ training
