//! `smm check --pre` and `smm check` against the local plane: each category seen passing, then
//! provoked into failing and seen failing with its hint. The mesh checks run a real istiod, so
//! the webhooks are judged by what it answers, and by what the API server says once it is gone.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::istio::{assert_success, mesh_with_gateway};
use crate::support::{
    TestCluster, istio_mesh_lock, smm, smm_with_env, token_kubeconfig, unique_name,
};

/// The findings of a `-o json` report, and whether it passed.
fn report(output: &std::process::Output) -> (bool, Vec<Value>) {
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "not a JSON report ({err}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    (report["passed"] == json!(true), findings)
}

/// The finding of `category` with `outcome` whose message holds every one of `words`; panics
/// naming all findings otherwise.
fn finding<'a>(findings: &'a [Value], category: &str, outcome: &str, words: &[&str]) -> &'a Value {
    findings
        .iter()
        .find(|f| {
            f["category"] == category
                && f["outcome"] == outcome
                && words
                    .iter()
                    .all(|w| f["message"].as_str().unwrap_or_default().contains(w))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {outcome} finding of {category} saying {words:?} among:\n{}",
                serde_json::to_string_pretty(findings).unwrap()
            )
        })
}

/// Asserts a failed finding of `category` saying `words`, whose hint says `hint`.
fn fails_with_hint(findings: &[Value], category: &str, words: &[&str], hint: &str) {
    let failed = finding(findings, category, "fail", words);
    let given = failed["hint"].as_str().unwrap_or_default();
    assert!(
        given.contains(hint),
        "the hint does not say {hint:?}: {failed}"
    );
}

async fn apply<K>(api: &Api<K>, object: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    api.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|err| panic!("applying {name}: {err}"))
}

/// `n` bytes of hex noise, which gzip halves at best: values no helm record can hold.
fn noise(n: usize) -> String {
    let mut state = 0x9e37_79b9_u32;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            char::from_digit(state & 0xf, 16).unwrap()
        })
        .collect()
}

