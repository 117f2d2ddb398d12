//! What the campaign injects: the kinds of fault, their parameters, and the seeded plan that
//! draws fault `i` of a seed.

use std::fmt;

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (splitmix64): the same seed gives the same faults everywhere.

pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in lo..=hi.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// The faults.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
}

impl Signal {
    pub fn number(self) -> i32 {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Kill => "SIGKILL",
            Signal::Term => "SIGTERM",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CliOp {
    /// `smm install` of every component but the gateways on a ControlPlane with everything off.
    InstallAll,
    /// `smm install istiod --set autoscaleEnabled=false,replicaCount=R` on an installed istiod; the next run repeats it.
    Upgrade { replicas: u64 },
    /// The same upgrade, but the user then goes back to the spec before it (`smm reconcile -f`).
    UpgradeReverted { replicas: u64 },
    /// `smm uninstall -a` on an installed mesh.
    UninstallAll,
    /// istiod installed in place, the spec switched to RevisionBased at patch `patch` of the
    /// embedded line, then `smm install istiod`: a new revision beside the old, the tags moved.
    RevisionUpgrade { patch: u64 },
}

/// What strikes smm while its helm is frozen inside the upgrade (see [`Fault::HeldInHelm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelmStrike {
    /// smm is told to stop (SIGTERM): it must stop its frozen helm and exit.
    Term,
    /// smm is killed (SIGKILL), and its orphaned helm resumed (SIGCONT) `resume_ms` later,
    /// within helm's stop grace: it must stop then, as told when smm died.
    Kill { resume_ms: u64 },
    /// smm's reconcile lease is deleted (a holder whose lease is taken at once, as a new
    /// operator leader takes its former leader's) and the same command started at once: the
    /// first must stop its frozen helm and exit before the second starts a helm of its own.
    LeaseTaken,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A signal to the CLI `after_ms` into the operation. `gate_ms`: workloads wait for a node
    /// label (install, upgrade) or a Deployment's deletion is held (uninstall) until then.
    Cli {
        op: CliOp,
        signal: Signal,
        after_ms: u64,
        gate_ms: Option<u64>,
        /// For UninstallAll: which rendered Deployment is held (modulo their number).
        hold: u64,
    },
    /// A signal to the leading operator during its reconcile; then another operator (or the
    /// same identity restarted) takes over.
    Operator {
        signal: Signal,
        after_ms: u64,
        gate_ms: Option<u64>,
        same_identity: bool,
    },
    /// `scripts/cluster.sh restart-apiserver SECONDS` `after_ms` into `smm install -a`.
    ApiServerRestart {
        after_ms: u64,
        outage_s: u64,
        gate_ms: Option<u64>,
    },
    /// `smm reconcile -f` of a spec the operator is reconciling (istiod upgraded to `replicas`)
    /// `offset_ms` after the operator was told.
    CliBesideOperator { replicas: u64, offset_ms: u64 },
    /// Two `smm install` of different components on one ControlPlane at once.
    ConcurrentInstalls {
        first: &'static str,
        second: &'static str,
        offset_ms: u64,
    },
    /// A hand-made helm command on a managed release, then `smm reconcile -f`.
    HandHelm { rollback: bool, replicas: u64 },
    /// A second ControlPlane on the first one's mesh namespace.
    SecondControlPlane { replicas: u64 },
    /// The upgrade to `replicas` frozen (SIGSTOP) holding its lease past the lease's duration,
    /// the same command run meanwhile, then the frozen one resumed (SIGCONT).
    FrozenHolder { replicas: u64 },
    /// The upgrade to `replicas`, its helm frozen (SIGSTOP) once the release is marked pending
    /// and held `hold_ms`; then `strike`.
    HeldInHelm {
        strike: HelmStrike,
        hold_ms: u64,
        replicas: u64,
    },
}

const KINDS: usize = 12;

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// How istiod's pods are held back until `gate_ms`, if they are.
fn node_gate(gate_ms: Option<u64>) -> String {
    gate_ms.map_or(String::new(), |ms| {
        format!(" (istiod's pods wait {} for a node)", secs(ms))
    })
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::Cli {
                op,
                signal,
                after_ms,
                gate_ms,
                ..
            } => write_cli(f, op, signal, after_ms, gate_ms),
            Fault::Operator {
                signal,
                after_ms,
                gate_ms,
                same_identity,
            } => write!(
                f,
                "{signal} the operator {} into its reconcile{}, {}",
                secs(after_ms),
                node_gate(gate_ms),
                if same_identity {
                    "restarted with the same identity"
                } else {
                    "a second operator takes over"
                }
            ),
            Fault::ApiServerRestart {
                after_ms,
                outage_s,
                gate_ms,
            } => write!(
                f,
                "API server down {outage_s}s from {} into smm install -a{}",
                secs(after_ms),
                node_gate(gate_ms)
            ),
            Fault::CliBesideOperator {
                replicas,
                offset_ms,
            } => write!(
                f,
                "smm reconcile {} after the operator was told to upgrade istiod to replicaCount={replicas}",
                secs(offset_ms)
            ),
            Fault::ConcurrentInstalls {
                first,
                second,
                offset_ms,
            } => write!(
                f,
                "smm install {first} and smm install {second} {} later, on one ControlPlane",
                secs(offset_ms)
            ),
            Fault::HandHelm {
                rollback: false,
                replicas,
            } => write!(
                f,
                "hand-made helm upgrade istiod --reuse-values --set replicaCount={replicas}, then smm reconcile"
            ),
            Fault::HandHelm {
                rollback: true,
                replicas,
            } => write!(
                f,
                "hand-made helm rollback istiod 1 after smm set replicaCount={replicas}, then smm reconcile"
            ),
            Fault::SecondControlPlane { replicas } => write!(
                f,
                "a second ControlPlane (istiod replicaCount={replicas}) on the first one's mesh namespace"
            ),
            Fault::FrozenHolder { replicas } => write!(
                f,
                "SIGSTOP the upgrade to replicaCount={replicas} holding its lease, past the lease; the same upgrade run meanwhile; then SIGCONT"
            ),
            Fault::HeldInHelm {
                strike,
                hold_ms,
                replicas,
            } => {
                write!(
                    f,
                    "helm's upgrade of istiod to replicaCount={replicas} frozen (SIGSTOP) once the release is pending, for {}, then ",
                    secs(hold_ms)
                )?;
                match strike {
                    HelmStrike::Term => f.write_str("SIGTERM smm"),
                    HelmStrike::Kill { resume_ms } => write!(
                        f,
                        "SIGKILL smm and SIGCONT the orphaned helm {} later",
                        secs(resume_ms)
                    ),
                    HelmStrike::LeaseTaken => {
                        f.write_str("smm's lease deleted and the same upgrade started at once")
                    }
                }
            }
        }
    }
}

