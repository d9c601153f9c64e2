//! English grapheme → IPA with espeak-ng (Debian `libespeak-ng1`, through its
//! C API), as Piper voices expect.
//!
//! espeak-ng keeps global state and is not thread-safe: every call holds one
//! process-wide lock. It returns one clause per call without the clause's
//! punctuation, so text is cut at punctuation here first and the mark is
//! appended after the clause's phonemes, as Piper's phonemizer does.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
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
}

const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const ESPEAK_CHARS_UTF8: c_int = 1;
const ESPEAK_PHONEMES_IPA: c_int = 0x02;

/// espeak-ng's global state: initialised once, the voice last selected.
static ESPEAK: Mutex<Option<String>> = Mutex::new(None);
static INIT: Mutex<Option<Result<(), String>>> = Mutex::new(None);

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
                ESPEAK_INITIALIZE_DONT_EXIT,
            )
        };
        if rate > 0 {
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
