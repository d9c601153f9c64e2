//! Fragmented MP4 (ISO/IEC 14496-12) of a session's encoded stream: H.264
//! as `avc1` (ISO/IEC 14496-15) and Opus as `Opus` ("Encapsulation of Opus
//! in ISO Base Media File Format"). An init segment (`ftyp` + `moov`) comes
//! first, then self-contained fragments (`moof` + `mdat`), so a file cut
//! after any fragment is a playable file.

/// Timescale of the video track (ticks per second).
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Timescale of the audio track: Opus in MP4 is always 48 kHz.
pub const AUDIO_TIMESCALE: u32 = 48_000;

const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;

/// What the init segment says about the two tracks.
#[derive(Debug, Clone)]
pub struct Tracks {
    pub width: u32,
    pub height: u32,
    /// The stream's sequence and picture parameter sets (NAL units without
    /// start codes).
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    /// Opus channels and the encoder's look-ahead (samples at 48 kHz).
    pub channels: u8,
    pub pre_skip: u16,
}

/// One sample of a fragment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Length-prefixed NAL units (video) or one Opus packet (audio).
    pub data: Vec<u8>,
    /// In the track's timescale.
    pub duration: u32,
    pub keyframe: bool,
}

/// A track's run of samples in one fragment.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Decode time of the first sample, in the track's timescale.
    pub start: u64,
    pub samples: Vec<Sample>,
}

/// `size`, `kind`, then what `body` writes.
fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - at).expect("box under 4 GiB");
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: version and flags before the body.
fn full(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |o| {
        o.extend_from_slice(&((u32::from(version) << 24) | flags).to_be_bytes());
        body(o);
    });
}

fn u16s(o: &mut Vec<u8>, vs: &[u16]) {
    for v in vs {
        o.extend_from_slice(&v.to_be_bytes());
    }
}

