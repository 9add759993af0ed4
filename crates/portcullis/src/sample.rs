//! `portcullis sample-upstream`: the bundled sample MCP server on its own.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::SampleArgs;

pub(crate) async fn run(args: SampleArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("sample MCP server listening on http://{addr}{}", args.path);
    portcullis_sample::serve(listener, &args.path, crate::serve::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
