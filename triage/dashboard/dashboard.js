// Dispatcher dashboard: live events from /feed, actions back over the same socket.
"use strict";

const SERVICES = [15, 17, 18];
const COLOURS = { 15: "#2e7d32", 17: "#1565c0", 18: "#c62828" };
const KEYWORD_SERVICE = {
  "malaise": 15, "hémorragie": 15, "brûlure": 15, "intoxication": 15,
  "violences": 17, "agression": 17, "vol": 17, "cambriolage": 17,
  "incendie": 18, "gaz": 18, "effondrement": 18, "électrocution": 18,
};
const calls = new Map();   // call_id → {metadata, detections, duration, level, live, recorded, wrong:Set}
const cards = new Map();   // `${service}:${call_id}` → {el, state, claimed_by, confirmed_by}
// Played around a detection: the keyword ends before the detection fires, so mostly before it.
const HEAR_BEFORE_S = 3, HEAR_AFTER_S = 1;
let socket = null;
let retry = 500;

const $ = (sel, root = document) => root.querySelector(sel);
const nameInput = $("#dispatcher");
nameInput.value = localStorage.getItem("triage.dispatcher") || "";
nameInput.addEventListener("change", () => localStorage.setItem("triage.dispatcher", nameInput.value.trim()));
// The dispatcher credential, asked for once and kept for this browser session (a ?token= link works too,
// and is taken off the address bar). The server names the dispatcher from it; the name field then only shows it.
let credential = sessionStorage.getItem("triage.token");

function call(id) {
  if (!calls.has(id)) calls.set(id, { metadata: {}, detections: [], duration: 0, level: -100, live: false,
                                      recorded: false, wrong: new Set() });
  return calls.get(id);
}

function notice(text, ok = false) {
  const n = $("#notice");
  n.textContent = text;
  n.className = ok ? "notice ok" : "notice";
  n.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { n.hidden = true; }, ok ? 3000 : 8000);
}

