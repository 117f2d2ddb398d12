#!/usr/bin/env python3
"""Prints scripts/bench.sh's results as one Markdown table: medians, ratios, targets."""
import statistics
import sys
from collections import defaultdict

path, runs = sys.argv[1], sys.argv[2]
values = defaultdict(list)
for line in open(path):
    metric, value = line.rstrip("\n").split("\t")
    try:
        values[metric].append(float(value))
    except ValueError:
        values[metric].append(value)


def change_requests(row, med):
    """The API requests of one more change of grafana (an untimed run, kube's client log)."""
    api, patches = med("change.smm.api-requests"), med("change.smm.status-patches")
    if api is None:
        return
    lease, watches = med("change.smm.lease-requests"), med("change.smm.watches")
    helm = med("change.smm.helm-processes-counted")
    row("one component changed: API requests of one run (counted, untimed)", f"{api:g}",
        f"{patches:g} status patches, {lease:g} lease requests, {watches:g} watches; {helm:g} helm process",
        "", "1 helm, the lease, ≤2 status patches", helm == 1 and patches <= 2)


def cold_growth(compare, med, growth):
    """Cold installs of the growth catalogs beside N sequential `helm upgrade --install --wait`."""
    for n in growth:
        if med(f"growth.{n}.cold_helm_s") is None:
            continue
        compare(f"cold install of {n} tiny components (one run each): smm (parallelism 4) vs "
                "sequential `helm upgrade --install --wait`",
                f"growth.{n}.cold_s", f"growth.{n}.cold_helm_s", "≥1x", lambda r: r >= 1)


def med(metric):
    xs = [x for x in values.get(metric, []) if isinstance(x, float)]
    return statistics.median(xs) if xs else None


def fmt(x, unit="s"):
    if x is None:
        return "not measured"
    if unit == "s":
        return f"{x:.3f} s"
    return f"{x:g}{unit}"


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "MISSED")


rows = []


def row(what, a, b, ratio, target, ok):
    rows.append((what, a, b, ratio, target, verdict(ok)))


def compare(what, a_metric, b_metric, target, want):
    a, b = med(a_metric), med(b_metric)
    ratio = b / a if a and b else None
    ok = None if ratio is None else want(ratio)
    row(what, fmt(a), fmt(b), "n/a" if ratio is None else f"{ratio:.1f}x", target, ok)


def count(metric):
    n = med(metric)
    return "?" if n is None else f"{n:g}"


# How many components the mesh and the catalog had in this run (bench.sh reads them from smm).
mesh_n, catalog_n = count("mesh.components"), count("catalog.components")
compare(f"no-op: `smm install` ({mesh_n} components) vs sequential `helm upgrade --install`",
        "noop.smm-install", "noop.helm", "≥30x", lambda r: r >= 30)
compare("no-op: `smm reconcile -f` vs sequential `helm upgrade --install`",
        "noop.smm-reconcile", "noop.helm", "≥30x", lambda r: r >= 30)
compare("no-op: `smm reconcile -f` vs `helmfile sync`",
        "noop.smm-reconcile", "noop.helmfile-sync", "—", lambda r: None)
compare("no-op: `smm reconcile -f` vs `helmfile apply`",
        "noop.smm-reconcile", "noop.helmfile-apply", "≥20x", lambda r: r >= 20)
for cmd in ("install", "reconcile"):
    api, lease = med(f"noop.smm-{cmd}.api-requests"), med(f"noop.smm-{cmd}.lease-requests")
    kinds = med(f"noop.smm-{cmd}.kind-lists")
    row(f"no-op `smm {cmd}`: API requests beyond the lease (lease requests)",
        "n/a" if api is None else f"{api:g} ({lease:g})",
        "" if kinds is None else f"{api - kinds:g} reads + {kinds:g} drift-check lists, one per kind",
        "", "≤4", None if api is None else api <= 4)
hp = values.get("noop.smm.helm-processes", [])
row("no-op: helm processes smm started (per pair of runs, every run)",
    ",".join(f"{x:g}" for x in hp), "", "", "0", all(x == 0 for x in hp) if hp else None)
compare(f"cold install with waits ({mesh_n} components): smm vs sequential `helm upgrade --install --wait`",
        "cold.smm", "cold.helm", "≥1.5x", lambda r: r >= 1.5)
