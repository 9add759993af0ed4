//! `portcullis sample-upstream`: the bundled sample MCP server on its own.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::SampleArgs;

pub(crate) async fn run(args: SampleArgs) -> anyhow::Result<ExitCode> {
    if let Some(socket) = &args.socket {
        // A socket file left by an earlier run would make bind fail; one that still answers is in use.
        if std::os::unix::net::UnixStream::connect(socket).is_err() {
            let _ = std::fs::remove_file(socket);
        }
        let listener = tokio::net::UnixListener::bind(socket)
            .with_context(|| format!("cannot listen on the socket {}", socket.display()))?;
        println!("sample MCP server listening on unix:{}:{}", socket.display(), args.path);
        portcullis_sample::serve_unix(listener, &args.path, crate::serve::shutdown_signal()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("sample MCP server listening on http://{addr}{}", args.path);
    portcullis_sample::serve(listener, &args.path, crate::serve::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
