//! `--dump-resources`: the exact objects a reconcile would apply, as deterministic multi-document
//! YAML, rendered without a cluster: each component's native objects, then its chart through
//! `helm template` with the same merged values the engine would use.

use crate::chart::ChartError;
use crate::engine::desired::DesiredComponent;
use crate::helm::{Helm, HelmError};
use crate::native;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{component}: {source}")]
    Chart {
        component: &'static str,
        #[source]
        source: ChartError,
    },
    #[error("{component}: {source}")]
    Helm {
        component: &'static str,
        #[source]
        source: HelmError,
    },
}

/// One component's objects as YAML documents, each preceded by a comment naming the component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedComponent {
    pub name: &'static str,
    pub yaml: String,
}

/// Renders the enabled components among `components`, in the order given (dependency order).
pub async fn render(
    helm: &Helm,
    components: &[&DesiredComponent<'_>],
) -> Result<Vec<RenderedComponent>, RenderError> {
    let mut rendered = Vec::new();
    for wanted in components.iter().filter(|d| d.enabled) {
        let name = wanted.name();
        let mut documents = native::to_yaml_documents(&wanted.native);
        let prepared =
            wanted
                .chart
                .prepare(&wanted.values)
                .map_err(|source| RenderError::Chart {
                    component: name,
                    source,
                })?;
        let templated = helm
            .template(
                &wanted.release,
                prepared.chart_path(),
                prepared.values_file(),
            )
            .await
            .map_err(|source| RenderError::Helm {
                component: name,
                source,
            })?;
        documents.extend(split_documents(&templated));
        let yaml = documents
            .iter()
            .map(|document| format!("---\n# smm component: {name}\n{}\n", document.trim_end()))
            .collect();
        rendered.push(RenderedComponent { name, yaml });
    }
    Ok(rendered)
}

/// Splits multi-document YAML at `---` lines, dropping documents that hold only comments (helm
/// emits those for templates that render to nothing).
fn split_documents(yaml: &str) -> Vec<String> {
    let mut documents = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else {
            let current = documents.last_mut().expect("never empty");
            current.push_str(line);
            current.push('\n');
        }
    }
    documents
        .into_iter()
        .filter(|document| {
            document
                .lines()
                .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_separators_and_empty_ones_go() {
        let yaml =
            "---\n# Source: a.yaml\nkind: A\n---\n# Source: empty.yaml\n---\nkind: B\nx: '---'\n";
        assert_eq!(
            split_documents(yaml),
            ["# Source: a.yaml\nkind: A\n", "kind: B\nx: '---'\n"]
        );
    }
}
