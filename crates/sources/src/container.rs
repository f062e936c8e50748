//! ContainerSource outside Kubernetes: the template's first container's
//! `command` and `args` run as a local process, with its `env` and
//! `workingDir`, plus Knative's runtime contract (`K_SINK`,
//! `K_CE_OVERRIDES`). Its output is logged line by line (at most 4 KiB per
//! line). When it exits it is started again after a backoff that doubles
//! from 1 s to 30 s and resets once it has run for a minute. Stopping the
//! source (or the adapter) kills it.

use crate::runner::SourceState;
use channel_core::sources::container::{sink_environment, LocalProgram};
use channel_core::sources::{CloudEventOverrides, SourceContract};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;

const MAX_LINE: usize = 4096;

fn log_lines(
    source: String,
    stream: &'static str,
    reader: impl AsyncRead + Unpin + Send + 'static,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(mut line)) = lines.next_line().await {
            if line.len() > MAX_LINE {
                let mut end = MAX_LINE;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                line.truncate(end);
            }
            tracing::info!(source = %source, stream, "{line}");
        }
    });
}

/// Run the program until `stop`, restarting it when it exits.
pub async fn run(
    source: SourceContract,
    program: LocalProgram,
    state: Arc<SourceState>,
    stop: CancellationToken,
) {
    for skipped in &program.skipped_env {
        tracing::warn!(source = %source.key(), "{skipped}");
    }
    let overrides = (!source.extensions.is_empty()).then(|| CloudEventOverrides {
        extensions: source.extensions.clone(),
    });
    let contract_env = sink_environment(source.sink.as_str(), overrides.as_ref(), None);
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some((program_name, args)) = program.argv.split_first() else {
            state.failed("no command".into());
            return;
        };
        let mut command = tokio::process::Command::new(program_name);
        command
            .args(args)
            .envs(&program.env)
            .envs(&contract_env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &program.working_dir {
            command.current_dir(dir);
        }
        let started = Instant::now();
        match command.spawn() {
            Err(e) => {
                state.failed(format!("cannot start {program_name:?}: {e}"));
                tracing::warn!(source = %source.key(), program = %program_name, error = %e, "cannot start the program; retrying");
            }
            Ok(mut child) => {
                state.running();
                tracing::info!(source = %source.key(), program = %program_name, pid = child.id().unwrap_or(0), "program started");
                if let Some(out) = child.stdout.take() {
                    log_lines(source.key(), "stdout", out);
                }
                if let Some(err) = child.stderr.take() {
                    log_lines(source.key(), "stderr", err);
                }
                tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = child.kill().await;
                        return;
                    }
                    status = child.wait() => {
                        let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        state.exited(format!("{program_name} exited ({status})"));
                        tracing::warn!(source = %source.key(), program = %program_name, %status, "program exited; restarting");
                    }
                }
            }
        }
        state.restarted();
        if started.elapsed() >= Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
