//! Encoders. Both run on the session's media thread, never on the async
//! runtime.
//!
//! * H.264 with OpenH264: constrained baseline (every browser decodes it),
//!   no B-frames (baseline has none), one thread, rate control by bitrate
//!   (frames may be skipped to hold it), keyframes on demand plus a periodic
//!   one.
//! * Opus at 48 kHz, 20 ms frames, low-delay mode.

use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level,
    Profile, RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSource;

use super::clock::{AUDIO_FRAME, AUDIO_RATE};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("H.264 encoder: {0}")]
    Video(String),
    #[error("Opus encoder: {0}")]
    Audio(String),
}

/// The H.264 level for a frame size (3.1 up to 1280×720, 4.0 above), as the
/// SDP `profile-level-id` (constrained baseline).
pub fn profile_level_id(width: u32, height: u32) -> &'static str {
    if width * height <= 1280 * 720 {
        "42e01f"
    } else {
        "42e028"
    }
}

pub struct VideoEncoder {
    inner: Encoder,
}

/// One encoded frame, Annex B.
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

impl VideoEncoder {
    pub fn new(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> Result<Self, EncodeError> {
        let level = if width * height <= 1280 * 720 {
            Level::Level_3_1
        } else {
            Level::Level_4_0
        };
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate_kbps * 1000))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .profile(Profile::Baseline)
            .level(level)
            .complexity(Complexity::Low)
            // OpenH264 only holds the bitrate when it may skip frames; a
            // skipped frame comes back empty and is simply not sent.
            .skip_frames(true)
            .num_threads(1)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            // A keyframe at least every 4 s bounds how long a lossy viewer
            // waits; new viewers and PLIs ask for one at once.
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 4));
        let inner = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| EncodeError::Video(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Encodes one frame; `keyframe` forces an IDR frame.
    pub fn encode(
        &mut self,
        frame: &impl YUVSource,
        keyframe: bool,
    ) -> Result<EncodedFrame, EncodeError> {
        if keyframe {
            self.inner.force_intra_frame();
        }
        let bits = self
            .inner
            .encode(frame)
            .map_err(|e| EncodeError::Video(e.to_string()))?;
        let keyframe = matches!(bits.frame_type(), FrameType::IDR | FrameType::I);
        Ok(EncodedFrame {
            data: bits.to_vec(),
            keyframe,
        })
    }
}

pub struct AudioEncoder {
    inner: opus::Encoder,
    out: Vec<u8>,
}

impl AudioEncoder {
    pub fn new(bitrate_kbps: u32) -> Result<Self, EncodeError> {
        let mut inner = opus::Encoder::new(
            AUDIO_RATE,
            opus::Channels::Mono,
            opus::Application::LowDelay,
        )
        .map_err(|e| EncodeError::Audio(e.to_string()))?;
        inner
            .set_bitrate(opus::Bitrate::Bits(bitrate_kbps as i32 * 1000))
            .map_err(|e| EncodeError::Audio(e.to_string()))?;
        Ok(Self {
            inner,
            out: vec![0; 4000],
        })
    }

    /// The encoder's look-ahead in 48 kHz samples (Opus "pre-skip").
    pub fn lookahead(&mut self) -> u16 {
        self.inner
            .get_lookahead()
            .ok()
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(312)
    }

    /// Encodes one 20 ms frame of 48 kHz mono PCM.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<&[u8], EncodeError> {
        debug_assert_eq!(pcm.len(), AUDIO_FRAME as usize);
        let n = self
            .inner
            .encode(pcm, &mut self.out)
            .map_err(|e| EncodeError::Audio(e.to_string()))?;
        Ok(&self.out[..n])
    }
}

/// AAC-LC of the session's sound, for outputs whose platforms want AAC
/// (RTMP ingest): 48 kHz mono, constant bitrate, raw frames of 1024
/// samples, by the Fraunhofer FDK AAC encoder (`fdk-aac`). Run only while
/// such an output is active.
pub struct AacEncoder {
    inner: fdk_aac::enc::Encoder,
    out: Vec<u8>,
    /// The encoder's delay (samples): frame `k` plays from sample
    /// `k * 1024 - delay` of what was fed.
    delay: u64,
    /// Frames produced so far.
    frames: u64,
}

/// Samples of one AAC frame.
pub const AAC_FRAME: u64 = 1024;

