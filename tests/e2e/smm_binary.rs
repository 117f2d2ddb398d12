//! The `smm` binary itself against the real cluster.

use std::process::Command;
use std::time::Duration;

use crate::support::{HelmTool, TestCluster};

#[tokio::test]
async fn version_reports_the_real_api_server_and_helm() {
    let cluster = TestCluster::connect().await;
    let server = cluster
        .client
        .apiserver_version()
        .await
        .unwrap()
        .git_version;
    let output = Command::new(env!("CARGO_BIN_EXE_smm"))
        .args(["version", "-o", "json", "--helm-binary"])
        .arg(HelmTool::Helm3.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["server"]["version"], server.as_str());
    let helm = report["helm"]["version"].as_str().unwrap_or_default();
    assert!(helm.starts_with("v3."), "{report}");
}

/// Sends `signal` (a name kill(1) knows) to `pid`.
fn send(signal: &str, pid: u32) {
    let sent = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// The state letter of process `pid` (`T`: stopped), if it still exists.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Ctrl-Z would stop smm but not helm (in a process group of its own), and smm's lease would
/// run out under a running helm: smm refuses to be suspended. Told twice to stop, it kills helm
/// and exits at once instead of giving helm its grace.
#[tokio::test]
async fn smm_refuses_to_suspend_and_stops_at_once_when_told_twice() {
    let cluster = TestCluster::connect().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("helm.pid");
    // A helm deaf to SIGTERM, so only a SIGKILL ends it.
    let helm = dir.path().join("helm");
    std::fs::write(
        &helm,
        format!(
            "#!/bin/sh\ncase \"$1\" in version) echo v3.17.0; exit 0;; esac\n\
             trap '' TERM\necho $$ > {}\nexec sleep 300\n",
            pid_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cp = crate::support::unique_name("e2e-signals");
    let mut smm = crate::support::smm_command(
        &["install", "prometheus", "--control-plane", &cp],
        &[("SMM_HELM", helm.to_str().unwrap())],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    while !pid_file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "helm never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let helm_pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    send("TSTP", smm.id());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = process_state(smm.id());
    send("CONT", smm.id());
    assert_ne!(state, Some('T'), "smm was suspended");

    send("INT", smm.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    send("INT", smm.id());
    let told_twice = std::time::Instant::now();
    let exited = loop {
        if let Some(status) = smm.try_wait().unwrap() {
            break status;
        }
        assert!(
            told_twice.elapsed() < Duration::from_secs(3),
            "smm did not stop at once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!exited.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut smm.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("not suspending"), "{stderr}");
    assert!(stderr.contains("stopped at once"), "{stderr}");
    let killed = std::time::Instant::now();
    while process_state(helm_pid).is_some_and(|state| state != 'Z') {
        assert!(killed.elapsed() < Duration::from_secs(3), "helm still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let control_planes: kube::Api<smm::api::ControlPlane> = kube::Api::all(cluster.client.clone());
    let _ = control_planes.delete(&cp, &Default::default()).await;
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(cluster.client.clone(), smm::cluster::lease::LEASE_NAMESPACE);
    let _ = leases
        .delete(&smm::cluster::lease::lease_name(&cp), &Default::default())
        .await;
}