/// A [`Fault::Cli`] in words.
fn write_cli(
    f: &mut fmt::Formatter<'_>,
    op: CliOp,
    signal: Signal,
    after_ms: u64,
    gate_ms: Option<u64>,
) -> fmt::Result {
    let command = match op {
        CliOp::InstallAll => "smm install (every component but the gateways)".to_owned(),
        CliOp::Upgrade { replicas } | CliOp::UpgradeReverted { replicas } => {
            format!(
                "the upgrade smm install istiod --set autoscaleEnabled=false,replicaCount={replicas}"
            )
        }
        CliOp::UninstallAll => "smm uninstall -a".to_owned(),
        CliOp::RevisionUpgrade { patch } => format!(
            "the revision-based upgrade to {}.{patch} (smm install istiod)",
            smm::mesh::revisions::strategy::embedded_line()
        ),
    };
    write!(f, "{signal} {command} after {}", secs(after_ms))?;
    match (op, gate_ms) {
        (CliOp::UninstallAll, Some(ms)) => {
            write!(f, " (a Deployment's deletion held for {})", secs(ms))?
        }
        (CliOp::InstallAll, Some(_)) => f.write_str(&node_gate(gate_ms))?,
        (_, Some(ms)) => write!(f, " (a pod quota holds new pods for {})", secs(ms))?,
        (_, None) => {}
    }
    if let CliOp::UpgradeReverted { .. } = op {
        write!(f, ", then the spec before it reconciled")?;
    }
    Ok(())
}

