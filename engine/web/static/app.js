// backline's control page: one WebSocket to /ws, JSON both ways (docs/web.md). No build step.
"use strict";

const state = { ws: null, specs: [], values: {}, patches: [], dragging: new Set(), learning: false,
  retry: 500, swallow: false, fallbackFrames: null, pending: new Map(), frame: 0 };

if (new URLSearchParams(location.search).has("token")) {
  history.replaceState(null, "", "/");  // the cookie carries it from now on; keep it off the screen
}

function $(sel, root = document) { return root.querySelector(sel); }
function $all(sel, root = document) { return Array.from(root.querySelectorAll(sel)); }

function specFor(path) {
  for (const s of state.specs) {
    const rx = new RegExp("^" + s.pattern.replace(/[.]/g, "\\.").replace(/<i>|<pitch>/g, "\\d+") + "$");
    if (rx.test(path)) return s;
  }
  return null;
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

// A fader sends at most once per animation frame: the latest value (the engine coalesces too).
function sendValue(path, value) {
  state.pending.set(path, value);
  if (!state.frame) {
    state.frame = requestAnimationFrame(() => {
      state.frame = 0;
      for (const [p, v] of state.pending) send({ path: p, value: v });
      state.pending.clear();
    });
  }
}

function format(value, spec) {
  if (typeof value !== "number") return String(value);
  return spec && spec.kind === "int" ? String(Math.round(value)) : value.toFixed(2);
}

function setupInput(input) {
  const path = input.dataset.path;
  const spec = specFor(path);
  if (!spec) return;
  if (input.type === "range" || input.type === "number") {
    if (spec.low !== null) { input.min = spec.low; input.max = spec.high; }
    if (input.type === "range") input.step = spec.kind === "int" ? 1 : "any";  // any: a value from OSC shows as sent
  }
  if (input.dataset.bound) return;
  input.dataset.bound = "1";
  if (input.type === "range") {
    input.addEventListener("pointerdown", () => state.dragging.add(path));
    const release = () => state.dragging.delete(path);
    input.addEventListener("pointerup", release);
    input.addEventListener("pointercancel", release);
    input.addEventListener("blur", release);
    input.addEventListener("input", () => {
      const value = spec.kind === "int" ? Math.round(Number(input.value)) : Number(input.value);
      showValue(path, value);
      sendValue(path, value);
    });
  } else if (input.tagName === "SELECT" || input.type === "number") {
    input.addEventListener("change", () => {
      const value = input.type === "number" ? Number(input.value) : input.value;
      if (input.type === "number" && !Number.isFinite(value)) return;
      send({ path, value });
    });
  }
}

function showValue(path, value) {
  const spec = specFor(path);
  for (const out of $all(`output[data-for="${path}"]`)) out.textContent = format(value, spec);
}

function applyValue(path, value) {
  state.values[path] = value;
  if (path === "safety.freeze") $("#freeze").classList.toggle("on", !!value);
  if (path === "transport.playing") {
    $('[data-action="transport.play"]').classList.toggle("on", !!value);
    $('[data-action="transport.stop"]').classList.toggle("on", !value);
  }
  if (path === "patch.load") { setPatch(String(value)); return; }
  if (/^(style|centroid)\.\d+\.weight$/.test(path) && !$(`[data-path="${path}"]`)) buildStyle();
  for (const input of $all(`[data-path="${path}"]`)) {
    if (state.dragging.has(path) || document.activeElement === input && input.type !== "range") continue;
    input.value = value;
  }
  showValue(path, value);
}

function fader(path, label) {
  const wrap = document.createElement("label");
  wrap.className = "fader";
  wrap.innerHTML = `<span>${label} <output data-for="${path}"></output></span><input type="range" data-path="${path}">`;
  setupInput($("input", wrap));
  return wrap;
}

function buildStyle() {
  const slots = $("#slots"), centroids = $("#centroids");
  slots.textContent = ""; centroids.textContent = "";
  const indexes = (prefix) => Object.keys(state.values).filter((p) => p.startsWith(prefix) && p.endsWith(".weight"))
    .map((p) => Number(p.split(".")[1])).sort((a, b) => a - b);
  for (const i of indexes("style.")) {
    const slot = document.createElement("div");
    slot.className = "slot";
    const prompt = document.createElement("div");
    prompt.className = "prompt";
    prompt.innerHTML = `<input type="text" data-text="style.${i}.text" maxlength="1000" enterkeyhint="send" aria-label="prompt ${i + 1}">` +
      `<button data-set="style.${i}.text">Set</button>`;
    const text = $("input", prompt);
    text.value = state.values[`style.${i}.text`] || "";
    const submit = () => { if (text.value.trim()) send({ path: `style.${i}.text`, value: text.value.trim() }); };
    text.addEventListener("keydown", (e) => { if (e.key === "Enter") submit(); });
    $("button", prompt).addEventListener("click", submit);
    slot.append(prompt, fader(`style.${i}.weight`, `Slot ${i + 1}`));
    slots.append(slot);
  }
  for (const i of indexes("centroid.")) centroids.append(fader(`centroid.${i}.weight`, `Centroid ${i + 1}`));
  centroids.append(fader("mean.weight", "Mean"));
  for (const [path, value] of Object.entries(state.values)) {
    for (const input of $all(`input[type=range][data-path="${path}"]`)) input.value = value;
    showValue(path, value);
  }
}

function buildSampling() {
  const box = $("#sampling-faders");
  box.textContent = "";
  const names = { "sampling.temperature": "Temperature", "sampling.top_k": "Top-k", "sampling.cfg_style": "CFG style",
    "sampling.cfg_notes": "CFG notes", "sampling.cfg_drums": "CFG drums" };
  for (const [path, label] of Object.entries(names)) box.append(fader(path, label));
}

function setPatch(name) {
  $("#patch-name").textContent = name;
  for (const b of $all("#patch-list button")) b.classList.toggle("current", b.dataset.patch === name);
}

function buildPatches(names, current) {
  const list = $("#patch-list");
  list.textContent = "";
  for (const name of names) {
    const b = document.createElement("button");
    b.textContent = name;
    b.dataset.patch = name;
    b.dataset.learnPath = "patch.load";
    b.addEventListener("click", () => { if (!state.learning) send({ path: "patch.load", value: name }); });
    list.append(b);
  }
  setPatch(current);
}

function onHello(hello) {
  state.specs = hello.parameters;
  state.values = { ...hello.values };
  buildSampling();
  buildStyle();
  for (const input of $all("[data-path]")) setupInput(input);
  for (const [path, value] of Object.entries(state.values)) applyValue(path, value);
  buildPatches(hello.patches, hello.patch);
  $("#learn-card").hidden = !hello.learn;
  onStatus(hello.status);
}

function onStatus(s) {
  // the toggles follow the engine, whoever moved them (a page's own change is never echoed to it)
  state.values["safety.freeze"] = !!s.frozen;
  $("#freeze").classList.toggle("on", !!s.frozen);
  $('[data-action="transport.play"]').classList.toggle("on", !!s.playing);
  $('[data-action="transport.stop"]').classList.toggle("on", !s.playing);
  $("#position").textContent = `${s.bar}.${Math.floor(s.beat)}`;
  $("#tempo-now").textContent = `${Number(s.tempo).toFixed(1)} BPM`;
  const clock = s.clock || {};
  $("#health").textContent = `look-ahead ${s.lookahead_ms} ms · xruns ${s.xruns} · underruns ${s.underruns} · ` +
    `${s.generator} ${s.generator_state || ""} ${s.speed}x · clock ${clock.source || ""} ${clock.state || ""}`;
  if ($("#patch-name").textContent !== s.patch) setPatch(s.patch);
  const warnings = [];
  const fellBack = state.fallbackFrames !== null && s.fallback_frames > state.fallbackFrames;
  state.fallbackFrames = s.fallback_frames;
  if (fellBack || (s.generator_state && s.generator_state !== "ready")) {
    warnings.push(`The ${s.generator} generator is ${s.generator_state || "behind"}: the fallback plays.`);
  }
  if (clock.state === "coasting") warnings.push(`Clock ${clock.source} lost: coasting at ${clock.tempo_bpm} BPM.`);
  if (clock.state === "lost") warnings.push(`Clock ${clock.source} lost: holding the last tempo until it returns.`);
  if (s.underruns > 0 && state.lastUnderruns !== undefined && s.underruns > state.lastUnderruns) {
    warnings.push("Generation fell behind: underruns.");
  }
  state.lastUnderruns = s.underruns;
  showWarnings(warnings);
}

function showWarnings(list) {
  const box = $("#warnings");
  box.textContent = "";
  for (const text of list) {
    const div = document.createElement("div");
    div.textContent = text;
    box.append(div);
  }
}

function onMessage(event) {
  let m;
  try { m = JSON.parse(event.data); } catch (err) { return; }
  if (m.hello) onHello(m.hello);
  else if (m.status) onStatus(m.status);
  else if (m.values) { state.values = { ...m.values }; buildStyle(); for (const [p, v] of Object.entries(m.values)) applyValue(p, v); }
  else if (m.path !== undefined) applyValue(m.path, m.value);
  else if (m.learn) { $("#learn-state").textContent = `${m.learn}: ${m.state}`; }
  else if (m.error) { $("#learn-state").textContent = `refused: ${m.error}`; }
}

function connect() {
  const link = $("#link");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  state.ws = ws;
  ws.addEventListener("open", () => { link.textContent = "live"; link.className = "link on"; state.retry = 500; });
  ws.addEventListener("message", onMessage);
  ws.addEventListener("close", () => {
    link.textContent = "reconnecting"; link.className = "link off";
    showWarnings(["No connection to backline: the page reconnects; the engine plays on."]);
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 5000);
  });
}

