// The web page of the original doorbell lab, as a test fixture.
//
// It behaves like the original design's page, carelessness included:
// - getUserMedia({video: true, audio: true}) and BOTH tracks added, so its
//   offer sends the viewer's camera too;
// - the offer is made from the `joined` handler and, by default, sent as
//   `invite` only when the null ICE candidate arrives (non-trickle: every
//   candidate is in the SDP);
// - `bye` from the server hangs up, and hanging up emits `bye` itself.
//
// Query parameters:
//   room=NAME       required: nothing starts without it
//   trickle=1       on `joined`: offer, setLocalDescription, `invite` at once,
//                   then each local candidate as `ice_candidate` (toJSON())
//   datachannel=1   create the data channel "chat" before the offer, like
//                   some versions of the page
//
// It also answers an `invite` with `ok` (the lab's two-browser call), so two
// pages can call each other.
//
// For tests (read over the DevTools protocol):
//   window.lab = { pc, socket, state, events, sent, remoteTracks, error }
//   state: starting | joining | created | offering | connected | full | ended
//   events: names of the socket events received, in order
//   sent: names of the socket events emitted, in order
//   remoteTracks: kinds of the remote tracks received ("audio", "video")
//
// Plain ES2017, works with socket.io-client 2.x and 4.x (global io()).
'use strict';

const params = new URLSearchParams(window.location.search);
const room = params.get('room');
const trickle = params.get('trickle') === '1';
const withDataChannel = params.get('datachannel') === '1';

const lab = {
  pc: null,
  socket: null,
  state: 'starting',
  events: [],
  sent: [],
  remoteTracks: [],
  error: null,
};
window.lab = lab;

let localStream = null;
let dataChannel = null;
let role = null; // 'offer' after `joined`, 'answer' after `invite`
let pendingCandidates = []; // remote candidates that came before the remote description
let hungUp = false;

function setState(state) {
  lab.state = state;
  const el = document.getElementById('state');
  if (el) el.textContent = state;
  console.log('lab state: ' + state);
}

function fail(where, err) {
  console.error(where, err);
  lab.error = where + ': ' + (err && err.message ? err.message : String(err));
}

function send(event, data) {
  lab.sent.push(event);
  lab.socket.emit(event, data);
}

// --------------------------------------------------------------------------
// Start: camera and microphone, signaling, join, peer connection.

async function start() {
  try {
    localStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  } catch (err) {
    fail('getUserMedia', err);
    setState('ended');
    return;
  }
  document.getElementById('localVideo').srcObject = localStream;

  const socket = io();
  lab.socket = socket;
  addSignalingHandlers(socket);
  console.log('Joining room: ' + room);
  send('join', room);
  setState('joining');

  // No STUN: the tests run on loopback only.
  const pc = new RTCPeerConnection({ iceServers: [] });
  lab.pc = pc;
  localStream.getTracks().forEach(function (track) {
    pc.addTrack(track, localStream);
  });
  addPeerConnectionHandlers(pc);
}

function addSignalingHandlers(socket) {
  const handlers = {
    created: function (name) {
      console.log('Created room ' + name + ': waiting for a peer');
      setState('created');
    },
    joined: handleJoined,
    full: function (name) {
      console.log('Room ' + name + ' is full');
      setState('full');
    },
    new_peer: function () {
      console.log('A peer joined the room');
    },
    invite: handleInvite,
    ok: handleOk,
    ice_candidate: handleRemoteCandidate,
    bye: function () {
      console.log('The peer hung up');
      hangUp();
    },
  };
  Object.keys(handlers).forEach(function (name) {
    socket.on(name, function (data) {
      lab.events.push(name);
      const result = handlers[name](data);
      if (result && typeof result.catch === 'function') {
        result.catch(function (err) {
          fail(name, err);
        });
      }
    });
  });
}

