//! Typed configuration: a TOML file (optional) overlaid with environment
//! variables, with defaults that let `huashen serve` run with no file at all.
//!
//! Environment overrides use the prefix `HUASHEN_` and `__` between levels,
//! e.g. `HUASHEN_SERVER__LISTEN=0.0.0.0:8700` or
//! `HUASHEN_LIMITS__MAX_SESSIONS=200`. Values are parsed as TOML scalars
//! (numbers, booleans, quoted strings) and fall back to plain strings.
//!
//! Configuration is plain data at the bottom of the server: it imports no
//! other layer. Each section (in `media` and `service`) checks its own
//! values; the subsystems that use them read them.

mod media;
mod policy;
mod service;

pub use media::*;
pub use policy::*;
pub use service::*;

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "HUASHEN_";

/// Environment variables with the prefix that are not config keys.
const ENV_NOT_CONFIG: &[&str] = &["HUASHEN_CONFIG", "HUASHEN_LOG", "HUASHEN_API_KEY"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub rate_limits: RateConfig,
    pub sessions: SessionsConfig,
    pub auth: AuthConfig,
    pub webrtc: WebrtcConfig,
    pub label: LabelConfig,
    pub retention: RetentionConfig,
    pub moderation: ModerationConfig,
    pub speech: SpeechConfig,
    pub voice: VoiceConfig,
    pub face: FaceConfig,
    pub models: ModelsConfig,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("environment variable {var}: {msg}")]
    Env { var: String, msg: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Why these settings are unfit for production (`serve --production`
    /// refuses to start with any): the encryption key beside the data, the
    /// dev tenant on.
    pub fn production_problems(&self) -> Vec<String> {
        let mut problems = self.storage.production_problems();
        if self.auth.bootstrap_dev_tenant {
            problems.push(
                "auth.bootstrap_dev_tenant is on: set it to false and create tenants with \
                 `huashen tenant create NAME`"
                    .to_owned(),
            );
        }
        problems
    }

    /// Loads `path` (if given) and applies environment overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|source| ConfigError::Parse {
                        path: p.to_owned(),
                        source,
                    })?
            }
            None => toml::Table::new(),
        };
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_CONFIG.contains(&k.as_str()))
            .collect();
        vars.sort();
        for (var, value) in vars {
            apply_env(&mut table, &var, &value)?;
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks each section, and relations between values that serde
    /// cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks = [
            self.models.validate(),
            self.voice.validate(),
            self.speech.validate(),
            self.limits.validate(),
            self.rate_limits.validate(),
            self.sessions.validate(),
            self.webrtc.validate(),
            self.storage.validate(),
            self.server.validate(),
            self.label.validate(),
            self.retention.validate(),
            self.moderation.validate(),
        ];
        checks
            .into_iter()
            .collect::<Result<(), String>>()
            .map_err(ConfigError::Invalid)
    }
}

fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            msg: "expected HUASHEN_<SECTION>__<KEY>".into(),
        });
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path.split_last().expect("path has at least one element");
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.to_owned(),
            msg: format!("`{p}` is not a section"),
        })?;
    }
    cur.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.server.listen.port(), 8700);
        assert!(c.auth.bootstrap_dev_tenant);
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.toml");
        std::fs::write(
            &p,
            "[limits]\nmax_sessions = 5\n[sessions]\nidle_timeout = \"30s\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            env(&[
                ("HUASHEN_LIMITS__MAX_SESSIONS", "7"),
                ("HUASHEN_SERVER__LISTEN", "0.0.0.0:9000"),
                ("HUASHEN_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits.max_sessions, 7);
        assert_eq!(c.sessions.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.server.listen.port(), 9000);
    }

    #[test]
    fn example_file_matches_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../huashen.example.toml");
        let c = Config::load(Some(&p), env(&[])).unwrap();
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = Config::load(None, env(&[("HUASHEN_LIMITS__MAX_SESIONS", "7")])).unwrap_err();
        assert!(e.to_string().contains("max_sesions"), "{e}");
        let e = Config::load(None, env(&[("HUASHEN_LIMITS__MAX_SESSIONS", "0")])).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = Config::load(None, env(&[("HUASHEN_SERVER__LISTEN", "nope")])).unwrap_err();
        assert!(e.to_string().contains("invalid"), "{e}");
    }

    /// The moderation webhook receives the text to be spoken: HTTPS (plain
    /// HTTP only on loopback) and a signing secret.
    #[test]
    fn the_moderation_webhook_must_be_https_and_signed() {
        let hook = |url: &str, secret: &str| {
            Config::load(
                None,
                env(&[
                    ("HUASHEN_MODERATION__WEBHOOK_URL", url),
                    ("HUASHEN_MODERATION__WEBHOOK_SECRET", secret),
                ]),
            )
        };
        let secret = "0123456789abcdef";
        for bad in ["http://moderation.example/check", "ftp://x/y", "nope"] {
            let e = hook(bad, secret).unwrap_err().to_string();
            assert!(e.contains("https://"), "{bad}: {e}");
        }
        for good in [
            "https://moderation.example/check",
            "http://127.0.0.1:9000/check",
            "http://localhost/check",
            "http://[::1]:9/check",
        ] {
            assert!(hook(good, secret).is_ok(), "{good}");
        }
        let e = hook("https://moderation.example/check", "short")
            .unwrap_err()
            .to_string();
        assert!(e.contains("webhook_secret"), "{e}");
        let c = hook("https://moderation.example/check", secret).unwrap();
        assert!(!format!("{c:?}").contains(secret));
    }

    #[test]
    fn storage_and_advertise_settings_are_checked() {
        for bad in [
            "10.0.0.5:8700",
            "http://h:1/some/path",
            "ftp://h",
            "http://",
        ] {
            let e = Config::load(None, env(&[("HUASHEN_SERVER__ADVERTISE_URL", bad)])).unwrap_err();
            assert!(e.to_string().contains("advertise_url"), "{bad}: {e}");
        }
        for good in ["http://10.0.0.5:8700", "https://node-b.example.com/"] {
            Config::load(None, env(&[("HUASHEN_SERVER__ADVERTISE_URL", good)])).unwrap();
        }
        let e =
            Config::load(None, env(&[("HUASHEN_STORAGE__DATABASE_URL", "nonsense")])).unwrap_err();
        assert!(e.to_string().contains("storage.database_url"), "{e}");
        let url = "postgres://huashen:hunter2@db:5432/huashen?sslmode=require";
        let c = Config::load(None, env(&[("HUASHEN_STORAGE__DATABASE_URL", url)])).unwrap();
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "the URL is never printed"
        );
        let e = Config::load(
            None,
            env(&[
                ("HUASHEN_STORAGE__DATABASE_URL", url),
                ("HUASHEN_STORAGE__DATABASE_POOL", "0"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("database_pool"), "{e}");
    }
}
