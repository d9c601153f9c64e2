//! English grapheme → IPA with espeak-ng (Debian `libespeak-ng1`, through its
//! C API), as Piper voices expect.
//!
//! espeak-ng keeps global state and is not thread-safe: every call holds one
//! process-wide lock. It returns one clause per call without the clause's
//! punctuation, so text is cut at punctuation here first and the mark is
//! appended after the clause's phonemes, as Piper's phonemizer does.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::sync::Mutex;

#[link(name = "espeak-ng")]
unsafe extern "C" {
    fn espeak_Initialize(
        output: c_int,
        buflength: c_int,
        path: *const c_char,
        options: c_int,
    ) -> c_int;
    fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
    fn espeak_TextToPhonemes(
        textptr: *mut *const c_void,
        textmode: c_int,
        phonememode: c_int,
    ) -> *const c_char;
    fn espeak_SetSynthCallback(cb: SynthCallback);
    fn espeak_SetParameter(parameter: c_int, value: c_int, relative: c_int) -> c_int;
    fn espeak_Synth(
        text: *const c_void,
        size: usize,
        position: c_uint,
        position_type: c_int,
        end_position: c_uint,
        flags: c_uint,
        unique_identifier: *mut c_uint,
        user_data: *mut c_void,
    ) -> c_int;
}

type SynthCallback =
    unsafe extern "C" fn(wav: *mut i16, n: c_int, events: *mut EspeakEvent) -> c_int;

/// `espeak_EVENT` of speak_lib.h.
#[repr(C)]
struct EspeakEvent {
    kind: c_int,
    unique_identifier: c_uint,
    text_position: c_int,
    length: c_int,
    audio_position: c_int,
    sample: c_int,
    user_data: *mut c_void,
    id: [u8; 8],
}

const EVENT_LIST_TERMINATED: c_int = 0;
const EVENT_PHONEME: c_int = 7;
const POS_CHARACTER: c_int = 1;
const PARAM_RATE: c_int = 1;
const PARAM_PITCH: c_int = 3;
const PARAM_RANGE: c_int = 4;
const ESPEAK_INITIALIZE_PHONEME_EVENTS: c_int = 0x0001;
const ESPEAK_INITIALIZE_PHONEME_IPA: c_int = 0x0002;

const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const ESPEAK_CHARS_UTF8: c_int = 1;
const ESPEAK_PHONEMES_IPA: c_int = 0x02;

/// espeak-ng's global state: initialised once, the voice last selected.
static ESPEAK: Mutex<Option<String>> = Mutex::new(None);
static INIT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
/// espeak-ng's output rate (set at initialisation).
static RATE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum EspeakError {
    #[error("espeak-ng could not start (is espeak-ng-data installed?): {0}")]
    Init(String),
    #[error("espeak-ng has no voice {0:?}")]
    Voice(String),
}

fn init() -> Result<(), EspeakError> {
    let mut guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    let result = guard.get_or_insert_with(|| {
        // SAFETY: plain C call; a null path selects the installed data.
        let rate = unsafe {
            espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                std::ptr::null(),
                ESPEAK_INITIALIZE_DONT_EXIT
                    | ESPEAK_INITIALIZE_PHONEME_EVENTS
                    | ESPEAK_INITIALIZE_PHONEME_IPA,
            )
        };
        if rate > 0 {
            RATE.store(rate as u32, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        } else {
            Err(format!("espeak_Initialize returned {rate}"))
        }
    });
    result.clone().map_err(EspeakError::Init)
}

/// One word of the input with its phonemes.
#[derive(Debug, Clone, PartialEq)]
pub struct PhonemizedWord {
    /// The word as written (may be empty when espeak speaks more words than
    /// were written, e.g. numbers).
    pub text: String,
    pub ipa: String,
}

/// A clause piece: words, then the punctuation that ended it (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct PhonemizedPiece {
    pub words: Vec<PhonemizedWord>,
    pub punctuation: Option<char>,
}

const PUNCTUATION: &[char] = &[',', '.', ';', ':', '!', '?'];