function addPeerConnectionHandlers(pc) {
  pc.onicecandidate = handleLocalCandidate;
  pc.ontrack = handleRemoteTrack;
  pc.ondatachannel = function (event) {
    dataChannel = event.channel;
    dataChannel.onmessage = function (msg) {
      console.log('chat: ' + msg.data);
    };
  };
  pc.onconnectionstatechange = function () {
    console.log('connection state: ' + pc.connectionState);
    if (pc.connectionState === 'connected' && !hungUp) setState('connected');
  };
}

// --------------------------------------------------------------------------
// Offer side (the doorbell created the room; this page joined it).

async function handleJoined(name) {
  console.log('Joined room ' + name + ': I am the caller');
  role = 'offer';
  setState('offering');
  const pc = lab.pc;
  if (withDataChannel) {
    // Must be created before the offer to be in it.
    dataChannel = pc.createDataChannel('chat');
    dataChannel.onopen = function () {
      dataChannel.send('*** Channel is ready ***');
    };
  }
  await pc.setLocalDescription(await pc.createOffer());
  if (trickle) {
    send('invite', pc.localDescription);
  }
  // Non-trickle: `invite` leaves when gathering is complete (null candidate).
}

async function handleOk(answer) {
  console.log('Received the answer');
  await lab.pc.setRemoteDescription(answer);
  await flushPendingCandidates();
}

// --------------------------------------------------------------------------
// Answer side (the lab's two-browser call).

async function handleInvite(offer) {
  console.log('Received an offer: I am the callee');
  role = 'answer';
  const pc = lab.pc;
  await pc.setRemoteDescription(offer);
  await flushPendingCandidates();
  await pc.setLocalDescription(await pc.createAnswer());
  if (trickle) {
    send('ok', pc.localDescription);
  }
}

// --------------------------------------------------------------------------
// ICE.

function handleLocalCandidate(event) {
  if (hungUp) return;
  const pc = lab.pc;
  if (event.candidate) {
    if (trickle) send('ice_candidate', event.candidate.toJSON());
    return;
  }
  // Gathering is complete: the local description now holds every candidate.
  if (!trickle) {
    send(role === 'answer' ? 'ok' : 'invite', pc.localDescription);
  }
}

async function handleRemoteCandidate(candidate) {
  if (!lab.pc || hungUp) return;
  if (!lab.pc.remoteDescription) {
    pendingCandidates.push(candidate);
    return;
  }
  await lab.pc.addIceCandidate(candidate);
}

async function flushPendingCandidates() {
  const candidates = pendingCandidates;
  pendingCandidates = [];
  for (const candidate of candidates) {
    await lab.pc.addIceCandidate(candidate);
  }
}

// --------------------------------------------------------------------------
// Remote media: shown muted so autoplay works headless (audio still decodes).

function handleRemoteTrack(event) {
  console.log('Received a remote ' + event.track.kind + ' track');
  lab.remoteTracks.push(event.track.kind);
  const video = document.getElementById('remoteVideo');
  if (event.streams && event.streams[0]) {
    video.srcObject = event.streams[0];
  } else {
    if (!(video.srcObject instanceof MediaStream)) video.srcObject = new MediaStream();
    video.srcObject.addTrack(event.track);
  }
}

// --------------------------------------------------------------------------
// Hang up: bye, stop the camera and microphone, close the peer connection and
// the socket.

function hangUp() {
  if (hungUp) return;
  hungUp = true;
  console.log('Hanging up');
  if (lab.socket) send('bye', room);
  if (localStream) {
    localStream.getTracks().forEach(function (track) {
      track.stop();
    });
  }
  document.getElementById('localVideo').srcObject = null;
  document.getElementById('remoteVideo').srcObject = null;
  if (dataChannel) dataChannel.close();
  if (lab.pc) lab.pc.close();
  if (lab.socket) lab.socket.close();
  setState('ended');
}

window.onbeforeunload = function () {
  hangUp();
};

document.getElementById('hangup').onclick = hangUp;

if (room) {
  start().catch(function (err) {
    fail('start', err);
  });
} else {
  console.log('No ?room= in the address: nothing to do');
}