/// Before an install: the checks pass on a clean plan, then each category fails for its own
/// cause: an istiod and an injector from elsewhere, a mesh namespace being deleted, an injected
/// namespace whose Pod Security level refuses sidecars, values too large for helm's record, a
/// caller without rights, an API server that does not answer.
#[tokio::test]
async fn check_pre_names_each_problem_with_its_hint() {
    let cluster = TestCluster::connect().await;
    // Istio's objects are cluster-wide: no other test's mesh comes and goes meanwhile.
    let _lock = istio_mesh_lock().await;
    let work = cluster.namespace("e2e-check").await;
    let mesh_namespace = unique_name("e2e-checkmesh");
    let file = tempfile::NamedTempFile::new().unwrap();
    let write_plan = |prometheus: Value| {
        let plan = json!({
            "apiVersion": "smm.dev/v1alpha1", "kind": "ControlPlane",
            "metadata": {"name": unique_name("e2e-check")},
            "spec": {"namespace": mesh_namespace, "components": {"prometheus": prometheus}},
        });
        std::fs::write(file.path(), serde_yaml_ng::to_string(&plan).unwrap()).unwrap();
    };
    let path = file.path().to_str().unwrap().to_owned();
    let pre =
        |env: &[(&str, &str)]| smm_with_env(&["check", "--pre", "-f", &path, "-o", "json"], env);

    write_plan(json!({"enabled": true}));
    let clean = pre(&[]);
    let (_, findings) = report(&clean);
    finding(&findings, "kubernetes-api", "pass", &["is supported"]);
    finding(&findings, "permissions", "pass", &["may write every kind"]);
    finding(
        &findings,
        "namespaces",
        "pass",
        &[&mesh_namespace, "will be created"],
    );
    for component in ["base", "istiod", "prometheus"] {
        finding(
            &findings,
            "release-size",
            "pass",
            &[component, "KiB of the 1024 KiB"],
        );
    }
    assert!(
        !findings
            .iter()
            .any(|f| f["message"].as_str().unwrap().contains(&work.name)),
        "{findings:?}"
    );

    // Another installation's istiod and injector.
    let client = &cluster.client;
    apply(
        &Api::<Deployment>::namespaced(client.clone(), &work.name),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istiod", "labels": {"app": "istiod", "operator.istio.io/component": "Pilot"}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "istiod"}},
                     "template": {"metadata": {"labels": {"app": "istiod"}},
                                  "spec": {"containers": [{"name": "discovery", "image": "elsewhere/pilot:1.20.0"}]}}},
        }),
    )
    .await;
    let injector_name = unique_name("e2e-check-injector");
    let injectors = Api::<MutatingWebhookConfiguration>::all(client.clone());
    // It selects only namespaces labelled for this test, and ignores its own failure: other
    // tests' pods never reach it.
    apply(
        &injectors,
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": injector_name, "labels": {"app.kubernetes.io/managed-by": "elsewhere"}},
            "webhooks": [{
                "name": "inject.elsewhere.example", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Ignore", "clientConfig": {"url": "https://127.0.0.1:1/inject"},
                "namespaceSelector": {"matchLabels": {"istio-injection": "enabled", "e2e-check": &work.name}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            }],
        }),
    )
    .await;
    // The mesh namespace held in Terminating by a finalizer.
    let namespaces = Api::<Namespace>::all(client.clone());
    apply(
        &namespaces,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": mesh_namespace}}),
    )
    .await;
    let held = Api::<ConfigMap>::namespaced(client.clone(), &mesh_namespace);
    apply(&held, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["e2e.smm.dev/hold"]}})).await;
    namespaces
        .delete(&mesh_namespace, &DeleteParams::default())
        .await
        .unwrap();
    // An injected namespace (of a revision no one else uses) that enforces "baseline".
    let revision = unique_name("e2e-check-rev");
    apply(
        &namespaces,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": work.name, "labels": {
            "istio.io/rev": revision, "pod-security.kubernetes.io/enforce": "baseline"}}}),
    )
    .await;
    // 2.5 MiB of values that do not compress.
    write_plan(
        json!({"enabled": true, "valuesOverride": {"podAnnotations": {"blob": noise(5 << 19)}}}),
    );

    // One of the plan's CRDs storing objects in a version the plan's CRD does not have.
    let stored_crd = StoredVersion::add(client).await;

    let broken = pre(&[]);
    let (passed, findings) = report(&broken);
    // Cleaned up before judging, so a failed assertion leaves nothing behind.
    stored_crd.remove(client).await;
    injectors
        .delete(&injector_name, &DeleteParams::default())
        .await
        .unwrap();
    held.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(!passed);
    assert_eq!(broken.status.code(), Some(1));
    fails_with_hint(
        &findings,
        "existing-istio",
        &[
            &format!("Deployment {}/istiod", work.name),
            "istioctl or the Istio operator",
        ],
        "istioctl uninstall",
    );
    finding(
        &findings,
        "existing-istio",
        "fail",
        &[&injector_name, "elsewhere", "IST0139"],
    );
    fails_with_hint(
        &findings,
        "namespaces",
        &[&mesh_namespace, "being deleted"],
        "wait until",
    );
    fails_with_hint(
        &findings,
        "namespaces",
        &[&work.name, "\"baseline\"", "NET_ADMIN"],
        "privileged",
    );
    fails_with_hint(
        &findings,
        "release-size",
        &["prometheus", "more than the 1024 KiB"],
        "valuesOverride",
    );
    finding(&findings, "release-size", "pass", &["istiod"]);
    fails_with_hint(
        &findings,
        "crds",
        &[STORED_CRD, &format!("stores objects as {STORED_VERSION}")],
        "storedVersions",
    );

    // A caller with no rights at all: every kind is named with the verbs it lacks.
    write_plan(json!({"enabled": true}));
    let account = "e2e-check-nobody";
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &work.name),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}),
    )
    .await;
    let nobody = token_kubeconfig(account, &work.name);
    let denied = pre(&[("KUBECONFIG", nobody.path().to_str().unwrap())]);
    let (passed, findings) = report(&denied);
    assert!(!passed);
    fails_with_hint(
        &findings,
        "permissions",
        &[
            "may not create, delete, get, patch deployments.apps in namespace",
            &mesh_namespace,
        ],
        "Role",
    );
    finding(
        &findings,
        "permissions",
        "fail",
        &["customresourcedefinitions.apiextensions.k8s.io cluster-wide"],
    );
    finding(
        &findings,
        "permissions",
        "fail",
        &["controlplanes.smm.dev cluster-wide"],
    );

    // No API server at all.
    let unreachable = unreachable_kubeconfig();
    let down = pre(&[("KUBECONFIG", unreachable.path().to_str().unwrap())]);
    let (passed, findings) = report(&down);
    assert!(!passed);
    fails_with_hint(
        &findings,
        "kubernetes-api",
        &["cannot reach the API server"],
        "kubeconfig",
    );
    assert_eq!(findings.len(), 1, "{findings:?}");
}

