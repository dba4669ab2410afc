//! Where snapshots come from: a file, standard input, or a live endpoint.
//!
//! A SOURCE on the command line is `-` (stdin), `http://host:port[/path]` (a live endpoint;
//! `/stats.json` is fetched when no path is given) or a file path. Standard input can be read
//! only once, so commands that sample repeatedly (`watch`, `top --window`, `serve`) re-read files
//! and URLs but reuse the one stdin document.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use crate::snapshot::{SCHEMA_JSON, Snapshot};
use crate::{Error, Result};

/// How long an HTTP fetch may take, connect to last byte.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed SOURCE argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `-`
    Stdin,
    /// `http://...`: the full URL of the stats JSON.
    Url(String),
    /// Anything else.
    File(PathBuf),
}

impl std::str::FromStr for Source {
    type Err = Error;
    fn from_str(s: &str) -> Result<Source> {
        if s == "-" {
            return Ok(Source::Stdin);
        }
        if let Some(rest) = s.strip_prefix("http://") {
            let url = if rest.contains('/') && !rest.ends_with('/') {
                s.to_owned()
            } else {
                format!("http://{}/stats.json", rest.trim_end_matches('/'))
            };
            return Ok(Source::Url(url));
        }
        if s.starts_with("https://") {
            return Err(Error::Usage(format!(
                "{s}: https is not supported; live endpoints serve plain http on a local address"
            )));
        }
        Ok(Source::File(PathBuf::from(s)))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Stdin => f.write_str("-"),
            Source::Url(u) => f.write_str(u),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Source {
    /// Whether reading again can give a newer snapshot (files and URLs can, stdin can't).
    pub fn can_resample(&self) -> bool {
        !matches!(self, Source::Stdin)
    }

    /// Reads the raw document.
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files or stdin, [`Error::Http`] for an unreachable URL,
    /// a non-200 status or a timeout ([`HTTP_TIMEOUT`]).
    pub fn read_text(&self) -> Result<String> {
        match self {
            Source::Stdin => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|source| Error::Io {
                        path: "-".into(),
                        source,
                    })?;
                Ok(text)
            }
            Source::File(path) => std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            }),
            Source::Url(url) => fetch(url),
        }
    }

    /// Reads and parses one snapshot.
    ///
    /// # Errors
    /// As [`Source::read_text`] and [`Snapshot::from_json`].
    pub fn snapshot(&self) -> Result<Snapshot> {
        Snapshot::from_json(&self.read_text()?, &self.to_string())
    }
}

fn fetch(url: &str) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let http = |message: String| Error::Http {
        url: url.to_owned(),
        message,
    };
    let mut response = agent.get(url).call().map_err(|e| http(e.to_string()))?;
    response
        .body_mut()
        .read_to_string()
        .map_err(|e| http(format!("reading the body: {e}")))
}

/// Checks `text` against `schemas/stats_v1.schema.json`, then parses it.
///
/// # Errors
/// [`Error::Json`] for malformed JSON, [`Error::Schema`] with the JSON pointer of the first
/// failing value, and the version errors of [`Snapshot::from_json`].
pub fn validate(text: &str, origin: &str) -> Result<Snapshot> {
    let instance: serde_json::Value = serde_json::from_str(text).map_err(|source| Error::Json {
        origin: origin.to_owned(),
        source,
    })?;
    if instance
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        != Some(u64::from(crate::snapshot::SCHEMA_VERSION))
    {
        // Missing or unknown version: the parser's error says which.
        return Snapshot::from_json(text, origin);
    }
    let schema: serde_json::Value =
        serde_json::from_str(SCHEMA_JSON).expect("the embedded schema is valid JSON");
    let validator = jsonschema::validator_for(&schema).expect("the embedded schema compiles");
    if let Some(err) = validator.iter_errors(&instance).next() {
        return Err(Error::Schema {
            origin: origin.to_owned(),
            instance_path: err.instance_path().to_string(),
            message: err.to_string(),
        });
    }
    Snapshot::from_json(text, origin)
}
