//! Mandarin speech: the text front end (normalisation, pinyin, tone
//! sandhi, Baker symbols) and the FastSpeech2 + MB-MelGAN voice.

pub mod model;
