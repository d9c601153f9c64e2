//! Streaming clause splitter for incremental TTS.
//!
//! Text arrives in arbitrary pieces (often an LLM's tokens, cut mid-word).
//! The splitter hands out a clause as soon as its end is certain, so speech
//! can start after the first clause instead of after the whole text:
//!
//! * sentence ends (`. ! ? ; …` and `。！？；`) end a clause. An ASCII `.`, `!`
//!   or `?` ends one only once the next character shows it is not inside a
//!   number (`3.14`), an abbreviation (`Dr.`, `e.g.`) or a run (`?!`, `...`);
//!   CJK punctuation needs no look-ahead;
//! * pauses (`, : 、，：`) end a clause once it is long enough to be worth a
//!   separate synthesis call (`min_pause_clause` characters);
//! * a line break always ends a clause;
//! * a clause that grows past `max_clause` characters is cut at its last
//!   space (or hard, for text without spaces).
//!
//! Closing quotes and brackets stay with the clause they close.

/// Streaming splitter state.
#[derive(Debug, Clone)]
pub struct ClauseSplitter {
    buf: String,
    min_pause_clause: usize,
    max_clause: usize,
}

impl Default for ClauseSplitter {
    fn default() -> Self {
        Self::new(12, 220)
    }
}

const SENTENCE_ASCII: &[char] = &['.', '!', '?', ';'];
const SENTENCE_CJK: &[char] = &['。', '！', '？', '；', '…'];
const PAUSE: &[char] = &[',', ':', '、', '，', '：'];
const CLOSERS: &[char] = &[
    '"', '\'', ')', ']', '}', '”', '’', '」', '』', '）', '】', '》', '〉',
];
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "etc", "no", "fig",
    "approx", "a.m", "p.m", "u.s",
];

enum Cut {
    /// The clause ends after byte `end`.
    At(usize),
    /// Undecidable until more text arrives.
    Wait,
    /// No boundary in the buffer.
    None,
}

impl ClauseSplitter {
    /// `min_pause_clause`: characters a clause needs before a comma-like pause
    /// may end it. `max_clause`: longest clause handed out.
    pub fn new(min_pause_clause: usize, max_clause: usize) -> Self {
        Self {
            buf: String::new(),
            min_pause_clause,
            max_clause: max_clause.max(8),
        }
    }

    /// Adds text; returns the clauses completed by it, in order.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.find_cut() {
                Cut::At(end) => self.cut(end, &mut out),
                Cut::Wait => break,
                Cut::None => {
                    if self.buf.chars().count() > self.max_clause {
                        self.cut(self.forced_cut(), &mut out);
                    } else {
                        break;
                    }
                }
            }
        }
        out
    }

    /// Hands out the buffer up to byte `end`; keeps the rest without its
    /// leading white space.
    fn cut(&mut self, end: usize, out: &mut Vec<String>) {
        let rest = self.buf.split_off(end);
        push_clause(out, &self.buf);
        self.buf = rest.trim_start().to_owned();
    }

    /// Ends the text: returns what is left as the last clause, if any.
    pub fn flush(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        push_clause(&mut out, &rest);
        out.pop()
    }

    /// Drops buffered text (for an interrupt).
    pub fn reset(&mut self) {
        self.buf.clear();
    }

    /// Text buffered and not yet handed out.
    pub fn pending(&self) -> &str {
        &self.buf
    }

    fn find_cut(&self) -> Cut {
        let chars: Vec<(usize, char)> = self.buf.char_indices().collect();
        let mut count = 0;
        for (i, &(pos, c)) in chars.iter().enumerate() {
            // A CJK character takes about as long to say as three letters.
            count += if is_cjk(c) { 3 } else { 1 };
            if c == '\n' {
                return Cut::At(pos + 1);
            }
            let sentence_cjk = SENTENCE_CJK.contains(&c);
            let sentence_ascii = SENTENCE_ASCII.contains(&c);
            let pause = PAUSE.contains(&c) && count >= self.min_pause_clause;
            if !(sentence_cjk || sentence_ascii || pause) {
                continue;
            }
            // Where the clause would end: after this char and any closers.
            let mut j = i + 1;
            while j < chars.len() && (CLOSERS.contains(&chars[j].1) || chars[j].1 == c && c != ',')
            {
                j += 1;
            }
            let end = chars.get(j).map_or(self.buf.len(), |&(p, _)| p);
            // CJK punctuation is unambiguous: cut without look-ahead.
            if sentence_cjk || matches!(c, '、' | '，' | '：') {
                return Cut::At(end);
            }
            // ASCII punctuation: the next character must be a space (or a
            // CJK character) for this to be a boundary.
            let Some(&(_, next)) = chars.get(j) else {
                return Cut::Wait;
            };
            let decisive = next.is_whitespace() || is_cjk(next);
            if !decisive {
                continue;
            }
            if c == '.' && self.is_abbreviation(pos) {
                continue;
            }
            return Cut::At(end);
        }
        Cut::None
    }

    /// True when the `.` at byte `dot` ends a known abbreviation or a single
    /// letter initial ("J. R. R. Tolkien").
    fn is_abbreviation(&self, dot: usize) -> bool {
        let before = &self.buf[..dot];
        let word: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_alphabetic() || *c == '.')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let lower = word.to_lowercase();
        (word.chars().count() == 1 && word.chars().all(|c| c.is_uppercase()))
            || ABBREVIATIONS.contains(&lower.as_str())
    }

    /// Byte index to cut an over-long clause: after its last space within
    /// `max_clause` characters, else hard at `max_clause`.
    fn forced_cut(&self) -> usize {
        let limit = self
            .buf
            .char_indices()
            .nth(self.max_clause)
            .map_or(self.buf.len(), |(p, _)| p);
        match self.buf[..limit].rfind(char::is_whitespace) {
            Some(p) if p > 0 => p + 1,
            _ => limit,
        }
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3000..=0x303F | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xFF00..=0xFFEF)
}