function fmtTime(s) {
  s = Math.max(0, Math.floor(s));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function send(action) {
  const who = nameInput.value.trim();
  if (!who) { notice("Indiquez votre nom de régulateur avant d'agir."); nameInput.focus(); return; }
  if (!socket || socket.readyState !== WebSocket.OPEN) { notice("Déconnecté : action impossible pour l'instant."); return; }
  socket.send(JSON.stringify({ ...action, dispatcher: who }));
}

// "1:05", "65" or "65.5" → seconds; null if it is none of these.
function parseCallTime(text) {
  const m = /^\s*(?:(\d+):)?(\d+(?:[.,]\d+)?)\s*$/.exec(text);
  if (!m) return null;
  return (m[1] ? Number(m[1]) * 60 : 0) + Number(m[2].replace(",", "."));
}

async function hear(id, time) {
  const start = Math.max(0, time - HEAR_BEFORE_S);
  try {
    const r = await fetch(`/recordings/${encodeURIComponent(id)}/clip?start=${start.toFixed(2)}&end=${(time + HEAR_AFTER_S).toFixed(2)}`,
                          credential ? { headers: { Authorization: `Bearer ${credential}` } } : {});
    if (!r.ok) { notice(`Écoute impossible : ${(await r.text()).trim()}`); return; }
    const audio = new Audio(URL.createObjectURL(await r.blob()));
    audio.addEventListener("ended", () => URL.revokeObjectURL(audio.src));
    await audio.play();
  } catch (e) {
    notice(`Écoute impossible : ${e}`);
  }
}

function ensureCard(service, id, entry = {}) {
  const key = `${service}:${id}`;
  if (cards.has(key)) return cards.get(key);
  const el = $("#card-template").content.firstElementChild.cloneNode(true);
  el.dataset.call = id;
  el.dataset.service = service;
  $(".claim", el).addEventListener("click", () => send({ type: "claim", call_id: id, service }));
  $(".ack", el).addEventListener("click", () => send({ type: "ack", call_id: id, service }));
  $(".reroute-to", el).addEventListener("change", (e) => {
    const to = Number(e.target.value);
    e.target.value = "";
    if (to && to !== service) send({ type: "reroute", call_id: id, service, to_service: to });
  });
  $(".confirm", el).addEventListener("click", () => send({ type: "confirm", call_id: id, service }));
  $(".missed", el).addEventListener("submit", (e) => {
    e.preventDefault();
    const keyword = $(".missed-keyword", el).value;
    const time = parseCallTime($(".missed-time", el).value);
    if (!keyword) { notice("Choisissez le mot-clé que le modèle a manqué."); return; }
    if (time === null) { notice("Indiquez vers quel moment de l'appel il a été dit (m:ss)."); return; }
    send({ type: "missed", call_id: id, service, keyword, time });
    $(".missed-keyword", el).value = "";
    $(".missed-time", el).value = "";
  });
  $(`[data-cards="${service}"]`).appendChild(el);
  const card = { el, state: entry.state || "waiting", claimed_by: entry.claimed_by || null,
                 confirmed_by: entry.confirmed_by || null };
  cards.set(key, card);
  render(service, id);
  counts();
  return card;
}

function removeCard(service, id) {
  const key = `${service}:${id}`;
  const card = cards.get(key);
  if (card) { card.el.remove(); cards.delete(key); counts(); }
}

function counts() {
  for (const s of SERVICES) $(`[data-count="${s}"]`).textContent = $(`[data-cards="${s}"]`).children.length;
  $("#live-count").textContent = [...calls.values()].filter((c) => c.live).length;
}

function render(service, id) {
  const card = cards.get(`${service}:${id}`);
  if (!card) return;
  const c = call(id);
  const el = card.el;
  $(".caller", el).textContent = c.metadata.caller || `appel ${id.slice(0, 8)}`;
  $(".meta", el).textContent = Object.entries(c.metadata).filter(([k]) => k !== "caller")
    .map(([k, v]) => `${k} : ${v}`).join(" · ");
  const mine = card.claimed_by && card.claimed_by === nameInput.value.trim();
  $(".state", el).textContent = card.state === "claimed" ? `pris par ${card.claimed_by}` : "en attente";
  el.classList.toggle("claimed", card.state === "claimed");
  el.classList.toggle("mine", Boolean(mine));
  el.classList.toggle("ended", !c.live);
  el.classList.toggle("confirmed", Boolean(card.confirmed_by));
  $(".confirm", el).textContent = card.confirmed_by ? `Confirmé (${card.confirmed_by})` : "Confirmer";
  $(".rec-flag", el).hidden = !c.recorded;
  $(".duration", el).textContent = fmtTime(c.duration);
  $(".live-flag", el).textContent = c.live ? "en ligne" : "terminé";
  const level = c.live ? Math.max(0, Math.min(100, (c.level + 60) * 100 / 60)) : 0;
  $(".level", el).style.width = `${level}%`;
  const span = Math.max(c.duration, ...c.detections.map((d) => d.time), 10);
  const tl = $(".timeline", el);
  tl.replaceChildren(...c.detections.map((d) => {
    const m = document.createElement("span");
    m.className = "mark";
    m.style.left = `${(d.time / span) * 100}%`;
    m.style.background = COLOURS[d.service];
    m.style.opacity = String(0.35 + 0.65 * d.confidence);
    m.title = `${d.keyword} à ${d.time.toFixed(1)} s (${Math.round(d.confidence * 100)} %)`;
    return m;
  }));
  $(".heard", el).replaceChildren(...c.detections.map((d) => {
    const li = document.createElement("li");
    const wrongKey = `${d.keyword}@${d.time.toFixed(3)}`;
    li.classList.toggle("wrong", c.wrong.has(wrongKey));
    li.innerHTML = `<span class="kw"></span><span class="at"></span><span class="conf"></span>`;
    $(".kw", li).textContent = `« ${d.keyword} »`;
    li.querySelector(".kw").style.color = COLOURS[d.service];
    $(".at", li).textContent = `à ${fmtTime(d.time)}`;
    $(".conf", li).textContent = `${Math.round(d.confidence * 100)} %`;
    const b = document.createElement("button");
    b.textContent = "Erreur";
    b.title = "Ce mot n'a pas été dit";
    b.addEventListener("click", () => send({ type: "wrong", call_id: id, service, keyword: d.keyword, time: d.time }));
    if (c.recorded) {
      const play = document.createElement("button");
      play.className = "listen";
      play.textContent = "Écouter";
      play.title = "Écouter les secondes autour de cette détection";
      play.addEventListener("click", () => hear(id, d.time));
      li.appendChild(play);
    }
    li.appendChild(b);
    return li;
  }));
}

function renderCall(id) { for (const s of SERVICES) render(s, id); }

function onEvent(ev) {
  switch (ev.type) {
    case "snapshot":
      for (const key of [...cards.keys()]) { const [s, id] = key.split(":"); removeCard(Number(s), id); }
      for (const [id, live] of Object.entries(ev.live || {})) {
        Object.assign(call(id), { metadata: live.metadata, detections: live.detections, duration: live.duration,
                                  live: true, recorded: Boolean(live.recorded) });
      }
      for (const [s, entries] of Object.entries(ev.queues || {})) {
        for (const e of entries) {
          const c = call(e.call_id);
          c.metadata = e.metadata || c.metadata;
          if (!c.detections.length) {
            c.detections = (e.evidence || []).filter((x) => x.keyword)
              .map((x) => ({ ...x, service: KEYWORD_SERVICE[x.keyword] || Number(s) }));
          }
          c.live = c.live || e.call_state === "live";
          c.recorded = c.recorded || Boolean(e.recorded);
          ensureCard(Number(s), e.call_id, e);
        }
      }
      if (!ev.redis) notice("Base de routage injoignable : les appels sont conservés et seront routés à son retour.");
      break;
    case "call_started":
      Object.assign(call(ev.call_id), { metadata: ev.metadata || {}, live: true, recorded: Boolean(ev.recorded) });
      break;
    case "detection":
      call(ev.call_id).detections.push(ev);
      renderCall(ev.call_id);
      break;
    case "route":
      call(ev.call_id).metadata = ev.metadata || call(ev.call_id).metadata;
      for (const s of ev.services) ensureCard(s, ev.call_id);
      renderCall(ev.call_id);
      break;
    case "levels":
      for (const [id, v] of Object.entries(ev.calls)) {
        const c = call(id);
        Object.assign(c, { level: v.level_db, duration: v.duration, live: true });
        renderCall(id);
      }
      break;
    case "call_ended":
      call(ev.call_id).live = false;
      renderCall(ev.call_id);
      break;
    case "dispatch": {
      const card = cards.get(`${ev.service}:${ev.call_id}`);
      if (ev.action === "claim" && card) { card.state = "claimed"; card.claimed_by = ev.dispatcher; }
      if (ev.action === "confirm" && card) card.confirmed_by = ev.dispatcher;
      if (ev.action === "ack" || ev.action === "reroute") removeCard(ev.service, ev.call_id);
      if (ev.action === "reroute" && ev.to_service) ensureCard(Number(ev.to_service), ev.call_id);
      renderCall(ev.call_id);
      break;
    }
    case "action":
      if (ev.action === "wrong_detection") {
        call(ev.call_id).wrong.add(`${ev.keyword}@${Number(ev.detection_time).toFixed(3)}`);
        renderCall(ev.call_id);
      }
      break;
    case "action_result":
      if (ev.ok) notice("Action enregistrée.", true);
      else notice(`Action refusée : ${ev.message}`);
      break;
    case "warning":
      notice("Base de routage injoignable : les appels sont conservés et seront routés à son retour.");
      break;
    case "store_recovered":
      notice("Base de routage de nouveau joignable.", true);
      break;
  }
  counts();
}

async function signIn() {
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    credential = params.get("token");
    sessionStorage.setItem("triage.token", credential);
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.size ? `?${params}` : ""));
  }
  let r;
  try {
    r = await fetch("/whoami", credential ? { headers: { Authorization: `Bearer ${credential}` } } : {});
  } catch (e) {
    setTimeout(signIn, retry);
    retry = Math.min(retry * 2, 8000);
    return;
  }
  if (r.status === 401 || r.status === 403) {
    const tried = Boolean(credential);
    sessionStorage.removeItem("triage.token");
    credential = null;
    const form = $("#login");
    form.hidden = false;
    $("#login-error").textContent = tried ? `Refusé : ${(await r.text()).trim()}` : "";
    $("#credential").focus();
    return;
  }
  const me = await r.json();
  if (me.dispatcher) {
    nameInput.value = me.dispatcher;
    nameInput.readOnly = true;
  }
  connect();
}

$("#login").addEventListener("submit", (e) => {
  e.preventDefault();
  credential = $("#credential").value.trim();
  $("#credential").value = "";
  sessionStorage.setItem("triage.token", credential);
  $("#login").hidden = true;
  $("#login-error").textContent = "";
  signIn();
});

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/feed` +
    (credential ? `?token=${encodeURIComponent(credential)}` : "");
  socket = new WebSocket(url);
  socket.addEventListener("open", () => {
    retry = 500;
    const s = $("#status");
    s.textContent = "connecté";
    s.className = "status up";
  });
  socket.addEventListener("message", (m) => onEvent(JSON.parse(m.data)));
  socket.addEventListener("close", () => {
    const s = $("#status");
    s.textContent = "déconnecté — reconnexion…";
    s.className = "status down";
    // Through signIn: a credential revoked meanwhile brings the sign-in form back instead of a retry loop.
    setTimeout(signIn, retry);
    retry = Math.min(retry * 2, 8000);
  });
}

signIn();
