//! How `smm` reaches the Kubernetes API server: one description of the target cluster that the
//! kube-rs client and the helm processes both use, so they always talk to the same cluster.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The cluster to talk to, as the user chose it with `--kubeconfig` / `--context`.
/// With neither, the usual discovery applies: `KUBECONFIG`, `~/.kube/config`, then in-cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterTarget {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot load the cluster configuration{}: {source}", describe_context(.context))]
    LoadConfig {
        context: Option<String>,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Holds kube's message only: its error already spells out both attempts, and keeping it as
    /// a source would print the same chain twice.
    #[error(
        "no cluster configuration found (set KUBECONFIG, pass --kubeconfig, or run inside a cluster): {0}"
    )]
    Infer(String),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

fn describe_context(context: &Option<String>) -> String {
    context
        .as_deref()
        .map(|name| format!(" for context {name:?}"))
        .unwrap_or_default()
}

impl ClusterTarget {
    /// Loads the client configuration for this target.
    pub async fn config(&self) -> Result<Config, ClusterError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| ClusterError::ReadKubeconfig {
                        path: path.clone(),
                        source,
                    })?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|source| ClusterError::LoadConfig {
                        context: self.context.clone(),
                        source,
                    })
            }
            // A named context only exists in a kubeconfig, so in-cluster fallback makes no sense.
            (None, Some(_)) => {
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(|source| ClusterError::LoadConfig {
                        context: self.context.clone(),
                        source,
                    })
            }
            (None, None) => Config::infer()
                .await
                .map_err(|err| ClusterError::Infer(err.to_string())),
        }
    }

    pub async fn client(&self) -> Result<Client, ClusterError> {
        Client::try_from(self.config().await?).map_err(ClusterError::Client)
    }

    /// This target with the kubeconfig file and context that discovery would pick written out
    /// (a single `KUBECONFIG` path, the kubeconfig's current context), so helm is told exactly
    /// what the client uses instead of making its own choice. In-cluster, nothing is added.
    pub fn resolved(&self) -> Self {
        let kubeconfig = self.kubeconfig.clone().or_else(|| {
            let paths = std::env::var_os("KUBECONFIG")?;
            let mut paths = std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty());
            match (paths.next(), paths.next()) {
                (Some(only), None) => Some(only),
                // Several files are merged; helm merges them the same way from KUBECONFIG.
                _ => None,
            }
        });
        let context = self.context.clone().or_else(|| {
            let config = match &kubeconfig {
                Some(path) => Kubeconfig::read_from(path).ok()?,
                None => Kubeconfig::read().ok()?,
            };
            config.current_context
        });
        Self {
            kubeconfig,
            context,
        }
    }

    /// The flags that make a helm process target the same cluster.
    pub fn helm_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(path) = &self.kubeconfig {
            args.push("--kubeconfig".to_owned());
            args.push(path.display().to_string());
        }
        if let Some(context) = &self.context {
            args.push("--kube-context".to_owned());
            args.push(context.clone());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_args_pass_kubeconfig_and_context_through() {
        let target = ClusterTarget {
            kubeconfig: Some(PathBuf::from("/tmp/kc")),
            context: Some("prod".to_owned()),
        };
        assert_eq!(
            target.helm_args(),
            ["--kubeconfig", "/tmp/kc", "--kube-context", "prod"]
        );
        assert!(ClusterTarget::default().helm_args().is_empty());
    }

    /// helm is told the context the client uses, not left to pick one (from HELM_KUBECONTEXT,
    /// say): otherwise helm could install into another cluster than the one smm reads.
    #[test]
    fn resolving_writes_out_the_current_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: staging\nclusters: []\n\
             contexts: []\nusers: []\n",
        )
        .unwrap();
        let target = ClusterTarget {
            kubeconfig: Some(path.clone()),
            context: None,
        }
        .resolved();
        assert_eq!(target.context.as_deref(), Some("staging"));
        let chosen = ClusterTarget {
            kubeconfig: Some(path),
            context: Some("prod".to_owned()),
        }
        .resolved();
        assert_eq!(chosen.context.as_deref(), Some("prod"));
    }
}
