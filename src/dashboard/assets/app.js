// smm dashboard: polls the JSON API every 2 s and renders it. Text goes in with textContent
// only; the one string set as markup is the graph, which the server escaped.
"use strict";

const POLL_MS = 2000;
const state = { selected: null, rendered: {}, open: new Set() };
// Each finished refresh schedules the next; only the latest scheduled one runs, so a refresh
// started by the picker does not start a second polling loop.
let scheduled = 0;

function schedule() {
  const mine = ++scheduled;
  setTimeout(() => { if (mine === scheduled) refresh(); }, POLL_MS);
}

// h("td", {class: "x", "data-label": "Name"}, "text", child...) builds an element.
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function badge(text, tone) {
  return h("span", { class: "badge tone-" + tone }, text);
}

// A table that stacks into labelled lines at phone width.
function table(headers, rows) {
  return h("div", { class: "scroll" },
    h("table", { class: "stack" },
      h("thead", {}, h("tr", {}, headers.map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, rows.map((row) =>
        h("tr", row.attrs || {}, row.cells.map((cell, i) => h("td", { "data-label": headers[i] }, cell)))))));
}

function shortDigest(digest) {
  return digest ? digest.replace(/^sha256:/, "").slice(0, 12) : "—";
}

function partError(part) {
  return part && "error" in part ? h("p", { class: "error" }, "Cannot read this: " + part.error) : null;
}

function renderOverview(summary) {
  const conditions = summary.conditions.map((c) => ({
    cells: [c.type, c.status, c.reason, c.message, c.lastTransitionTime],
  }));
  return [
    h("p", { class: "state" }, "ControlPlane ", h("strong", {}, summary.name), ": ",
      badge(summary.state, summary.tone)),
    h("dl", { class: "facts" },
      h("dt", {}, "Generation"), h("dd", {}, String(summary.generation ?? "—")),
      h("dt", {}, "Observed generation"), h("dd", {},
        String(summary.observedGeneration ?? "—"),
        summary.observedGeneration === summary.generation ? "" : " (a newer spec waits)"),
      h("dt", {}, "Last reconcile"), h("dd", {}, summary.lastReconcile || "never"),
      h("dt", {}, "Components reconciled"), h("dd", {}, summary.reconciledComponents || "—")),
    h("h3", {}, "Conditions"),
    conditions.length
      ? table(["Type", "Status", "Reason", "Message", "Since"], conditions)
      : h("p", { class: "muted" }, "No conditions yet."),
  ];
}

function renderComponent(c) {
  const details = h("details", { "data-component": c.name },
    h("summary", {}, c.name, " ", badge(c.phase, c.tone)));
  if (state.open.has(c.name)) details.open = true;
  details.addEventListener("toggle", () => {
    if (details.open) state.open.add(c.name); else state.open.delete(c.name);
  });
  const workloads = "ok" in c.workloads ? c.workloads.ok : [];
  details.append(
    c.message ? h("p", {}, c.message) : null,
    h("dl", { class: "facts" },
      h("dt", {}, "Enabled"), h("dd", {}, c.enabled ? "yes" : "no"),
      h("dt", {}, "Depends on"), h("dd", {}, c.dependsOn.join(", ") || "—"),
      h("dt", {}, "Chart"), h("dd", {}, c.chart + " " + c.chartVersion),
      h("dt", {}, "App version"), h("dd", {}, c.appVersion || "—"),
      h("dt", {}, "Release"), h("dd", {}, c.release || "—"),
      h("dt", {}, "Revision"), h("dd", {}, c.revision == null ? "—" : String(c.revision)),
      h("dt", {}, "Chart digest"), h("dd", {}, h("code", { title: c.chartDigest || "" }, shortDigest(c.chartDigest))),
      h("dt", {}, "Values digest"), h("dd", {}, h("code", { title: c.valuesDigest || "" }, shortDigest(c.valuesDigest)))),
    h("h3", {}, "Workloads"),
    partError(c.workloads),
    workloads.length
      ? table(["Workload", "Ready", "State"], workloads.map((w) => ({
        cells: [w.kind + " " + w.namespace + "/" + w.name, w.ready + "/" + w.desired + " " + w.unit,
          [badge(w.state, w.tone), w.message ? " " + w.message : ""]],
      })))
      : h("p", { class: "muted" }, "No workloads."),
    h("h3", {}, "Recent events"),
    c.events.length
      ? h("ul", {}, c.events.map((e) => h("li", {}, (e.time || "") + " " + e.type + " " + e.reason + ": " + e.message)))
      : h("p", { class: "muted" }, "No events mention it."),
    h("h3", {}, "Merged values (secrets masked)"),
    c.values ? h("pre", {}, JSON.stringify(c.values, null, 2)) : h("p", { class: "muted" }, "Not enabled."));
  return details;
}

function renderAddons(addons) {
  return addons.length
    ? table(["Add-on", "Component", "Namespace", "Open with"], addons.map((a) => ({
      attrs: { "data-addon": a.name },
      cells: [a.name, a.component, a.namespace, h("code", {}, a.command)],
    })))
    : h("p", { class: "muted" }, "No add-on with a UI is enabled.");
}

function renderMesh(part) {
  if ("error" in part) return partError(part);
  const mesh = part.ok;
  const injected = mesh.namespaces.filter((n) => n.injection);
  return [
    h("dl", { class: "facts" },
      h("dt", {}, "Control plane version"), h("dd", {}, mesh.controlPlaneVersion || "istiod is not installed by this ControlPlane"),
      h("dt", {}, "Revision"), h("dd", {}, mesh.revision || "default"),
      h("dt", {}, "Injected namespaces"), h("dd", {}, String(injected.length) + " of " + mesh.namespaces.length)),
    h("h3", {}, "Namespaces"),
    table(["Namespace", "Injection", "Revision"], mesh.namespaces.map((n) => ({
      cells: [n.name, badge(n.injection ? "on" : "off", n.injection ? "good" : "off"), n.revision || (n.injection ? "default" : "—")],
    }))),
    h("h3", {}, "Pods"),
    mesh.pods.length
      ? table(["Pod", "Phase", "Proxy", "Proxy version"], mesh.pods.map((p) => ({
        attrs: p.skew ? { class: "skew" } : {},
        cells: [p.namespace + "/" + p.name, p.phase || "—",
          p.proxyImage ? "yes" : "no sidecar",
          p.proxyImage
            ? [p.proxyVersion || "?", p.skew ? h("span", { class: "skew-word" }, " skew: control plane is " + mesh.controlPlaneVersion) : ""]
            : "—"],
      })))
      : h("p", { class: "muted" }, "No pods in injected namespaces and no proxies elsewhere."),
  ];
}

function renderRevisions(view) {
  const yesNo = (value, good) => badge(value ? "yes" : "no", value ? good : "off");
  const inUse = (r) => r.inUse
    ? [badge(r.inUse, r.inUse === "True" ? "busy" : r.inUse === "False" ? "off" : "bad"),
      r.inUseMessage ? " " + r.inUseMessage : ""]
    : "—";
  const count = (n) => (n === null || n === undefined ? "—" : String(n));
  return [
    h("dl", { class: "facts" },
      h("dt", {}, "Update strategy"), h("dd", {}, view.strategy),
      h("dt", {}, "Active revision"), h("dd", {}, view.active || "—")),
    view.specError ? h("p", { class: "error" }, view.specError) : null,
    h("h3", {}, "Revisions"),
    view.revisions.length
      ? table(["Revision", "Version", "Active", "Ready", "Pods", "Namespaces", "Tags", "In use"],
        view.revisions.map((r) => ({
          attrs: { "data-revision": r.name },
          cells: [r.name, r.version || "—", yesNo(r.active, "good"), yesNo(r.ready, "good"),
            count(r.pods), count(r.namespaces), r.tags.join(", ") || "—", inUse(r)],
        })))
      : h("p", { class: "muted" }, "No revision recorded: istiod is not installed by this ControlPlane."),
    h("h3", {}, "Tags"),
    view.tags.length
      ? table(["Tag", "Points at", "Wanted", "Follows active"], view.tags.map((t) => ({
        attrs: { "data-tag": t.tag },
        cells: [t.tag, t.revision || "not applied", t.wanted || "—", t.followsActive ? "yes" : "no"],
      })))
      : h("p", { class: "muted" }, "No revision tags."),
  ];
}

// This cluster's place in the mesh and the clusters attached to it (`smm cluster attach`).
function renderClusters(view) {
  if (!view.this) {
    return h("p", { class: "muted" }, "A mesh of one cluster: spec.multiCluster is not set.");
  }
  const mine = view.this;
  return [
    h("dl", { class: "facts" },
      h("dt", {}, "This cluster"), h("dd", {}, mine.clusterName),
      h("dt", {}, "Mesh"), h("dd", {}, mine.meshID || "(the trust domain)"),
      h("dt", {}, "Network"), h("dd", {}, mine.network || "—"),
      mine.primary ? [h("dt", {}, "Served by"), h("dd", {}, mine.primary.clusterName + " at " + mine.primary.address)] : null),
    view.attached.length
      ? table(["Cluster", "Model", "Network", "Reachable", "Remote secret made", "Message"],
        view.attached.map((c) => ({
          attrs: { "data-cluster": c.name },
          cells: [c.name, c.model, c.network || "—",
            badge(c.reachable ? "yes" : "no", c.reachable ? "good" : "bad"),
            c.remoteSecretCreated ? new Date(c.remoteSecretCreated).toLocaleString() : "—",
            c.message || "—"],
        })))
      : h("p", { class: "muted" }, "No cluster attached (smm cluster attach NAME --remote-kubeconfig FILE)."),
  ];
}

const MARKS = { pass: ["✔", "good"], warn: ["‼", "busy"], fail: ["×", "bad"] };

// The findings of `smm check`, grouped by category as the command prints them.
function renderChecks(part) {
  if ("error" in part) return partError(part);
  const report = part.ok;
  const failed = report.findings.filter((f) => f.outcome === "fail").length;
  const byCategory = new Map();
  for (const f of report.findings) {
    if (!byCategory.has(f.category)) byCategory.set(f.category, []);
    byCategory.get(f.category).push(f);
  }
  return [
    h("p", {}, badge(report.passed ? "passed" : failed + " failed", report.passed ? "good" : "bad"),
      " at " + new Date().toLocaleTimeString()),
    [...byCategory].map(([category, findings]) => [
      h("h3", {}, category),
      h("ul", { class: "findings" }, findings.map((f) => h("li", { "data-outcome": f.outcome },
        badge(MARKS[f.outcome][0], MARKS[f.outcome][1]), " ", f.message,
        f.hint ? h("div", { class: "hint" }, "hint: " + f.hint) : null))),
    ]),
  ];
}

async function runChecks() {
  const button = document.getElementById("run-checks");
  const body = document.getElementById("checks-body");
  if (!state.selected) return;
  button.disabled = true;
  body.replaceChildren(h("p", { class: "muted" }, "Running the checks…"));
  try {
    const part = await getJSON("/api/controlplanes/" + encodeURIComponent(state.selected) + "/check");
    body.replaceChildren(...[renderChecks(part)].flat(Infinity).filter((n) => n !== null && n !== ""));
  } catch (err) {
    body.replaceChildren(h("p", { class: "error" }, "Cannot run the checks: " + err.message));
  } finally {
    button.disabled = false;
  }
}

function renderPlan(part) {
  if ("error" in part) return partError(part);
  const changing = part.ok.filter((c) => c.action !== "Nothing");
  return [
    h("p", {}, changing.length
      ? changing.length + " component(s) would change."
      : "Nothing to do: every component is in its desired state."),
    table(["Component", "Action", "Why"], part.ok.map((c) => ({
      cells: [c.name, badge(c.action, c.action === "Nothing" ? "good" : "busy"), c.reason],
    }))),
    part.ok.filter((c) => c.valuesDiff && c.valuesDiff.length).map((c) => [
      h("h3", {}, c.name + " values"),
      h("ul", { class: "changes" }, c.valuesDiff.map((d) => h("li", {}, h("code", {}, describeChange(d))))),
    ]),
  ];
}

function describeChange(d) {
  const show = (v) => JSON.stringify(v);
  if (d.old === null || d.old === undefined) return "+ " + d.path + ": " + show(d.new);
  if (d.new === null || d.new === undefined) return "- " + d.path + ": " + show(d.old);
  return "~ " + d.path + ": " + show(d.old) + " → " + show(d.new);
}

// Replaces a section's content only when its data changed, so open details, focus and
// scrolling survive the polling.
function update(id, data, render) {
  const key = JSON.stringify(data);
  if (state.rendered[id] === key) return;
  state.rendered[id] = key;
  const target = document.getElementById(id);
  target.replaceChildren(...[render(data)].flat(Infinity).filter((n) => n !== null && n !== ""));
}

function renderPicker(list) {
  const select = document.getElementById("control-plane");
  const names = list.items.map((i) => i.name);
  if (!state.selected || !names.includes(state.selected)) {
    state.selected = names.includes(list.preferred) ? list.preferred : names[0] || null;
  }
  update("control-plane", names, () => names.map((name) =>
    h("option", { value: name }, name + " — " + list.items.find((i) => i.name === name).state)));
  select.value = state.selected || "";
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) {
    const text = await response.text();
    throw new Error(response.status + " " + text.trim());
  }
  return response.json();
}

