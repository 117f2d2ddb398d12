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
    /// The same documents, each without its comment.
    pub documents: Vec<String>,
}

/// Every component's documents as one stream, each object once: components in one namespace
/// each bring that namespace, and a stream that names an object twice makes Argo CD warn
/// (`RepeatedResourceWarning`) and kubectl apply it twice. An object is printed under the
/// first component that brings it.
pub fn single_stream(rendered: &[RenderedComponent]) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut stream = String::new();
    for component in rendered {
        for document in &component.documents {
            if seen.insert(document.as_str()) {
                stream.push_str(&document_text(component.name, document));
            }
        }
    }
    stream
}

/// One document of `component`, preceded by the comment naming it.
fn document_text(component: &str, document: &str) -> String {
    format!(
        "---\n# smm component: {component}\n{}\n",
        document.trim_end()
    )
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
        .map(|document| document_text(name, document))
        .collect();
    Ok(RenderedComponent {
        name,
        yaml,
        documents,
    })
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

    #[test]
    fn the_single_stream_names_each_object_once_under_its_first_component() {
        let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh}\n".to_owned();
        let component = |name, own: &str| RenderedComponent {
            name,
            yaml: String::new(),
            documents: vec![namespace.clone(), own.to_owned()],
        };
        let stream = single_stream(&[
            component("istiod", "kind: A\n"),
            component("grafana", "kind: B\n"),
        ]);
        assert_eq!(
            stream,
            "---\n# smm component: istiod\napiVersion: v1\nkind: Namespace\nmetadata: {name: mesh}\n\
             ---\n# smm component: istiod\nkind: A\n\
             ---\n# smm component: grafana\nkind: B\n"
        );
    }
}
