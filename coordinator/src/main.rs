use clap::Parser;
use convoy_coordinator::cli::{CoordinatorArgs, run, shutdown_on_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = CoordinatorArgs::parse();
    run(args, shutdown_on_signal()).await?;
    Ok(())
}
