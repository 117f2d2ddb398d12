//! `--dump-resources`: the exact objects a reconcile would apply, as deterministic multi-document
//! YAML, rendered without a cluster: each component's native objects, then its chart through
//! `helm template` with the same merged values the engine would use.

use serde_json::Value;

use crate::api::objects::NativeObject;
use crate::cluster::objects;
use crate::helm::chart::{ChartError, EmbeddedChart};
use crate::helm::release::ReleaseRef;
use crate::helm::{Helm, HelmError};

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

/// What rendering one component takes: its objects applied natively, and its chart with the
/// merged values for its release.
#[derive(Clone, Copy, Debug)]
pub struct RenderRequest<'a> {
    pub name: &'static str,
    pub native: &'a [NativeObject],
    pub chart: &'a EmbeddedChart,
    pub values: &'a Value,
    pub release: &'a ReleaseRef,
}

/// How many `helm template` processes run at once.
const CONCURRENT_RENDERS: usize = 4;

/// Renders `components`, side by side (each is independent of the others: nothing is applied),
/// returned in the order given (dependency order).
pub async fn render(
    helm: &Helm,
    components: &[RenderRequest<'_>],
) -> Result<Vec<RenderedComponent>, RenderError> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(components.iter().map(|wanted| render_one(helm, wanted)))
        .buffered(CONCURRENT_RENDERS)
        .try_collect()
        .await
}

async fn render_one(
    helm: &Helm,
    wanted: &RenderRequest<'_>,
) -> Result<RenderedComponent, RenderError> {
    let name = wanted.name;
    let mut documents = objects::to_yaml_documents(wanted.native);
    let prepared = wanted
        .chart
        .prepare(wanted.values)
        .map_err(|source| RenderError::Chart {
            component: name,
            source,
        })?;
    let templated = helm
        .template(
            wanted.release,
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
    Ok(RenderedComponent { name, yaml })
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
