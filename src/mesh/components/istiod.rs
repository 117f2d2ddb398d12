//! `istiod`: Istio's control plane (discovery, certificates, sidecar injection, validation),
//! from Istio's `istio-discovery` chart, which also brings istiod's RBAC and webhooks.

use k8s_openapi::api::admissionregistration::v1 as admission;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, rbac::v1 as rbac};
use serde_json::json;

use super::{image_registry, istio};
use crate::mesh::catalog::{ChartKind, Component, ComponentContext, DefaultNamespace};

/// What the istio-discovery chart renders: istiod and its RBAC and webhooks, and with optional
/// values an autoscaler and disruption budget, a NetworkPolicy, the stable validation policy
/// and a remote istiod's address (EndpointSlice). Its revision tags are smm's own objects
/// (`mesh::revisions::tags`).
const CHART_KINDS: &[ChartKind] = &[
    ChartKind::of::<core::ConfigMap>(),
    ChartKind::of::<core::Service>(),
    ChartKind::of::<core::ServiceAccount>(),
    ChartKind::of::<apps::Deployment>(),
    ChartKind::of::<rbac::ClusterRole>(),
    ChartKind::of::<rbac::ClusterRoleBinding>(),
    ChartKind::of::<rbac::Role>(),
    ChartKind::of::<rbac::RoleBinding>(),
    ChartKind::of::<admission::MutatingWebhookConfiguration>(),
    ChartKind::of::<admission::ValidatingWebhookConfiguration>(),
    ChartKind::of::<admission::ValidatingAdmissionPolicy>(),
    ChartKind::of::<admission::ValidatingAdmissionPolicyBinding>(),
    ChartKind::of::<HorizontalPodAutoscaler>(),
    ChartKind::of::<PodDisruptionBudget>(),
    ChartKind::of::<NetworkPolicy>(),
    ChartKind::of::<EndpointSlice>(),
];

pub fn component() -> Component {
    Component {
        name: "istiod",
        release_name: "istiod",
        default_namespace: DefaultNamespace::Mesh,
        enabled_by_default: true,
        enabled_in_profile: None,
        depends_on: &["base"],
        chart: istio::chart(
            "istiod",
            istio::upstream("istio-discovery"),
            "Istio's control plane, istiod (discovery, certificates, sidecar injection, \
             validation), from Istio's istio-discovery chart.",
        ),
        values_layer: values_layer!("istiod"),
        chart_kinds: CHART_KINDS,
        native_objects: |_| Vec::new(),
        revisioned: true,
        plug_in_ca: true,
        network_gateway: false,
        managed_values,
    }
}

fn managed_values(context: &ComponentContext<'_>) -> serde_json::Value {
    let spec = context.spec;
    let mut values = json!({
        // The chart requires istioNamespace to be the namespace it is installed in.
        "global": {
            "istioNamespace": context.namespace,
            "hub": istio::hub(image_registry(spec)),
        },
        "revision": context.revision.value,
        // Revision tags are smm's (spec.revisionTags, applied once their revision is Ready):
        // tags rendered by a revision's release would be claimed by the next revision's release
        // too, which helm refuses, and go when the release that rendered them goes.
        "revisionTags": [],
        "base": {"validationFailurePolicy": istio::VALIDATION_FAILURE_POLICY},
        "meshConfig": {
            "trustDomain": spec.trust_domain(),
            "rootNamespace": context.namespace,
        },
    });
    // Proxies report spans to the tracing component's Zipkin receiver while it is enabled.
    // The version is the image tag; given in the spec, it is smm's to set (before spec.version,
    // users set global.tag themselves, which still works while spec.version is unset).
    if spec.version.is_some() {
        values["global"]["tag"] = json!(context.revision.version);
    }
    let tracing = context.placement_of("tracing");
    if tracing.enabled {
        let tracing_namespace = &tracing.namespace;
        values["meshConfig"]["enableTracing"] = json!(true);
        values["meshConfig"]["defaultConfig"] = json!({
            "tracing": {"zipkin": {"address": format!("tracing.{tracing_namespace}.svc:9411")}},
        });
    }
    // Prometheus pulls (it needs no address); what it scrapes from the proxies are the metrics
    // of Istio's `prometheus` provider, which must stay the default while it is enabled.
    if context.placement_of("prometheus").enabled {
        values["meshConfig"]["defaultProviders"] = json!({"metrics": ["prometheus"]});
    }
    dataplane_values(context, &mut values);
    multi_cluster_values(context, &mut values);
    values
}

