// The doorbell viewer: answers the door from any browser.
//
// It speaks the room protocol (join, invite, ok, bye) over a minimal Socket.IO
// v5 client on the WebSocket transport, makes a non-trickle offer with
// receive-only video and send-receive audio, and shows clear states. No
// dependencies and nothing fetched from elsewhere: it works offline.
//
// Coming back: the page joins holding a seat, a random token kept in the
// tab's sessionStorage. When the page reloads, or the phone moves from Wi-Fi
// to mobile data and the connections die, it joins again with the same seat
// and the server lets it back into the call (a second browser still gets
// "full"); the doorbell hears a new viewer and answers a new offer. Only the
// Hang up button says "bye": a page that goes away may be coming back.
//
// Talking is push-to-talk: the owner's microphone is on the call from the
// start, but muted until the Talk button or the space bar is held, or "Open
// talk" is switched on (see the talk section below). The visitor is always
// heard.
//
// Query: ?room=NAME (the room protocol), ?session=ID (seed 004's SSE
// sessions), or the page is at /watch/DEVICE (seed 002's device sockets,
// optionally ?token=). &processing=off turns off echo cancellation, noise
// suppression and gain control (measurements and tests only).
// &stamps=1 reads the doorbell's capture stamp off every picture shown
// (measurements only; see readStamps below).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = params.get("room");
// Seed 004's SSE sessions: the link names a session instead of a room.
const session = params.get("session");
// Seed 002's device sockets: the ring link is the server's /watch/DEVICE.
const watchDevice = (() => {
  const m = location.pathname.match(/\/watch\/([^/]+)$/);
  return m ? decodeURIComponent(m[1]) : null;
})();
const GATHER_CAP_MS = 3000;
// A media connection that stays "disconnected" this long is given up for a
// new one (the browser itself waits much longer before "failed").
const DISCONNECTED_MS = 2000;
// How long the page keeps trying to get back into the call. The doorbell
// waits `call.media_timeout` (10 s by default) and the server keeps the seat
// 30 s: past that there is no call to come back to.
const GIVE_UP_MS = 30000;

const state = {
  name: "starting", pc: null, mic: null, ws: null, ended: false, iceServers: null,
  seat: null,
  sessions: 0,          // media sessions started (1 + times the page came back)
  everConnected: false, // a media connection of this page was up once
  lostSince: null,      // when the current attempt to come back began
  retry: 0, retryTimer: null, disconnectTimer: null,
  serverLost: false,    // the server went away while the call's media stayed up
  talking: false,       // the door hears the owner's microphone
};
window.doorbell = state; // for tests and the curious

function show(name, text, note) {
  state.name = name;
  $("status").textContent = text;
  $("status").className = name;
  if (note !== undefined) $("note").textContent = note;
}

// A seat for this room in this tab: kept across reloads, never shared with
// another tab or browser (sessionStorage is per tab).
function seatFor(name) {
  const key = "doorbell-seat:" + name;
  let seat = null;
  try { seat = sessionStorage.getItem(key); } catch (_) { /* storage off: a seat per page */ }
  if (!seat || seat.length < 16) {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    seat = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    try { sessionStorage.setItem(key, seat); } catch (_) { /* as above */ }
  }
  return seat;
}

