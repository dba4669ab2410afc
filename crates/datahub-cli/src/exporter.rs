//! `datahub exporter`: serves `/metrics` for every block it can see.
//! (Being written: see issue 15 item 7.)

use clap::Args;

use crate::fail::{Fail, Result};

/// `datahub exporter` arguments.
#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Address to serve /metrics on.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: String,
}

/// Serves until SIGINT or SIGTERM.
pub fn run(_args: &ExporterArgs) -> Result {
    Err(Fail::usage("exporter is not built yet"))
}
