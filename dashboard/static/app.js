// anycloud dashboard: keeps the deployments list and a deployment's page
// current from the server's event stream (/events), and filters the list.
// No framework; every value goes into the page as text, never as HTML.
"use strict";

(function () {
  const body = document.body;
  const liveName = body.dataset.live || "";
  const table = document.getElementById("deployments");
  const filter = document.getElementById("filter");
  const indicator = document.getElementById("live");

  // The same rule as Row.matches on the server: every word must appear in
  // one of the row's fields.
  function haystack(r) {
    const h = [r.name, r.phase, "ready=" + r.ready, r.vm || "", r.market || "", r.address || ""];
    for (const b of r.bundles || []) h.push(b);
    for (const [k, v] of Object.entries(r.labels || {})) h.push(k + "=" + v);
    return h.join(" ").toLowerCase();
  }
  function matches(r, q) {
    const hay = haystack(r);
    return q.toLowerCase().split(/\s+/).filter(Boolean).every((w) => hay.includes(w));
  }

  function age(iso) {
    const t = Date.parse(iso);
    if (!t || t < 0) return "–";
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return Math.floor(s) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 48 * 3600) return Math.floor(s / 3600) + "h";
    return Math.floor(s / 86400) + "d";
  }

  function cell(cls, text) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text === undefined || text === "" ? "–" : String(text);
    return td;
  }

  // rowElement builds the <tr> the server's template would have built.
  function rowElement(r) {
    const tr = document.createElement("tr");
    tr.dataset.name = r.name;
    const name = document.createElement("td");
    name.className = "name";
    const a = document.createElement("a");
    a.href = "/deployments/" + encodeURIComponent(r.name);
    a.textContent = r.name;
    name.append(a);
    const phase = document.createElement("td");
    phase.className = "phase";
    const ps = document.createElement("span");
    ps.className = "phase phase-" + r.phase.toLowerCase();
    ps.textContent = r.phase;
    phase.append(ps);
    const ready = document.createElement("td");
    ready.className = "readiness";
    const rs = document.createElement("span");
    rs.className = "ready ready-" + r.ready;
    rs.textContent = r.ready + (r.reason ? " · " + r.reason : "");
    if (r.message) rs.title = r.message;
    ready.append(rs);
    const ageCell = cell("age num", age(r.created));
    ageCell.dataset.created = r.created;
    tr.append(name, phase, ready, cell("vm mono", r.vm), cell("market", r.market), cell("address mono", r.address),
      cell("recoveries num", r.recoveries), cell("bundles", (r.bundles || []).join(", ")), ageCell);
    tr.dataset.haystack = haystack(r);
    tr.dataset.rv = r.resourceVersion;
    return tr;
  }

  const rows = new Map(); // name → row data

  function applyFilter() {
    if (!table) return;
    const q = filter ? filter.value : "";
    let shown = 0;
    for (const tr of table.tBodies[0].rows) {
      const r = rows.get(tr.dataset.name);
      const ok = r ? matches(r, q) : true;
      tr.hidden = !ok;
      if (ok) shown++;
    }
    const count = document.getElementById("count");
    if (count) count.textContent = shown === rows.size ? String(shown) : shown + " of " + rows.size;
    const empty = document.getElementById("empty");
    if (empty) empty.hidden = shown > 0;
  }

  function upsert(r) {
    rows.set(r.name, r);
    const tbody = table.tBodies[0];
    const tr = rowElement(r);
    tr.dataset.updatedAt = String(Date.now());
    const old = tbody.querySelector('tr[data-name="' + CSS.escape(r.name) + '"]');
    if (old) {
      if (old.dataset.rv !== r.resourceVersion) tr.classList.add("changed");
      old.replaceWith(tr);
      return;
    }
    tr.classList.add("changed");
    // Keep the rows sorted by name, as the server lists them.
    for (const other of tbody.rows) {
      if (other.dataset.name > r.name) {
        other.before(tr);
        return;
      }
    }
    tbody.append(tr);
  }

  function remove(name) {
    rows.delete(name);
    const old = table.tBodies[0].querySelector('tr[data-name="' + CSS.escape(name) + '"]');
    if (old) old.remove();
  }

  // A deployment's page swaps in its live part when the deployment
  // changes; one fetch at a time, and one more if changes came meanwhile.
  let inFlight = false;
  let again = false;
  async function refreshDetail() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      const resp = await fetch("/deployments/" + encodeURIComponent(liveName) + "/live", { credentials: "same-origin" });
      if (resp.ok) {
        document.getElementById("live-detail").innerHTML = await resp.text();
        body.dataset.refreshedAt = String(Date.now());
      }
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        refreshDetail();
      }
    }
  }

  function connect() {
    if (!table && !liveName) return;
    indicator.hidden = false;
    const es = new EventSource("/events");
    let handled = 0;
    const seen = () => {
      handled++;
      body.dataset.events = String(handled);
    };
    es.onopen = () => {
      indicator.textContent = "live";
      indicator.classList.add("on");
    };
    es.onerror = () => {
      indicator.textContent = "reconnecting…";
      indicator.classList.remove("on");
    };
    es.addEventListener("reset", (e) => {
      const list = JSON.parse(e.data);
      if (table) {
        const names = new Set(list.map((r) => r.name));
        for (const name of [...rows.keys()]) if (!names.has(name)) remove(name);
        for (const tr of [...table.tBodies[0].rows]) if (!names.has(tr.dataset.name)) tr.remove();
        for (const r of list) {
          const known = rows.get(r.name);
          if (!known || known.resourceVersion !== r.resourceVersion) upsert(r);
        }
        applyFilter();
      }
      if (liveName) refreshDetail();
      seen();
    });
    es.addEventListener("row", (e) => {
      const r = JSON.parse(e.data);
      if (table) {
        upsert(r);
        applyFilter();
      }
      if (liveName && r.name === liveName) refreshDetail();
      seen();
    });
    es.addEventListener("gone", (e) => {
      const { name } = JSON.parse(e.data);
      if (table) {
        remove(name);
        applyFilter();
      }
      if (liveName && name === liveName) refreshDetail();
      seen();
    });
  }

  if (table) {
    if (filter) {
      filter.addEventListener("input", () => {
        const url = new URL(location.href);
        if (filter.value) url.searchParams.set("q", filter.value);
        else url.searchParams.delete("q");
        history.replaceState(null, "", url);
        applyFilter();
      });
      filter.form.addEventListener("submit", (e) => e.preventDefault());
    }
    setInterval(() => {
      for (const td of table.querySelectorAll("td.age")) td.textContent = age(td.dataset.created);
    }, 5000);
  }
  connect();
})();