// --- Socket.IO v5 over a WebSocket, just what the room protocol needs ---
function connectSignaling(onEvent, onClose) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/socket.io/?EIO=4&transport=websocket`);
  let closed = false;
  const sio = {
    ready: false,
    emit(event, arg) {
      if (ws.readyState === WebSocket.OPEN && sio.ready) ws.send("42" + JSON.stringify([event, arg]));
    },
    close() { closed = true; try { ws.close(); } catch (_) { /* already closed */ } },
  };
  const lost = () => { if (!closed) { closed = true; onClose(sio); } };
  ws.onmessage = (m) => {
    const data = String(m.data);
    if (data[0] === "0") ws.send("40");                  // Engine.IO open -> Socket.IO connect
    else if (data === "2") ws.send("3");                 // ping -> pong
    else if (data.startsWith("40")) { sio.ready = true; onEvent(sio, "connect"); }
    else if (data.startsWith("42")) {
      let msg;
      try { msg = JSON.parse(data.slice(2)); } catch (_) { return; }
      if (Array.isArray(msg) && typeof msg[0] === "string") onEvent(sio, msg[0], msg[1]);
    } else if (data.startsWith("41") || data.startsWith("44")) lost();
  };
  ws.onclose = lost;
  ws.onerror = () => {};
  return sio;
}

async function getMicrophone() {
  const raw = params.get("processing") === "off";
  const audio = raw ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false } : true;
  try {
    return await navigator.mediaDevices.getUserMedia({ audio, video: false });
  } catch (e) {
    show("connecting", "Connecting…", "Microphone not available: you will see and hear the door, but the visitor cannot hear you.");
    return null;
  }
}

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    pc.addEventListener("icecandidate", (e) => { if (!e.candidate) resolve(); });
    setTimeout(resolve, GATHER_CAP_MS); // an unreachable STUN server must not stall the call
  });
}

// The server sends this viewer its STUN/TURN servers (TURN credentials
// minted for it) just before "joined"; config.json has only the public ones.
async function iceServers() {
  if (state.iceServers) return state.iceServers;
  try {
    const r = await fetch("config.json", { cache: "no-store" });
    return (await r.json()).iceServers || [];
  } catch (_) {
    return [];
  }
}

function closePeer() {
  clearTimeout(state.disconnectTimer);
  if (state.pc) {
    const pc = state.pc;
    state.pc = null;
    pc.onconnectionstatechange = null;
    pc.close();
  }
}

function end(name, text, note) {
  if (state.ended) return;
  state.ended = true;
  clearTimeout(state.retryTimer);
  show(name, text, note);
  closePeer();
  if (state.mic) state.mic.getTracks().forEach((t) => t.stop());
  $("talk").disabled = true;
  $("opentalk").disabled = true;
  updateTalk();
  $("hangup").disabled = true;
  const ws = state.ws;
  if (ws) setTimeout(() => ws.close(), 200);
}

function hangUp() {
  if (state.ended) return;
  if (state.ws) state.ws.emit("bye", room);
  end("ended", "You hung up.", "");
}

// The connection to the server or to the door was lost: drop both and join
// again with the seat, backing off, until it works or there is no call left.
function comeBack() {
  if (state.ended || state.retryTimer) return;
  if (state.lostSince === null) state.lostSince = Date.now();
  closePeer();
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  if (Date.now() - state.lostSince > GIVE_UP_MS) {
    end("error", "Lost the connection to the door.", "Check your network; the visitor may ring again.");
    return;
  }
  show("reconnecting", "Reconnecting…", "");
  const delay = Math.min(4000, 250 * 2 ** state.retry);
  state.retry += 1;
  state.retryTimer = setTimeout(() => { state.retryTimer = null; startSignaling(); }, delay);
}

// The door's tracks into the video element, sound on (or a button to turn
// it on where the browser wants a tap first).
function showDoor(pc) {
  const stream = new MediaStream();
  $("door").srcObject = stream;
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    const v = $("door");
    v.muted = false;
    v.play().catch(() => { $("unmute").hidden = false; });
  };
  if (params.get("stamps") === "1") readStamps($("door"));
}

// Glass to glass, measured in the page: the doorbell draws its capture time
// into the top left of every picture (40 blocks of width/40 pixels: `1 0`,
// 32 bits of Unix milliseconds modulo 2^32, 4 check bits, `0 1`; layout in
// src/media/stamp.rs). For each picture the browser is about to show
// (requestVideoFrameCallback), the stamp row is copied to a canvas, read
// back, and the capture time compared with the expected display time (one
// machine, one clock). Results in window.doorbell.glass.
function readStamps(video) {
  const now = performance.timeOrigin + performance.now();
  if (state.glass) {
    // A new session of the same page: its own first picture.
    state.glass.sessionStartMs = now;
    state.glass.firstShownMs = null;
    return;
  }
  if (!video.requestVideoFrameCallback) return;
  // sessionStartMs: this media session began (the offer is being made);
  // pageStartMs: the page began loading.
  const glass = { samples: [], firstShownMs: null, sessionStartMs: now, pageStartMs: performance.timeOrigin };
  state.glass = glass;
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const onFrame = (_now, meta) => {
    const shownMs = performance.timeOrigin + meta.expectedDisplayTime;
    if (glass.firstShownMs === null) glass.firstShownMs = shownMs;
    const b = Math.floor(meta.width / 40);
    if (b >= 4) {
      canvas.width = 40 * b; canvas.height = b;
      ctx.drawImage(video, 0, 0, 40 * b, b, 0, 0, 40 * b, b);
      const px = ctx.getImageData(0, 0, 40 * b, b).data;
      const bit = (i) => {
        let sum = 0, n = 0;
        for (let y = Math.floor(b / 4); y < Math.ceil(3 * b / 4); y++) {
          for (let x = i * b + Math.floor(b / 4); x < i * b + Math.ceil(3 * b / 4); x++) {
            sum += px[(y * 40 * b + x) * 4 + 1]; n++;
          }
        }
        return sum / n > 128 ? 1 : 0;
      };
      const bits = Array.from({ length: 40 }, (_, i) => bit(i));
      let data = 0, ones = 0;
      for (let i = 0; i < 32; i++) { data = data * 2 + bits[2 + i]; ones += bits[2 + i]; }
      let check = 0;
      for (let i = 0; i < 4; i++) check = check * 2 + bits[34 + i];
      const framed = bits[0] === 1 && bits[1] === 0 && bits[38] === 0 && bits[39] === 1;
      if (framed && check === ones % 16 && glass.samples.length < 100000) {
        const wrap = 2 ** 32;
        const back = (((shownMs % wrap) - data) % wrap + wrap) % wrap;
        glass.samples.push(back);
      }
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

// What the page offers: the door's video to receive, and the owner's
// microphone both ways (receive only without one). The microphone's track.
function offerTransceivers(pc) {
  pc.addTransceiver("video", { direction: "recvonly" });
  const track = state.mic && state.mic.getAudioTracks()[0];
  if (track) pc.addTransceiver(track, { direction: "sendrecv", streams: [state.mic] });
  else pc.addTransceiver("audio", { direction: "recvonly" });
  return track;
}

// The connection's states on the page, for the seeds' sessions (no coming
// back: a connection lost for good ends the call).
function followConnection(pc) {
  pc.onconnectionstatechange = () => {
    if (pc !== state.pc) return;
    clearTimeout(state.disconnectTimer);
    switch (pc.connectionState) {
      case "connected":
        state.everConnected = true;
        show("connected", "Connected to the door", state.mic ? "" : $("note").textContent);
        break;
      case "disconnected":
        state.disconnectTimer = setTimeout(() => end("ended", "The call is over.", ""), GIVE_UP_MS);
        break;
      case "failed":
        end("error", "The connection to the door failed.", "The doorbell may be on a network your phone cannot reach (a TURN server helps).");
        break;
    }
  };
}

async function call(sio) {
  closePeer();
  const pc = new RTCPeerConnection({ iceServers: await iceServers() });
  if (state.ended || sio !== state.ws) { pc.close(); return; }
  state.pc = pc;
  state.sessions += 1;
  const track = offerTransceivers(pc);
  showDoor(pc);
  pc.onconnectionstatechange = () => {
    if (pc !== state.pc) return;
    clearTimeout(state.disconnectTimer);
    switch (pc.connectionState) {
      case "connected":
        state.everConnected = true;
        state.lostSince = null;
        state.retry = 0;
        show("connected", "Connected to the door", track ? "" : $("note").textContent);
        break;
      case "disconnected":
        state.disconnectTimer = setTimeout(comeBack, DISCONNECTED_MS);
        break;
      case "failed":
        if (state.everConnected) comeBack();
        else end("error", "The connection to the door failed.", "The doorbell may be on a network your phone cannot reach (a TURN server helps).");
        break;
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  if (pc !== state.pc) return;
  sio.emit("invite", { type: pc.localDescription.type, sdp: pc.localDescription.sdp });
  show(state.everConnected ? "reconnecting" : "ringing", state.everConnected ? "Reconnecting…" : "Ringing the door…");
}

async function onEvent(sio, event, arg) {
  if (sio !== state.ws || state.ended) return; // an old connection's last words
  switch (event) {
    case "connect":
      sio.emit("join", { room, seat: state.seat });
      break;
    case "ice_servers":
      if (arg && Array.isArray(arg.iceServers)) state.iceServers = arg.iceServers;
      break;
    case "joined":
      state.serverLost = false;
      state.retry = 0;
      $("hangup").disabled = false;
      try { await call(sio); } catch (e) { end("error", "Could not start the call.", String(e)); }
      break;
    case "created":
      if (state.serverLost && mediaUp()) {
        // The server restarted and the doorbell has not joined again yet:
        // the call goes on; the doorbell's arrival is a `new_peer`.
        state.retry = 0;
        break;
      }
      // We are first in the room: the doorbell is no longer there.
      sio.emit("bye", room);
      end("ended", state.everConnected ? "The call is over." : "This ring is over.",
        state.everConnected ? "" : "The doorbell stopped waiting, or the link is old.");
      break;
    case "new_peer":
      // The doorbell joined the room again after the server came back: it
      // starts a new session, so offer again (the media was fine, but both
      // sides must agree on one session).
      if (state.serverLost) {
        state.serverLost = false;
        try { await call(sio); } catch (e) { end("error", "Could not start the call.", String(e)); }
      }
      break;
    case "full":
      end("full", "Someone else already answered.", "");
      break;
    case "ok":
      if (state.pc && arg && arg.sdp) {
        try {
          await state.pc.setRemoteDescription(arg);
          if (state.name !== "connected") show("answered", "Connecting to the door…");
        } catch (e) {
          end("error", "The doorbell's answer was not usable.", String(e));
        }
      }
      break;
    case "bye":
      end("ended", "The doorbell hung up.", "");
      break;
  }
}

function startSignaling() {
  state.ws = connectSignaling(onEvent, (sio) => {
    if (sio !== state.ws || state.ended) return;
    if (mediaUp()) serverOnly();
    else if (state.everConnected || state.pc) comeBack();
    else end("error", "Lost the connection to the server.", "");
  });
}

function mediaUp() {
  return !!state.pc && state.pc.connectionState === "connected";
}

// The server went away but the call did not (its media never went through
// the server): keep talking, and join the room again in the background, so
// that the hang-up and a later reload reach the doorbell once the server is
// back. The doorbell joins again too; whoever is first waits for the other.
function serverOnly() {
  if (state.retryTimer) return;
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  state.serverLost = true;
  const delay = Math.min(2000, 250 * 2 ** state.retry);
  state.retry += 1;
  state.retryTimer = setTimeout(() => { state.retryTimer = null; startSignaling(); }, delay);
}

// --- Talking: the owner's microphone is open only while asked for ---
//
// The microphone's track is disabled (the browser sends silence; the track
// stays on the call, so nothing is negotiated again) until the Talk button
// is held with a mouse, a finger or a pen (pointer events), or the space bar
// is held, or "Open talk" is on. A hold ends when it is let go, when the
// pointer leaves the button, and when the window loses focus or the page is
// hidden: the key-up or pointer-up may then never reach the page. Open talk
// stays on until it is switched off; it is also the way to talk for those
// who cannot hold a button.
const talk = { pointer: false, key: false, open: false };

function updateTalk() {
  const track = state.mic && state.mic.getAudioTracks()[0];
  const on = !!track && !state.ended && (talk.open || talk.pointer || talk.key);
  if (track) track.enabled = on;
  state.talking = on;
  $("talk").setAttribute("aria-pressed", String(on));
  $("talk").textContent = on ? "Talking…" : "Hold to talk";
  $("talkhint").className = on ? "talking" : "";
  $("talkhint").textContent = !track ? "" : on ? "The visitor hears you."
    : "The visitor does not hear you: hold the button or the space bar to talk, or switch on open talk.";
}

function letGo() {
  if (!talk.pointer && !talk.key) return;
  talk.pointer = false;
  talk.key = false;
  updateTalk();
}

// Space anywhere on the page, except where it types text.
function spaceForTalk(e) {
  if (e.code !== "Space" && e.key !== " ") return false;
  const el = e.target;
  if (!el || el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return false;
  return !(el.tagName === "INPUT" && !["checkbox", "radio", "button", "submit", "reset", "range"].includes(el.type));
}

function setUpTalk() {
  const button = $("talk");
  button.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || button.disabled) return; // the main button, a finger or a pen
    talk.pointer = true;
    updateTalk();
  });
  for (const ev of ["pointerup", "pointercancel", "pointerleave"]) {
    button.addEventListener(ev, () => {
      if (!talk.pointer) return;
      talk.pointer = false;
      updateTalk();
    });
  }
  button.addEventListener("contextmenu", (e) => e.preventDefault()); // a long press
  // The default of space is to scroll, or to click the focused button or
  // switch when it comes up: hang up, or turn open talk on or off. Taking
  // both events keeps space for talking alone.
  document.addEventListener("keydown", (e) => {
    if (!spaceForTalk(e) || e.ctrlKey || e.altKey || e.metaKey) return;
    e.preventDefault();
    if (e.repeat || talk.key || button.disabled) return;
    talk.key = true;
    updateTalk();
  });
  document.addEventListener("keyup", (e) => {
    if (!spaceForTalk(e)) return;
    e.preventDefault();
    if (!talk.key) return;
    talk.key = false;
    updateTalk();
  });
  window.addEventListener("blur", letGo);
  document.addEventListener("visibilitychange", () => { if (document.hidden) letGo(); });
  $("opentalk").addEventListener("change", () => {
    talk.open = $("opentalk").checked;
    updateTalk();
  });
}

// --- Seed 004's SSE sessions (a `?session=` link) ---
//
// The doorbell registered first, so it offers once this page registers
// (the server says `new-peer` to it); the page answers, and candidates
// trickle both ways as `ice-candidate` messages (`null` ends them).
// EventSource opens a dropped stream again by itself; the server keeps
// what was sent meanwhile.
function ssePost(path, body) {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
    cache: "no-store",
  });
}

async function sseIceServers(me) {
  try {
    // Who we are, so that `doorbell serve` hands this peer TURN credentials.
    const r = await fetch(`iceServers?session=${session}&peer=${me}`, { cache: "no-store" });
    const j = await r.json();
    if (!Array.isArray(j.urls) || j.urls.length === 0) return [];
    const server = { urls: j.urls };
    if (j.username) { server.username = j.username; server.credential = j.credential; }
    return [server];
  } catch (_) {
    return [];
  }
}

async function sseAnswer(me, from, offer) {
  closePeer();
  const pc = new RTCPeerConnection({ iceServers: state.iceServers || [] });
  state.pc = pc;
  state.sessions += 1;
  const send = (type, payload) => ssePost(`message/${session}/${me}`, { type, payload, target: from });
  pc.onicecandidate = (e) => { send("ice-candidate", e.candidate ? e.candidate.toJSON() : null); };
  showDoor(pc);
  followConnection(pc);
  await pc.setRemoteDescription(offer);
  const track = state.mic && state.mic.getAudioTracks()[0];
  for (const t of pc.getTransceivers()) {
    const kind = t.receiver.track && t.receiver.track.kind;
    if (kind === "audio" && track) {
      await t.sender.replaceTrack(track);
      t.direction = "sendrecv";
    } else if (kind === "video") {
      t.direction = "recvonly";
    }
  }
  await pc.setLocalDescription(await pc.createAnswer());
  // Before anything is awaited again: the connection may come up while the
  // answer is on its way, and "connected" must not be overwritten.
  show("answered", "Connecting to the door…");
  await send("answer", { type: pc.localDescription.type, sdp: pc.localDescription.sdp });
  for (const c of state.early.splice(0)) await pc.addIceCandidate(c).catch(() => {});
}

async function startSse() {
  const me = state.seat;
  state.early = [];
  const r = await ssePost(`register/${session}/${me}`).catch(() => null);
  if (!r || !r.ok) {
    end("error", "Could not reach the doorbell's server.", r ? `It answered ${r.status}.` : "");
    return;
  }
  state.iceServers = await sseIceServers(me);
  const events = new EventSource(`events/${session}/${me}`);
  state.ws = { emit() {}, close() { events.close(); } };
  $("hangup").disabled = false;
  show("ringing", "Ringing the door…");
  events.onmessage = async (m) => {
    if (state.ended) return;
    let e;
    try { e = JSON.parse(m.data); } catch (_) { return; }
    try {
      if (e.type === "offer" && e.payload) await sseAnswer(me, e.senderId, e.payload);
      else if (e.type === "ice-candidate") {
        const c = e.payload || null;
        if (state.pc && state.pc.remoteDescription) await state.pc.addIceCandidate(c).catch(() => {});
        else if (c) state.early.push(c);
      }
    } catch (err) {
      end("error", "The doorbell's offer was not usable.", String(err));
    }
  };
}

// --- Seed 002's device sockets (a `/watch/DEVICE` link) ---
//
// The server sent this page to the signed-in owner (or the link carries a
// token, `?token=`): the page gets a viewer token for this device, says
// hello with it on /ws/viewer, asks to watch, and offers (in seed 002 the
// viewer offers); candidates trickle both ways as signal_ice (null ends
// them). Hang up sends end_watch. Messages are handled one at a time, in
// order.
const WATCH_REQUEST = "watch-1";

async function watchToken() {
  const given = params.get("token");
  if (given) return given;
  const r = await fetch(location.pathname.replace(/\/$/, "") + "/token", { method: "POST", cache: "no-store" });
  if (r.status === 401) {
    location.href = "../login?next=watch/" + encodeURIComponent(watchDevice);
    return null;
  }
  if (!r.ok) throw new Error(`the server answered ${r.status}`);
  return (await r.json()).token;
}

async function watchOffer(iceServers, send) {
  closePeer();
  const pc = new RTCPeerConnection({ iceServers });
  state.pc = pc;
  state.sessions += 1;
  offerTransceivers(pc);
  showDoor(pc);
  followConnection(pc);
  pc.onicecandidate = (e) => send("signal_ice", { candidate: e.candidate ? e.candidate.toJSON() : null });
  await pc.setLocalDescription(await pc.createOffer());
  send("signal_offer", { sdp: { type: pc.localDescription.type, sdp: pc.localDescription.sdp } });
  show("ringing", "Ringing the door…");
}

async function startWatch() {
  let token;
  try {
    token = await watchToken();
  } catch (e) {
    end("error", "Could not get a pass to watch the door.", String(e));
    return;
  }
  if (!token) return;
  const url = new URL("../ws/viewer", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  const ws = new WebSocket(url);
  const send = (type, payload, requestId) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const m = { type, ts: new Date().toISOString(), payload };
    if (requestId) m.request_id = requestId;
    ws.send(JSON.stringify(m));
  };
  let watch = null; // the session id, once ready
  const inWatch = (type, payload) => send(type, Object.assign({ session_id: watch }, payload));
  // Hang up says `bye` in the room vocabulary: here that is end_watch.
  state.ws = {
    emit(event) { if (event === "bye" && watch) inWatch("end_watch", {}); },
    close() { try { ws.close(); } catch (_) { /* already closed */ } },
  };
  state.early = [];
  $("hangup").disabled = false;
  const heartbeat = setInterval(() => send("heartbeat", {}), 30000);
  const onMessage = async (data) => {
    if (state.ended) return;
    let m;
    try { m = JSON.parse(data); } catch (_) { return; }
    const p = m.payload || {};
    switch (m.type) {
      case "hello_ack":
        send("watch_request", { device_id: watchDevice }, WATCH_REQUEST);
        show("ringing", "Asking the door…");
        break;
      case "watch_ready":
        watch = p.session_id;
        await watchOffer(Array.isArray(p.ice_servers) ? p.ice_servers : [], inWatch);
        break;
      case "signal_answer":
        if (state.pc && p.session_id === watch && p.sdp) {
          await state.pc.setRemoteDescription(p.sdp);
          if (state.name !== "connected") show("answered", "Connecting to the door…");
          for (const c of state.early.splice(0)) await state.pc.addIceCandidate(c).catch(() => {});
        }
        break;
      case "signal_ice":
        if (p.session_id !== watch) break;
        if (state.pc && state.pc.remoteDescription) await state.pc.addIceCandidate(p.candidate || null).catch(() => {});
        else if (p.candidate) state.early.push(p.candidate);
        break;
      case "watch_ended":
        if (p.session_id === watch) {
          watch = null;
          end("ended", "The doorbell ended the call.", "");
        }
        break;
      case "error":
        if (m.request_id === WATCH_REQUEST) {
          const offline = p.message === "Device is offline";
          end("error", offline ? "The doorbell is not connected." : "The door cannot be watched.", offline ? "Try again in a moment." : p.message || "");
        }
        break;
    }
  };
  let chain = Promise.resolve();
  ws.onopen = () => send("hello", { token });
  ws.onmessage = (m) => {
    chain = chain.then(() => onMessage(String(m.data))).catch((e) => end("error", "The doorbell's answer was not usable.", String(e)));
  };
  ws.onerror = () => {};
  ws.onclose = (e) => {
    clearInterval(heartbeat);
    if (state.ended) return;
    if (e.code === 1008) end("error", "The server did not let this page watch.", e.reason === "Invalid token" ? "The pass to watch has expired: reload the page." : e.reason);
    else if (!mediaUp()) end("error", "Lost the connection to the server.", "");
    // With the media up the call goes on; hanging up then only closes it here.
  };
}

async function main() {
  const name = room || session || watchDevice;
  if (!name || (session && !/^[A-Za-z0-9_-]{1,128}$/.test(session))) {
    show("error", "This link has no room.", "Open the link from the doorbell's message.");
    return;
  }
  state.seat = seatFor(room ? room : session ? "sse:" + session : "watch:" + watchDevice);
  show("connecting", "Connecting…");
  $("hangup").onclick = hangUp;
  setUpTalk();
  $("unmute").onclick = () => { $("door").play(); $("unmute").hidden = true; };
  // A new network (Wi-Fi to mobile data): if the media does not survive it,
  // come back on the new one at once rather than after the browser notices.
  const networkChanged = () => setTimeout(() => {
    if (!room) return; // the seeds' sessions: no coming back yet
    if (state.everConnected && !state.ended && (!state.pc || state.pc.connectionState !== "connected")) comeBack();
  }, 1000);
  window.addEventListener("online", networkChanged);
  if (navigator.connection) navigator.connection.addEventListener("change", networkChanged);

  state.mic = await getMicrophone();
  updateTalk(); // muted until asked for
  $("talk").disabled = !state.mic;
  $("opentalk").disabled = !state.mic;
  if (room) startSignaling();
  else if (session) startSse();
  else startWatch();
}

main();
