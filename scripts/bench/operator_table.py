#!/usr/bin/env python3
"""Prints scripts/bench-operator.sh's windows as Markdown: the operator's API requests per minute
(kube-apiserver's count minus the baseline window's, and the operator's own count), its memory
and helm processes, then each window's requests by verb and resource."""
import re
import sys
from collections import Counter
from urllib.parse import parse_qs, urlsplit

work, baseline, windows = sys.argv[1], sys.argv[2], sys.argv[3:]
LABEL = re.compile(r'(\w+)="([^"]*)"')


def prom(path):
    """apiserver_request_total summed over codes, by (verb, resource[/subresource])."""
    counts = Counter()
    for line in open(path):
        labels, value = line.rsplit(" ", 1)
        fields = dict(LABEL.findall(labels))
        if not fields.get("resource"):
            continue  # /metrics, /healthz and other paths that name no resource
        resource = fields["resource"] + (f".{fields['group']}" if fields.get("group") else "")
        if fields.get("subresource"):
            resource += "/" + fields["subresource"]
        counts[(fields["verb"], resource)] += float(value)
    return counts


def apiserver(name):
    before, after = prom(f"{work}/{name}.before.prom"), prom(f"{work}/{name}.after.prom")
    return Counter({key: after[key] - before.get(key, 0) for key in after})


def request(url, method):
    """(verb, resource[/subresource]) of one request the operator's client made."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    group = ""
    if path[:1] == ["api"]:
        rest = path[2:]
    else:
        group, rest = path[1], path[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    resource = rest[0] + (f".{group}" if group else "")
    named = len(rest) >= 2
    if len(rest) >= 3:
        resource += "/" + rest[2]
    if method == "GET":
        if "true" in parse_qs(parts.query).get("watch", []):
            verb = "WATCH"
        else:
            verb = "GET" if named else "LIST"
    else:
        verb = method  # as kube-apiserver counts them: PUT, POST, PATCH, DELETE
    return verb, resource


REQUESTING = re.compile(r"http\.method=(\w+) http\.url=(\S+)")


def client(name):
    counts = Counter()
    for line in open(f"{work}/{name}.client.log"):
        found = REQUESTING.search(line)
        if found:
            counts[request(found.group(2), found.group(1))] += 1
    return counts


def meta(name):
    return dict(line.rstrip("\n").split("\t") for line in open(f"{work}/{name}.meta"))


def per_minute(counts, seconds):
    return {key: value * 60 / seconds for key, value in counts.items()}


base = per_minute(apiserver(baseline), float(meta(baseline)["seconds"]))
print(f"windows of {meta(baseline)['seconds']} s; requests per minute\n")
print("| window | operator's requests/min (apiserver − baseline) | operator's requests/min (its own log) "
      "| of which LIST | VmRSS | VmHWM | helm processes |")
print("|---|---|---|---|---|---|---|")
details = []
for name in windows:
    info = meta(name)
    seconds = float(info["seconds"])
    served = per_minute(apiserver(name), seconds)
    minus = {k: served.get(k, 0) - base.get(k, 0) for k in set(served) | set(base)}
    own = per_minute(client(name), seconds)
    lists = sum(v for (verb, _), v in own.items() if verb == "LIST")
    print(f"| {name} | {sum(minus.values()):.1f} | {sum(own.values()):.1f} | {lists:.1f} "
          f"| {int(info['rss_kib']) / 1024:.1f} MiB | {int(info['hwm_kib']) / 1024:.1f} MiB "
          f"| {info['helm']} |")
    details.append((name, own, minus))
print(f"\nbaseline (no operator): {sum(base.values()):.1f} requests/min at the apiserver")
for name, own, minus in details:
    print(f"\n{name}: requests/min by verb and resource\n")
    print("| verb | resource | operator's log | apiserver − baseline |")
    print("|---|---|---|---|")
    keys = sorted(set(own) | {k for k, v in minus.items() if abs(v) >= 0.5})
    for verb, resource in keys:
        print(f"| {verb} | {resource} | {own.get((verb, resource), 0):.1f} "
              f"| {minus.get((verb, resource), 0):.1f} |")
