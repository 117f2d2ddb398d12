//! The add-ons that serve a web UI, as `smm dashboard ADDON` opens them and the web dashboard
//! names them: the one table to extend when an add-on is added.

/// A port of a Service: by name where our chart names it (its number is a value the user may
/// change), by number where only the number is fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServicePort {
    Named(&'static str),
    Number(u16),
}

impl std::fmt::Display for ServicePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServicePort::Named(name) => write!(f, "port {name}"),
            ServicePort::Number(number) => write!(f, "port {number}"),
        }
    }
}

/// One add-on's UI: the component that deploys it and the Service in front of its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddonUi {
    /// The name on the command line (`smm dashboard jaeger`), as `istioctl dashboard` names it.
    pub name: &'static str,
    /// The catalog component that deploys it.
    pub component: &'static str,
    /// The Service in the component's namespace whose pods serve the UI.
    pub service: &'static str,
    pub port: ServicePort,
    /// The local port `smm dashboard ADDON` listens on unless told otherwise: the UI's own, as
    /// `istioctl dashboard` uses, so a bookmark keeps working.
    pub local_port: u16,
    /// Where the UI starts, the path of the URL opened.
    pub path: &'static str,
}

/// Every add-on with a UI, in the order they are listed.
pub const ADDONS: &[AddonUi] = &[
    AddonUi {
        name: "grafana",
        component: "grafana",
        service: "grafana",
        port: ServicePort::Named("http"),
        local_port: 3000,
        path: "/",
    },
    AddonUi {
        name: "jaeger",
        component: "tracing",
        service: "tracing",
        port: ServicePort::Named("http-query"),
        local_port: 16686,
        path: "/",
    },
    AddonUi {
        name: "kiali",
        component: "kiali",
        service: "kiali",
        port: ServicePort::Number(20001),
        local_port: 20001,
        // Kiali serves under its web root, /kiali unless configured otherwise.
        path: "/kiali",
    },
    AddonUi {
        name: "prometheus",
        component: "prometheus",
        service: "prometheus",
        port: ServicePort::Named("http"),
        local_port: 9090,
        path: "/",
    },
];

/// The add-on called `name` on the command line.
pub fn find(name: &str) -> Option<&'static AddonUi> {
    ADDONS.iter().find(|addon| addon.name == name)
}

/// The command that opens `addon`'s UI for the ControlPlane `control_plane` (the flag only when
/// it is not the default one, as a user would type it).
pub fn open_command(addon: &AddonUi, control_plane: &str) -> String {
    if control_plane == crate::api::DEFAULT_CONTROL_PLANE {
        format!("smm dashboard {}", addon.name)
    } else {
        format!(
            "smm dashboard {} --control-plane {control_plane}",
            addon.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::catalog::Catalog;

    #[test]
    fn every_addon_is_a_component_of_the_catalog() {
        let catalog = Catalog::builtin().unwrap();
        for addon in ADDONS {
            assert!(
                catalog.get(addon.component).is_some(),
                "{} names component {}, which the catalog lacks",
                addon.name,
                addon.component
            );
        }
    }

    #[test]
    fn names_are_unique_and_found() {
        for addon in ADDONS {
            assert_eq!(find(addon.name), Some(addon));
        }
        assert_eq!(find("tracing"), None);
    }

    #[test]
    fn the_command_names_a_control_plane_only_when_it_is_not_the_default() {
        let jaeger = find("jaeger").unwrap();
        assert_eq!(open_command(jaeger, "smm"), "smm dashboard jaeger");
        assert_eq!(
            open_command(jaeger, "canary"),
            "smm dashboard jaeger --control-plane canary"
        );
    }
}
