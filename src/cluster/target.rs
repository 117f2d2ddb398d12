//! How `smm` reaches the Kubernetes API server: one description of the target cluster that the
//! kube-rs client and the helm processes both use, so they always talk to the same cluster.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How long a call's response may keep the client waiting for its next bytes: a call on a
/// connection the API server stopped answering (half-open) fails instead of hanging the run,
/// and with it the stop that a lost lease asks for.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

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

    /// A client for calls, each of which fails once the API server stops answering it for
    /// [`READ_TIMEOUT`].
    pub async fn client(&self) -> Result<Client, ClusterError> {
        client_for_calls(self.config().await?)
    }

    /// A client for watches, which wait for events for minutes at a time: no read timeout
    /// (the watcher ends and restarts a watch that stays idle too long).
    pub async fn watch_client(&self) -> Result<Client, ClusterError> {
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

/// `config`'s client with [`READ_TIMEOUT`], counted from when a request is written (not from
/// when its pooled connection went idle).
fn client_for_calls(mut config: Config) -> Result<Client, ClusterError> {
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    Client::try_from(config).map_err(ClusterError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API server that accepts a call and never answers it fails the call after the read
    /// timeout instead of hanging it forever.
    #[tokio::test(start_paused = true)]
    async fn a_call_the_api_server_never_answers_fails_after_the_read_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut accepted = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                accepted.push(connection);
            }
        });
        let client = client_for_calls(Config::new(url.parse().unwrap())).unwrap();
        let call = tokio::time::timeout(READ_TIMEOUT * 2, client.apiserver_version()).await;
        assert!(matches!(call, Ok(Err(_))), "{call:?}");
        silent.abort();
    }

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