/// Adds `clause` trimmed, unless it has nothing to say.
fn push_clause(out: &mut Vec<String>, clause: &str) {
    let t = clause.trim();
    if t.chars().any(|c| c.is_alphanumeric()) {
        out.push(t.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(pieces: &[&str]) -> Vec<String> {
        let mut s = ClauseSplitter::default();
        let mut out = vec![];
        for p in pieces {
            out.extend(s.push(p));
        }
        out.extend(s.flush());
        out
    }

    #[test]
    fn english_sentences_as_they_arrive() {
        let mut s = ClauseSplitter::default();
        assert!(s.push("Hello there").is_empty());
        // The '.' could still be "3.14"-like: wait for the next character.
        assert!(s.push(".").is_empty());
        assert_eq!(s.push(" Wel"), vec!["Hello there."]);
        assert_eq!(s.pending(), "Wel");
        assert_eq!(s.push("come to the show! "), vec!["Welcome to the show!"]);
        assert_eq!(s.flush(), None);
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let text = "Dr. Li paid $3.50, then left. Prices rose 2.5% today, \
                    which surprised everyone at the market! Really?! \
                    今天天气很好，我们去公园散步吧。你觉得怎么样？";
        let whole = split_all(&[text]);
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let by_char = split_all(&chars.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(whole, by_char);
        assert_eq!(
            whole,
            vec![
                "Dr. Li paid $3.50,",
                "then left.",
                "Prices rose 2.5% today,",
                "which surprised everyone at the market!",
                "Really?!",
                "今天天气很好，",
                "我们去公园散步吧。",
                "你觉得怎么样？",
            ]
        );
    }

    #[test]
    fn quotes_stay_with_their_clause_and_lines_split() {
        assert_eq!(
            split_all(&["He said \"stop.\" Then silence.\nNext line"]),
            vec!["He said \"stop.\"", "Then silence.", "Next line"]
        );
        assert_eq!(split_all(&["“你好。”他说。"]), vec!["“你好。”", "他说。"]);
    }

    #[test]
    fn short_pauses_wait_long_ones_split() {
        assert_eq!(split_all(&["Yes, sir. "]), vec!["Yes, sir."]);
        let mut s = ClauseSplitter::new(12, 220);
        assert_eq!(
            s.push("In the beginning of the show, we"),
            vec!["In the beginning of the show,"]
        );
    }

    #[test]
    fn long_runs_are_cut_at_spaces() {
        let mut s = ClauseSplitter::new(12, 20);
        let out = s.push("one two three four five six seven eight nine");
        assert!(!out.is_empty());
        assert!(out.iter().all(|c| c.chars().count() <= 20), "{out:?}");
        let mut rest: Vec<String> = out;
        rest.extend(s.flush());
        assert_eq!(
            rest.join(" "),
            "one two three four five six seven eight nine"
        );
        let mut s = ClauseSplitter::new(12, 10);
        let cut = s.push("一二三四五六七八九十一二三");
        assert_eq!(cut, vec!["一二三四五六七八九十"]);
    }

    #[test]
    fn reset_and_punctuation_only() {
        let mut s = ClauseSplitter::default();
        s.push("half a sent");
        s.reset();
        assert_eq!(s.pending(), "");
        assert_eq!(split_all(&["... !!! 。"]), Vec::<String>::new());
    }
}
