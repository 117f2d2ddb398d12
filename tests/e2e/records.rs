//! helm's release records are Secrets that anyone allowed to write Secrets in a namespace can
//! fake: smm reads them only where its releases are, and decodes them within a limit.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use smm::api::ControlPlane;
use smm::helm::record::MAX_DECOMPRESSED_BYTES;

use crate::support::{TestCluster, assert_success, fresh_control_plane, smm, smm_command, stdout};

/// What the bomb expands to: far more than smm needs for anything, so reading it shows.
const BOMB_BYTES: usize = 512 << 20;
/// The most memory an smm run may peak at here, whatever the Secrets hold.
const PEAK_RSS_LIMIT_KIB: u64 = 200 << 10;

/// helm's text of a record that gunzips to [`BOMB_BYTES`]: base64 of about 500 KiB of gzip, a
/// Secret the API server accepts.
fn gzip_bomb() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0_u8; 1 << 20];
    for _ in 0..BOMB_BYTES / zeros.len() {
        gz.write_all(&zeros).unwrap();
    }
    base64::engine::general_purpose::STANDARD
        .encode(gz.finish().unwrap())
        .into_bytes()
}

/// Runs smm with `args` and reports its output and its peak resident memory (VmHWM, in KiB),
/// sampled from `/proc` until it exits.
fn smm_measured(args: &[&str]) -> (Output, u64) {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut child = smm_command(args, &[])
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(err.try_clone().unwrap()))
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let high_water = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            });
        peak_kib = peak_kib.max(high_water.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(2));
    };
    let read = |mut file: std::fs::File| {
        use std::io::{Read as _, Seek as _};
        let mut bytes = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    };
    let output = Output {
        status,
        stdout: read(out),
        stderr: read(err),
    };
    (output, peak_kib)
}

fn assert_bounded(peak_kib: u64, what: &str) {
    assert!(
        peak_kib > 0 && peak_kib < PEAK_RSS_LIMIT_KIB,
        "{what} peaked at {peak_kib} KiB of memory"
    );
}

/// A Secret that looks like helm's record of `release` revision `revision`, deployed.
fn fake_record(release: &str, revision: u32, text: Vec<u8>) -> Secret {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("sh.helm.release.v1.{release}.v{revision}"),
            "labels": {"owner": "helm", "name": release, "status": "deployed",
                       "version": revision.to_string()},
        },
        "type": "helm.sh/release.v1",
    }))
    .map(|mut secret: Secret| {
        secret.data = Some([("release".to_owned(), ByteString(text))].into());
        secret
    })
    .unwrap()
}

/// A tenant's Secret in its own namespace, faking helm's record of the release smm manages
/// (a gzip bomb), changes nothing for smm: it is never read. The same bomb in place of smm's
/// own record, in the mesh's namespace, fails the component and `smm status` with an error
/// naming the Secret and the limit. Either way smm's memory stays bounded.
#[tokio::test]
async fn fake_helm_records_are_not_read_elsewhere_and_bounded_where_smm_reads() {
    let cluster = TestCluster::connect().await;
    let (cp, namespace) = fresh_control_plane(&cluster).await;
    let tenant = cluster.namespace("e2e-tenant").await;
    let bomb = gzip_bomb();
    Api::<Secret>::namespaced(cluster.client.clone(), &tenant.name)
        .create(
            &PostParams::default(),
            &fake_record("prometheus", 1, bomb.clone()),
        )
        .await
        .unwrap();

    let (installed, peak) = smm_measured(&["install", "prometheus", "--control-plane", &cp]);
    assert_success(&installed);
    assert_bounded(peak, "smm install beside a tenant's fake record");
    let (status, peak) = smm_measured(&["status", "--control-plane", &cp]);
    assert_success(&status);
    assert_bounded(peak, "smm status beside a tenant's fake record");

    // The bomb in place of smm's own record of the release.
    let records: Api<Secret> = Api::namespaced(cluster.client.clone(), &namespace);
    let secret_name = "sh.helm.release.v1.prometheus.v1";
    let original = records.get(secret_name).await.unwrap().data;
    let set_data = async |data: serde_json::Value| {
        records
            .patch(
                secret_name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "data": data })),
            )
            .await
            .unwrap();
    };
    let planted = BTreeMap::from([("release", ByteString(bomb))]);
    set_data(serde_json::to_value(planted).unwrap()).await;
    let named = format!(
        "(Secret {namespace}/{secret_name}) cannot be decoded: it decompresses to more than the \
         limit of {MAX_DECOMPRESSED_BYTES} bytes"
    );
    let (reconciled, peak) = smm_measured(&["install", "prometheus", "--control-plane", &cp]);
    assert_eq!(reconciled.status.code(), Some(1), "{reconciled:?}");
    let stderr = String::from_utf8_lossy(&reconciled.stderr);
    assert!(stderr.contains(&named), "{stderr}");
    assert_bounded(peak, "smm install with an oversized record");
    let (status, peak) = smm_measured(&["status", "--control-plane", &cp]);
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains(&named), "{}{stderr}", stdout(&status));
    assert_bounded(peak, "smm status with an oversized record");

    set_data(serde_json::to_value(original).unwrap()).await;
    assert_success(&smm(&["uninstall", "-a", "--control-plane", &cp]));
    let _ = Api::<ControlPlane>::all(cluster.client.clone())
        .delete(&cp, &DeleteParams::default())
        .await;
}
