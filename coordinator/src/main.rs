use clap::Parser;
use convoy_coordinator::cli::{CoordinatorArgs, run, shutdown_on_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = CoordinatorArgs::parse();
    // On a worker thread, not the main one `block_on` polls: the server's
    // accept loop is woken once per connection, and from the main thread
    // each wake-up is a hand-off between threads (8,000 context switches
    // while 10,000 agents reconnect).
    tokio::spawn(run(args, shutdown_on_signal())).await??;
    Ok(())
}