function setLive(text, stale) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.classList.toggle("stale", stale);
}

async function refresh() {
  try {
    const list = await getJSON("/api/controlplanes");
    renderPicker(list);
    if (!state.selected) {
      update("overview-body", null, () => h("p", {}, "No ControlPlane yet: install something with smm install."));
    } else {
      const detail = await getJSON("/api/controlplanes/" + encodeURIComponent(state.selected));
      update("overview-body", detail.summary, renderOverview);
      update("graph-body", detail.graphSvg, (svg) => {
        const holder = h("div", {});
        holder.innerHTML = svg;
        return holder;
      });
      update("components-body", [detail.components, detail.specError], () => [
        detail.specError ? h("p", { class: "error" }, detail.specError) : null,
        detail.components.map(renderComponent)]);
      update("addons-body", detail.addons, renderAddons);
      update("mesh-body", detail.mesh, renderMesh);
      update("clusters-body", detail.clusters, renderClusters);
      update("revisions-body", detail.revisions, renderRevisions);
      update("plan-body", detail.plan, renderPlan);
    }
    setLive("Live, updated " + new Date().toLocaleTimeString(), false);
  } catch (err) {
    setLive("Not updating: " + err.message, true);
  } finally {
    schedule();
  }
}

document.getElementById("run-checks").addEventListener("click", runChecks);
document.getElementById("control-plane").addEventListener("change", (event) => {
  state.selected = event.target.value;
  document.getElementById("checks-body").replaceChildren();
  state.rendered = {};
  refresh();
});
refresh();
