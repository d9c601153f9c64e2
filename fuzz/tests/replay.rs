//! Every fuzz target against its committed corpus (`fuzz/corpus/<target>/`:
//! the seeds, and every input that once crashed a target, kept as a
//! regression), then a quick mutation run from those files: random byte
//! flips, cuts, insertions and splices, a fixed number per target, from a
//! fixed seed. What afl.rs finds in its long runs (`scripts/fuzz.sh`)
//! lands in the corpus and is replayed here on every test run.
//!
//! `HUASHEN_FUZZ_WRITE_SEEDS=1 cargo test -p huashen-fuzz --test replay
//! write_seeds` (re)writes the generated seeds.

use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn files(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(corpus(target))
        .unwrap_or_else(|e| panic!("corpus/{target}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_file_passes_every_target() {
    for (name, target) in huashen_fuzz::TARGETS {
        let inputs = files(name);
        assert!(!inputs.is_empty(), "corpus/{name} is empty");
        for (path, bytes) in inputs {
            let run = std::panic::catch_unwind(|| target(&bytes));
            assert!(run.is_ok(), "{name} panicked on {}", path.display());
        }
    }
}

/// One random change to `input` (a splice takes from `other`).
fn mutate(rng: &mut impl Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let at = |rng: &mut _, len: usize| {
        if len == 0 {
            0
        } else {
            Rng::random_range(rng, 0..len)
        }
    };
    match rng.random_range(0..5) {
        0 if !v.is_empty() => {
            let i = at(rng, v.len());
            v[i] ^= 1 << rng.random_range(0..8);
        }
        1 => {
            let i = at(rng, v.len() + 1);
            v.truncate(i);
        }
        2 => {
            let i = at(rng, v.len() + 1);
            let n = rng.random_range(1..16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            v.splice(i..i, bytes);
        }
        3 if !v.is_empty() => {
            let i = at(rng, v.len());
            v[i] = [0, 0xFF, 0x7F, 0x80][rng.random_range(0..4)];
        }
        _ => {
            let cut = at(rng, v.len() + 1);
            let from = at(rng, other.len() + 1);
            v.truncate(cut);
            v.extend_from_slice(&other[from..]);
        }
    }
    v
}

#[test]
fn a_quick_mutation_run_finds_no_crash() {
    // Mutations per target: enough to pass through every parser's error
    // paths, few enough for a debug build in CI.
    const RUNS: usize = 300;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x4855_4153);
    for (name, target) in huashen_fuzz::TARGETS {
        let inputs: Vec<Vec<u8>> = files(name).into_iter().map(|f| f.1).collect();
        for _ in 0..RUNS {
            let a = &inputs[rng.random_range(0..inputs.len())];
            let b = &inputs[rng.random_range(0..inputs.len())];
            let mut m = mutate(&mut rng, a, b);
            for _ in 0..rng.random_range(0..4) {
                m = mutate(&mut rng, &m, b);
            }
            let run = std::panic::catch_unwind(|| target(&m));
            if run.is_err() {
                let path = std::env::temp_dir().join(format!("huashen-fuzz-{name}-crash"));
                std::fs::write(&path, &m).unwrap();
                panic!("{name} panicked; the input is in {}", path.display());
            }
        }
    }
}

/// Writes the generated seeds (encoded messages, images, Opus packets)
/// when asked; otherwise does nothing.
#[test]
fn write_seeds() {
    if std::env::var_os("HUASHEN_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    seeds::write();
}

mod seeds {
    use super::corpus;
    use huashen_protos::v1;
    use prost::Message;

    fn put(target: &str, name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(corpus(target)).unwrap();
        std::fs::write(corpus(target).join(name), bytes).unwrap();
    }

    pub fn write() {
        // Images: small PNG, JPEG and WebP of a gradient.
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(24, 16, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 15) as u8, 128])
        }));
        for (name, format) in [
            ("gradient.png", image::ImageFormat::Png),
            ("gradient.jpg", image::ImageFormat::Jpeg),
            ("gradient.webp", image::ImageFormat::WebP),
        ] {
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, format).unwrap();
            put("image", name, &out.into_inner());
        }
        // gRPC request bodies.
        let start = v1::EnrollAvatarRequest {
            payload: Some(v1::enroll_avatar_request::Payload::Start(v1::EnrollStart {
                display_name: "主播 Host".into(),
                image_format: v1::ImageFormat::Png as i32,
                total_bytes: 1234,
                ..Default::default()
            })),
        };
        put("proto", "enroll_start.bin", &start.encode_to_vec());
        let create = v1::CreateSessionRequest {
            avatar_id: "av_0123456789abcdef0123456789abcdef".into(),
            idle_timeout_seconds: 600,
            labels: [("shop".to_owned(), "tea".to_owned())].into(),
            ..Default::default()
        };
        put("proto", "create_session.bin", &create.encode_to_vec());
        let speak = v1::SpeakRequest {
            session_id: "se_0123456789abcdef0123456789abcdef".into(),
            text: "欢迎来到直播间。Welcome!".into(),
            flush: true,
        };
        put("proto", "speak.bin", &speak.encode_to_vec());
        // Audio: PCM (pick 0: 16 kHz mono) and Opus packets (pick 0x0D:
        // 48 kHz mono), each length-prefixed.
        let tone: Vec<i16> = (0..4800)
            .map(|i| ((i as f32 * 0.07).sin() * 9000.0) as i16)
            .collect();
        let mut pcm = vec![0u8];
        pcm.extend(tone.iter().flat_map(|s| s.to_le_bytes()));
        put("audio", "pcm_16k_mono.bin", &pcm);
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        enc.set_bitrate(opus::Bitrate::Bits(24_000)).unwrap();
        let mut packets = vec![0x0Du8];
        let mut buf = [0u8; 255];
        for frame in tone.chunks_exact(960) {
            let n = enc.encode(frame, &mut buf).unwrap();
            packets.push(n as u8);
            packets.extend_from_slice(&buf[..n]);
        }
        put("audio", "opus_48k_mono.bin", &packets);
    }
}
