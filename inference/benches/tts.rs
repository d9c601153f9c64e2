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

criterion_group!(benches, bench);
criterion_main!(benches);