impl AacEncoder {
    /// AudioSpecificConfig (ISO/IEC 14496-3): AAC-LC, 48 kHz, one channel.
    pub const AUDIO_SPECIFIC_CONFIG: [u8; 2] = [0x11, 0x88];

    pub fn new(bitrate_kbps: u32) -> Result<Self, EncodeError> {
        use fdk_aac::enc::{
            AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport,
        };
        let aac = |e: fdk_aac::enc::EncoderError| EncodeError::Audio(format!("AAC: {e:?}"));
        let inner = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(bitrate_kbps * 1000),
            sample_rate: AUDIO_RATE,
            transport: Transport::Raw,
            channels: ChannelMode::Mono,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(aac)?;
        let delay = u64::from(inner.info().map_err(aac)?.nDelay);
        Ok(Self {
            inner,
            out: vec![0; 8192],
            delay,
            frames: 0,
        })
    }

    /// Takes 48 kHz mono samples; appends each finished frame with the
    /// position (in samples of what was fed, from 0) where it starts to
    /// play; positions only grow.
    pub fn encode(
        &mut self,
        mut pcm: &[i16],
        frames: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), EncodeError> {
        while !pcm.is_empty() {
            let info = self
                .inner
                .encode(pcm, &mut self.out)
                .map_err(|e| EncodeError::Audio(format!("AAC: {e:?}")))?;
            if info.output_size > 0 {
                // The encoder's first frames start before what was fed
                // (its delay, priming): they are left out, so that no two
                // frames share a time.
                let start = self.frames * AAC_FRAME;
                self.frames += 1;
                if let Some(at) = start.checked_sub(self.delay) {
                    frames.push((at, self.out[..info.output_size].to_vec()));
                }
            }
            if info.input_consumed == 0 && info.output_size == 0 {
                break;
            }
            pcm = &pcm[info.input_consumed.min(pcm.len())..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::portrait;
    use crate::pipeline::frame::I420;

    /// AAC frames come one per 1024 samples, their times only growing
    /// (the encoder's priming frames, which start before what was fed, are
    /// left out), whatever the size of what is fed at once.
    #[test]
    fn aac_frames_have_growing_times() {
        let mut aac = AacEncoder::new(64).unwrap();
        let mut frames = vec![];
        // 2 s of a tone, in uneven pieces (a late media thread catches up).
        let pcm: Vec<i16> = (0..96_000)
            .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
            .collect();
        for piece in pcm.chunks(3000) {
            aac.encode(piece, &mut frames).unwrap();
        }
        assert!(frames.len() > 80, "{}", frames.len());
        let times: Vec<u64> = frames.iter().map(|f| f.0).collect();
        assert!(
            times.windows(2).all(|w| w[1] == w[0] + AAC_FRAME),
            "{:?}",
            &times[..times.len().min(6)]
        );
        assert!(times[0] < AAC_FRAME, "{}", times[0]);
    }

    #[test]
    fn h264_round_trip_matches_the_portrait() {
        let img = portrait::decode(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/astronaut.png"
            ))
            .unwrap(),
        )
        .unwrap();
        let rgb = portrait::letterbox(&img, 320, 240);
        let yuv = I420::from_rgb(&rgb);
        let mut enc = VideoEncoder::new(320, 240, 25, 800).unwrap();
        let mut dec = openh264::decoder::Decoder::new().unwrap();
        let mut decoded = vec![0u8; 320 * 240 * 3];
        for i in 0..10 {
            let f = enc.encode(&yuv, i == 5).unwrap();
            assert_eq!(f.keyframe, i == 0 || i == 5, "frame {i}");
            if let Some(out) = dec.decode(&f.data).unwrap() {
                out.write_rgb8(&mut decoded);
            }
        }
        let mean_abs: f64 = decoded
            .iter()
            .zip(rgb.as_raw())
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / decoded.len() as f64;
        assert!(mean_abs < 8.0, "mean abs error {mean_abs}");
    }

    #[test]
    fn opus_silence_is_real_frames() {
        let mut enc = AudioEncoder::new(48).unwrap();
        let pkt = enc.encode(&[0i16; 960]).unwrap().to_vec();
        assert!(!pkt.is_empty());
        let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
        let mut pcm = [0i16; 960];
        assert_eq!(dec.decode(&pkt, &mut pcm, false).unwrap(), 960);
        assert!(pcm.iter().all(|s| s.unsigned_abs() < 16));
    }
}
