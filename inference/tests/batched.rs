//! Batched model workers: the clauses of several sessions synthesised at
//! the same time through the workers (vocoders, the Mandarin acoustic
//! model) sound as each does alone, and the workers really batch them.

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
        // Vocoder batches are exact to float rounding; the Mandarin
        // acoustic model's packed pass sums attention over a longer row
        // (masked positions add zeros), which moves the last bits of the
        // mel and so of the audio: within -60 dB of full scale.
        assert!(worst <= 1e-3, "{line:?}: differs by {worst}");
    }
    let zh = voices.mandarin.as_ref().unwrap();
    let acoustic = zh.acoustic_batch_stats().unwrap();
    // Whether two clauses' acoustic passes meet in a batch is timing (the
    // packed pass itself is checked below); every clause went through.
    assert_eq!(acoustic.items.load(Ordering::Relaxed), 3);
    let clauses = voices
        .english
        .as_ref()
        .unwrap()
        .clause_batch_stats()
        .unwrap();
    assert_eq!(clauses.items.load(Ordering::Relaxed), 4);
    // The three sessions' vocoder chunks meet in batches (at most one
    // chunk of each). On a loaded machine one voice's chunks may all miss
    // each other (seen under the full test suite), so the test asks that
    // batches formed, not that both voices' did.
    let mut batched = 0;
    for (name, stats) in [
        (
            "en",
            voices.english.as_ref().unwrap().batch_stats().unwrap(),
        ),
        ("zh", zh.batch_stats().unwrap()),
    ] {
        let (batches, items, largest) = (
            stats.batches.load(Ordering::Relaxed),
            stats.items.load(Ordering::Relaxed),
            stats.largest.load(Ordering::Relaxed),
        );
        eprintln!("{name}: {items} chunks in {batches} batches, largest {largest}");
        assert!(largest <= 3, "{name}: largest batch {largest}");
        if largest >= 2 && batches < items {
            batched += 1;
        }
    }
    assert!(batched >= 1, "no voice's chunks were batched");
}

/// The Mandarin acoustic model runs clauses of different lengths in one
/// pass (packed along time, attention kept inside each clause): each gets
/// the durations, pitch, energy and mel it gets alone.
#[test]
fn clauses_of_different_lengths_in_one_acoustic_pass_equal_each_alone() {
    use huashen_inference::speech::zh::MandarinTts;
    let tts = MandarinTts::<Cpu>::load(&models_dir(), &Default::default())
        .expect("run scripts/fetch-models.sh");
    let items: Vec<(Vec<usize>, f32)> = [
        ("欢迎来到直播间。", 1.0),
        (
            "今天我们聊聊新款手机，这款耳机音质清晰，续航可以达到三十个小时。",
            1.2,
        ),
        ("好。", 0.9),
        ("感谢大家的支持！", 1.0),
    ]
    .iter()
    .map(|(t, speed)| (tts.symbol_ids(t), *speed))
    .collect();
    let together = tts.acoustic().forward_batch(&items);
    assert_eq!(together.len(), items.len());
    for ((ids, speed), b) in items.iter().zip(&together) {
        let a = tts.acoustic().forward(ids, *speed);
        assert_eq!(a.durations, b.durations, "{} symbols", ids.len());
        let close = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max)
        };
        assert!(close(&a.f0, &b.f0) < 1e-4 && close(&a.energy, &b.energy) < 1e-4);
        assert_eq!(a.mel.dims(), b.mel.dims());
        let (ma, mb) = (
            a.mel.into_data().to_vec::<f32>().unwrap(),
            b.mel.clone().into_data().to_vec::<f32>().unwrap(),
        );
        let worst = close(&ma, &mb);
        assert!(worst < 1e-3, "mel differs by {worst}");
    }
}

/// The English voice's clause networks (text encoder, stochastic duration
/// predictor, flow) run utterances of different lengths in one pass
/// (packed along time): each gets the durations and latent it gets alone,
/// its noise drawn in the same order.
#[test]
fn english_clauses_in_one_pass_equal_each_alone() {
    use huashen_inference::speech::piper::PrepareJob;
    use huashen_inference::speech::tts::{EnglishTts, Gaussian};
    let tts = EnglishTts::<Cpu>::load(&models_dir(), &Default::default())
        .expect("run scripts/fetch-models.sh");
    let texts = [
        "Good evening.",
        "Tonight we are looking at three new phones and a cheap pair of headphones.",
        "Yes!",
        "Thank you so much for joining us tonight.",
    ];
    let jobs = || -> Vec<PrepareJob> {
        texts
            .iter()
            .map(|t| {
                let mut rng = Gaussian::seeded(t);
                PrepareJob {
                    ids: tts.phoneme_ids(t).unwrap(),
                    scales: tts.voice().scales,
                    noise: Box::new(move || rng.sample()),
                }
            })
            .collect()
    };
    let together = tts.voice().prepare_batch(jobs());
    assert_eq!(together.len(), texts.len());
    for (mut job, b) in jobs().into_iter().zip(&together) {
        let a = tts.voice().prepare(&job.ids, job.scales, &mut *job.noise);
        assert_eq!(a.durations, b.durations, "{} ids", job.ids.len());
        assert_eq!(a.latent.dims(), b.latent.dims());
        let (la, lb) = (
            a.latent.into_data().to_vec::<f32>().unwrap(),
            b.latent.clone().into_data().to_vec::<f32>().unwrap(),
        );
        let worst = la
            .iter()
            .zip(&lb)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "latent differs by {worst}");
    }
}
