//! The add-ons' own UIs (Grafana, Jaeger, Kiali, Prometheus): which a ControlPlane enables, for
//! the page's links, and the pod `smm dashboard ADDON` forwards to.
//!
//! The page shows the command rather than proxying the UIs itself: from the user's machine it
//! could reach them only by port-forwarding for the browser, and in the operator's pod it would
//! serve them under a path of its own, which these UIs do not expect without settings in their
//! charts; and the dashboard's token, which only lets a reader see the mesh, would then open
//! Prometheus' and Grafana's APIs too.

use kube::Client;
use serde::Serialize;

use crate::api::ControlPlaneSpec;
use crate::cluster::control_plane::{self, StoreError};
use crate::cluster::port_forward::{self, ForwardTarget, PortForwardError};
use crate::mesh::addons::{ADDONS, AddonUi, open_command};
use crate::mesh::catalog::Catalog;

#[derive(Debug, thiserror::Error)]
pub enum AddonError {
    #[error(
        "ControlPlane {control_plane} not found: install {addon} with `smm install {component}`"
    )]
    NoControlPlane {
        control_plane: String,
        addon: &'static str,
        component: &'static str,
    },
    #[error(
        "{addon} is not enabled in ControlPlane {control_plane}: install it with `smm install {component}`"
    )]
    NotEnabled {
        control_plane: String,
        addon: &'static str,
        component: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{addon}: {source}")]
    Forward {
        addon: &'static str,
        // Boxed: the Service's and pods' names would make every result of this type large.
        source: Box<PortForwardError>,
    },
}

/// A ready pod serving `addon`'s UI for the ControlPlane `control_plane`, and its port: the
/// add-on's Service in the namespace the ControlPlane puts its component in.
pub async fn addon_target(
    client: &Client,
    catalog: &Catalog,
    control_plane: &str,
    addon: &AddonUi,
) -> Result<ForwardTarget, AddonError> {
    let stored = control_plane::load(client, control_plane)
        .await?
        .ok_or_else(|| AddonError::NoControlPlane {
            control_plane: control_plane.to_owned(),
            addon: addon.name,
            component: addon.component,
        })?;
    let namespace =
        enabled_namespace(catalog, &stored.spec, addon).ok_or_else(|| AddonError::NotEnabled {
            control_plane: control_plane.to_owned(),
            addon: addon.name,
            component: addon.component,
        })?;
    port_forward::service_target(client, &namespace, addon.service, addon.port)
        .await
        .map_err(|source| AddonError::Forward {
            addon: addon.name,
            source: Box::new(source),
        })
}

/// The namespace of `addon`'s component when `spec` enables it.
fn enabled_namespace(
    catalog: &Catalog,
    spec: &ControlPlaneSpec,
    addon: &AddonUi,
) -> Option<String> {
    catalog
        .placements(spec)
        .remove(addon.component)
        .filter(|placement| placement.enabled)
        .map(|placement| placement.namespace)
}

/// An add-on UI the page links to.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddonLink {
    pub name: &'static str,
    pub component: &'static str,
    pub namespace: String,
    /// What to run on a machine with a kubeconfig for the cluster to open it.
    pub command: String,
}

/// The UIs of the add-ons `spec` enables, in the table's order. Read from the spec alone: the
/// page asks the cluster nothing more for them.
pub fn addon_links(
    catalog: &Catalog,
    control_plane: &str,
    spec: &ControlPlaneSpec,
) -> Vec<AddonLink> {
    ADDONS
        .iter()
        .filter_map(|addon| {
            let namespace = enabled_namespace(catalog, spec, addon)?;
            Some(AddonLink {
                name: addon.name,
                component: addon.component,
                namespace,
                command: open_command(addon, control_plane),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ComponentSpec;
    use crate::mesh::addons::find;

    fn spec(enabled: &[&str], namespace: Option<&str>) -> ControlPlaneSpec {
        ControlPlaneSpec {
            namespace: namespace.map(str::to_owned),
            components: enabled
                .iter()
                .map(|name| {
                    let component = ComponentSpec {
                        enabled: Some(true),
                        ..ComponentSpec::default()
                    };
                    ((*name).to_owned(), component)
                })
                .collect(),
            ..ControlPlaneSpec::default()
        }
    }

    #[test]
    fn links_name_the_enabled_addons_with_their_namespace_and_command() {
        let catalog = Catalog::builtin().unwrap();
        let spec = spec(&["grafana", "prometheus", "tracing"], Some("mesh"));
        let links = addon_links(&catalog, "canary", &spec);
        let names: Vec<_> = links.iter().map(|l| l.name).collect();
        assert_eq!(names, ["grafana", "jaeger", "prometheus"]);
        assert_eq!(links[1].component, "tracing");
        assert_eq!(links[1].namespace, "mesh");
        assert_eq!(
            links[1].command,
            "smm dashboard jaeger --control-plane canary"
        );
    }

    #[test]
    fn a_disabled_addon_has_no_link() {
        let catalog = Catalog::builtin().unwrap();
        let mut spec = spec(&[], None);
        spec.components.insert(
            "prometheus".to_owned(),
            ComponentSpec {
                enabled: Some(false),
                ..ComponentSpec::default()
            },
        );
        assert_eq!(addon_links(&catalog, "smm", &spec), []);
    }

    #[test]
    fn an_addon_without_its_component_is_not_enabled() {
        let catalog = Catalog::builtin().unwrap();
        let mut absent = *find("grafana").unwrap();
        absent.component = "no-such-component";
        assert_eq!(enabled_namespace(&catalog, &spec(&[], None), &absent), None);
    }
}
