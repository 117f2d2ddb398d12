//! Flags every command accepts, and what they give the library: the cluster target, helm, a
//! client, and the token that an interruption cancels.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use smm::api::names;
use smm::cluster::target::ClusterTarget;
use smm::helm::{Helm, HelmBinary};

/// Flags every command accepts, named as kubectl and helm name them.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster)
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context)
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The helm binary to run (default: SMM_HELM, then helm on PATH)
    #[arg(long, global = true, value_name = "PATH")]
    pub helm_binary: Option<PathBuf>,
    /// How long one helm operation, a wait for the reconcile lease, or the wait for components to become ready may take, e.g. 90s, 5m
    #[arg(long, global = true, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides it
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never color the output
    #[arg(long, global = true)]
    pub no_color: bool,
}

impl GlobalArgs {
    pub fn cluster_target(&self) -> ClusterTarget {
        ClusterTarget {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    pub fn helm(&self) -> anyhow::Result<Helm> {
        let binary = HelmBinary::locate(self.helm_binary.as_deref())?;
        Ok(Helm::new(
            binary,
            self.cluster_target().resolved(),
            self.timeout,
        ))
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(self.cluster_target().client().await?)
    }
}

/// Cancelled when smm gets SIGINT or SIGTERM: the running reconcile stops helm (SIGTERM, then
/// SIGKILL after a grace period), releases its lease and smm exits non-zero.
pub fn interrupted() -> CancellationToken {
    static INTERRUPTED: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    INTERRUPTED
        .get_or_init(|| {
            smm::signals::stop_on_signal(
                "stopping: stopping helm, releasing the lease",
                smm::helm::kill_running_and_exit,
            )
        })
        .clone()
}

/// The longest duration a flag accepts: a day is longer than any helm operation or wait should
/// take, and far from the limits of the arithmetic done with it (deadlines, helm's own
/// `--timeout`).
const MAX_DURATION_SECS: u64 = 24 * 3600;

/// Parses durations the way kubectl and helm users write them: `90s`, `5m`, `1h`, `1m30s`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration; expected e.g. 90s, 5m, 1h or 1m30s");
    let too_long = || format!("{text:?} is longer than the longest supported duration, 24h");
    let mut total = 0u64;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(invalid()),
        };
        if digits.is_empty() {
            return Err(invalid());
        }
        let seconds = digits
            .parse::<u64>()
            .ok()
            .and_then(|value| value.checked_mul(unit))
            .and_then(|seconds| seconds.checked_add(total));
        total = seconds.ok_or_else(too_long)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(invalid());
    }
    if total > MAX_DURATION_SECS {
        return Err(too_long());
    }
    Ok(Duration::from_secs(total))
}

/// clap's parser of a flag that names a namespace.
pub(super) fn namespace_flag(text: &str) -> Result<String, String> {
    checked_flag(text, names::namespace)
}

/// clap's parser of a flag that takes one of a spec setting's values, spelt as in the
/// ControlPlane (serde's error names the values it expected).
pub(super) fn spec_value_flag<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| e.to_string())
}

/// clap's parser of a flag that names a ControlPlane.
pub(super) fn control_plane_flag(text: &str) -> Result<String, String> {
    checked_flag(text, names::control_plane_name)
}

/// `text` if it passes `check`; otherwise the rule, for clap to print after the flag's name.
fn checked_flag(text: &str, check: names::Check) -> Result<String, String> {
    match check("", text) {
        Ok(()) => Ok(text.to_owned()),
        Err(invalid) => Err(format!(
            "{text:?} is not a valid {}: {}",
            invalid.what, invalid.rule
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_helm_timeouts() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        for bad in ["", "5", "5x", "m", "0s", "5ms"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    /// Huge durations are refused by the parser instead of overflowing (a panic, or a silent
    /// wrap in release builds) once helm runs.
    #[test]
    fn durations_longer_than_a_day_are_refused_without_overflowing() {
        for huge in [
            "18446744073709551615s",
            "18446744073709551616s",
            "5124095576030431h",
            "86401s",
            "23h60m1s",
        ] {
            assert_eq!(
                parse_duration(huge),
                Err(format!(
                    "{huge:?} is longer than the longest supported duration, 24h"
                ))
            );
        }
    }

    #[test]
    fn name_flags_are_checked_as_they_are_parsed() {
        assert_eq!(
            namespace_flag("istio-system"),
            Ok("istio-system".to_owned())
        );
        assert_eq!(
            namespace_flag("Foo"),
            Err(
                "\"Foo\" is not a valid namespace: must be a DNS-1123 label (lowercase letters, \
                 digits and '-', starting and ending with a letter or digit, at most 63 \
                 characters)"
                    .to_owned()
            )
        );
        assert!(control_plane_flag("a/b").is_err());
        assert_eq!(control_plane_flag("mesh.one"), Ok("mesh.one".to_owned()));
    }
}
