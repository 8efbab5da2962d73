use std::process::ExitCode;

use clap::Parser;
use order_compensator::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match order_core::startup::settings_and_telemetry(&cli.config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match order_compensator::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "order-compensator failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
