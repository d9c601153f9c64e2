//! `huashen-loadtest`: see the crate docs and README.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "huashen-loadtest",
    about = "Load a running Huashen server (loopback only)"
)]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:8700")]
    addr: String,
    /// API key (the dev key printed by `huashen serve` works).
    #[arg(long, env = "HUASHEN_API_KEY")]
    api_key: String,
    /// Sessions open at once.
    #[arg(long, short = 'n', default_value_t = 8)]
    sessions: usize,
    /// How long to drive them, e.g. 10s or 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Interrupt calls per second per session.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Text each session speaks, `--rate` times a second (each utterance is
    /// interrupted after it has played a second). Without it the sessions
    /// only receive Interrupt calls.
    #[arg(long)]
    speak: Option<String>,
    /// Stream the `--speak` text word by word at this rate (words per
    /// second, like an LLM's tokens), one Speak call per pass, back to back
    /// and never interrupted: continuous speech load.
    #[arg(long)]
    words_per_second: Option<f64>,
    /// WebRTC viewers per session (WHEP).
    #[arg(long, short = 'm', default_value_t = 0)]
    viewers: usize,
    /// Decode what viewers receive (H.264 + Opus); costs CPU in this process.
    #[arg(long)]
    decode: bool,
    /// Record every session (OutputService.AddOutput with a recording).
    #[arg(long)]
    record: bool,
    /// Push every session to this WHIP endpoint (OutputService.AddOutput).
    #[arg(long)]
    whip: Option<String>,
    /// Push every session to this RTMP server URL (`rtmp://host/app`).
    #[arg(long)]
    rtmp: Option<String>,
    /// Stream key prefix for `--rtmp` (each session adds its number).
    #[arg(long, env = "HUASHEN_LOADTEST_RTMP_KEY", default_value = "loadtest-")]
    rtmp_key: String,
    /// Bearer token for `--whip`.
    #[arg(long, env = "HUASHEN_LOADTEST_WHIP_TOKEN", default_value = "")]
    whip_token: String,
    /// Portrait to enroll.
    #[arg(long, default_value = "server/tests/data/astronaut.png")]
    image: PathBuf,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        a.sessions >= 1 && a.sessions <= 10_000,
        "--sessions must be 1..10000"
    );
    anyhow::ensure!(
        a.duration <= Duration::from_secs(3600),
        "--duration must be at most 1h"
    );
    let image =
        std::fs::read(&a.image).with_context(|| format!("cannot read {}", a.image.display()))?;
    let report = huashen_loadtest::run(huashen_loadtest::Options {
        addr: a.addr,
        api_key: a.api_key,
        sessions: a.sessions,
        duration: a.duration,
        rate: a.rate,
        speak: a.speak,
        image,
        viewers: a.viewers,
        decode: a.decode,
        words_per_second: a.words_per_second,
        record: a.record,
        whip: a.whip,
        whip_token: a.whip_token,
        rtmp: a.rtmp,
        rtmp_key: a.rtmp_key,
    })
    .await?;
    print!("{}", report.table());
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)?;
    }
    if !report.errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
