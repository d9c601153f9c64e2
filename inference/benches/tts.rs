//! TTS throughput: the English voice synthesising a sentence, reported as
//! audio samples (22,050 a second) per second of compute.
//!
//!     cargo bench -p huashen-inference --bench tts

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use huashen_inference::Cpu;
use huashen_inference::speech::tts::EnglishTts;

fn bench(c: &mut Criterion) {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let tts = EnglishTts::<Cpu>::load(&models, &Default::default())
        .expect("models (run scripts/fetch-models.sh)");
    let text = "Welcome back everyone, today we look at three new products.";
    let (_, audio) = tts.synthesize(text, 1.0).unwrap();
    let mut g = c.benchmark_group("tts");
    g.sample_size(10);
    g.throughput(Throughput::Elements(audio.len() as u64));
    g.bench_function("english_sentence", |b| {
        b.iter(|| tts.synthesize(text, 1.0).unwrap().1.len())
    });
    g.finish();
}

/// The vocoder stages one batch at a time: `batch` mid-clause chunks (64
/// frames + 2 × context), the time per batch (divide by the batch size for
/// the time per chunk).
fn vocoder_batches(c: &mut Criterion) {
    use huashen_inference::batch::Batched;
    use huashen_inference::speech::piper::PiperVoice;
    use huashen_inference::speech::zh::model::MbMelgan;
    use huashen_inference::speech::zh::{MelganVocoder, VocodeJob};
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let device = Default::default();
    let voice = PiperVoice::<Cpu>::load(&models.join("piper/en_US-joe-medium.onnx"), &device)
        .expect("models (run scripts/fetch-models.sh)");
    let text = "Welcome back everyone, today we look at three new products and some very cheap headphones.";
    let (ids, _) = voice.phoneme_ids(
        &huashen_inference::speech::espeak::phonemize(text, "en-us")
            .unwrap()
            .iter()
            .flat_map(|p| p.words.iter().map(|w| w.ipa.clone()))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let prepared = voice.prepare(&ids, voice.scales, &mut || 0.0);
    let mut decoder = voice.decoder();
    let mut g = c.benchmark_group("vocoder_batch");
    g.sample_size(10);
    for batch in [1usize, 2, 4, 8] {
        g.bench_function(format!("piper_{batch}"), |b| {
            b.iter(|| {
                let jobs = (0..batch)
                    .map(|_| voice.decode_job(&prepared, 100, 164).unwrap())
                    .collect();
                decoder.run(jobs).len()
            })
        });
    }
    let melgan = MbMelgan::<Cpu>::load(&models.join("zh/mb_melgan.tflite"), &device).unwrap();
    let mut vocoder = MelganVocoder::new(melgan);
    let mel = burn::tensor::Tensor::<Cpu, 2>::random(
        [112, 80],
        burn::tensor::Distribution::Normal(-2.0, 1.0),
        &device,
    );
    for batch in [1usize, 2, 4, 8] {
        g.bench_function(format!("melgan_{batch}"), |b| {
            b.iter(|| {
                let jobs = (0..batch)
                    .map(|_| VocodeJob {
                        mel: mel.clone(),
                        keep_from: 24 * 300,
                        keep: 64 * 300,
                    })
                    .collect();
                vocoder.run(jobs).len()
            })
        });
    }
    g.finish();
}

/// The Mandarin acoustic model: four clauses one at a time vs packed into
/// one pass.
fn acoustic_batches(c: &mut Criterion) {
    use huashen_inference::speech::zh::MandarinTts;
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let tts = MandarinTts::<Cpu>::load(&models, &Default::default()).unwrap();
    let items: Vec<(Vec<usize>, f32)> = [
        "欢迎来到直播间，今天我们聊聊新款手机。",
        "这款耳机音质清晰，续航可以达到三十个小时。",
        "现在下单可以享受八折优惠，还包邮哦。",
        "请大家在评论区告诉我你们最喜欢的颜色。",
    ]
    .iter()
    .map(|t| (tts.symbol_ids(t), 1.0))
    .collect();
    let mut g = c.benchmark_group("acoustic_batch");
    g.sample_size(10);
    g.bench_function("fastspeech2_4_alone", |b| {
        b.iter(|| {
            items
                .iter()
                .map(|(ids, s)| tts.acoustic().forward(ids, *s).durations.len())
                .sum::<usize>()
        })
    });
    g.bench_function("fastspeech2_4_packed", |b| {
        b.iter(|| tts.acoustic().forward_batch(&items).len())
    });
    g.finish();
}

criterion_group!(benches, bench, vocoder_batches, acoustic_batches);
criterion_main!(benches);
