//! `smm crd`: the ControlPlane CRD as YAML, for `kubectl apply -f -` or a GitOps repository.

pub fn run() -> anyhow::Result<()> {
    print!("{}", smm::api::crd_yaml());
    Ok(())
}