compare("cold install with waits, ambient profile (base, istiod, istio-cni, ztunnel): smm vs sequential "
        "`helm upgrade --install --wait`", "cold-ambient.smm", "cold-ambient.helm", "—", lambda r: None)
compare("one component changed (grafana, with waits): smm vs `helm upgrade --install --wait`",
        "change.smm", "change.helm", "≥1.1x", lambda r: r >= 1.1)
hp = values.get("change.smm.helm-processes", [])
row("one component changed: helm processes smm started (every run)",
    ",".join(f"{x:g}" for x in hp), "", "", "1", all(x == 1 for x in hp) if hp else None)
change_requests(row, med)
a, b = med("dump.smm"), med("dump.helm")
row(f"`install -a --dump-resources` ({catalog_n} components) vs sum of `helm template`",
    fmt(a), fmt(b), f"{a / b:.2f}x of helm" if a and b else "n/a", "≤1.1x",
    (a / b <= 1.1) if a and b else None)
compare("revision-based upgrade, spec change to new revision Ready and tags moved: `smm reconcile -f` "
        "vs cold `helm upgrade --install --wait` of one istiod revision",
        "rev.smm", "rev.helm", "—", lambda r: None)
hp = values.get("rev.smm.helm-processes", [])
row("revision-based upgrade: helm processes smm started (every run)",
    ",".join(f"{x:g}" for x in hp), "", "", "1", all(x == 1 for x in hp) if hp else None)
rss = med("operator.idle-rss-mib")
row("operator idle RSS (out of cluster, after 20 s settling)", fmt(rss, " MiB"), "", "", "<30 MiB",
    None if rss is None else rss < 30)
cpu = med("operator.idle-cpu-percent")
row("operator idle CPU (utime+stime over the idle window)", fmt(cpu, " %"), "", "", "—", None)
ih = med("operator.idle-helm-processes")
row("operator idle: helm processes", fmt(ih, ""), "", "", "0", None if ih is None else ih == 0)
first = med("operator.patch-to-first-helm")
row("ControlPlane change → first helm process (from before `kubectl patch`)",
    fmt(first), f"kubectl patch itself: {fmt(med('operator.kubectl-patch'))}", "", "<0.5 s",
    None if first is None else first < 0.5)
row("ControlPlane change → Ready (grafana rolled out)", fmt(med("operator.patch-to-ready")), "", "",
    "—", None)
helm_start = med("helm.version")
row("one helm process start (`helm version`)", fmt(helm_start), "", "", "—", None)
growth = sorted({int(m.split(".")[1]) for m in values if m.startswith("growth.")})
for n in growth:
    t = med(f"growth.{n}.noop_median_s")
    rss = med(f"growth.{n}.rss_kib")
    api = med(f"growth.{n}.api_per_noop")
    hpn = med(f"growth.{n}.helm_per_noop")
    cold = med(f"growth.{n}.cold_s")
    row(f"growth: no-op of {n} tiny components (session, lease included)", fmt(t),
        f"RSS {rss / 1024:.1f} MiB, {api:g} API requests + lease, {hpn:g} helm; cold {fmt(cold)}",
        "", "< one helm start" if n == max(growth) else "", (t < helm_start) if n == max(growth) and helm_start else None)
    first = med(f"growth.{n}.noop_new_session_s")
    if first is not None:
        row(f"growth: no-op of {n} tiny components, new session (no record decoded before)", fmt(first),
            "as a one-shot `smm reconcile -f` process", "", "—", None)
cold_growth(compare, med, growth)
if len(growth) >= 2:
    lo, hi = growth[0], growth[-1]
    tl, th = med(f"growth.{lo}.noop_median_s"), med(f"growth.{hi}.noop_median_s")
    row(f"growth: no-op time {hi} vs {lo} components", f"{th / tl:.1f}x", f"components {hi / lo:.1f}x",
        "", "≤ linear", th / tl <= hi / lo)

print(f"median of {runs} runs each, A and B alternating in one run; ratio = B / A (how many times faster smm is)\n")
print("| measurement | smm (A) | peer (B) / detail | ratio | target | verdict |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(str(c) for c in r) + " |")
