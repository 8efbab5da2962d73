use std::process::ExitCode;

use clap::Parser;
use order_compensator::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    order_runtime::startup::run_main("order-compensator", &cli.config, |settings, shutdown| {
        order_compensator::run(command, settings, shutdown)
    })
    .await
}
