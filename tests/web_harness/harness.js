// Test harness for tests/test_sfu_browser.py: one participant of an SFU call, in plain
// JavaScript, speaking the protocol of protocol/README.md. It is deliberately minimal and
// is not the web client (clients/web/): the test calls window.harness.* and reads back
// what the page saw; every failure is recorded in harness.errors for the test to report.
//
// Negotiation follows boltorezka/rtc/sfu.py: the browser offers first (rtc.offer without
// `to`), the SFU answers and then sends offers of its own whenever tracks come or go; the
// browser answers each one. Candidates are trickled with rtc.ice. A forwarded track's
// streams[0].id is the participant id of whoever publishes it.
"use strict";

const harness = (() => {
  const errors = [];
  const callStates = [];
  const sourceOfTrack = {}; // remote track id -> publishing participant id
  const pending = new Map(); // requestId -> {resolve, reject}
  let ws = null;
  let pc = null;
  let callId = null;
  let participantId = null;
  let requestSeq = 0;
  let offersAnswered = 0;
  let signals = Promise.resolve(); // rtc.* from the server, applied strictly in order
  let setupStarted = 0;
  let reportedMedia = false;

  const fail = (where, error) => errors.push(`${where}: ${error && error.message ? error.message : error}`);
  const status = (text) => { document.getElementById("status").textContent = text; };

  function request(type, payload, attempts = 20) {
    const requestId = `h${++requestSeq}`;
    const answer = new Promise((resolve, reject) => pending.set(requestId, { resolve, reject }));
    ws.send(JSON.stringify({ v: 1, type, requestId, payload }));
    return answer.catch(async (nack) => {
      // The SFU may still be starting: retryable nacks (sfu_unavailable) are retried.
      if (!nack.retryable || attempts <= 1) throw new Error(`${type}: ${nack.code} ${nack.message}`);
      await new Promise((r) => setTimeout(r, 250));
      return request(type, payload, attempts - 1);
    });
  }

  function onFrame(event) {
    const msg = JSON.parse(event.data);
    const payload = msg.payload || {};
    if (msg.type === "ack" || msg.type === "nack") {
      const waiter = pending.get(msg.requestId);
      if (!waiter) return;
      pending.delete(msg.requestId);
      if (msg.type === "ack") waiter.resolve(payload.result);
      else waiter.reject(payload);
    } else if (msg.type === "call.state") {
      callStates.push(payload);
    } else if (msg.type.startsWith("rtc.") && payload.callId === callId) {
      signals = signals.then(() => onSignal(msg.type, payload)).catch((e) => fail(msg.type, e));
    }
  }

  async function onSignal(type, payload) {
    if (type === "rtc.answer") {
      await pc.setRemoteDescription({ type: "answer", sdp: payload.sdp });
    } else if (type === "rtc.offer") {
      // The SFU answers the browser's only offer before it offers, so a collision here
      // means the protocol was broken: record it rather than hide it with a rollback.
      if (pc.signalingState !== "stable") throw new Error(`SFU offer in ${pc.signalingState}`);
      await pc.setRemoteDescription({ type: "offer", sdp: payload.sdp });
      await pc.setLocalDescription();
      await request("rtc.answer", { callId, sdp: pc.localDescription.sdp });
      offersAnswered += 1;
    } else if (type === "rtc.ice") {
      await pc.addIceCandidate(payload.candidate || null);
    }
  }

  function showTrack(event) {
    const source = event.streams[0] ? event.streams[0].id : "?";
    sourceOfTrack[event.track.id] = source;
    if (event.track.kind !== "video") return;
    const figure = document.createElement("figure");
    const video = document.createElement("video");
    Object.assign(video, { autoplay: true, muted: true, playsInline: true });
    video.srcObject = new MediaStream([event.track]);
    const caption = document.createElement("figcaption");
    caption.textContent = `from ${source.slice(0, 8)}`;
    figure.append(video, caption);
    document.getElementById("tiles").append(figure);
    // The SFU renegotiates a departed participant's tracks to inactive: the tile goes.
    if (event.streams[0]) event.streams[0].onremovetrack = () => figure.remove();
  }

  async function connect(url, token) {
    ws = new WebSocket(url);
    ws.onmessage = onFrame;
    ws.onclose = (e) => { if (pc) fail("websocket", `closed ${e.code}`); };
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("websocket failed")); });
    await request("auth", { token });
    status("authenticated");
  }

  async function enterCall(roomId, joinCallId) {
    await request("room.join", { roomId });
    const joined = joinCallId
      ? await request("call.join", { callId: joinCallId })
      : await request("call.start", { roomId, mode: "sfu" });
    callId = joined.call.callId;
    participantId = joined.participantId;
    setupStarted = performance.now();
    const media = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: 160, height: 120, frameRate: 10 },
    });
    pc = new RTCPeerConnection({ iceServers: joined.iceServers, bundlePolicy: "max-bundle" });
    pc.ontrack = showTrack;
    pc.onicecandidate = (e) => {
      request("rtc.ice", { callId, candidate: e.candidate ? e.candidate.toJSON() : null })
        .catch((err) => fail("rtc.ice", err));
    };
    pc.onconnectionstatechange = () => {
      status(`${participantId.slice(0, 8)}: ${pc.connectionState}`);
      if (pc.connectionState === "connected") report("connected");
      if (pc.connectionState === "failed") report("failed");
    };
    for (const track of media.getTracks()) pc.addTrack(track, media);
    await pc.setLocalDescription();
    await request("rtc.offer", { callId, sdp: pc.localDescription.sdp });
    watchFirstFrame();
    return { callId, participantId };
  }

  // What decoding looks like from here: publishing participant id -> video frames decoded.
  async function decoded() {
    const frames = {};
    if (!pc) return frames;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        const source = sourceOfTrack[s.trackIdentifier] || `mid:${s.mid}`;
        frames[source] = (frames[source] || 0) + (s.framesDecoded || 0);
      }
    });
    return frames;
  }

  // The type of the local candidate ICE selected (host, srflx, prflx or relay).
  async function candidateType() {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
    const local = pair && stats.get(pair.localCandidateId);
    return local ? local.candidateType : null;
  }

  async function report(outcome) {
    const setupMs = Math.round(performance.now() - setupStarted);
    const body = { callId, outcome, setupMs };
    if (outcome === "failed") body.iceFailed = true;
    if (outcome === "connected") {
      const type = await candidateType().catch(() => null);
      if (type) body.candidateType = type;
    }
    request("call.telemetry", body).catch((e) => fail("call.telemetry", e));
  }

  // Media flowing means a remote frame was decoded, not merely ICE connected.
  function watchFirstFrame() {
    const timer = setInterval(async () => {
      if (!pc || pc.connectionState === "closed") { clearInterval(timer); return; }
      const frames = Object.values(await decoded());
      if (!reportedMedia && frames.some((n) => n > 0)) {
        reportedMedia = true;
        clearInterval(timer);
        report("media");
      }
    }, 250);
  }

  async function leave() {
    await request("call.leave", { callId });
    const closing = pc;
    pc = null;
    closing.close();
    status("left");
  }

  return {
    connect,
    enterCall,
    decoded,
    leave,
    get errors() { return errors.slice(); },
    get callStates() { return callStates.slice(); },
    get offersAnswered() { return offersAnswered; },
    get signalingState() { return pc ? pc.signalingState : "closed"; },
    get connectionState() { return pc ? pc.connectionState : "closed"; },
  };
})();
window.harness = harness;