/// An Istio CRD of base's plan, and a version of it that Istio never had.
const STORED_CRD: &str = "proxyconfigs.networking.istio.io";
const STORED_VERSION: &str = "v1alpha0";

/// [`STORED_CRD`] made to list [`STORED_VERSION`] as a stored version: added to a CRD that
/// exists (smm's, from another test) and taken out again, or a CRD of that name made for the
/// test and deleted.
struct StoredVersion {
    created: bool,
    stored_before: Value,
}

impl StoredVersion {
    fn api(client: &Client) -> Api<CustomResourceDefinition> {
        Api::all(client.clone())
    }

    async fn add(client: &Client) -> Self {
        let api = Self::api(client);
        let version = json!({"name": STORED_VERSION, "served": false, "storage": false,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
        let (created, stored_before) = match api.get_opt(STORED_CRD).await.unwrap() {
            Some(live) => {
                let patch = json!([{"op": "add", "path": "/spec/versions/-", "value": version}]);
                api.patch(
                    STORED_CRD,
                    &PatchParams::default(),
                    &Patch::Json::<()>(serde_json::from_value(patch).unwrap()),
                )
                .await
                .unwrap();
                (false, json!(live.status.and_then(|s| s.stored_versions)))
            }
            None => {
                let served = json!({"name": "v1beta1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
                let crd = json!({
                    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": STORED_CRD},
                    "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                             "names": {"plural": "proxyconfigs", "singular": "proxyconfig", "kind": "ProxyConfig", "listKind": "ProxyConfigList"},
                             "versions": [served, version]},
                });
                api.create(
                    &PostParams::default(),
                    &serde_json::from_value(crd).unwrap(),
                )
                .await
                .unwrap();
                (true, json!(["v1beta1"]))
            }
        };
        let mut stored: Vec<Value> = stored_before.as_array().cloned().unwrap_or_default();
        stored.push(json!(STORED_VERSION));
        api.patch_status(
            STORED_CRD,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"storedVersions": stored}})),
        )
        .await
        .unwrap();
        Self {
            created,
            stored_before,
        }
    }

    async fn remove(self, client: &Client) {
        let api = Self::api(client);
        if self.created {
            api.delete(STORED_CRD, &DeleteParams::default())
                .await
                .unwrap();
            return;
        }
        api.patch_status(
            STORED_CRD,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"storedVersions": self.stored_before}})),
        )
        .await
        .unwrap();
        let live = api.get(STORED_CRD).await.unwrap();
        let index = live
            .spec
            .versions
            .iter()
            .position(|v| v.name == STORED_VERSION)
            .unwrap();
        let patch = json!([{"op": "remove", "path": format!("/spec/versions/{index}")}]);
        api.patch(
            STORED_CRD,
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(patch).unwrap()),
        )
        .await
        .unwrap();
    }
}

