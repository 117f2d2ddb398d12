//! The kiali component on the real plane: it ends Available (kube-scheduler places its pod on
//! kwok's nodes), its configuration names the add-ons that are on and only those, and its
//! cluster role, which only reads, goes with it.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use serde_json::{Value, json};

use smm::api::{ComponentPhase, ControlPlane};

use crate::readiness::remove;
use crate::support::{TestCluster, assert_success, fresh_control_plane, istio_mesh_lock, smm};

/// Kiali's configuration as its ConfigMap holds it.
async fn kiali_config(client: &kube::Client, namespace: &str) -> Value {
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get("kiali")
        .await
        .unwrap();
    let text = &config_map.data.unwrap()["config.yaml"];
    serde_yaml_ng::from_str(text).unwrap()
}

async fn phase(client: &kube::Client, control_plane: &str, component: &str) -> ComponentPhase {
    let stored = Api::<ControlPlane>::all(client.clone())
        .get(control_plane)
        .await
        .unwrap();
    stored.status.unwrap().components[component].phase
}

#[tokio::test]
async fn kiali_is_wired_to_the_add_ons_that_are_on_and_its_role_goes_with_it() {
    let cluster = TestCluster::connect().await;
    // Kiali brings istiod along, whose default revision is cluster-wide.
    let _lock = istio_mesh_lock().await;
    let (cp, namespace) = fresh_control_plane(&cluster).await;
    let cp_flag = ["--control-plane", cp.as_str()];
    let roles = Api::<ClusterRole>::all(cluster.client.clone());
    let role = format!("kiali-{namespace}");

    // Grafana on, tracing off: Kiali links to the one and not the other.
    assert_success(&smm(&[&["install", "grafana"], &cp_flag[..]].concat()));
    assert_success(&smm(&[&["install", "kiali"], &cp_flag[..]].concat()));
    assert_eq!(
        phase(&cluster.client, &cp, "kiali").await,
        ComponentPhase::Available
    );
    let config = kiali_config(&cluster.client, &namespace).await;
    let services = &config["external_services"];
    assert_eq!(
        services["prometheus"]["url"],
        format!("http://prometheus.{namespace}.svc:9090")
    );
    assert_eq!(services["grafana"]["enabled"], true);
    assert_eq!(
        services["grafana"]["internal_url"],
        format!("http://grafana.{namespace}.svc:3000")
    );
    assert_eq!(services["tracing"], json!({"enabled": false}));
    assert!(
        !serde_json::to_string(&config)
            .unwrap()
            .contains(&format!("tracing.{namespace}")),
        "{config}"
    );
    assert_eq!(config["deployment"]["view_only_mode"], true);
    assert_eq!(config["deployment"]["namespace"], namespace.as_str());

    // Kiali's role only reads, and is bound to Kiali's account.
    let granted = roles.get(&role).await.unwrap();
    for rule in granted.rules.unwrap() {
        assert!(
            rule.verbs
                .iter()
                .all(|verb| ["get", "list", "watch"].contains(&verb.as_str())),
            "{rule:?}"
        );
    }

    // Tracing on, named alone: Kiali, whose values follow it, is reconciled too and reads
    // traces from Jaeger's query API.
    assert_success(&smm(&[&["install", "tracing"], &cp_flag[..]].concat()));
    let tracing =
        kiali_config(&cluster.client, &namespace).await["external_services"]["tracing"].clone();
    assert_eq!(tracing["enabled"], true);
    assert_eq!(
        tracing["internal_url"],
        format!("http://tracing.{namespace}.svc:16686")
    );

    // Uninstalled, Kiali takes its cluster role and binding with it.
    assert_success(&smm(&[&["uninstall", "kiali"], &cp_flag[..]].concat()));
    assert!(roles.get_opt(&role).await.unwrap().is_none());
    let bindings =
        Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(cluster.client.clone());
    assert!(bindings.get_opt(&role).await.unwrap().is_none());

    remove(&cluster.client, &cp).await;
}