// Buttons: actions, the freeze toggle, and learn (the next control touched is the one learned).
document.addEventListener("click", (e) => {
  if (state.swallow) {  // the touch that picked a control to learn does not also press it
    state.swallow = false;
    e.preventDefault();
    e.stopPropagation();
    return;
  }
  const b = e.target.closest("button");
  if (!b || state.learning) return;
  if (b.dataset.action) send({ path: b.dataset.action });
  if (b.dataset.toggle) {
    const value = !state.values[b.dataset.toggle];
    state.values[b.dataset.toggle] = value;  // pressed again before the status says so: the other way
    send({ path: b.dataset.toggle, value });
  }
}, true);

$("#learn").addEventListener("click", () => {
  state.learning = !state.learning;
  document.body.classList.toggle("learning", state.learning);
  $("#learn-state").textContent = state.learning ? "Touch the control to learn." : "Learn cancelled.";
});

document.addEventListener("pointerdown", (e) => {
  if (!state.learning || e.target.id === "learn") return;
  const el = e.target.closest("[data-path],[data-action],[data-toggle],[data-learn-path],[data-set]");
  if (!el) return;
  e.preventDefault();
  e.stopPropagation();
  const path = el.dataset.path || el.dataset.action || el.dataset.toggle || el.dataset.learnPath || el.dataset.set;
  state.learning = false;
  state.swallow = true;  // the click this touch makes, if it makes one (a scroll makes none)
  setTimeout(() => { state.swallow = false; }, 700);
  document.body.classList.remove("learning");
  send({ learn: path });
  $("#learn-state").textContent = `${path}: move a MIDI control`;
}, true);

connect();
