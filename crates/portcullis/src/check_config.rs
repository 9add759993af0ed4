//! `portcullis check-config FILE`: the same loading as `serve`, without serving.

use std::process::ExitCode;

use portcullis_config::{Config, ProcessEnv, ServerAuth};

use crate::cli::CheckConfigArgs;

pub(crate) fn run(args: &CheckConfigArgs) -> ExitCode {
    match Config::load(&args.file, &ProcessEnv) {
        Ok(config) => {
            println!("{}: ok", args.file.display());
            for s in &config.servers {
                let mode = match &s.auth {
                    ServerAuth::None => "UNAUTHENTICATED".to_owned(),
                    ServerAuth::Verify(v) => match v.preset {
                        Some(idp) => format!("verify, issuer {}, {} preset", v.issuer, idp.name()),
                        None => format!("verify, issuer {}", v.issuer),
                    },
                    ServerAuth::Gateway => format!(
                        "gateway, issuer {}",
                        config.gateway.as_ref().map(|g| g.issuer.to_string()).unwrap_or_default()
                    ),
                };
                println!("  {} -> {} ({mode}); resource {}", s.path, s.upstream, s.resource);
                if let ServerAuth::Verify(v) = &s.auth
                    && let Some(idp) = v.preset
                {
                    println!("    {}: {}", idp.facts().title, idp.facts().mode);
                }
            }
            if let Some(u) = config.gateway.as_ref().and_then(|g| g.upstream.as_ref()) {
                match u.preset {
                    Some(idp) => println!("  users sign in at {} ({} preset)", idp.facts().title, idp.name()),
                    None => println!("  users sign in at the upstream IdP"),
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!(
                "{}: {} problem{}",
                args.file.display(),
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            ExitCode::FAILURE
        }
    }
}
