//! SinkBindings outside Kubernetes: the standalone provisioner writes each
//! binding's environment (`K_SINK`, `K_CE_OVERRIDES`) into
//! `<contracts-dir>/bindings.json`, and `provisioner exec --binding
//! [NAMESPACE/]NAME -- PROGRAM ARGS...` runs a program with it, the way
//! Knative's webhook gives it to a bound pod:
//!
//! ```sh
//! provisioner exec --contracts-dir contracts --binding default/my-producer -- ./my-producer --flag
//! ```
//!
//! The program replaces the `exec` process (its exit status is the
//! command's). The environment is read when the program starts: restart it
//! to pick up a changed sink.

use channel_core::sources::container::sink_environment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file in the contracts directory.
pub const BINDINGS_FILE: &str = "bindings.json";

/// One binding's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingEnvironment {
    pub namespace: String,
    pub name: String,
    pub env: BTreeMap<String, String>,
}

/// Every SinkBinding of `manifests` whose sink the plan resolved.
pub fn environments(
    manifests: &channel_core::manifests::Manifests,
    plan: &crate::reconcile::Plan,
) -> Vec<BindingEnvironment> {
    manifests
        .sink_bindings
        .iter()
        .filter_map(|b| {
            let ns = b.metadata.namespace().to_owned();
            let sink = plan.source_sinks.get(&(
                "SinkBinding".to_owned(),
                ns.clone(),
                b.metadata.name.clone(),
            ))?;
            Some(BindingEnvironment {
                namespace: ns,
                name: b.metadata.name.clone(),
                env: sink_environment(
                    sink.as_str(),
                    b.spec.ce_overrides.as_ref(),
                    b.spec.sink.ca_certs.as_deref(),
                ),
            })
        })
        .collect()
}

/// `provisioner exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// The directory the standalone provisioner writes contracts into.
    #[arg(long, env = "KN_PROVISIONER_CONTRACTS_DIR")]
    pub contracts_dir: PathBuf,
    /// The SinkBinding: `NAMESPACE/NAME`, or `NAME` in `default`.
    #[arg(long)]
    pub binding: String,
    /// The program and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

/// The environment of `binding` from `dir`, or why there is none.
pub fn lookup(dir: &Path, binding: &str) -> Result<BTreeMap<String, String>, String> {
    let (ns, name) = binding.split_once('/').unwrap_or(("default", binding));
    let path = dir.join(BINDINGS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "cannot read {} (is `provisioner standalone --contracts-dir {}` running?): {e}",
            path.display(),
            dir.display()
        )
    })?;
    let all: Vec<BindingEnvironment> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a bindings file: {e}", path.display()))?;
    all.into_iter()
        .find(|b| b.namespace == ns && b.name == name)
        .map(|b| b.env)
        .ok_or_else(|| {
            format!(
                "no SinkBinding {ns}/{name} with a resolved sink in {} (see `provisioner status`)",
                path.display()
            )
        })
}

/// Run the command with the binding's environment, replacing this process.
pub fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let env = lookup(&args.contracts_dir, &args.binding).map_err(anyhow::Error::msg)?;
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no program to run"))?;
    let mut command = std::process::Command::new(program);
    command.args(rest).envs(&env);
    use std::os::unix::process::CommandExt as _;
    let error = command.exec();
    anyhow::bail!("cannot run {program:?}: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{plan, Addressing};

    #[test]
    fn a_binding_gets_its_sink_and_overrides_and_a_missing_one_is_named() {
        let manifests = channel_core::manifests::load_str(
            "b.yaml",
            "apiVersion: sources.knative.dev/v1\nkind: SinkBinding\nmetadata: {name: producer, namespace: shop}\nspec:\n  subject: {apiVersion: apps/v1, kind: Deployment, name: producer}\n  sink: {uri: 'http://127.0.0.1:8080/shop/orders'}\n  ceOverrides: {extensions: {team: shop}}\n",
        )
        .expect("manifests");
        let plan = plan(&manifests, &BTreeMap::new(), &Addressing::default());
        let envs = environments(&manifests, &plan);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(BINDINGS_FILE),
            serde_json::to_vec(&envs).expect("json"),
        )
        .expect("write");
        let env = lookup(dir.path(), "shop/producer").expect("found");
        assert_eq!(env["K_SINK"], "http://127.0.0.1:8080/shop/orders");
        assert_eq!(
            env["K_CE_OVERRIDES"],
            "{\"extensions\":{\"team\":\"shop\"}}"
        );
        let e = lookup(dir.path(), "producer").unwrap_err();
        assert!(e.contains("default/producer"), "{e}");
        let e = lookup(Path::new("/nonexistent"), "shop/producer").unwrap_err();
        assert!(e.contains("provisioner standalone"), "{e}");
    }
}
