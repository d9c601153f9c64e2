//! Voice in: what a client pushes (16-bit PCM at 8/16/24/48 kHz or Opus
//! packets, mono or stereo; PushAudio or a WHIP publisher) decoded into the
//! session's 48 kHz mono, ready for the session's voice lane.

use crate::pipeline::clock::AUDIO_RATE;
use huashen_inference::resample::Resampler;

/// How pushed audio is encoded (validated from `PushAudioStart.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Pcm16,
    Opus,
}

/// Turns pushed audio messages into 48 kHz mono samples.
pub struct VoiceDecoder {
    encoding: Encoding,
    channels: usize,
    /// Rate of the decoded samples (Opus always decodes at 48 kHz).
    rate: u32,
    /// Sample frames decoded so far, at `rate`.
    decoded: u64,
    resampler: Option<Resampler>,
    opus: Option<opus::Decoder>,
    /// A PCM byte that ended a message mid-sample.
    carry: Vec<u8>,
    scratch: Vec<f32>,
    out: Vec<f32>,
}

/// Most samples per channel in one Opus packet (120 ms at 48 kHz).
const OPUS_MAX_FRAME: usize = 5760;

impl VoiceDecoder {
    pub fn new(encoding: Encoding, sample_rate: u32, channels: u32) -> Result<Self, String> {
        let channels = channels as usize;
        let opus = match encoding {
            Encoding::Opus => Some(
                opus::Decoder::new(
                    AUDIO_RATE,
                    if channels == 2 {
                        opus::Channels::Stereo
                    } else {
                        opus::Channels::Mono
                    },
                )
                .map_err(|e| format!("cannot start the Opus decoder: {e}"))?,
            ),
            Encoding::Pcm16 => None,
        };
        // Opus decodes to 48 kHz whatever rate was declared.
        let rate = if encoding == Encoding::Opus {
            AUDIO_RATE
        } else {
            sample_rate
        };
        Ok(Self {
            encoding,
            channels,
            rate,
            decoded: 0,
            resampler: (rate != AUDIO_RATE).then(|| Resampler::new(rate, AUDIO_RATE)),
            opus,
            carry: Vec::new(),
            scratch: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Milliseconds of audio decoded so far.
    pub fn decoded_ms(&self) -> u64 {
        self.decoded * 1000 / u64::from(self.rate)
    }

    /// Decodes one message's `data` into `pcm` (48 kHz mono), appending.
    pub fn decode(&mut self, data: &[u8], pcm: &mut Vec<i16>) -> Result<(), String> {
        self.scratch.clear();
        match self.encoding {
            Encoding::Pcm16 => {
                let frame = 2 * self.channels;
                let mut bytes = std::mem::take(&mut self.carry);
                bytes.extend_from_slice(data);
                let whole = bytes.len() / frame * frame;
                for f in bytes[..whole].chunks_exact(frame) {
                    let mut sum = 0f32;
                    for c in f.chunks_exact(2) {
                        sum += f32::from(i16::from_le_bytes([c[0], c[1]]));
                    }
                    self.scratch.push(sum / self.channels as f32 / 32768.0);
                }
                self.carry = bytes[whole..].to_vec();
            }
            Encoding::Opus => {
                let Some(decoder) = self.opus.as_mut() else {
                    return Err("no Opus decoder".into());
                };
                let mut buf = vec![0f32; OPUS_MAX_FRAME * self.channels];
                let n = decoder
                    .decode_float(data, &mut buf, false)
                    .map_err(|e| format!("a data message is not a valid Opus packet ({e})"))?;
                for f in buf[..n * self.channels].chunks_exact(self.channels) {
                    self.scratch
                        .push(f.iter().sum::<f32>() / self.channels as f32);
                }
            }
        }
        self.decoded += self.scratch.len() as u64;
        self.out.clear();
        match self.resampler.as_mut() {
            Some(r) => r.push(&self.scratch, &mut self.out),
            None => self.out.extend_from_slice(&self.scratch),
        }
        pcm.extend(
            self.out
                .iter()
                .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16),
        );
        Ok(())
    }

    /// The resampler's tail, at the end of the stream.
    pub fn finish(&mut self, pcm: &mut Vec<i16>) {
        self.out.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.finish(&mut self.out);
        }
        pcm.extend(
            self.out
                .iter()
                .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_is_downmixed_and_resampled_to_48k() {
        let mut d = VoiceDecoder::new(Encoding::Pcm16, 16000, 2).unwrap();
        // 100 ms of stereo at 16 kHz: left 1000, right 3000.
        let mut bytes = Vec::new();
        for _ in 0..1600 {
            bytes.extend_from_slice(&1000i16.to_le_bytes());
            bytes.extend_from_slice(&3000i16.to_le_bytes());
        }
        let mut pcm = Vec::new();
        // Split mid-sample: the odd byte is carried over.
        d.decode(&bytes[..4001], &mut pcm).unwrap();
        d.decode(&bytes[4001..], &mut pcm).unwrap();
        d.finish(&mut pcm);
        assert_eq!(d.decoded_ms(), 100);
        assert_eq!(pcm.len(), 4800);
        // The mean of the channels, away from the filter's edges.
        assert!(
            pcm[1000..3800].iter().all(|&v| (v - 2000).abs() <= 20),
            "{:?}",
            &pcm[1000..1010]
        );
    }

    #[test]
    fn opus_packets_decode_at_48k() {
        let mut enc =
            opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let tone: Vec<i16> = (0..960)
            .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
            .collect();
        let mut packet = vec![0u8; 4000];
        let n = enc.encode(&tone, &mut packet).unwrap();
        let mut d = VoiceDecoder::new(Encoding::Opus, 16000, 1).unwrap();
        let mut pcm = Vec::new();
        d.decode(&packet[..n], &mut pcm).unwrap();
        assert_eq!(d.decoded_ms(), 20);
        assert_eq!(pcm.len(), 960);
        assert!(d.decode(b"not opus at all", &mut pcm).is_err());
    }
}