/// Phonemizes `text` with the espeak-ng voice `voice` (e.g. `en-us`).
pub fn phonemize(text: &str, voice: &str) -> Result<Vec<PhonemizedPiece>, EspeakError> {
    init()?;
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String, punct: Option<char>| -> Result<(), EspeakError> {
        let seg = std::mem::take(current);
        let words = phonemize_segment(&seg, voice)?;
        if !words.is_empty() || punct.is_some() {
            pieces.push(PhonemizedPiece {
                words,
                punctuation: punct,
            });
        }
        Ok(())
    };
    for c in text.chars() {
        let mapped = match c {
            '，' | '、' => Some(','),
            '。' => Some('.'),
            '！' => Some('!'),
            '？' => Some('?'),
            '；' => Some(';'),
            '：' => Some(':'),
            c if PUNCTUATION.contains(&c) => Some(c),
            _ => None,
        };
        match mapped {
            Some(p) if !current.trim().is_empty() => flush(&mut current, Some(p))?,
            Some(_) => current.clear(),
            None => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        flush(&mut current, None)?;
    }
    Ok(pieces)
}

fn phonemize_segment(seg: &str, voice: &str) -> Result<Vec<PhonemizedWord>, EspeakError> {
    // Only Latin-script words (and numbers) are English: espeak-ng would
    // spell other scripts out letter by letter ("Chinese letter …").
    let written: Vec<&str> = seg
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric) && w.chars().all(is_latin))
        .collect();
    if written.is_empty() {
        return Ok(Vec::new());
    }
    let sentence = to_ipa(&written.join(" "), voice)?;
    let spoken: Vec<&str> = sentence.split_whitespace().collect();
    if written.len() == spoken.len() {
        return Ok(pair(&written, spoken.iter().map(|s| s.to_string())));
    }
    // espeak spoke a different number of words than were written (numbers,
    // abbreviations, joined function words): phonemize each written word
    // alone to learn how many spoken words it makes, and cut the sentence's
    // phonemes (which keep their in-context stress) by those counts.
    let alone: Vec<String> = written
        .iter()
        .map(|w| to_ipa(w, voice))
        .collect::<Result<_, _>>()?;
    let counts: Vec<usize> = alone.iter().map(|a| a.split_whitespace().count()).collect();
    if counts.iter().sum::<usize>() == spoken.len() {
        let mut it = spoken.iter();
        let groups = counts
            .iter()
            .map(|&n| it.by_ref().take(n).copied().collect::<Vec<_>>().join(" "));
        return Ok(pair(&written, groups));
    }
    Ok(pair(&written, alone.into_iter()))
}

fn is_latin(c: char) -> bool {
    c.is_ascii() || ('\u{00C0}'..='\u{024F}').contains(&c) || "’‘“”–—…".contains(c)
}

fn pair(written: &[&str], spoken: impl Iterator<Item = String>) -> Vec<PhonemizedWord> {
    written
        .iter()
        .zip(spoken)
        .map(|(w, ipa)| PhonemizedWord {
            text: (*w).to_string(),
            ipa,
        })
        .filter(|w| !w.ipa.is_empty())
        .collect()
}

/// espeak-ng's IPA for `text` (all its clauses, space-separated).
fn to_ipa(text: &str, voice: &str) -> Result<String, EspeakError> {
    let Ok(c_text) = CString::new(text) else {
        return Ok(String::new());
    };
    let mut ipa = String::new();
    let mut selected = ESPEAK.lock().unwrap_or_else(|p| p.into_inner());
    if selected.as_deref() != Some(voice) {
        let name = CString::new(voice).map_err(|_| EspeakError::Voice(voice.into()))?;
        // SAFETY: `name` outlives the call; the lock serialises espeak.
        if unsafe { espeak_SetVoiceByName(name.as_ptr()) } != 0 {
            return Err(EspeakError::Voice(voice.into()));
        }
        *selected = Some(voice.to_string());
    }
    let mut ptr: *const c_void = c_text.as_ptr().cast();
    while !ptr.is_null() {
        // SAFETY: `ptr` points into `c_text` (NUL-terminated, alive for the
        // loop); espeak advances it and sets it to null at the end. The
        // returned string is espeak's static buffer, copied at once under
        // the lock.
        let out =
            unsafe { espeak_TextToPhonemes(&mut ptr, ESPEAK_CHARS_UTF8, ESPEAK_PHONEMES_IPA) };
        if out.is_null() {
            break;
        }
        // SAFETY: non-null, NUL-terminated by espeak.
        let s = unsafe { CStr::from_ptr(out) }.to_string_lossy();
        if !ipa.is_empty() {
            ipa.push(' ');
        }
        ipa.push_str(s.trim());
    }
    Ok(ipa)
}

/// How espeak-ng speaks: its voice (`en-us+f3`: language + variant) and
/// prosody.
#[derive(Debug, Clone, PartialEq)]
pub struct EspeakVoice {
    pub name: String,
    /// Words per minute (espeak's default is 175).
    pub rate: i32,
    /// Base pitch, 0–100 (default 50).
    pub pitch: i32,
    /// Pitch range, 0–100 (default 50; 0 is a monotone).
    pub range: i32,
}

impl EspeakVoice {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            rate: 175,
            pitch: 50,
            range: 50,
        }
    }
}

/// Speech synthesised by espeak-ng with its own phoneme timing.
#[derive(Debug, Clone, Default)]
pub struct Synthesis {
    pub sample_rate: u32,
    pub pcm: Vec<f32>,
    /// Each phoneme (IPA, stress marks included) and the sample it starts
    /// at; a phoneme lasts until the next one starts (the last until the
    /// end of `pcm`).
    pub phonemes: Vec<(String, u64)>,
}

thread_local! {
    static COLLECT: RefCell<Synthesis> = RefCell::new(Synthesis::default());
}