/// A mesh over several clusters: istiod's cluster ID, mesh ID and network; on a remote cluster
/// Istio's `remote` profile (no istiod, the injector and the discovery address pointing at the
/// primary's istiod, the reader account the primary's istiod reads this cluster with).
fn multi_cluster_values(context: &ComponentContext<'_>, values: &mut serde_json::Value) {
    let spec = context.spec;
    let Some(multi_cluster) = &spec.multi_cluster else {
        return;
    };
    let cluster = &multi_cluster.cluster_name;
    values["global"]["meshID"] = json!(multi_cluster.mesh_id(spec.trust_domain()));
    values["global"]["multiCluster"] = json!({"clusterName": cluster});
    let network = multi_cluster.network.as_deref().unwrap_or_default();
    values["global"]["network"] = json!(network);
    let Some(primary) = &multi_cluster.primary else {
        // A primary manages the remote clusters that name it in their mesh namespace
        // (`topology.istio.io/controlPlaneClusters`): patches their injector's CA bundle and
        // publishes its root certificate into their namespaces.
        values["global"]["externalIstiod"] = json!(true);
        return;
    };
    values["profile"] = json!("remote");
    values["global"]["remotePilotAddress"] = json!(primary.address);
    // The primary's istiod tells the clusters apart by the path its injector is called on.
    values["istiodRemote"] = json!({
        "injectionPath": format!("/inject/cluster/{cluster}/net/{network}"),
    });
}

/// The ambient profile's settings (istiod's ambient controllers, HBONE for sidecars), the
/// platform's, and the ztunnel istiod issues node certificates to when it runs elsewhere than
/// istiod (the chart trusts `ztunnel` in its own namespace by default).
fn dataplane_values(context: &ComponentContext<'_>, values: &mut serde_json::Value) {
    let spec = context.spec;
    if let Some(profile) = spec.profile().chart_profile() {
        values["profile"] = json!(profile);
    }
    if let Some(platform) = spec.platform {
        values["global"]["platform"] = json!(platform.chart_platform());
    }
    let ztunnel = context.placement_of("ztunnel");
    if ztunnel.enabled && ztunnel.namespace != context.namespace {
        values["trustedZtunnelNamespace"] = json!(ztunnel.namespace);
    }
}

