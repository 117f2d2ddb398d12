//! `smm completion SHELL`: a completion script, e.g. `source <(smm completion bash)`.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: &CompletionArgs) -> anyhow::Result<ExitCode> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "smm",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}
