//! What was said when: phonemes, visemes and words of one utterance, in
//! samples from its start at the model's rate.
//!
//! ## Visemes
//! Fifteen mouth shapes (the common MPEG-4 / Oculus set). The face stage
//! turns them into jaw and lip parameters. English IPA (espeak-ng) maps as:
//!
//! | viseme | IPA |
//! |---|---|
//! | `sil` | silence, pauses |
//! | `PP` | p b m |
//! | `FF` | f v |
//! | `TH` | θ ð |
//! | `DD` | t d ɾ |
//! | `kk` | k g ŋ x |
//! | `CH` | ʃ ʒ (also the second half of tʃ dʒ) |
//! | `SS` | s z |
//! | `nn` | n l ɫ |
//! | `RR` | ɹ r ɚ ɝ |
//! | `aa` | ɑ a æ ʌ ɐ |
//! | `E` | ɛ e ɜ ə h |
//! | `ih` | ɪ i j ᵻ |
//! | `oh` | ɔ o ɒ |
//! | `ou` | ʊ u w |
//!
//! Stress marks (ˈ ˌ) belong to the phoneme they precede, length marks (ː)
//! and other modifiers to the one they follow.

/// A mouth shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Viseme {
    Sil,
    PP,
    FF,
    TH,
    DD,
    KK,
    CH,
    SS,
    NN,
    RR,
    AA,
    E,
    IH,
    OH,
    OU,
}

impl Viseme {
    pub const ALL: [Viseme; 15] = [
        Viseme::Sil,
        Viseme::PP,
        Viseme::FF,
        Viseme::TH,
        Viseme::DD,
        Viseme::KK,
        Viseme::CH,
        Viseme::SS,
        Viseme::NN,
        Viseme::RR,
        Viseme::AA,
        Viseme::E,
        Viseme::IH,
        Viseme::OH,
        Viseme::OU,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Viseme::Sil => "sil",
            Viseme::PP => "PP",
            Viseme::FF => "FF",
            Viseme::TH => "TH",
            Viseme::DD => "DD",
            Viseme::KK => "kk",
            Viseme::CH => "CH",
            Viseme::SS => "SS",
            Viseme::NN => "nn",
            Viseme::RR => "RR",
            Viseme::AA => "aa",
            Viseme::E => "E",
            Viseme::IH => "ih",
            Viseme::OH => "oh",
            Viseme::OU => "ou",
        }
    }

    /// The viseme of an IPA phoneme letter; `None` for marks and unknown
    /// symbols.
    pub fn for_ipa(c: char) -> Option<Viseme> {
        Some(match c {
            'p' | 'b' | 'm' => Viseme::PP,
            'f' | 'v' => Viseme::FF,
            'θ' | 'ð' => Viseme::TH,
            't' | 'd' | 'ɾ' => Viseme::DD,
            'k' | 'g' | 'ɡ' | 'ŋ' | 'x' => Viseme::KK,
            'ʃ' | 'ʒ' | 'ɕ' | 'ʂ' | 'ʐ' => Viseme::CH,
            's' | 'z' => Viseme::SS,
            'n' | 'l' | 'ɫ' => Viseme::NN,
            'ɹ' | 'r' | 'ɚ' | 'ɝ' => Viseme::RR,
            'ɑ' | 'a' | 'æ' | 'ʌ' | 'ɐ' => Viseme::AA,
            'ɛ' | 'e' | 'ɜ' | 'ə' | 'h' => Viseme::E,
            'ɪ' | 'i' | 'j' | 'ᵻ' | 'ɨ' => Viseme::IH,
            'ɔ' | 'o' | 'ɒ' => Viseme::OH,
            'ʊ' | 'u' | 'w' | 'y' => Viseme::OU,
            _ => return None,
        })
    }
}

/// Kinds of IPA characters for timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    /// Starts a phoneme.
    Phoneme,
    /// Stress: belongs to the next phoneme.
    Prefix,
    /// Length and other modifiers: belong to the previous phoneme.
    Suffix,
    /// Word gap or punctuation: silence.
    Break,
}

pub fn symbol_kind(c: char) -> SymbolKind {
    match c {
        'ˈ' | 'ˌ' => SymbolKind::Prefix,
        ' ' | ',' | '.' | ';' | ':' | '!' | '?' | '-' => SymbolKind::Break,
        // Spacing modifier letters (ː ʰ ʲ …) and combining marks.
        '\u{02B0}'..='\u{036F}' => SymbolKind::Suffix,
        c if Viseme::for_ipa(c).is_some() || c.is_alphabetic() => SymbolKind::Phoneme,
        _ => SymbolKind::Suffix,
    }
}

/// A value over `[start, end)` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Span<T> {
    pub value: T,
    pub start: u64,
    pub end: u64,
}

/// The timeline of one utterance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub sample_rate: u32,
    /// Total samples of the utterance.
    pub samples: u64,
    pub phonemes: Vec<Span<String>>,
    pub visemes: Vec<Span<Viseme>>,
    pub words: Vec<Span<String>>,
}

