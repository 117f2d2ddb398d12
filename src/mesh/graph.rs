//! The dependency graph between components: every walk over dependencies (ordering, cycles,
//! closures, dependents, which earlier components each one must follow, as the engine schedules
//! them, and the waves the dashboard draws as columns) lives here, once.
//!
//! The functions take anything that names its dependencies ([`Node`]): catalog components and
//! the engine's desired components alike. Inputs called `ordered` must already be in
//! dependency order (dependencies first), as the catalog keeps them.

use std::collections::{BTreeMap, BTreeSet};

/// A vertex of the graph: a name and the names it depends on.
pub trait Node {
    fn name(&self) -> &'static str;
    fn depends_on(&self) -> &'static [&'static str];
}

impl<N: Node + ?Sized> Node for &N {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn depends_on(&self) -> &'static [&'static str] {
        (**self).depends_on()
    }
}

/// Indices of `nodes` with dependencies first, or the members of a cycle (its first member
/// repeated at the end). Kahn's algorithm, taking the earliest declared ready node each step,
/// so independent nodes keep their declaration order. Every dependency must name a node.
pub fn dependency_order<N: Node>(nodes: &[N]) -> Result<Vec<usize>, Vec<&'static str>> {
    let index_of: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (node.name(), index))
        .collect();
    let mut remaining: Vec<usize> = nodes.iter().map(|n| n.depends_on().len()).collect();
    let mut done = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    while order.len() < nodes.len() {
        let Some(next) = (0..nodes.len()).find(|&i| !done[i] && remaining[i] == 0) else {
            return Err(find_cycle(nodes, &done, &index_of));
        };
        done[next] = true;
        order.push(next);
        for (index, node) in nodes.iter().enumerate() {
            if node.depends_on().contains(&nodes[next].name()) {
                remaining[index] -= 1;
            }
        }
    }
    Ok(order)
}

/// Follows dependencies among the nodes left over by Kahn's algorithm until one repeats; every
/// leftover node has an unfinished dependency, so the walk must close a cycle.
fn find_cycle<N: Node>(
    nodes: &[N],
    done: &[bool],
    index_of: &BTreeMap<&str, usize>,
) -> Vec<&'static str> {
    let start = (0..nodes.len())
        .find(|&i| !done[i])
        .expect("a leftover node");
    let mut path = vec![start];
    loop {
        let current = &nodes[*path.last().expect("non-empty")];
        let next = current
            .depends_on()
            .iter()
            .map(|dependency| index_of[dependency])
            .find(|&index| !done[index])
            .expect("a leftover node has an unfinished dependency");
        if let Some(position) = path.iter().position(|&index| index == next) {
            let mut cycle: Vec<&'static str> =
                path[position..].iter().map(|&i| nodes[i].name()).collect();
            cycle.push(nodes[next].name());
            return cycle;
        }
        path.push(next);
    }
}

/// The nodes that depend on `name`, directly or through others.
pub fn dependents_of<N: Node>(ordered: &[N], name: &str) -> BTreeSet<&'static str> {
    let mut found: BTreeSet<&'static str> = BTreeSet::new();
    // Dependents come after their dependencies, so one forward pass sees every chain.
    for node in ordered {
        if node
            .depends_on()
            .iter()
            .any(|dependency| *dependency == name || found.contains(dependency))
        {
            found.insert(node.name());
        }
    }
    found
}

/// `names` and everything they depend on, directly or through others.
pub fn with_dependencies<N: Node>(ordered: &[N], names: &[&'static str]) -> BTreeSet<&'static str> {
    let mut found: BTreeSet<&'static str> = names.iter().copied().collect();
    // Dependencies come before their dependents, so one backward pass sees every chain.
    for node in ordered.iter().rev() {
        if found.contains(node.name()) {
            found.extend(node.depends_on().iter().copied());
        }
    }
    found
}

/// For each of `nodes` (in dependency order), the positions of the earlier nodes it must
/// follow: its dependencies among `nodes`. When `removing`, `nodes` come in reverse order and a
/// node follows its dependents instead, so they go first.
pub fn must_follow<N: Node>(nodes: &[N], removing: bool) -> Vec<Vec<usize>> {
    nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            (0..index)
                .filter(|&earlier| {
                    let earlier = &nodes[earlier];
                    if removing {
                        earlier.depends_on().contains(&node.name())
                    } else {
                        node.depends_on().contains(&earlier.name())
                    }
                })
                .collect()
        })
        .collect()
}

