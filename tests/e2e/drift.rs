//! GitOps output that does not drift: after a reconcile of every component of an ambient mesh
//! (istiod, the gateways, the node agents, the add-ons), with a real istiod that has patched its
//! webhooks (their CA, the validators' failure policy), every object `--dump-resources` renders
//! for the same ControlPlane holds live exactly what the dump sets, so a GitOps tool that
//! applied the dump would report no permanent diff.

use std::time::Duration;

use crate::istio::Mesh;
use crate::support::drift::{differences, documents, istiod_patched_its_webhooks, live_object};
use crate::support::{
    LocalIstiod, TestCluster, assert_success, eventually, istio_mesh_lock, smm, stdout,
};

/// Fields that may differ between the dump and what runs. None does: istiod fills in the
/// webhooks' `caBundle`, which the dump leaves unset (so it is no difference), and sets the
/// validators' `failurePolicy` to `Fail`, which smm renders itself for that reason.
const ALLOWED: &[&str] = &[];

#[tokio::test]
async fn a_dump_equals_the_live_objects_after_istiod_patched_its_webhooks() {
    let _lock = istio_mesh_lock().await;
    let cluster = TestCluster::connect().await;
    let mesh = Mesh::create(&cluster, None).await;
    let ns = mesh.namespace.clone();
    // istiod first, so that the local istiod runs with the env its ambient chart renders.
    mesh.smm(&["install", "istiod", "--profile", "ambient"]);
    let _istiod = LocalIstiod::start(&ns, "");
    // Then every component: the stored profile is ambient, so the node agents too.
    mesh.smm(&["install", "-a"]);

    let output = smm(&[
        "install",
        "-a",
        "--dump-resources",
        "--control-plane",
        &mesh.name,
    ]);
    assert_success(&output);
    let dumped = documents(&stdout(&output));
    let kinds: Vec<&str> = dumped.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "Deployment",
        "DaemonSet",
    ] {
        assert!(kinds.contains(&kind), "the dump has a {kind}: {kinds:?}");
    }
    let patched = eventually(Duration::from_secs(60), async || {
        istiod_patched_its_webhooks(&cluster, &dumped, &ns).await
    })
    .await;
    assert!(patched, "istiod did not patch its webhooks' CA");
    // A reconcile after istiod's patches: smm puts nothing back that istiod wrote.
    mesh.smm(&["install", "-a"]);

    let mut drift = Vec::new();
    for object in &dumped {
        let live = live_object(&cluster, object, &ns).await;
        for difference in differences(object, &live, ALLOWED) {
            drift.push(format!(
                "{} {}: {difference}",
                object["kind"].as_str().unwrap(),
                object["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    assert!(
        drift.is_empty(),
        "live objects differ from the dump:\n{}",
        drift.join("\n")
    );
}