fn u32s(o: &mut Vec<u8>, vs: &[u32]) {
    for v in vs {
        o.extend_from_slice(&v.to_be_bytes());
    }
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// `ftyp` and `moov` for the two tracks.
pub fn init_segment(t: &Tracks) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    boxed(&mut out, b"ftyp", |o| {
        o.extend_from_slice(b"iso6");
        u32s(o, &[0]);
        for brand in [b"iso6", b"isom", b"iso2", b"avc1", b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
    boxed(&mut out, b"moov", |o| {
        full(o, b"mvhd", 0, 0, |o| {
            u32s(o, &[0, 0, 1000, 0, 0x0001_0000]);
            u16s(o, &[0x0100, 0]);
            u32s(o, &[0, 0]);
            u32s(o, &MATRIX);
            u32s(o, &[0; 6]);
            u32s(o, &[AUDIO_TRACK + 1]);
        });
        trak(o, VIDEO_TRACK, t);
        trak(o, AUDIO_TRACK, t);
        boxed(o, b"mvex", |o| {
            for track in [VIDEO_TRACK, AUDIO_TRACK] {
                full(o, b"trex", 0, 0, |o| u32s(o, &[track, 1, 0, 0, 0]));
            }
        });
    });
    out
}

fn trak(o: &mut Vec<u8>, track: u32, t: &Tracks) {
    let video = track == VIDEO_TRACK;
    boxed(o, b"trak", |o| {
        // Flags: enabled, in movie.
        full(o, b"tkhd", 0, 3, |o| {
            u32s(o, &[0, 0, track, 0, 0, 0, 0]);
            u16s(o, &[0, 0, if video { 0 } else { 0x0100 }, 0]);
            u32s(o, &MATRIX);
            let (w, h) = if video { (t.width, t.height) } else { (0, 0) };
            u32s(o, &[w << 16, h << 16]);
        });
        boxed(o, b"mdia", |o| {
            let timescale = if video {
                VIDEO_TIMESCALE
            } else {
                AUDIO_TIMESCALE
            };
            full(o, b"mdhd", 0, 0, |o| {
                u32s(o, &[0, 0, timescale, 0]);
                // Language `und`, packed ISO 639-2/T.
                u16s(o, &[0x55C4, 0]);
            });
            full(o, b"hdlr", 0, 0, |o| {
                u32s(o, &[0]);
                o.extend_from_slice(if video { b"vide" } else { b"soun" });
                u32s(o, &[0, 0, 0]);
                o.extend_from_slice(if video {
                    b"Huashen video\0"
                } else {
                    b"Huashen audio\0"
                });
            });
            boxed(o, b"minf", |o| {
                if video {
                    full(o, b"vmhd", 0, 1, |o| u16s(o, &[0, 0, 0, 0]));
                } else {
                    full(o, b"smhd", 0, 0, |o| u16s(o, &[0, 0]));
                }
                boxed(o, b"dinf", |o| {
                    full(o, b"dref", 0, 0, |o| {
                        u32s(o, &[1]);
                        // Flags 1: the media is in this file.
                        full(o, b"url ", 0, 1, |_| {});
                    });
                });
                boxed(o, b"stbl", |o| {
                    full(o, b"stsd", 0, 0, |o| {
                        u32s(o, &[1]);
                        if video {
                            avc1(o, t);
                        } else {
                            opus(o, t);
                        }
                    });
                    // Samples are all in the fragments.
                    full(o, b"stts", 0, 0, |o| u32s(o, &[0]));
                    full(o, b"stsc", 0, 0, |o| u32s(o, &[0]));
                    full(o, b"stsz", 0, 0, |o| u32s(o, &[0, 0]));
                    full(o, b"stco", 0, 0, |o| u32s(o, &[0]));
                });
            });
        });
    });
}

fn avc1(o: &mut Vec<u8>, t: &Tracks) {
    boxed(o, b"avc1", |o| {
        o.extend_from_slice(&[0; 6]);
        u16s(o, &[1, 0, 0]);
        u32s(o, &[0, 0, 0]);
        u16s(o, &[t.width as u16, t.height as u16]);
        u32s(o, &[0x0048_0000, 0x0048_0000, 0]);
        u16s(o, &[1]);
        let mut name = [0u8; 32];
        let label = b"Huashen H.264";
        name[0] = label.len() as u8;
        name[1..=label.len()].copy_from_slice(label);
        o.extend_from_slice(&name);
        u16s(o, &[0x0018, 0xFFFF]);
        boxed(o, b"avcC", |o| o.extend(avc_decoder_config(&t.sps, &t.pps)));
    });
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15): the `avcC` box's body
/// and FLV's AVC sequence header.
pub fn avc_decoder_config(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let profile = |i: usize| sps.get(i).copied().unwrap_or(0);
    let mut o = vec![1, profile(1), profile(2), profile(3), 0xFF, 0xE1];
    u16s(&mut o, &[sps.len() as u16]);
    o.extend_from_slice(sps);
    o.push(1);
    u16s(&mut o, &[pps.len() as u16]);
    o.extend_from_slice(pps);
    o
}

fn opus(o: &mut Vec<u8>, t: &Tracks) {
    boxed(o, b"Opus", |o| {
        o.extend_from_slice(&[0; 6]);
        u16s(o, &[1]);
        u32s(o, &[0, 0]);
        u16s(o, &[u16::from(t.channels), 16, 0, 0]);
        u32s(o, &[AUDIO_TIMESCALE << 16]);
        boxed(o, b"dOps", |o| {
            o.extend_from_slice(&[0, t.channels]);
            u16s(o, &[t.pre_skip]);
            u32s(o, &[AUDIO_TIMESCALE]);
            u16s(o, &[0]);
            o.push(0);
        });
    });
}

/// Sample flags: a sync sample, or one that depends on others.
const SYNC: u32 = 0x0200_0000;
const NOT_SYNC: u32 = 0x0101_0000;

/// One fragment (`moof` + `mdat`) with the video and audio runs.
pub fn fragment(sequence: u32, video: &Run, audio: &Run) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    boxed(&mut out, b"moof", |o| {
        full(o, b"mfhd", 0, 0, |o| u32s(o, &[sequence]));
        for (track, run) in [(VIDEO_TRACK, video), (AUDIO_TRACK, audio)] {
            if run.samples.is_empty() {
                continue;
            }
            boxed(o, b"traf", |o| {
                // Flags: default-base-is-moof.
                full(o, b"tfhd", 0, 0x02_0000, |o| u32s(o, &[track]));
                full(o, b"tfdt", 1, 0, |o| {
                    o.extend_from_slice(&run.start.to_be_bytes())
                });
                // Flags: data offset, and per sample duration, size, flags.
                full(o, b"trun", 0, 0x0701, |o| {
                    u32s(o, &[run.samples.len() as u32]);
                    offsets.push(o.len());
                    u32s(o, &[0]);
                    for s in &run.samples {
                        let flags = if s.keyframe { SYNC } else { NOT_SYNC };
                        u32s(o, &[s.duration, s.data.len() as u32, flags]);
                    }
                });
            });
        }
    });
    // Each run's data follows the last in `mdat`; offsets count from the
    // start of `moof`.
    let mut at = out.len() as u32 + 8;
    let runs = [video, audio].into_iter().filter(|r| !r.samples.is_empty());
    for (offset, run) in offsets.into_iter().zip(runs.clone()) {
        out[offset..offset + 4].copy_from_slice(&at.to_be_bytes());
        at += run.samples.iter().map(|s| s.data.len() as u32).sum::<u32>();
    }
    boxed(&mut out, b"mdat", |o| {
        for run in runs {
            for s in &run.samples {
                o.extend_from_slice(&s.data);
            }
        }
    });
    out
}

/// The NAL units of an Annex B access unit (without start codes).
pub fn nal_units(au: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i..].starts_with(&[0, 0, 1]) {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (k, &(_, body)) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(au.len(), |&(s, _)| s);
        // A four-byte start code's leading zero belongs to no unit.
        while end > body && au[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        if end > body {
            units.push(&au[body..end]);
        }
    }
    units
}

/// An access unit as an `avc1` sample: each NAL unit after its 4-byte
/// length; parameter sets and delimiters left out (they are in `avcC`).
pub fn avcc_sample(au: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(au.len());
    for nal in nal_units(au) {
        if matches!(nal[0] & 0x1F, 7..=9) {
            continue;
        }
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// The SPS and PPS of a keyframe's access unit.
pub fn parameter_sets(au: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let units = nal_units(au);
    let find = |t: u8| units.iter().find(|n| n[0] & 0x1F == t).map(|n| n.to_vec());
    Some((find(7)?, find(8)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nal_units_split_on_both_start_codes() {
        let au = [
            &[0, 0, 0, 1, 0x67, 1, 2][..],
            &[0, 0, 1, 0x68, 3],
            &[0, 0, 0, 1, 0x65, 0, 0, 4],
        ]
        .concat();
        let units = nal_units(&au);
        assert_eq!(units, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 0, 0, 4]]);
        assert_eq!(parameter_sets(&au), Some((vec![0x67, 1, 2], vec![0x68, 3])));
        assert_eq!(avcc_sample(&au), vec![0, 0, 0, 4, 0x65, 0, 0, 4]);
    }

    #[test]
    fn fragment_offsets_point_at_each_runs_data() {
        let video = Run {
            start: 0,
            samples: vec![Sample {
                data: vec![1; 10],
                duration: 3600,
                keyframe: true,
            }],
        };
        let audio = Run {
            start: 0,
            samples: vec![
                Sample {
                    data: vec![2; 5],
                    duration: 960,
                    keyframe: true,
                };
                2
            ],
        };
        let f = fragment(1, &video, &audio);
        let moof = u32::from_be_bytes(f[0..4].try_into().unwrap()) as usize;
        assert_eq!(&f[moof + 4..moof + 8], b"mdat");
        let trun = |nth: usize| {
            let at = f
                .windows(4)
                .enumerate()
                .filter(|(_, w)| w == b"trun")
                .nth(nth)
                .unwrap()
                .0;
            u32::from_be_bytes(f[at + 12..at + 16].try_into().unwrap()) as usize
        };
        assert_eq!(f[trun(0)], 1);
        assert_eq!(f[trun(1)], 2);
        assert_eq!(trun(1), trun(0) + 10);
        assert_eq!(f.len(), moof + 8 + 20);
    }
}
