//! Batched vocoder workers: the clauses of several sessions synthesised at
//! the same time through one worker per voice sound exactly as each does
//! alone, and the worker really batches them.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use huashen_inference::Cpu;
use huashen_inference::batch::BatchConfig;
use huashen_inference::speech::voices::Voices;

fn models_dir() -> PathBuf {
    std::env::var_os("HUASHEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"))
}

fn speak(voices: &Voices<Cpu>, voice: &str, text: &str) -> Vec<f32> {
    let mut clause = voices.begin(voice, text, 1.0).unwrap();
    let mut audio = Vec::new();
    while let Some(chunk) = voices.next_chunk(&mut clause) {
        audio.extend(chunk);
    }
    audio
}

#[test]
fn sessions_speaking_at_once_sound_as_they_do_alone() {
    let (mut voices, errors) = Voices::<Cpu>::load(&models_dir(), &Default::default());
    assert!(errors.is_empty(), "run scripts/fetch-models.sh: {errors:?}");
    let lines = [
        (
            "en-US-joe",
            "Good evening, everyone, and welcome back to the show.",
        ),
        (
            "en-US-joe",
            "Tonight we are looking at three new phones and a cheap pair of headphones.",
        ),
        ("zh-CN-baker", "欢迎来到直播间，今天我们聊聊新款手机。"),
        (
            "en-US-joe",
            "If you order in the next ten minutes, shipping is free.",
        ),
        ("zh-CN-baker", "这款耳机音质清晰，续航可以达到三十个小时。"),
        ("en-US-joe", "Thank you so much for joining us tonight."),
        ("zh-CN-baker", "感谢大家的支持，我们下期再见！"),
    ];
    let alone: Vec<Vec<f32>> = lines.iter().map(|(v, t)| speak(&voices, v, t)).collect();

    voices
        .batch(&BatchConfig {
            slots: 3,
            max_wait: Duration::from_millis(20),
            queue: 16,
            threads: 1,
        })
        .unwrap();
    let together: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = lines
            .iter()
            .map(|(v, t)| {
                let voices = &voices;
                s.spawn(move || speak(voices, v, t))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((line, a), b) in lines.iter().zip(&alone).zip(&together) {
        assert_eq!(a.len(), b.len(), "{line:?}");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{line:?}: differs by {worst}");
    }
    for (name, stats) in [
        (
            "en",
            voices.english.as_ref().unwrap().batch_stats().unwrap(),
        ),
        (
            "zh",
            voices.mandarin.as_ref().unwrap().batch_stats().unwrap(),
        ),
    ] {
        let (batches, items, largest) = (
            stats.batches.load(Ordering::Relaxed),
            stats.items.load(Ordering::Relaxed),
            stats.largest.load(Ordering::Relaxed),
        );
        eprintln!("{name}: {items} chunks in {batches} batches, largest {largest}");
        assert!(
            (2..=3).contains(&largest),
            "{name}: largest batch {largest}"
        );
        assert!(batches < items, "{name}: nothing was batched");
    }
}
