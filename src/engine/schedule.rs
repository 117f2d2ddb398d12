//! The order of one round, as a pure function of the dependency graph, what has begun and what
//! has finished: removals first, dependents before what they depend on; then installs and
//! upgrades, after what they depend on. An entry may begin as soon as everything it must follow
//! has finished, so no wave waits for its slowest member. How many run at once, and what a step
//! does, is the caller's business.

use crate::mesh::graph::{self, Node};

/// One component's place in a round.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry<N> {
    pub node: N,
    /// Being removed (disabled), rather than installed or upgraded.
    pub removing: bool,
}

#[derive(Debug)]
pub(super) struct Schedule<N> {
    entries: Vec<Entry<N>>,
    /// For each entry, the entries that must have finished before it begins.
    follows: Vec<Vec<usize>>,
    begun: Vec<bool>,
    finished: Vec<bool>,
}

impl<N: Node + Copy> Schedule<N> {
    /// A round over `in_scope` (in dependency order); `enabled` tells installs from removals.
    pub fn new(in_scope: &[N], enabled: impl Fn(&N) -> bool) -> Self {
        let removals: Vec<N> = in_scope
            .iter()
            .rev()
            .filter(|node| !enabled(node))
            .copied()
            .collect();
        let installs: Vec<N> = in_scope
            .iter()
            .filter(|node| enabled(node))
            .copied()
            .collect();
        let first_install = removals.len();
        let mut follows = graph::must_follow(&removals, true);
        // Installs begin once every removal has finished: nothing on its way out runs beside
        // what is on its way in.
        follows.extend(
            graph::must_follow(&installs, false)
                .into_iter()
                .map(|earlier| {
                    (0..first_install)
                        .chain(earlier.into_iter().map(|index| index + first_install))
                        .collect()
                }),
        );
        let entries: Vec<Entry<N>> = removals
            .into_iter()
            .map(|node| Entry {
                node,
                removing: true,
            })
            .chain(installs.into_iter().map(|node| Entry {
                node,
                removing: false,
            }))
            .collect();
        Self {
            begun: vec![false; entries.len()],
            finished: vec![false; entries.len()],
            entries,
            follows,
        }
    }

    /// The first entry not begun whose predecessors have all finished, now marked begun;
    /// `None` when nothing may begin until something running finishes (or all has begun).
    pub fn begin_next(&mut self) -> Option<(usize, Entry<N>)> {
        let index = (0..self.entries.len()).find(|&index| {
            !self.begun[index]
                && self.follows[index]
                    .iter()
                    .all(|&earlier| self.finished[earlier])
        })?;
        self.begun[index] = true;
        Some((index, self.entries[index]))
    }

    pub fn finish(&mut self, index: usize) {
        self.finished[index] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug)]
    struct Component(&'static str, &'static [&'static str], bool);

    impl Node for Component {
        fn name(&self) -> &'static str {
            self.0
        }
        fn depends_on(&self) -> &'static [&'static str] {
            self.1
        }
    }

    const BASE: Component = Component("base", &[], true);
    const ISTIOD: Component = Component("istiod", &["base"], true);
    const GATEWAY: Component = Component("gateway", &["istiod"], true);
    const PROMETHEUS: Component = Component("prometheus", &[], true);

    fn schedule(components: &[Component]) -> Schedule<Component> {
        Schedule::new(components, |component| component.2)
    }

    /// Begins everything that may begin now, by name.
    fn begin_all(schedule: &mut Schedule<Component>) -> Vec<(usize, &'static str)> {
        std::iter::from_fn(|| schedule.begin_next())
            .map(|(index, entry)| (index, entry.node.0))
            .collect()
    }

    #[test]
    fn independent_components_begin_together_and_dependents_after_their_dependencies() {
        let mut round = schedule(&[BASE, ISTIOD, GATEWAY, PROMETHEUS]);
        assert_eq!(begin_all(&mut round), [(0, "base"), (3, "prometheus")]);
        round.finish(3);
        assert_eq!(begin_all(&mut round), []);
        round.finish(0);
        assert_eq!(begin_all(&mut round), [(1, "istiod")]);
        round.finish(1);
        assert_eq!(begin_all(&mut round), [(2, "gateway")]);
        round.finish(2);
        assert!(round.begin_next().is_none());
    }

    #[test]
    fn removals_go_first_dependents_before_what_they_use_and_installs_wait_for_them() {
        let removed = |c: Component| Component(c.0, c.1, false);
        let mut round = schedule(&[removed(BASE), removed(ISTIOD), removed(GATEWAY), PROMETHEUS]);
        assert_eq!(begin_all(&mut round), [(0, "gateway")]);
        round.finish(0);
        assert_eq!(begin_all(&mut round), [(1, "istiod")]);
        round.finish(1);
        let (index, entry) = round.begin_next().unwrap();
        assert_eq!((index, entry.node.0, entry.removing), (2, "base", true));
        assert!(
            round.begin_next().is_none(),
            "prometheus waits for the removals"
        );
        round.finish(2);
        let (index, entry) = round.begin_next().unwrap();
        assert_eq!(
            (index, entry.node.0, entry.removing),
            (3, "prometheus", false)
        );
    }

    #[test]
    fn an_entry_finished_without_running_lets_what_follows_it_begin() {
        let mut round = schedule(&[BASE, ISTIOD]);
        let (base, _) = round.begin_next().unwrap();
        // The caller skips it (it failed earlier in the run) and finishes it at once.
        round.finish(base);
        assert_eq!(begin_all(&mut round), [(1, "istiod")]);
    }
}