/// The namespace istiod runs in, which is the mesh's control plane namespace for the other
/// components (the root certificate, the sidecar injector and the metrics come from there).
pub(super) fn istiod_namespace<'a>(context: &'a ComponentContext<'_>) -> &'a str {
    &context.placement_of("istiod").namespace
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComponentSpec, ControlPlaneSpec};

    fn values_for(spec: &ControlPlaneSpec) -> serde_json::Value {
        crate::mesh::components::built_for(spec, spec.mesh_namespace(), true, managed_values)
    }

    fn tracing(component: ComponentSpec) -> ControlPlaneSpec {
        ControlPlaneSpec {
            namespace: Some("mesh".to_owned()),
            components: [("tracing".to_owned(), component)].into(),
            ..ControlPlaneSpec::default()
        }
    }

    #[test]
    fn tracing_values_appear_only_while_tracing_is_enabled() {
        // Off by default: nothing about tracing is managed, so the user may set it.
        let values = values_for(&ControlPlaneSpec::default());
        assert_eq!(values["meshConfig"].get("enableTracing"), None);
        assert_eq!(values["meshConfig"].get("defaultConfig"), None);

        let values = values_for(&tracing(ComponentSpec {
            enabled: Some(true),
            ..ComponentSpec::default()
        }));
        assert_eq!(values["meshConfig"]["enableTracing"], true);
        assert_eq!(
            values["meshConfig"]["defaultConfig"]["tracing"]["zipkin"]["address"],
            "tracing.mesh.svc:9411"
        );

        let values = values_for(&tracing(ComponentSpec {
            enabled: Some(true),
            namespace: Some("observability".to_owned()),
            ..ComponentSpec::default()
        }));
        assert_eq!(
            values["meshConfig"]["defaultConfig"]["tracing"]["zipkin"]["address"],
            "tracing.observability.svc:9411"
        );

        let values = values_for(&tracing(ComponentSpec {
            enabled: Some(false),
            namespace: Some("observability".to_owned()),
            ..ComponentSpec::default()
        }));
        assert_eq!(values["meshConfig"].get("enableTracing"), None);
    }

    #[test]
    fn a_cluster_of_several_names_itself_and_a_remote_points_at_its_primary() {
        let mut spec = ControlPlaneSpec {
            trust_domain: Some("example.org".to_owned()),
            multi_cluster: Some(crate::api::MultiCluster {
                cluster_name: "east".to_owned(),
                network: Some("net-east".to_owned()),
                ..crate::api::MultiCluster::default()
            }),
            ..ControlPlaneSpec::default()
        };
        let values = values_for(&spec);
        // The mesh ID defaults to the trust domain, as Istio's does.
        assert_eq!(values["global"]["meshID"], "example.org");
        assert_eq!(values["global"]["multiCluster"]["clusterName"], "east");
        assert_eq!(values["global"]["network"], "net-east");
        assert_eq!(values.get("profile"), None);
        assert_eq!(values.get("istiodRemote"), None);
        assert_eq!(values["global"]["externalIstiod"], true);

        let multi_cluster = spec.multi_cluster.as_mut().unwrap();
        multi_cluster.mesh_id = Some("mesh1".to_owned());
        multi_cluster.primary = Some(crate::api::PrimaryCluster {
            cluster_name: "west".to_owned(),
            address: "198.51.100.10".to_owned(),
        });
        let values = values_for(&spec);
        assert_eq!(values["global"]["meshID"], "mesh1");
        assert_eq!(values["profile"], "remote");
        assert_eq!(values["global"].get("externalIstiod"), None);
        assert_eq!(values["global"]["remotePilotAddress"], "198.51.100.10");
        assert_eq!(
            values["istiodRemote"]["injectionPath"],
            "/inject/cluster/east/net/net-east"
        );
        // Nothing of it in a mesh of one cluster: the user's values stay theirs.
        let single = values_for(&ControlPlaneSpec::default());
        assert_eq!(single["global"].get("meshID"), None);
        assert_eq!(single["global"].get("network"), None);
    }

    #[test]
    fn the_revision_and_the_image_hub_are_istios_own_values() {
        let spec = ControlPlaneSpec {
            revision: Some("1-28".to_owned()),
            namespace: Some("mesh".to_owned()),
            image_registry: Some("registry.local:5000".to_owned()),
            ..ControlPlaneSpec::default()
        };
        let values = values_for(&spec);
        assert_eq!(values["revision"], "1-28");
        assert_eq!(values["global"]["istioNamespace"], "mesh");
        assert_eq!(values["global"]["hub"], "registry.local:5000/istio");
        // The revision's validator fails closed as istiod would make it (a dump equals what runs).
        assert_eq!(values["base"]["validationFailurePolicy"], "Fail");
        // The tag is a default in smm's layer, not managed: users may pick another release.
        assert_eq!(values["global"].get("tag"), None);
        assert_eq!(
            values_for(&ControlPlaneSpec::default())["global"]["hub"],
            "docker.io/istio"
        );
    }

    #[test]
    fn the_default_tag_is_the_charts_app_version() {
        let layer = component().values_layer().unwrap();
        assert_eq!(layer["global"]["tag"], istio::DEFAULT_TAG);
        let metadata = component().chart.metadata().unwrap();
        assert_eq!(metadata.app_version.as_deref(), Some(istio::DEFAULT_TAG));
        assert_eq!(metadata.name, "istiod");
        assert!(
            metadata.version.starts_with("0.0.0-"),
            "{}",
            metadata.version
        );
    }

    #[test]
    fn prometheus_stays_the_default_metrics_provider_while_enabled() {
        let values = values_for(&ControlPlaneSpec::default());
        assert_eq!(
            values["meshConfig"]["defaultProviders"]["metrics"],
            json!(["prometheus"])
        );
        let spec = ControlPlaneSpec {
            components: [(
                "prometheus".to_owned(),
                ComponentSpec {
                    enabled: Some(false),
                    ..ComponentSpec::default()
                },
            )]
            .into(),
            ..ControlPlaneSpec::default()
        };
        assert_eq!(
            values_for(&spec)["meshConfig"].get("defaultProviders"),
            None
        );
    }

    #[test]
    fn the_ambient_profile_turns_istiod_to_ambient_and_trusts_ztunnel_where_it_runs() {
        let values = values_for(&ControlPlaneSpec::default());
        assert_eq!(
            values.get("profile"),
            None,
            "the sidecar profile is the chart's default"
        );
        assert_eq!(values.get("trustedZtunnelNamespace"), None);

        let ambient = ControlPlaneSpec {
            profile: Some(crate::api::Profile::Ambient),
            platform: Some(crate::api::Platform::Openshift),
            ..ControlPlaneSpec::default()
        };
        let values = values_for(&ambient);
        assert_eq!(values["profile"], "ambient");
        assert_eq!(values["global"]["platform"], "openshift");
        assert_eq!(
            values.get("trustedZtunnelNamespace"),
            None,
            "same namespace"
        );

        let elsewhere = ambient.with_component("ztunnel", |c| {
            c.namespace = Some("kube-system".to_owned());
        });
        assert_eq!(
            values_for(&elsewhere)["trustedZtunnelNamespace"],
            "kube-system"
        );
    }
}
