use anyhow::Context;
use clap::Parser;
use convoy_coordinator::cli::{CoordinatorArgs, CoordinatorCommand, init};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = CoordinatorArgs::parse();
    match args.command {
        CoordinatorCommand::Init { data_dir, server_names, join_token_ttl } => {
            let r = init(&data_dir, &server_names, std::time::Duration::from_secs(join_token_ttl))?;
            if r.existed {
                println!("data directory {} was already initialised; kept its CA", data_dir.display());
            }
            println!("CA certificate: {}", r.ca_file.display());
            println!("operator token: {}", r.operator_token);
            println!("join token (valid {join_token_ttl}s): {}", r.join_token);
        }
        CoordinatorCommand::Serve(serve) => {
            let addr_file = serve.addr_file.clone();
            let listen = serve.listen.clone();
            let config = serve.into_config()?;
            let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("bind {listen}"))?;
            if let Some(f) = addr_file {
                let tmp = f.with_extension("tmp");
                std::fs::write(&tmp, listener.local_addr()?.to_string())?;
                std::fs::rename(&tmp, &f)?;
            }
            let shutdown = CancellationToken::new();
            let s = shutdown.clone();
            tokio::spawn(async move {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
                s.cancel();
            });
            convoy_coordinator::server::run(listener, config, shutdown).await?;
        }
    }
    Ok(())
}
