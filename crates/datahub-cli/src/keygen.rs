//! `datahub keygen DIR`: writes CURVE key pairs for a `tcp://` broker and its clients.
//! (Being written: see issue 15 item 5.)

use std::path::PathBuf;

use clap::Args;

use crate::fail::{Fail, Result};

/// `datahub keygen` arguments.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write the key pair into.
    pub dir: PathBuf,
}

/// Writes a key pair.
pub fn run(_args: &KeygenArgs) -> Result<String> {
    Err(Fail::usage("keygen is not built yet"))
}
