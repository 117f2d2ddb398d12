//! `smm dashboard`: the web view served from the user's machine with the user's kubeconfig, on
//! 127.0.0.1 at a free port, behind a random token that only the printed URL carries; or, with
//! an add-on's name, that add-on's own UI through a port-forward (`istioctl dashboard ADDON`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use smm::api::DEFAULT_CONTROL_PLANE;
use smm::cluster::port_forward;
use smm::dashboard::{self, Access, Dashboard, Token, addon_target};
use smm::mesh::addons::{self, ADDONS, AddonUi};
use smm::mesh::catalog::Catalog;
use tokio_util::sync::CancellationToken;

use super::args::GlobalArgs;

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Open this add-on's own UI instead, through a port-forward to one of its ready pods
    #[arg(value_name = "ADDON", value_parser = addon_name)]
    addon: Option<&'static AddonUi>,
    /// The ControlPlane the page opens on (the others can be picked in the page), or whose
    /// add-on is opened
    #[arg(long = "control-plane", value_name = "NAME", default_value = DEFAULT_CONTROL_PLANE, value_parser = super::args::control_plane_flag)]
    control_plane: String,
    /// Only print the URL; do not open a browser
    #[arg(long, visible_alias = "no-browser")]
    no_open: bool,
    /// The local port to listen on, 0 for a free one (default: a free one for the web view, the
    /// add-on's usual port for an add-on, as `istioctl dashboard` uses)
    #[arg(long)]
    port: Option<u16>,
    /// The local address an add-on's forward listens on (the web view is on 127.0.0.1 only)
    #[arg(long, default_value = "127.0.0.1", requires = "addon")]
    address: IpAddr,
}

/// An add-on named on the command line; the error lists them all.
fn addon_name(name: &str) -> Result<&'static AddonUi, String> {
    addons::find(name).ok_or_else(|| {
        let names: Vec<&str> = ADDONS.iter().map(|a| a.name).collect();
        format!("no add-on {name:?}; expected one of {}", names.join(", "))
    })
}

pub async fn run(
    global: &GlobalArgs,
    catalog: &Arc<Catalog>,
    args: &DashboardArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(addon) = args.addon {
        return run_addon(global, catalog, args, addon).await;
    }
    let client = global.client().await?;
    let view = Arc::new(Dashboard::new(
        client,
        global.helm()?,
        catalog.clone(),
        Some(args.control_plane.clone()),
    ));
    // Loopback only: the token keeps other local users out, nothing keeps the network out.
    let port = args.port.unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let address = listener.local_addr()?;
    let token = Token::generate(address.port())?;
    let url = format!("http://{address}/?token={}", token.secret());
    println!("{url}");
    eprintln!(
        "smm dashboard: serving ControlPlane {} at the URL above; Ctrl-C stops it",
        args.control_plane
    );
    // Kept until the server stops: the browser may read the file late.
    let launcher = if args.no_open {
        None
    } else {
        open_browser(&url)
    };
    let shutdown = async {
        // An error here means no signal handler could be installed: then only a kill stops us.
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("smm dashboard: stopped");
    };
    dashboard::serve(listener, view, Access::Direct(token), shutdown).await?;
    drop(launcher);
    Ok(ExitCode::SUCCESS)
}

/// `smm dashboard ADDON`: forwards a local port to a ready pod of the add-on until Ctrl-C.
async fn run_addon(
    global: &GlobalArgs,
    catalog: &Catalog,
    args: &DashboardArgs,
    addon: &AddonUi,
) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    let target = addon_target(&client, catalog, &args.control_plane, addon).await?;
    let listener =
        port_forward::listen(args.address, args.port.unwrap_or(addon.local_port)).await?;
    let url = format!("http://{}{}", listener.local_addr()?, addon.path);
    println!("{url}");
    eprintln!(
        "smm dashboard: {} at the URL above, forwarded to pod {}/{} port {} through the API server; Ctrl-C stops it",
        addon.name, target.namespace, target.pod, target.port
    );
    let launcher = if args.no_open {
        None
    } else {
        open_browser(&url)
    };
    let stop = CancellationToken::new();
    let on_interrupt = stop.clone();
    tokio::spawn(async move {
        // An error here means no signal handler could be installed: then only a kill stops us.
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("smm dashboard: stopped");
        on_interrupt.cancel();
    });
    port_forward::forward(client, listener, target, stop).await?;
    drop(launcher);
    Ok(ExitCode::SUCCESS)
}

/// Opens the URL with the desktop's opener, if there is one. The URL is not passed on the
/// command line, where every local user could read the token in the process list: the opener
/// gets a file only we can read that redirects to it. Returns the directory holding the file.
fn open_browser(url: &str) -> Option<tempfile::TempDir> {
    let Some(opener) = ["xdg-open", "open"]
        .iter()
        .find_map(|name| which::which(name).ok())
    else {
        eprintln!("smm dashboard: no xdg-open or open found; open the URL yourself");
        return None;
    };
    match launch(&opener, url) {
        Ok(dir) => Some(dir),
        Err(err) => {
            eprintln!("smm dashboard: could not open a browser ({err:#}); open the URL yourself");
            None
        }
    }
}

fn launch(opener: &Path, url: &str) -> anyhow::Result<tempfile::TempDir> {
    // tempfile creates the directory readable by its owner only.
    let dir = tempfile::Builder::new().prefix("smm-dashboard").tempdir()?;
    let page: PathBuf = dir.path().join("open.html");
    std::fs::write(
        &page,
        format!(
            "<!doctype html><meta http-equiv=\"refresh\" content=\"0; url={url}\"><a href=\"{url}\">smm dashboard</a>\n"
        ),
    )?;
    std::process::Command::new(opener)
        .arg(&page)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", opener.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    fn parse(args: &[&str]) -> Result<DashboardArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["smm", "dashboard"], args].concat())?;
        match cli.command {
            Command::Dashboard(args) => Ok(args),
            _ => unreachable!("smm dashboard parses as the dashboard command"),
        }
    }

    #[test]
    fn an_addon_takes_its_name_a_listen_address_and_no_browser() {
        let args = parse(&["jaeger", "--address", "0.0.0.0", "--no-browser"]).unwrap();
        assert_eq!(args.addon.map(|a| a.component), Some("tracing"));
        assert_eq!(args.address, IpAddr::from([0, 0, 0, 0]));
        assert!(args.no_open);
        assert_eq!(args.port, None);
    }

    #[test]
    fn the_web_view_stays_on_loopback_and_an_unknown_addon_names_the_known_ones() {
        let err = parse(&["--address", "0.0.0.0"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse(&["tracing"]).unwrap_err().to_string();
        assert!(
            err.contains("expected one of grafana, jaeger, kiali, prometheus"),
            "{err}"
        );
    }
}