/// Fault `index` (0-based) of `seed`. The kinds come in blocks of KINDS, each block a shuffle of
/// every kind, so any KINDS consecutive faults of a block cover them all; the parameters come from
/// a generator of the fault's own, so fault i does not depend on how many are run. The variants of
/// the operator, hand-made helm and concurrent writer faults alternate between blocks, so both
/// appear in 24 faults (two blocks); the strikes of the held-in-helm fault turn over between
/// blocks.
pub fn plan(seed: u64, index: usize) -> Fault {
    let block = (index / KINDS) as u64;
    let mut order: Vec<usize> = (0..KINDS).collect();
    let mut shuffle = SplitMix64(seed ^ block.wrapping_mul(0xA076_1D64_78BD_642F));
    for i in (1..KINDS).rev() {
        let j = shuffle.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let kind = order[index % KINDS];
    let mut rng = SplitMix64(seed ^ (index as u64 + 1).wrapping_mul(0xE703_7ED1_A0B4_28DB));
    let signal = if rng.percent(50) {
        Signal::Kill
    } else {
        Signal::Term
    };
    let after_ms = rng.between(200, 4000);
    // Most faults hold the operation past the moment they strike (new pods wait on a quota, a
    // deletion on a finalizer), so it is still running when hit: smm itself finishes in well
    // under a second once the cluster is ready. A few let it finish first.
    let outlast = |rng: &mut SplitMix64, after_ms: u64| {
        rng.percent(85).then(|| after_ms + rng.between(500, 3000))
    };
    let gate_ms = outlast(&mut rng, after_ms);
    let replicas = rng.between(2, 3);
    let hold = rng.next() % 64;
    let patch = rng.between(10, 99);
    let cli = |op| Fault::Cli {
        op,
        signal,
        after_ms,
        gate_ms,
        hold,
    };
    match kind {
        0 => cli(CliOp::InstallAll),
        1 => cli(CliOp::Upgrade { replicas }),
        2 => cli(CliOp::UpgradeReverted { replicas }),
        3 => cli(CliOp::UninstallAll),
        4 => {
            let after_ms = rng.between(500, 5000);
            Fault::Operator {
                signal,
                after_ms,
                gate_ms: outlast(&mut rng, after_ms),
                // Alternating between blocks, so that 24 faults (two blocks) see both.
                same_identity: (block + (seed & 1)).is_multiple_of(2),
            }
        }
        5 => {
            let after_ms = rng.between(200, 3000);
            // Half the outages outlast the renew deadline (10 s): the run loses its lease.
            let outage_s = if rng.percent(50) {
                rng.between(3, 6)
            } else {
                rng.between(12, 16)
            };
            Fault::ApiServerRestart {
                after_ms,
                outage_s,
                gate_ms: outlast(&mut rng, after_ms),
            }
        }
        // Alternating between blocks, so that 24 faults (two blocks) see both.
        6 if !(block + (seed >> 2 & 1)).is_multiple_of(2) => Fault::CliBesideOperator {
            replicas,
            offset_ms: rng.between(0, 1500),
        },
        6 => {
            let pairs = [
                ("grafana", "tracing"),
                ("tracing", "grafana"),
                ("prometheus", "istiod"),
                ("grafana", "istiod"),
                ("tracing", "prometheus"),
                ("istiod", "tracing"),
            ];
            let (first, second) = rng.pick(&pairs);
            Fault::ConcurrentInstalls {
                first,
                second,
                // Within smm's start-up, so both read the stored spec before either stores.
                offset_ms: rng.between(0, 120),
            }
        }
        7 => Fault::HandHelm {
            rollback: (block + (seed >> 1 & 1)).is_multiple_of(2),
            replicas,
        },
        8 => cli(CliOp::RevisionUpgrade { patch }),
        9 => Fault::SecondControlPlane { replicas },
        10 => Fault::FrozenHolder { replicas },
        _ => {
            let strikes = [
                HelmStrike::Term,
                HelmStrike::Kill {
                    resume_ms: rng.between(300, 4000),
                },
                HelmStrike::LeaseTaken,
            ];
            Fault::HeldInHelm {
                strike: strikes[((block + seed) % 3) as usize],
                hold_ms: rng.between(200, 3000),
                replicas,
            }
        }
    }
}