impl Timeline {
    /// Builds the timeline from per-symbol timing: `symbols[i]` is the IPA
    /// character (or `None` for model padding) covering
    /// `[bounds[i], bounds[i + 1])` samples, and `word_of[i]` the index of
    /// the written word it belongs to.
    pub fn from_symbols(
        sample_rate: u32,
        symbols: &[Option<char>],
        word_of: &[Option<usize>],
        words: &[String],
        bounds: &[u64],
    ) -> Self {
        let samples = bounds.last().copied().unwrap_or(0);
        let mut phonemes: Vec<Span<String>> = Vec::new();
        let mut phoneme_word: Vec<Option<usize>> = Vec::new();
        let mut open = false; // the last phoneme span may still grow
        let mut prefix_start: Option<u64> = None;
        for (i, sym) in symbols.iter().enumerate() {
            let (a, b) = (bounds[i], bounds[i + 1]);
            match sym.map(symbol_kind) {
                None | Some(SymbolKind::Suffix) => {
                    if open && let Some(last) = phonemes.last_mut() {
                        last.end = b;
                        if let (Some(c), Some(SymbolKind::Suffix)) = (sym, sym.map(symbol_kind)) {
                            last.value.push(*c);
                        }
                    }
                }
                Some(SymbolKind::Prefix) => {
                    open = false;
                    prefix_start.get_or_insert(a);
                }
                Some(SymbolKind::Break) => {
                    open = false;
                    prefix_start = None;
                }
                Some(SymbolKind::Phoneme) => {
                    let start = prefix_start.take().unwrap_or(a);
                    phonemes.push(Span {
                        value: sym.map(String::from).unwrap_or_default(),
                        start,
                        end: b,
                    });
                    phoneme_word.push(word_of.get(i).copied().flatten());
                    open = true;
                }
            }
        }
        let mut visemes: Vec<Span<Viseme>> = Vec::new();
        let mut cursor = 0;
        for p in &phonemes {
            if p.start > cursor {
                push_viseme(&mut visemes, Viseme::Sil, cursor, p.start);
            }
            let v = p
                .value
                .chars()
                .find_map(Viseme::for_ipa)
                .unwrap_or(Viseme::Sil);
            push_viseme(&mut visemes, v, p.start, p.end);
            cursor = p.end;
        }
        if samples > cursor {
            push_viseme(&mut visemes, Viseme::Sil, cursor, samples);
        }
        let mut word_spans: Vec<Span<String>> = Vec::new();
        let mut last_word: Option<usize> = None;
        for (p, w) in phonemes.iter().zip(&phoneme_word) {
            let Some(w) = *w else { continue };
            match word_spans.last_mut() {
                Some(last) if last_word == Some(w) => last.end = p.end,
                _ => word_spans.push(Span {
                    value: words.get(w).cloned().unwrap_or_default(),
                    start: p.start,
                    end: p.end,
                }),
            }
            last_word = Some(w);
        }
        Self {
            sample_rate,
            samples,
            phonemes,
            visemes,
            words: word_spans,
        }
    }

    /// The viseme at sample `s` (silence outside the utterance).
    pub fn viseme_at(&self, s: u64) -> Viseme {
        self.visemes
            .iter()
            .find(|v| v.start <= s && s < v.end)
            .map(|v| v.value)
            .unwrap_or(Viseme::Sil)
    }
}

fn push_viseme(out: &mut Vec<Span<Viseme>>, v: Viseme, start: u64, end: u64) {
    if end <= start {
        return;
    }
    match out.last_mut() {
        Some(last) if last.value == v && last.end == start => last.end = end,
        _ => out.push(Span {
            value: v,
            start,
            end,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stress_length_pads_and_words() {
        // "hi ˈaː": h i _ ' ' ˈ a ː _
        let symbols = [
            Some('h'),
            Some('i'),
            None,
            Some(' '),
            Some('ˈ'),
            Some('a'),
            Some('ː'),
            None,
        ];
        let word_of = [
            Some(0),
            Some(0),
            None,
            None,
            Some(1),
            Some(1),
            Some(1),
            None,
        ];
        let words = vec!["hi".to_string(), "ah".to_string()];
        let bounds = [0, 10, 20, 30, 40, 50, 60, 70, 80];
        let t = Timeline::from_symbols(100, &symbols, &word_of, &words, &bounds);
        let ph: Vec<(&str, u64, u64)> = t
            .phonemes
            .iter()
            .map(|p| (p.value.as_str(), p.start, p.end))
            .collect();
        assert_eq!(ph, [("h", 0, 10), ("i", 10, 30), ("aː", 40, 80)]);
        let w: Vec<(&str, u64, u64)> = t
            .words
            .iter()
            .map(|p| (p.value.as_str(), p.start, p.end))
            .collect();
        assert_eq!(w, [("hi", 0, 30), ("ah", 40, 80)]);
        let v: Vec<(Viseme, u64, u64)> = t
            .visemes
            .iter()
            .map(|p| (p.value, p.start, p.end))
            .collect();
        assert_eq!(
            v,
            [
                (Viseme::E, 0, 10),
                (Viseme::IH, 10, 30),
                (Viseme::Sil, 30, 40),
                (Viseme::AA, 40, 80)
            ]
        );
        assert_eq!(t.viseme_at(35), Viseme::Sil);
        assert_eq!(t.viseme_at(1000), Viseme::Sil);
    }
}