unsafe extern "C" fn collect(wav: *mut i16, n: c_int, events: *mut EspeakEvent) -> c_int {
    COLLECT.with(|c| {
        let mut c = c.borrow_mut();
        let mut e = events;
        // SAFETY: espeak passes a list ended by a LIST_TERMINATED event,
        // valid during the call.
        while !e.is_null() && unsafe { (*e).kind } != EVENT_LIST_TERMINATED {
            let ev = unsafe { &*e };
            if ev.kind == EVENT_PHONEME {
                let len = ev.id.iter().position(|&b| b == 0).unwrap_or(8);
                let name = String::from_utf8_lossy(&ev.id[..len]).into_owned();
                let at = u64::from(c.sample_rate) * ev.audio_position.max(0) as u64 / 1000;
                c.phonemes.push((name, at));
            }
            e = unsafe { e.add(1) };
        }
        if !wav.is_null() && n > 0 {
            // SAFETY: espeak's buffer of `n` samples, valid during the call.
            let samples = unsafe { std::slice::from_raw_parts(wav, n as usize) };
            c.pcm
                .extend(samples.iter().map(|&v| f32::from(v) / 32768.0));
        }
    });
    0
}

/// Speaks `text` with espeak-ng's formant synthesiser, returning its audio
/// and when each phoneme starts (exact: they come from the synthesiser).
pub fn synthesize(text: &str, voice: &EspeakVoice) -> Result<Synthesis, EspeakError> {
    init()?;
    let c_text = CString::new(text).map_err(|_| EspeakError::Voice("text has NUL".into()))?;
    let mut selected = ESPEAK.lock().unwrap_or_else(|p| p.into_inner());
    let name =
        CString::new(voice.name.as_str()).map_err(|_| EspeakError::Voice(voice.name.clone()))?;
    // SAFETY: `name` outlives the call; the lock serialises espeak.
    if unsafe { espeak_SetVoiceByName(name.as_ptr()) } != 0 {
        *selected = None;
        return Err(EspeakError::Voice(voice.name.clone()));
    }
    *selected = Some(voice.name.clone());
    let rate = RATE.load(std::sync::atomic::Ordering::Relaxed);
    COLLECT.with(|c| {
        *c.borrow_mut() = Synthesis {
            sample_rate: rate,
            ..Synthesis::default()
        }
    });
    // SAFETY: plain C calls under the lock; `c_text` outlives espeak_Synth,
    // which (synchronous output) calls `collect` on this thread before it
    // returns.
    unsafe {
        espeak_SetParameter(PARAM_RATE, voice.rate, 0);
        espeak_SetParameter(PARAM_PITCH, voice.pitch, 0);
        espeak_SetParameter(PARAM_RANGE, voice.range, 0);
        espeak_SetSynthCallback(collect);
        espeak_Synth(
            c_text.as_ptr().cast(),
            text.len() + 1,
            0,
            POS_CHARACTER,
            0,
            ESPEAK_CHARS_UTF8 as c_uint,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        // Later phonemizing uses espeak's default prosody.
        espeak_SetParameter(PARAM_RATE, 175, 0);
        espeak_SetParameter(PARAM_PITCH, 50, 0);
        espeak_SetParameter(PARAM_RANGE, 50, 0);
    }
    drop(selected);
    Ok(COLLECT.with(|c| std::mem::take(&mut *c.borrow_mut())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_ipa_with_punctuation() {
        let p = phonemize("Hello world, this is a test.", "en-us").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].punctuation, Some(','));
        assert_eq!(p[0].words[0].text, "Hello");
        assert_eq!(p[0].words[0].ipa, "həlˈoʊ");
        assert_eq!(p[0].words[1].ipa, "wˈɜːld");
        assert_eq!(p[1].punctuation, Some('.'));
        assert_eq!(p[1].words.len(), 4);
    }

    #[test]
    fn numbers_expand_and_stay_aligned() {
        let p = phonemize("I have 42 apples", "en-us").unwrap();
        let words: Vec<&str> = p[0].words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(words, ["I", "have", "42", "apples"]);
        assert_eq!(
            p[0].words[2].ipa.split(' ').count(),
            2,
            "{:?}",
            p[0].words[2]
        );
        assert!(p[0].words.iter().all(|w| !w.ipa.is_empty()));
    }

    #[test]
    fn synthesis_reports_phonemes_in_order() {
        let s = synthesize("Hello world.", &EspeakVoice::new("en-us+f3")).unwrap();
        assert!(s.sample_rate > 0);
        let secs = s.pcm.len() as f32 / s.sample_rate as f32;
        assert!((0.5..3.0).contains(&secs), "{secs} s");
        let names: String = s.phonemes.iter().map(|(p, _)| p.as_str()).collect();
        assert!(
            names.contains('l') && names.contains('w'),
            "{:?}",
            s.phonemes
        );
        assert!(s.phonemes.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(s.phonemes.last().unwrap().1 < s.pcm.len() as u64);
        // Phonemizing afterwards still works (prosody reset, same voice state).
        assert_eq!(
            phonemize("Hello.", "en-us").unwrap()[0].words[0].ipa,
            "həlˈoʊ"
        );
    }

    #[test]
    fn other_scripts_are_not_spelled_out() {
        let p = phonemize("你好 world", "en-us").unwrap();
        let words: Vec<&str> = p[0].words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(words, ["world"]);
        assert!(
            phonemize("你好。", "en-us")
                .unwrap()
                .iter()
                .all(|p| p.words.is_empty())
        );
    }
}
