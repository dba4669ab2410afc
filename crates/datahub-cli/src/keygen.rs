//! `datahub keygen DIR [--name NAME]`: writes a CURVE key pair, `DIR/NAME.key` (public,
//! 0644) and `DIR/NAME.key_secret` (secret, 0600), in the certificate format of czmq and
//! pyzmq (`zmq.auth.load_certificate` reads them). An existing file is never overwritten
//! (exit 2). DIR is created (mode 0700) when missing; its parent must exist.
//!
//! For a `tcp://` broker: `datahub keygen KEYS --name server` on the broker's host, then
//! for each client `datahub keygen DIR` and a copy of its `client.key` into `KEYS/allowed/`;
//! the client is given its own `.key_secret` (`--key`) and the broker's `server.key`
//! (`--server-key`).

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use clap::Args;
use datahub::broker::KeyPair;
use datahub::broker::keys::{self, KeyFileError};
use serde::Serialize;

use crate::fail::{Fail, Result};

/// `datahub keygen` arguments.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write the key pair into (created 0700 if missing).
    pub dir: PathBuf,
    /// File name stem: NAME.key and NAME.key_secret (`server` for a broker's pair).
    #[arg(long, default_value = "client")]
    pub name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `keygen` wrote.
#[derive(Debug, Serialize)]
pub struct Written {
    /// The public key, 40 Z85 characters.
    pub public_key: String,
    /// `DIR/NAME.key`.
    pub public_file: PathBuf,
    /// `DIR/NAME.key_secret`.
    pub secret_file: PathBuf,
}

/// Writes a key pair; returns what to print.
pub fn run(args: &KeygenArgs) -> Result<String> {
    if !keys::valid_key_name(&args.name) {
        return Err(Fail::usage(format!(
            "--name {:?}: expected 1-64 characters of A-Za-z0-9._- not starting with '.'",
            args.name
        )));
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&args.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Fail::usage(format!(
                "cannot create {}: {e}",
                args.dir.display()
            )));
        }
    }
    let pair = KeyPair::generate()
        .map_err(|e| Fail::usage(format!("libzmq cannot make CURVE keys: {e}")))?;
    let files = keys::write_key_pair(&args.dir, &args.name, &pair).map_err(|e| match e {
        KeyFileError::Exists { .. } => Fail::usage(format!("{e} (choose another --name or DIR)")),
        e => Fail::usage(e.to_string()),
    })?;
    let w = Written {
        public_key: pair.public().z85(),
        public_file: files.public,
        secret_file: files.secret,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&w).expect("reports serialize");
        return Ok(format!("{text}\n"));
    }
    Ok(format!(
        "public key: {}\npublic file: {} (share it)\nsecret file: {} (mode 0600; keep it private)\n",
        w.public_key,
        w.public_file.display(),
        w.secret_file.display()
    ))
}
