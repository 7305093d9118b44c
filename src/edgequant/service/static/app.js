// EdgeQuant web page: calls the REST API with the session's CSRF token; live progress over SSE.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("status");

  function say(text, bad) {
    status.textContent = text;
    status.className = bad ? "error" : "";
  }

  async function call(method, url, body) {
    const headers = { "X-CSRF-Token": csrf };
    if (body && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(body);
    }
    const r = await fetch(url, { method, headers, body, credentials: "same-origin" });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      throw new Error((data && (data.detail + (data.hint ? " " + data.hint : ""))) || r.statusText);
    }
    return data;
  }

  for (const form of document.querySelectorAll("form.api-upload")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const data = new FormData();
      data.append("file", form.querySelector('input[type="file"]').files[0]);
      const name = form.querySelector('input[name="name"]').value.trim();
      if (name) data.append("name", name);
      const overwrite = form.querySelector('input[name="overwrite"]').checked;
      say("Uploading ...");
      try {
        const rec = await call("POST", form.dataset.url + (overwrite ? "?overwrite=true" : ""), data);
        say("Uploaded " + rec.name + ".");
        location.reload();
      } catch (e) { say(e.message, true); }
    });
  }

  const run = document.getElementById("run");
  run.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(run);
    const model = encodeURIComponent(f.get("model") || "");
    const q = new URLSearchParams();
    if (f.get("dataset")) q.set("dataset", f.get("dataset"));
    q.set("target", f.get("target"));
    let url, body = null;
    if (f.get("kind") === "compare") {
      for (const k of ["methods", "max_drop", "max_latency_ms", "max_size_mb"]) if (f.get(k)) q.set(k, f.get(k));
      url = "/api/v1/model/" + model + "/compare?" + q;
    } else {
      q.set("method", f.get("method"));
      body = {};
      for (const k of ["weight_bits", "act_bits", "calib_samples"]) if (f.get(k)) body[k] = Number(f.get(k));
      url = "/api/v1/model/" + model + "/quantize?" + q;
    }
    say("Starting ...");
    try {
      const job = await call("POST", url, body || undefined);
      say("Job " + job.job_id.slice(0, 8) + " queued.");
      location.reload();
    } catch (e) { say(e.message, true); }
  });

  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    try {
      if (b.classList.contains("cancel")) {
        await call("POST", "/api/v1/jobs/" + b.dataset.job + "/cancel");
      } else if (b.classList.contains("delete-job")) {
        await call("DELETE", "/api/v1/jobs/" + b.dataset.job);
      } else if (b.classList.contains("delete-file")) {
        await call("DELETE", b.dataset.url);
      } else if (b.id === "logout") {
        await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
      } else {
        return;
      }
      location.reload();
    } catch (e) { say(e.message, true); }
  });

  // live progress of every queued or running job
  for (const row of document.querySelectorAll('tr[data-status="queued"], tr[data-status="running"]')) {
    const id = row.dataset.job;
    const es = new EventSource("/api/v1/jobs/" + id + "/events");
    es.addEventListener("progress", (ev) => {
      const p = JSON.parse(ev.data);
      row.querySelector("progress").value = p.percent;
      row.querySelector(".stage").textContent = p.stage + " " + p.percent + " %";
      const s = row.querySelector(".status");
      s.textContent = p.status;
      s.className = "status status-" + p.status;
    });
    es.addEventListener("end", () => { es.close(); location.reload(); });
  }
})();
