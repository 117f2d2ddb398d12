//! `smm crd`: the ControlPlane CRD as YAML, for `kubectl apply -f -` or a GitOps repository.

pub fn run() -> anyhow::Result<std::process::ExitCode> {
    print!("{}", smm::api::crd_yaml());
    Ok(std::process::ExitCode::SUCCESS)
}