/// The test's kubeconfig pointed at a port where nothing listens.
fn unreachable_kubeconfig() -> tempfile::NamedTempFile {
    let path = std::env::var("KUBECONFIG").unwrap();
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for cluster in config["clusters"].as_sequence_mut().unwrap() {
        cluster["cluster"]["server"] = "https://127.0.0.1:1".into();
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    file
}

/// After an install, with a real istiod: every check passes, the webhooks by a dry-run pod
/// that comes back injected and an invalid DestinationRule that istiod refuses. Then a tag to a
/// revision that is gone and a proxy of a gone revision fail their checks; with istiod stopped,
/// the webhooks, the root certificate and the restarted gateway fail, each with its hint.
#[tokio::test]
async fn check_exercises_the_webhooks_and_names_what_broke() {
    let cluster = TestCluster::connect().await;
    let _lock = istio_mesh_lock().await;
    let (mesh, istiod) = mesh_with_gateway(&cluster).await;
    let injected = cluster.namespace("e2e-check-inj").await;
    mesh.smm(&["sidecar-proxy", "auto-inject", "on", &injected.name]);
    let check = |extra: &[&str]| {
        let args = [
            &["check", "-o", "json", "--control-plane", &mesh.name][..],
            extra,
        ]
        .concat();
        smm(&args)
    };

    // istiod patches its validator's CA bundle and writes the root certificate once it serves:
    // --wait covers that.
    let healthy = check(&["--wait", "60s"]);
    assert_success("smm check", &healthy);
    let (passed, findings) = report(&healthy);
    assert!(passed);
    finding(&findings, "components", "pass", &["istiod: ready"]);
    finding(&findings, "components", "pass", &["ingress-gateway: ready"]);
    finding(
        &findings,
        "webhooks",
        "pass",
        &[&injected.name, "gets istiod's sidecar"],
    );
    finding(
        &findings,
        "webhooks",
        "pass",
        &["refuses an invalid DestinationRule"],
    );
    finding(
        &findings,
        "root-certificate",
        "pass",
        &["every injected namespace"],
    );
    finding(
        &findings,
        "data-plane",
        "pass",
        &["within the supported version skew"],
    );
    finding(
        &findings,
        "revision-tags",
        "pass",
        &["point at serving revisions"],
    );

    // A tag and a proxy whose revision is gone.
    let client = &cluster.client;
    let gone = unique_name("e2e-gone");
    let tags = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let tag_name = format!("istio-revision-tag-{gone}");
    apply(
        &tags,
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
               "metadata": {"name": tag_name, "labels": {"istio.io/tag": gone, "istio.io/rev": gone}}}),
    )
    .await;
    let plain = cluster.namespace("e2e-check-plain").await;
    orphaned_proxy(client, &plain.name, &mesh.namespace, &gone).await;
    let stale = check(&[]);
    tags.delete(&tag_name, &DeleteParams::default())
        .await
        .unwrap();
    let (passed, findings) = report(&stale);
    assert!(!passed);
    fails_with_hint(
        &findings,
        "revision-tags",
        &[
            &format!("tag {gone} points at revision {gone}"),
            "does not exist",
        ],
        "smm tag set",
    );
    fails_with_hint(
        &findings,
        "data-plane",
        &[
            "1 proxies",
            &format!("revision {gone} no longer exists"),
            &plain.name,
        ],
        "smm sidecar-proxy migrate",
    );

    // istiod gone: a restarted gateway cannot create pods, injection and validation fail, and
    // a deleted root certificate stays deleted.
    drop(istiod);
    let gateways = Api::<Deployment>::namespaced(client.clone(), &mesh.namespace);
    gateways
        .patch(
            "istio-ingressgateway",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": unique_name("now")}}}}})),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &injected.name)
        .delete("istio-ca-root-cert", &DeleteParams::default())
        .await
        .unwrap();
    let broken = check(&["--wait", "3s"]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("waiting:"),
        "{broken:?}"
    );
    let (_, findings) = report(&broken);
    fails_with_hint(
        &findings,
        "webhooks",
        &[&injected.name, "was refused", "failed calling webhook"],
        "cannot be reached",
    );
    finding(&findings, "webhooks", "fail", &["DestinationRule"]);
    fails_with_hint(
        &findings,
        "root-certificate",
        &["istio-ca-root-cert is missing from", &injected.name],
        "discoverySelectors",
    );
    fails_with_hint(
        &findings,
        "components",
        &["ingress-gateway: not ready", "istio-ingressgateway"],
        "smm status",
    );

    // The text form says the same, with its marks.
    let text = smm(&["check", "--control-plane", &mesh.name]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("webhooks\n--------\n"), "{text}");
    assert!(text.contains("× a pod in injected namespace"), "{text}");
    assert!(
        text.contains("    hint: istiod's injector cannot be reached"),
        "{text}"
    );
}

/// A pod that looks as istiod's injector leaves it, but of revision `revision`, which has no
/// istiod: its proxy dials `mesh_namespace`'s istiod of that revision.
async fn orphaned_proxy(client: &Client, namespace: &str, mesh_namespace: &str, revision: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "orphan",
            "labels": {"security.istio.io/tlsMode": "istio"},
            "annotations": {"sidecar.istio.io/status": "{}", "istio.io/rev": revision},
        },
        "spec": {"containers": [
            {"name": "app", "image": "app:1"},
            {"name": "istio-proxy", "image": format!("proxyv2:{}", crate::support::istiod_tag()),
             "env": [{"name": "CA_ADDR", "value": format!("istiod-{revision}.{mesh_namespace}.svc:15012")}]},
        ]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}
