//! Whether a fault passed: its next normal run converges, and the cluster then holds exactly
//! what the intended spec renders (see the campaign's doc in main.rs).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use smm::api::ControlPlaneStatus;

use crate::process::{HELM_RUNS_ENV, describe};
use crate::scene::{COMMAND_LIMIT, Scene};
use crate::spec::{enabled_components, normalized, release_name, strings};

impl Scene<'_> {
    /// The objects `smm --dump-resources` renders for `spec` (which must be stored under
    /// `name`'s file): the charts' and those smm applies natively.
    pub async fn rendered_objects(&mut self, name: &str, spec: &Value) -> Option<Vec<Value>> {
        let file = self.write_control_plane("rendered.json", name, spec);
        let args = strings(&["reconcile", "-f", &file, "--dump-resources"]);
        let (status, proc) = self.run("render", &args).await;
        if !status.is_some_and(|s| s.success()) {
            self.record.fail(format!(
                "smm reconcile --dump-resources of the intended spec failed: {}",
                proc.tail(8)
            ));
            return None;
        }
        let text = std::fs::read_to_string(&proc.log).unwrap_or_default();
        let mut objects = Vec::new();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            // The log also holds stderr lines (none on success); skip what is not an object.
            if let Ok(value) = <Value as serde::Deserialize>::deserialize(document)
                && value["kind"].is_string()
            {
                objects.push(value);
            }
        }
        Some(objects)
    }

    /// Whether the fault's next normal run converged to `intended` (see the campaign's doc),
    /// and whether running it once more is a no-op.
    pub async fn verify(&mut self, recovery: &[String], intended: &Value) {
        let (status, proc) = self.run("recovery", recovery).await;
        if !status.is_some_and(|s| s.success()) {
            self.record.fail(format!(
                "the next run `smm {}` did not converge ({}):\n    {}",
                recovery.join(" "),
                describe(status),
                proc.tail(14)
            ));
        }
        let elapsed = proc.started.elapsed().as_secs_f64();
        self.record.note(format!("next run {elapsed:.1}s"));
        self.check_state(intended).await;
        self.check_no_op(recovery).await;
    }

    /// [`Scene::verify`] with `smm reconcile -f` of `intended` as the next normal run.
    pub async fn verify_reconciled(&mut self, intended: &Value) {
        let file = self.write_control_plane("intended.json", &self.cp.clone(), intended);
        self.verify(&strings(&["reconcile", "-f", &file]), intended)
            .await;
    }

    /// The checks after the next run, also used for the first ControlPlane of a
    /// second-ControlPlane fault.
    pub async fn check_state(&mut self, intended: &Value) {
        let status_args = self.on_cp(&["status"]);
        self.run_checked("status", &status_args, "smm status: ", 12)
            .await;
        self.check_releases(intended).await;

        // No helm left running.
        let helms = self.ctx.helm_processes();
        if !helms.is_empty() {
            self.record
                .fail(format!("helm processes still running: {helms:?}"));
        }

        let cp = self.cp.clone();
        if let Some(rendered) = self.rendered_objects(&cp, intended).await {
            self.check_deployments(&rendered).await;
            self.check_objects(&rendered, intended).await;
        }

        // The stored spec is the intended one.
        let stored = self.spec().await;
        if normalized(&stored) != normalized(intended) {
            self.record.fail(format!(
                "stored spec {} is not the intended {}",
                normalized(&stored),
                normalized(intended)
            ));
        }
    }

    /// Helm's release records: none pending or uninstalling, every enabled component's latest
    /// one deployed, none of a disabled component.
    async fn check_releases(&mut self, intended: &Value) {
        let enabled = enabled_components(intended);
        let releases = match release_records(&self.ctx.client, &self.ns).await {
            Ok(releases) => releases,
            Err(err) => return self.record.fail(format!("listing helm's records: {err}")),
        };
        self.check_status_agrees(&releases, intended).await;
        for (release, versions) in &releases {
            for (version, state) in versions {
                // A rollback out of an interrupted upgrade supersedes only the deployed records
                // (helm's `rollback`): the interrupted one keeps its pending state below the
                // deployed revision the recovery made, and blocks nothing. Pending with nothing
                // deployed after it is a stuck release.
                let deployed_after = versions
                    .range(version + 1..)
                    .any(|(_, later)| later == "deployed");
                let stuck = state.starts_with("pending-") || state == "uninstalling";
                if stuck && !deployed_after {
                    self.record
                        .fail(format!("release {release} v{version} is {state}"));
                }
            }
        }
        for component in self.ctx.catalog.components() {
            let latest = releases
                .get(&release_name(component, intended))
                .and_then(|versions| versions.last_key_value());
            match (enabled.contains(component.name), latest) {
                (true, Some((_, state))) if state == "deployed" => {}
                (true, Some((version, state))) => self.record.fail(format!(
                    "{}: latest release v{version} is {state}, not deployed",
                    component.name
                )),
                (true, None) => self
                    .record
                    .fail(format!("{}: enabled but no helm release", component.name)),
                (false, Some((version, state))) => self.record.fail(format!(
                    "{}: disabled but release v{version} ({state}) is left",
                    component.name
                )),
                (false, None) => {}
            }
        }
    }

    /// The ControlPlane's status records, for each component, the revision that is helm's
    /// latest of its release, and none when helm has no release of it.
    async fn check_status_agrees(&mut self, releases: &ReleaseRecords, intended: &Value) {
        let stored = match self.ctx.control_planes.get_opt(&self.cp).await {
            Ok(Some(object)) => object.data.get("status").cloned(),
            Ok(None) => None,
            Err(err) => return self.record.fail(format!("reading the ControlPlane: {err}")),
        };
        let status: ControlPlaneStatus = match stored.map(serde_json::from_value).transpose() {
            Ok(Some(status)) => status,
            Ok(None) => return self.record.fail("the ControlPlane has no status"),
            Err(err) => {
                return self
                    .record
                    .fail(format!("the ControlPlane's status: {err}"));
            }
        };
        let revision =
            |revision: Option<i64>| revision.map_or("none".to_owned(), |r| format!("v{r}"));
        for component in self.ctx.catalog.components() {
            let release_name = release_name(component, intended);
            let recorded = status
                .components
                .get(component.name)
                .and_then(|c| c.release.clone());
            let latest = releases
                .get(&release_name)
                .and_then(|revisions| revisions.last_key_value())
                .map(|(latest, _)| *latest);
            let recorded_revision = recorded.as_ref().and_then(|r| r.revision);
            if recorded_revision != latest {
                self.record.fail(format!(
                    "{}: the ControlPlane's status records release revision {}, helm's latest is {}",
                    component.name,
                    revision(recorded_revision),
                    revision(latest)
                ));
            }
            if let Some(release) = recorded
                && (release.name != release_name || release.namespace != self.ns)
            {
                self.record.fail(format!(
                    "{}: the ControlPlane's status names release {}/{}, not {}/{}",
                    component.name, release.namespace, release.name, self.ns, release_name
                ));
            }
        }
    }

    /// Running the next run once more is a no-op: it succeeds and starts no helm process (the
    /// ControlPlane's status and helm's records already say everything is applied).
    async fn check_no_op(&mut self, next_run: &[String]) {
        let helm_runs = self.dir.join("no-op-helm-runs.log");
        let mut proc = self.spawn_with("no-op", next_run, |command| {
            command
                .env("SMM_HELM", &self.ctx.counting_helm)
                .env(HELM_RUNS_ENV, &helm_runs);
        });
        let status = proc.wait(COMMAND_LIMIT).await;
        if !status.is_some_and(|s| s.success()) {
            self.record.fail(format!(
                "running `smm {}` once more failed ({}):\n    {}",
                next_run.join(" "),
                describe(status),
                proc.tail(10)
            ));
        }
        let runs = std::fs::read_to_string(&helm_runs).unwrap_or_default();
        let runs: Vec<&str> = runs.lines().collect();
        if !runs.is_empty() {
            self.record.fail(format!(
                "running `smm {}` once more started {} helm process(es): helm {}",
                next_run.join(" "),
                runs.len(),
                runs.join("; helm ")
            ));
        }
    }

    /// The releases of the inactive istiod revisions the ControlPlane's status records.
    async fn inactive_revision_releases(&self) -> BTreeSet<String> {
        let Ok(Some(object)) = self.ctx.control_planes.get_opt(&self.cp).await else {
            return BTreeSet::new();
        };
        let status: Option<ControlPlaneStatus> = object
            .data
            .get("status")
            .and_then(|status| serde_json::from_value(status.clone()).ok());
        status
            .map(|status| status.revisions)
            .unwrap_or_default()
            .into_iter()
            .filter(|revision| !revision.active)
            .map(|revision| revision.release)
            .collect()
    }

    /// The live Deployments are the rendered ones, available and as rendered.
    async fn check_deployments(&mut self, rendered: &[Value]) {
        let rendered: Vec<&Value> = rendered
            .iter()
            .filter(|object| object["kind"] == "Deployment")
            .collect();
        let deployments: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let live: BTreeMap<String, Deployment> =
            match deployments.list(&ListParams::default()).await {
                Ok(list) => list.items.into_iter().map(|d| (d.name_any(), d)).collect(),
                Err(err) => {
                    self.record.fail(format!("listing Deployments: {err}"));
                    BTreeMap::new()
                }
            };
        let mut expected = BTreeSet::new();
        for want in rendered {
            let name = want["metadata"]["name"].as_str().unwrap_or("").to_owned();
            expected.insert(name.clone());
            let Some(have) = live.get(&name) else {
                self.record
                    .fail(format!("Deployment {name} of the spec is missing"));
                continue;
            };
            for problem in deployment_problems(want, have) {
                self.record.fail(format!("Deployment {name}: {problem}"));
            }
        }
        // An inactive istiod revision is kept beside the active one, as its status records.
        let kept = self.inactive_revision_releases().await;
        let of_kept_revision = |deployment: &Deployment| {
            deployment
                .annotations()
                .get("meta.helm.sh/release-name")
                .is_some_and(|release| kept.contains(release))
        };
        for (name, _) in live
            .iter()
            .filter(|(name, d)| !expected.contains(*name) && !of_kept_revision(d))
        {
            self.record.fail(format!(
                "Deployment {name} is left although the spec does not render it"
            ));
        }
    }

    /// The spec right after the fault may only be the one before it or the one its command meant.
    pub async fn check_spec_after_fault(&mut self, allowed: &[&Value]) {
        let stored = normalized(&self.spec().await);
        if !allowed.iter().any(|spec| normalized(spec) == stored) {
            self.record.fail(format!(
                "after the fault the stored spec is {stored}, expected one of {}",
                allowed
                    .iter()
                    .map(|spec| normalized(spec).to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
    }
}

/// helm's release records in a namespace: release name → revision → status.
pub type ReleaseRecords = BTreeMap<String, BTreeMap<i64, String>>;

/// helm's release records in `namespace`.
pub async fn release_records(client: &Client, ns: &str) -> Result<ReleaseRecords, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut releases = ReleaseRecords::new();
    let list = secrets
        .list(&ListParams::default().labels("owner=helm"))
        .await?;
    for secret in list.items {
        let labels = secret.labels();
        let (Some(name), Some(version), Some(status)) = (
            labels.get("name"),
            labels.get("version").and_then(|v| v.parse().ok()),
            labels.get("status"),
        ) else {
            continue;
        };
        releases
            .entry(name.clone())
            .or_default()
            .insert(version, status.clone());
    }
    Ok(releases)
}

/// What is wrong with a live Deployment against its rendering: not available, or replicas or
/// node selector not as rendered.
fn deployment_problems(want: &Value, have: &Deployment) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = have.spec.clone().unwrap_or_default();
    let replicas = i64::from(spec.replicas.unwrap_or(1));
    if let Some(rendered) = want["spec"]["replicas"].as_i64()
        && rendered != replicas
    {
        problems.push(format!("{replicas} replicas, the spec renders {rendered}"));
    }
    let selector = spec
        .template
        .spec
        .as_ref()
        .and_then(|pod| pod.node_selector.clone())
        .unwrap_or_default();
    let rendered: BTreeMap<String, String> = want["spec"]["template"]["spec"]["nodeSelector"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    if selector != rendered {
        problems.push(format!(
            "node selector {selector:?}, the spec renders {rendered:?}"
        ));
    }
    if have.metadata.deletion_timestamp.is_some() {
        problems.push("being deleted".to_owned());
    }
    let status = have.status.clone().unwrap_or_default();
    let current = status.observed_generation >= have.metadata.generation;
    let wanted = i32::try_from(replicas).unwrap_or(i32::MAX);
    // kstatus' rule: every replica updated and available, and no replica of an older
    // ReplicaSet left (an old pod still serving while the new ones cannot run is no rollout).
    let available = status.available_replicas.unwrap_or(0) >= wanted
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.replicas.unwrap_or(0) <= wanted
        && status.unavailable_replicas.unwrap_or(0) == 0;
    if !(current && available) {
        problems.push(format!(
            "not rolled out (generation {:?} observed {:?}; of {wanted}: {} updated, {} available, {} in all, {} unavailable)",
            have.metadata.generation,
            status.observed_generation,
            status.updated_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            status.replicas.unwrap_or(0),
            status.unavailable_replicas.unwrap_or(0)
        ));
    }
    problems
}
