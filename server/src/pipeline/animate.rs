//! A session's frame source: the avatar's rig animated from the viseme
//! timeline of whatever plays (speech or the host's voice), or idling
//! (blinks, breathing, head motion).

use std::sync::Arc;

use huashen_inference::face::animate::{Animator, VisemeSpan};
use huashen_inference::face::render::Renderer;
use huashen_inference::face::rig::Rig;

use super::clock::AUDIO_RATE;
use super::frame::I420;
use super::media::FrameSource;
use super::playback::Playback;

/// A session's frame source: the avatar animated from the viseme timeline
/// of whatever is playing, or idling.
pub struct AnimatedFace {
    renderer: Renderer,
    animator: Animator,
    playback: Arc<Playback>,
    frame: I420,
    spans: Vec<VisemeSpan>,
    rendered: bool,
}

/// How far around a frame's time the viseme timeline is read (covers the
/// coarticulation window and the 50 ms anticipation).
const VISEME_WINDOW: f64 = 0.3;

impl AnimatedFace {
    pub fn new(rig: Rig, playback: Arc<Playback>, seed: u64) -> Self {
        let frame = I420::black(rig.width as usize, rig.height as usize);
        Self {
            renderer: Renderer::new(rig),
            animator: Animator::new(seed),
            playback,
            frame,
            spans: Vec::new(),
            rendered: false,
        }
    }
}

impl FrameSource for AnimatedFace {
    fn frame(&mut self, frame: u64, sample: u64) -> &I420 {
        let rate = f64::from(AUDIO_RATE);
        let t = sample as f64 / rate;
        let window = (VISEME_WINDOW * rate) as u64;
        self.spans.clear();
        self.playback.visemes(
            sample.saturating_sub(window),
            sample + window,
            &mut |viseme, start, end| {
                self.spans.push(VisemeSpan {
                    viseme,
                    start: start as f64 / rate,
                    end: end as f64 / rate,
                })
            },
        );
        // Idle drift (slow head motion, breathing) refreshes at half the
        // frame rate: the repeated frame costs the encoder almost nothing.
        // Blinks and speech always render every frame.
        if self.rendered && frame % 2 == 1 && self.spans.is_empty() && self.animator.is_drifting(t)
        {
            return &self.frame;
        }
        self.rendered = true;
        let params = self.animator.params(t, &self.spans);
        let (y, u, v) = self.frame.planes_mut();
        self.renderer.render(&params, y, u, v);
        &self.frame
    }
}
