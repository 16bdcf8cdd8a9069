// The doorbell viewer: answers the door from any browser.
//
// It speaks the room protocol (join, invite, ok, bye) over a minimal Socket.IO
// v5 client on the WebSocket transport, makes a non-trickle offer with
// receive-only video and send-receive audio, and shows clear states. No
// dependencies and nothing fetched from elsewhere: it works offline.
//
// Query: ?room=NAME (required). &processing=off turns off echo cancellation,
// noise suppression and gain control (measurements and tests only).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = params.get("room");
const GATHER_CAP_MS = 3000;

const state = { name: "starting", pc: null, mic: null, ws: null, ended: false, iceServers: null };
window.doorbell = state; // for tests and the curious

function show(name, text, note) {
  state.name = name;
  $("status").textContent = text;
  $("status").className = name;
  if (note !== undefined) $("note").textContent = note;
}

// --- Socket.IO v5 over a WebSocket, just what the room protocol needs ---
function connectSignaling(onEvent, onClose) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/socket.io/?EIO=4&transport=websocket`);
  const sio = {
    ready: false,
    emit(event, arg) {
      if (ws.readyState === WebSocket.OPEN && sio.ready) ws.send("42" + JSON.stringify([event, arg]));
    },
    close() { try { ws.close(); } catch (_) { /* already closed */ } },
  };
  ws.onmessage = (m) => {
    const data = String(m.data);
    if (data[0] === "0") ws.send("40");                  // Engine.IO open -> Socket.IO connect
    else if (data === "2") ws.send("3");                 // ping -> pong
    else if (data.startsWith("40")) { sio.ready = true; onEvent("connect"); }
    else if (data.startsWith("42")) {
      let msg;
      try { msg = JSON.parse(data.slice(2)); } catch (_) { return; }
      if (Array.isArray(msg) && typeof msg[0] === "string") onEvent(msg[0], msg[1]);
    } else if (data.startsWith("41") || data.startsWith("44")) onClose();
  };
  ws.onclose = onClose;
  ws.onerror = () => {};
  state.ws = sio;
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

function end(name, text, note) {
  if (state.ended) return;
  state.ended = true;
  show(name, text, note);
  if (state.pc) state.pc.close();
  if (state.mic) state.mic.getTracks().forEach((t) => t.stop());
  $("mute").disabled = true;
  $("hangup").disabled = true;
  if (state.ws) setTimeout(() => state.ws.close(), 200);
}

function hangUp() {
  if (state.ended) return;
  if (state.ws) state.ws.emit("bye", room);
  end("ended", "You hung up.", "");
}

async function call(sio) {
  const pc = new RTCPeerConnection({ iceServers: await iceServers() });
  state.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  const track = state.mic && state.mic.getAudioTracks()[0];
  if (track) pc.addTransceiver(track, { direction: "sendrecv", streams: [state.mic] });
  else pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  $("door").srcObject = stream;
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    const v = $("door");
    v.muted = false;
    v.play().catch(() => { $("unmute").hidden = false; });
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "connected") {
      show("connected", "Connected to the door", track ? "" : $("note").textContent);
    } else if (pc.connectionState === "failed") {
      end("error", "The connection to the door failed.", "The doorbell may be on a network your phone cannot reach (a TURN server helps).");
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  sio.emit("invite", { type: pc.localDescription.type, sdp: pc.localDescription.sdp });
  show("ringing", "Ringing the door…");
}

async function main() {
  if (!room) {
    show("error", "This link has no room.", "Open the link from the doorbell's message.");
    return;
  }
  show("connecting", "Connecting…");
  $("hangup").onclick = hangUp;
  $("mute").onclick = () => {
    const t = state.mic && state.mic.getAudioTracks()[0];
    if (!t) return;
    t.enabled = !t.enabled;
    $("mute").setAttribute("aria-pressed", String(!t.enabled));
    $("mute").textContent = t.enabled ? "Mute" : "Unmute";
  };
  $("unmute").onclick = () => { $("door").play(); $("unmute").hidden = true; };
  window.addEventListener("pagehide", () => { if (!state.ended && state.ws) state.ws.emit("bye", room); });

  state.mic = await getMicrophone();
  $("mute").disabled = !state.mic;
  const sio = connectSignaling(async (event, arg) => {
    switch (event) {
      case "connect":
        sio.emit("join", room);
        break;
      case "ice_servers":
        if (arg && Array.isArray(arg.iceServers)) state.iceServers = arg.iceServers;
        break;
      case "joined":
        $("hangup").disabled = false;
        try { await call(sio); } catch (e) { end("error", "Could not start the call.", String(e)); }
        break;
      case "created":
        // We are first in the room: the doorbell is no longer there.
        sio.emit("bye", room);
        end("ended", "This ring is over.", "The doorbell stopped waiting, or the link is old.");
        break;
      case "full":
        end("full", "Someone else already answered.", "");
        break;
      case "ok":
        if (state.pc && arg && arg.sdp) {
          try {
            await state.pc.setRemoteDescription(arg);
            show("answered", "Connecting to the door…");
          } catch (e) {
            end("error", "The doorbell's answer was not usable.", String(e));
          }
        }
        break;
      case "bye":
        end("ended", "The doorbell hung up.", "");
        break;
    }
  }, () => {
    if (!state.ended && state.name !== "connected") end("error", "Lost the connection to the server.", "");
  });
}

main();
