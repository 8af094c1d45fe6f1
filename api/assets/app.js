// Mission Control's only script. Pages work without it; it adds:
// - live parts: `main[data-live]` names what should refresh it ("all": any event on the
//   stream, "mission:<id>": that mission's events, "poll:<ms>": a timer). A refresh fetches the
//   same URL with `HC-Fragment: 1` and swaps each `[data-slot]` whose markup changed, unless the
//   person is typing in it;
// - in-place actions: approve, reject, cancel and retry post with `HC-Fragment: 1` (204 on
//   success) and the page updates itself; errors show in a toast;
// - the plan editor's validation as you type;
// - the command panel: commands over the CognitiveUplink WebSocket, with their progress, an
//   inline approval prompt and the agent's answer;
// - relative times kept current (the exact time stays in the tooltip), live missions'
//   durations and wait countdowns ticking every second;
// - the missions list's selection for bulk actions.
"use strict";

(function () {
  const FRAGMENT = { "HC-Fragment": "1" };
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // ---- relative times -------------------------------------------------------------------
  function relative(iso) {
    const secs = Math.round((Date.now() - Date.parse(iso)) / 1000);
    const mag = Math.abs(secs);
    if (mag < 5) return "just now";
    let amount;
    if (mag < 60) amount = mag + " s";
    else if (mag < 3600) amount = Math.floor(mag / 60) + " min";
    else if (mag < 86400) amount = Math.floor(mag / 3600) + " h";
    else amount = Math.floor(mag / 86400) + " d";
    return secs >= 0 ? amount + " ago" : "in " + amount;
  }
  function refreshTimes(root) {
    for (const t of (root || document).querySelectorAll("time[datetime][title]")) {
      t.textContent = relative(t.getAttribute("datetime"));
    }
  }
  setInterval(refreshTimes, 10000);

  // ---- live durations and countdowns ----------------------------------------------------
  // A live mission's duration (`data-since`) grows every second; a wait that ends by itself
  // (`.waiting-for[data-until]`) counts down, or shows the local time a sleep ends.
  function duration(ms) {
    ms = Math.max(0, ms);
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    const pad = (n) => String(n).padStart(2, "0");
    if (ms < 3600000) return Math.floor(ms / 60000) + " min " + pad(Math.floor(ms / 1000) % 60) + " s";
    return Math.floor(ms / 3600000) + " h " + pad(Math.floor(ms / 60000) % 60) + " min";
  }
  function countdown(ms) {
    const secs = Math.ceil(ms / 1000);
    if (secs <= 0) return "now";
    if (secs < 60) return "in " + secs + " s";
    if (secs < 3600) return "in " + Math.floor(secs / 60) + " min";
    return "in " + Math.floor(secs / 3600) + " h";
  }
  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = duration(now - Date.parse(el.dataset.since));
    }
    for (const el of document.querySelectorAll(".waiting-for[data-until]")) {
      const until = Date.parse(el.dataset.until);
      if (el.dataset.waiting === "retry") el.textContent = "retrying " + countdown(until - now);
      else if (el.dataset.waiting === "sleep" && until - now < 72000000) {
        const d = new Date(until);
        el.textContent = "sleeping until " + String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
      }
    }
  }
  tick();
  setInterval(tick, 1000);

  // ---- toasts ---------------------------------------------------------------------------
  let toastTimer;
  function toast(message, kind) {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.dataset.kind = kind || "info";
    el.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => el.classList.remove("show"), kind === "error" ? 8000 : 3500);
  }

  // The explanation of a failed request: error pages carry it in #problem-detail.
  async function problemOf(response) {
    try {
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const detail = doc.getElementById("problem-detail");
      if (detail) return detail.textContent.trim();
    } catch (_) { /* fall through */ }
    return "The server answered " + response.status + ".";
  }

  // ---- live parts -----------------------------------------------------------------------
  const main = document.querySelector("main[data-live]");
  const liveDot = document.getElementById("live-state");
  function setLive(state, title) {
    if (!liveDot) return;
    liveDot.dataset.state = state;
    liveDot.title = "Live updates: " + title;
  }

  // Someone is typing or choosing in this part: leave it alone until they are done.
  function busy(el) {
    const active = document.activeElement;
    if (active && el.contains(active) && /^(TEXTAREA|INPUT|SELECT)$/.test(active.tagName)) return true;
    for (const field of el.querySelectorAll("textarea")) if (field.value !== "") return true;
    // Missions selected for a bulk action stay on screen until the action.
    if (el.querySelector('input[type="checkbox"]:checked')) return true;
    return false;
  }

  let inflight = false, again = false, lastRefresh = 0, timer = null;
  const minGap = main && main.dataset.live.startsWith("mission:") ? 250 : 1000;

  function scheduleRefresh() {
    if (!main || timer) return;
    const wait = Math.max(0, lastRefresh + minGap - Date.now());
    timer = setTimeout(() => { timer = null; refresh(); }, wait);
  }

  async function refresh() {
    if (inflight) { again = true; return; }
    inflight = true;
    lastRefresh = Date.now();
    try {
      const response = await fetch(location.href, { headers: FRAGMENT, credentials: "same-origin" });
      if (response.redirected || response.status === 401) { location.reload(); return; }
      if (!response.ok) return;
      const template = document.createElement("template");
      template.innerHTML = await response.text();
      for (const fresh of template.content.querySelectorAll("[data-slot]")) {
        const current = main.querySelector('[data-slot="' + fresh.dataset.slot + '"]');
        if (!current || current.outerHTML === fresh.outerHTML || busy(current)) continue;
        // Keep open <details> open across refreshes.
        const open = new Set([...current.querySelectorAll("details[open] > summary")].map((s) => s.textContent));
        current.replaceWith(fresh);
        for (const s of fresh.querySelectorAll("details > summary")) {
          if (open.has(s.textContent)) s.parentElement.open = true;
        }
        refreshTimes(fresh);
      }
      tick();
    } catch (_) {
      setLive("offline", "the server cannot be reached; retrying");
    } finally {
      inflight = false;
      if (again) { again = false; scheduleRefresh(); }
    }
  }

  // Missions followed on the approvals page after a decision: id -> badge element.
  const followed = new Map();

  async function updateFollowed(id) {
    const badge = followed.get(id);
    if (!badge) return;
    const response = await fetch("/api/v1/missions/" + id, { credentials: "same-origin" });
    if (!response.ok) return;
    const mission = await response.json();
    badge.dataset.status = mission.status;
    badge.textContent = mission.status;
  }

  function connect() {
    const spec = main ? main.dataset.live : "";
    if (spec.startsWith("poll:")) {
      setInterval(scheduleRefresh, parseInt(spec.slice(5), 10) || 2000);
      setLive("live", "refreshing every " + spec.slice(5) + " ms");
      return;
    }
    if (!spec) { setLive("static", "this page does not update by itself"); return; }
    const only = spec.startsWith("mission:") ? spec.slice(8) : null;
    const stream = new EventSource("/api/v1/events");
    // Events recorded between the page's rendering and the stream's start are caught by one
    // refresh when the stream opens (and again after every reconnection).
    stream.onopen = () => { setLive("live", "connected"); scheduleRefresh(); };
    stream.onerror = () => setLive("offline", "reconnecting");
    stream.onmessage = handle;
    // The server names each message by its event type; listen to all of them. The page lists
    // them (`body[data-event-types]`, rendered from the engine's list of event types).
    const types = (document.body.dataset.eventTypes || "").split(" ").filter(Boolean);
    for (const type of types) stream.addEventListener(type, handle);

    // A live mission's timeline is drawn up to now: redraw it while nothing else happens.
    if (only) setInterval(() => { if (main.querySelector("[data-until-now]")) scheduleRefresh(); }, 5000);

    function handle(message) {
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      if (followed.has(event.mission_id)) updateFollowed(event.mission_id);
      if (!only || event.mission_id === only) scheduleRefresh();
    }
  }

  // ---- actions --------------------------------------------------------------------------
  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (!form.matches("form.decide, form.cancel, form.retry")) {
      // Any other form with a question asks it first, then posts as usual.
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) e.preventDefault();
      return;
    }
    e.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const body = new URLSearchParams(new FormData(form, e.submitter));
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { ...FRAGMENT, "X-CSRF-Token": csrf() },
        body,
        credentials: "same-origin",
      });
      if (response.status === 204) {
        const decision = body.get("decision");
        toast(decision === "approve" ? "Approved." : decision === "reject" ? "Rejected." :
          form.matches(".cancel") ? "Cancellation requested." : "Retrying.", "ok");
        if (form.matches(".decide") && form.dataset.mission) decided(form, decision);
        else if (form.matches(".decide")) form.closest("[data-slot]")?.querySelectorAll("textarea").forEach((t) => { t.value = ""; });
        scheduleRefresh();
        return;
      }
      if (response.redirected || response.status === 401) { location.reload(); return; }
      toast(await problemOf(response), "error");
    } catch (_) {
      toast("The server cannot be reached; nothing was changed.", "error");
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });

  // A decision taken in the inbox: the row leaves the inbox (at the next refresh) and the
  // mission is followed in the "decided here" list until it ends.
  function decided(form, decision) {
    const id = form.dataset.mission;
    const row = form.closest("tr");
    const list = document.getElementById("decided");
    const body = row && row.parentElement;
    if (row) row.remove();
    const table = document.getElementById("approvals");
    if (body && table && !body.querySelector("tr[data-approval]")) {
      const empty = document.createElement("tr");
      empty.className = "empty-row";
      const cell = document.createElement("td");
      cell.colSpan = table.tHead ? table.tHead.rows[0].cells.length : 1;
      cell.className = "empty";
      cell.textContent = table.dataset.empty || "";
      empty.append(cell);
      body.append(empty);
    }
    if (!list || followed.has(id)) { updateFollowed(id); return; }
    const item = document.createElement("li");
    item.dataset.mission = id;
    const link = document.createElement("a");
    link.href = "/missions/" + id;
    link.className = "mono";
    link.textContent = id.slice(-8);
    const step = document.createElement("span");
    step.className = "mono";
    step.textContent = form.dataset.step;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.status = "running";
    badge.textContent = "…";
    item.append(link, " · ", step, " " + (decision === "approve" ? "approved" : "rejected") + " · mission ", badge);
    list.prepend(item);
    followed.set(id, badge);
    updateFollowed(id);
  }

  // ---- plan editor ----------------------------------------------------------------------
  const editor = document.querySelector("form#submit[data-check]");
  if (editor) {
    const output = document.getElementById("validation");
    let checkTimer, sequence = 0;
    const check = async () => {
      const mine = ++sequence;
      const body = new URLSearchParams(new FormData(editor));
      try {
        const response = await fetch(editor.dataset.check, {
          method: "POST", headers: { ...FRAGMENT, "X-CSRF-Token": csrf() }, body, credentials: "same-origin",
        });
        if (mine !== sequence) return; // a newer check is on its way
        if (response.ok) output.innerHTML = await response.text();
        else if (response.redirected || response.status === 401) location.reload();
      } catch (_) { /* the next keystroke checks again */ }
    };
    editor.addEventListener("input", () => { clearTimeout(checkTimer); checkTimer = setTimeout(check, 300); });
    editor.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) editor.requestSubmit();
    });
    check();
  }

  // ---- live log panel -------------------------------------------------------------------
  // Entries published on the log channel from now on are added on top (the page rendered the
  // newest ones before). Built with textContent: nothing in an entry is markup.
  const log = document.querySelector("ol#log[data-stream]");
  if (log) {
    const state = document.getElementById("log-state");
    const logStream = new EventSource(log.dataset.stream);
    logStream.onopen = () => { if (state) state.textContent = "live"; };
    logStream.onerror = () => { if (state) state.textContent = "reconnecting"; };
    logStream.addEventListener("log", (message) => {
      let entry;
      try { entry = JSON.parse(message.data); } catch (_) { return; }
      const item = document.createElement("li");
      item.dataset.level = entry.level;
      const time = document.createElement("time");
      time.dateTime = entry.at;
      time.textContent = "just now";
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.dataset.status = entry.level;
      badge.textContent = entry.level;
      const source = document.createElement("span");
      source.className = "muted";
      source.textContent = entry.source;
      item.append(time, " ", badge, " ", source, " ", entry.message);
      log.prepend(item);
      while (log.children.length > 200) log.lastElementChild.remove();
    });
  }

  // ---- bulk selection -------------------------------------------------------------------
  document.addEventListener("change", (e) => {
    const box = e.target;
    if (!(box instanceof HTMLInputElement) || box.type !== "checkbox") return;
    const boxes = [...document.querySelectorAll('input[type="checkbox"][form="bulk"]:not(:disabled)')];
    if (box.id === "select-all") boxes.forEach((b) => { b.checked = box.checked; });
    const count = document.getElementById("bulk-count");
    const chosen = boxes.filter((b) => b.checked).length;
    if (count) count.textContent = chosen ? chosen + " selected:" : "Select missions to act on several at once:";
  });

  if (main) connect();
  else setLive("static", "this page does not update by itself");

  // ---- the command panel (CognitiveUplink) -----------------------------------------------
  const uplinkLog = document.getElementById("uplink-log");
  const uplinkForm = document.getElementById("uplink-form");
  if (uplinkLog) {
    const state = document.getElementById("uplink-state");
    const entries = new Map();
    let socket;
    let pending = [];
    const line = (parent, kind, text) => {
      const item = document.createElement("div");
      item.className = "uplink-" + kind;
      item.textContent = text;
      parent.append(item);
      uplinkLog.scrollTop = uplinkLog.scrollHeight;
      return item;
    };
    const entryFor = (mission) => {
      let entry = entries.get(mission);
      if (!entry) {
        entry = document.createElement("li");
        entry.dataset.mission = mission;
        uplinkLog.append(entry);
        entries.set(mission, entry);
      }
      return entry;
    };
    const approvalPrompt = (entry, mission, step, message) => {
      const box = line(entry, "approval", message || "Approve this command?");
      for (const decision of ["approve", "reject"]) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = decision === "approve" ? "Approve" : "Reject";
        button.dataset.decision = decision;
        button.addEventListener("click", async () => {
          box.querySelectorAll("button").forEach((b) => { b.disabled = true; });
          const response = await fetch("/api/v1/missions/" + mission + "/approvals/" + step, {
            method: "POST", credentials: "same-origin",
            headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
            body: JSON.stringify({ decision }),
          });
          if (!response.ok) toast(await problemOf(response), "error");
        });
        box.append(" ", button);
      }
    };
    const show = (frame) => {
      if (frame.type === "accepted") {
        const entry = pending.shift() || entryFor(frame.mission);
        entry.dataset.mission = frame.mission;
        entries.set(frame.mission, entry);
        const link = document.createElement("a");
        link.href = "/missions/" + frame.mission;
        link.textContent = "mission " + frame.mission.slice(0, 8);
        line(entry, "accepted", "accepted: ").append(link);
      } else if (frame.type === "progress") {
        const entry = entryFor(frame.mission);
        const event = frame.event;
        line(entry, "progress", event.type + (event.step ? " · " + event.step : ""));
        if (event.type === "approval_requested") {
          approvalPrompt(entry, frame.mission, event.step, event.data && event.data.message);
        }
      } else if (frame.type === "response") {
        line(entryFor(frame.mission), "response", JSON.stringify(frame.payload));
      } else if (frame.type === "error") {
        const entry = frame.mission ? entryFor(frame.mission) : (pending.shift() || uplinkLog);
        line(entry, "error", frame.data);
      }
    };
    const open = () => {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + location.host + "/ws/uplink");
      socket.onopen = () => {
        if (state) { state.textContent = "connected"; state.dataset.state = "open"; }
        // Follow again what this page was following before a reconnect.
        for (const mission of entries.keys()) {
          entries.get(mission).querySelectorAll("div").forEach((d) => d.remove());
          socket.send(JSON.stringify({ type: "follow", mission }));
        }
      };
      socket.onclose = () => {
        if (state) { state.textContent = "reconnecting"; state.dataset.state = "closed"; }
        setTimeout(open, 2000);
      };
      socket.onmessage = (message) => {
        let frame;
        try { frame = JSON.parse(message.data); } catch (_) { return; }
        show(frame);
      };
    };
    open();
    if (uplinkForm) {
      uplinkForm.addEventListener("submit", (e) => {
        e.preventDefault();
        const command = uplinkForm.elements.command.value.trim();
        if (!command || !socket || socket.readyState !== WebSocket.OPEN) return;
        const payload = { command };
        const capability = uplinkForm.elements.capability.value;
        if (capability) payload.capability = capability;
        const entry = document.createElement("li");
        line(entry, "command", "› " + command);
        uplinkLog.append(entry);
        pending.push(entry);
        socket.send(JSON.stringify({ type: "execute", payload }));
        uplinkForm.elements.command.value = "";
      });
    }
  }
})();
