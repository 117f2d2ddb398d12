//! The component graph as SVG, laid out on the server (so it is testable and needs no script):
//! one column per dependency depth, the waves the engine runs side by side, dependencies on the
//! left; each node says its phase in words as well as in colour.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::mesh::graph;

/// How a phase reads at a glance; the colour of a node. Never the only signal: the phase is
/// written in the node too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Tone {
    Good,
    Busy,
    Bad,
    Off,
}

impl Tone {
    /// Fill and stroke: light fills under near-black text keep a contrast above 4.5:1.
    fn colours(self) -> (&'static str, &'static str) {
        match self {
            Tone::Good => ("#dcf2dc", "#1d6b2f"),
            Tone::Busy => ("#fdf0cf", "#8a5a00"),
            Tone::Bad => ("#fbdcda", "#a8201a"),
            Tone::Off => ("#ececec", "#5c5c5c"),
        }
    }
}

/// One component as the graph draws it.
#[derive(Clone, Debug)]
pub struct GraphNode {
    pub name: &'static str,
    pub depends_on: &'static [&'static str],
    pub phase: String,
    pub tone: Tone,
}

impl graph::Node for GraphNode {
    fn name(&self) -> &'static str {
        self.name
    }
    fn depends_on(&self) -> &'static [&'static str] {
        self.depends_on
    }
}

const NODE_WIDTH: u32 = 160;
const NODE_HEIGHT: u32 = 52;
const COLUMN_GAP: u32 = 56;
const ROW_GAP: u32 = 16;
const MARGIN: u32 = 8;

/// The SVG document for `nodes`, which must be in dependency order (as the catalog keeps them).
pub fn render(nodes: &[GraphNode]) -> String {
    let columns = graph::waves(&nodes.iter().collect::<Vec<_>>(), false);
    let mut position: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for (column, wave) in columns.iter().enumerate() {
        for (row, node) in wave.iter().enumerate() {
            let x = MARGIN + column as u32 * (NODE_WIDTH + COLUMN_GAP);
            let y = MARGIN + row as u32 * (NODE_HEIGHT + ROW_GAP);
            position.insert(node.name, (x, y));
        }
    }
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let width = 2 * MARGIN + (columns.len() as u32).max(1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP;
    let height = 2 * MARGIN + rows.max(1) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP;

    let mut svg = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason only.
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-labelledby="graph-title" class="graph"><title id="graph-title">Components and their dependencies, dependencies on the left</title><defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" markerHeight="8" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#444"/></marker></defs>"##
    );
    for node in nodes {
        let (x, y) = position[node.name];
        for dependency in node.depends_on {
            let Some(&(dx, dy)) = position.get(dependency) else {
                continue;
            };
            let _ = write!(
                svg,
                r##"<line class="edge" data-from="{}" data-to="{}" x1="{}" y1="{}" x2="{}" y2="{}" stroke="#444" stroke-width="1.5" marker-end="url(#arrow)"/>"##,
                escape(dependency),
                escape(node.name),
                dx + NODE_WIDTH,
                dy + NODE_HEIGHT / 2,
                x,
                y + NODE_HEIGHT / 2
            );
        }
    }
    for node in nodes {
        let (x, y) = position[node.name];
        let (fill, stroke) = node.tone.colours();
        let dash = if node.tone == Tone::Off {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let name = escape(node.name);
        let phase = escape(&node.phase);
        let _ = write!(
            svg,
            r##"<g class="node" data-component="{name}" data-phase="{phase}"><title>{name}: {phase}</title><rect x="{x}" y="{y}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6" fill="{fill}" stroke="{stroke}" stroke-width="2"{dash}/><text x="{tx}" y="{y1}" text-anchor="middle" font-size="15" font-weight="600" fill="#111">{name}</text><text x="{tx}" y="{y2}" text-anchor="middle" font-size="13" fill="#222">{phase}</text></g>"##,
            tx = x + NODE_WIDTH / 2,
            y1 = y + 22,
            y2 = y + 41,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Text made safe for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &'static str, depends_on: &'static [&'static str], phase: &str) -> GraphNode {
        GraphNode {
            name,
            depends_on,
            phase: phase.to_owned(),
            tone: Tone::Good,
        }
    }

    /// The `x` of a node's rectangle in the rendered SVG.
    fn column_x(svg: &str, name: &str) -> u32 {
        let group = svg
            .split(&format!(r#"data-component="{name}""#))
            .nth(1)
            .unwrap_or_else(|| panic!("{name} is drawn: {svg}"));
        let x = group.split(r#"<rect x=""#).nth(1).unwrap();
        x[..x.find('"').unwrap()].parse().unwrap()
    }

    #[test]
    fn columns_follow_dependency_depth_and_phases_are_written() {
        let nodes = [
            node("base", &[], "Available"),
            node("istiod", &["base"], "Upgrading"),
            node("prometheus", &[], "Failed"),
            node("gateway", &["istiod"], "Not installed"),
            node("grafana", &["prometheus"], "Available"),
        ];
        let svg = render(&nodes);
        assert_eq!(column_x(&svg, "base"), column_x(&svg, "prometheus"));
        assert_eq!(column_x(&svg, "istiod"), column_x(&svg, "grafana"));
        assert!(column_x(&svg, "gateway") > column_x(&svg, "istiod"));
        assert!(column_x(&svg, "istiod") > column_x(&svg, "base"));
        assert!(svg.contains(r#"data-from="base" data-to="istiod""#));
        assert!(svg.contains(r#"data-from="istiod" data-to="gateway""#));
        assert!(svg.contains(">Upgrading</text>"));
        assert!(svg.contains(r#"data-phase="Not installed""#));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    /// The built-in catalog's graph: the ambient profile's node agents come after istiod, in the
    /// order they are installed (istio-cni before ztunnel, which needs its redirection).
    #[test]
    fn the_node_agents_are_drawn_after_istiod() {
        let catalog = crate::mesh::catalog::Catalog::builtin().unwrap();
        let nodes: Vec<GraphNode> = catalog
            .components()
            .iter()
            .map(|component| GraphNode {
                name: component.name,
                depends_on: component.depends_on,
                phase: "Not installed".to_owned(),
                tone: Tone::Off,
            })
            .collect();
        let svg = render(&nodes);
        assert!(column_x(&svg, "istio-cni") > column_x(&svg, "istiod"));
        assert!(column_x(&svg, "ztunnel") > column_x(&svg, "istio-cni"));
        assert!(svg.contains(r#"data-from="istiod" data-to="istio-cni""#));
        assert!(svg.contains(r#"data-from="istio-cni" data-to="ztunnel""#));
        // Every component has its node, whole inside the drawing.
        let width: u32 = svg
            .split(r#"width=""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        for component in catalog.components() {
            assert!(
                column_x(&svg, component.name) + NODE_WIDTH <= width,
                "{}",
                component.name
            );
        }
    }

    #[test]
    fn text_is_escaped() {
        let svg = render(&[node("a", &[], "Failed: <\"x\" & 'y'>")]);
        assert!(svg.contains("Failed: &lt;&quot;x&quot; &amp; &#39;y&#39;&gt;"));
        assert!(!svg.contains("<\"x\""));
    }
}
