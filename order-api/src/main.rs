use std::process::ExitCode;

use clap::Parser;
use order_api::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match order_core::startup::settings_and_telemetry(&cli.config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match order_api::run(cli.command.unwrap_or(Command::Serve), settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "order-api failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