/// Splits `nodes` (in dependency order) into waves that can run side by side: a node joins the
/// wave after the last of the nodes it must follow ([`must_follow`]).
pub fn waves<N: Node + Copy>(nodes: &[N], removing: bool) -> Vec<Vec<N>> {
    let mut wave_of: Vec<usize> = Vec::with_capacity(nodes.len());
    for follows in must_follow(nodes, removing) {
        let wave = follows
            .iter()
            .map(|&earlier| wave_of[earlier] + 1)
            .max()
            .unwrap_or(0);
        wave_of.push(wave);
    }
    let mut waves: Vec<Vec<N>> = Vec::new();
    for (node, wave) in nodes.iter().zip(wave_of) {
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(*node);
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug)]
    struct N(&'static str, &'static [&'static str]);

    impl Node for N {
        fn name(&self) -> &'static str {
            self.0
        }
        fn depends_on(&self) -> &'static [&'static str] {
            self.1
        }
    }

    /// The shape of the builtin mesh.
    const MESH: [N; 7] = [
        N("base", &[]),
        N("istiod", &["base"]),
        N("ingress-gateway", &["istiod"]),
        N("egress-gateway", &["istiod"]),
        N("prometheus", &[]),
        N("grafana", &["prometheus"]),
        N("tracing", &[]),
    ];

    fn names(waves: Vec<Vec<N>>) -> Vec<Vec<&'static str>> {
        waves
            .into_iter()
            .map(|wave| wave.into_iter().map(|n| n.0).collect())
            .collect()
    }

    #[test]
    fn independent_nodes_share_a_wave_and_removal_reverses_it() {
        assert_eq!(
            names(waves(&MESH, false)),
            [
                vec!["base", "prometheus", "tracing"],
                vec!["istiod", "grafana"],
                vec!["ingress-gateway", "egress-gateway"],
            ]
        );
        let reversed: Vec<N> = MESH.iter().rev().copied().collect();
        assert_eq!(
            names(waves(&reversed, true)),
            [
                vec!["tracing", "grafana", "egress-gateway", "ingress-gateway"],
                vec!["prometheus", "istiod"],
                vec!["base"],
            ]
        );
    }

    #[test]
    fn closures_follow_chains_both_ways() {
        let up: Vec<_> = with_dependencies(&MESH, &["ingress-gateway"])
            .into_iter()
            .collect();
        assert_eq!(up, ["base", "ingress-gateway", "istiod"]);
        let down: Vec<_> = dependents_of(&MESH, "base").into_iter().collect();
        assert_eq!(down, ["egress-gateway", "ingress-gateway", "istiod"]);
        assert!(dependents_of(&MESH, "tracing").is_empty());
    }

    #[test]
    fn order_puts_dependencies_first_or_names_a_cycle() {
        let shuffled = [
            N("grafana", &["prometheus"]),
            N("istiod", &["base"]),
            N("base", &[]),
            N("prometheus", &[]),
        ];
        let order: Vec<_> = dependency_order(&shuffled)
            .unwrap()
            .into_iter()
            .map(|i| shuffled[i].0)
            .collect();
        assert_eq!(order, ["base", "istiod", "prometheus", "grafana"]);
        let cyclic = [N("a", &["b"]), N("b", &["a"]), N("c", &[])];
        assert_eq!(dependency_order(&cyclic).unwrap_err(), ["a", "b", "a"]);
    }
}
