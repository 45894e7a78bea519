// faceport live privacy filter page: publish the camera with WHIP, watch the filtered stream with WHEP,
// rooms and statistics over Socket.IO (seed E events). No build step: plain ES2017.
// Open /live to publish; /live?room=<id> to watch. /live?api_key=KEY when the server has FACEPORT_API_KEY.
// window.faceportStream exposes the page state (debugging, and the browser test).
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }
  var params = new URLSearchParams(window.location.search);
  var apiKey = params.get("api_key") || sessionStorage.getItem("faceport_api_key") || "";
  if (params.get("api_key")) {
    sessionStorage.setItem("faceport_api_key", apiKey);
    params.delete("api_key");
    window.history.replaceState(null, "", window.location.pathname + (params.toString() ? "?" + params : ""));
  }
  var CONFIG_FIELDS = ["face_blur", "plate_blur", "text_blur", "audio_processing"];
  var state = window.faceportStream = {
    roomId: params.get("room"), owner: false, publishing: false, watching: false, whipLocation: null,
    whepLocation: null, updates: 0, last: null, errors: [], framesDecoded: 0, ended: false
  };
  var publisherPc = null, viewerPc = null, localStream = null;

  function message(text) {
    var li = document.createElement("li");
    li.textContent = new Date().toLocaleTimeString() + " " + text;
    $("messages").prepend(li);
  }
  function headers(extra) {
    var h = Object.assign({"Content-Type": "application/sdp"}, extra || {});
    if (apiKey) h["X-API-Key"] = apiKey;
    return h;
  }
  function config() {
    var c = {};
    CONFIG_FIELDS.forEach(function (name) { c[name] = $(name).checked; });
    c.audio_mode = $("audio_mode").value;
    return c;
  }

  var socket = io({transports: ["websocket"], auth: apiKey ? {api_key: apiKey} : {}});
  socket.on("connect", function () {
    $("connection").textContent = "connected"; $("connection").className = "pill ok";
    if (state.roomId && !state.owner) socket.emit("join_room", {roomId: state.roomId});
  });
  socket.on("disconnect", function () { $("connection").textContent = "disconnected"; $("connection").className = "pill bad"; });
  socket.on("error", function (e) { state.errors.push(e); message((e.code || "ERROR") + ": " + e.message); });
  socket.on("room_joined", function (e) {
    message("joined room " + e.roomId);
    $("publisher-controls").hidden = true; $("config").disabled = true;
    if (e.streaming) watch();
  });
  socket.on("streaming_started", function () { if (!state.watching) watch(); });
  socket.on("stream_ended", function () {
    state.ended = true; state.watching = false; message("the publisher left; the stream ended");
    if (viewerPc) { viewerPc.close(); viewerPc = null; }
  });
  socket.on("processing_update", function (u) {
    state.updates += 1; state.last = u;
    $("stat-fps").textContent = u.fps;
    $("stat-faces").textContent = u.detections.faces;
    $("stat-plates").textContent = u.detections.plates + " / " + u.detections.text;
    $("stat-filter-ms").textContent = u.processingMs == null ? "–" : u.processingMs;
    $("stat-dropped").textContent = u.dropped + " of " + u.framesIn;
    $("stat-viewers").textContent = u.viewers;
    var a = u.audio || {};
    $("stat-audio").textContent = a.mode === "bleep"
      ? "bleeping, " + (a.delayMs / 1000) + " s behind; " + (a.items || 0) + " items; muted unheard " + (a.mutedUncheckedMs || 0) + " ms"
      : (a.mode || "–");
  });

  function iceDone(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(function (resolve) {
      var timer = setTimeout(resolve, 3000);  // send what was gathered: host candidates come at once
      pc.addEventListener("icegatheringstatechange", function () {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }
  async function exchange(pc, url) {
    await pc.setLocalDescription(await pc.createOffer());
    await iceDone(pc);
    var response = await fetch(url, {method: "POST", headers: headers(), body: pc.localDescription.sdp});
    if (response.status !== 201) {
      var body = {};
      try { body = await response.json(); } catch (e) { /* not JSON */ }
      throw new Error((body.code || response.status) + ": " + (body.message || response.statusText));
    }
    await pc.setRemoteDescription({type: "answer", sdp: await response.text()});
    return response.headers.get("Location");
  }

  async function publish() {
    $("publish").disabled = true;
    try {
      localStream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: true});
      $("local").srcObject = localStream;
      state.owner = true;
      socket.emit("create_room");
    } catch (e) {
      message("camera: " + e.message); $("publish").disabled = false;
    }
  }
  socket.on("room_created", async function (e) {
    state.roomId = e.roomId;
    var link = window.location.origin + "/live?room=" + e.roomId;
    $("share-link").textContent = link; $("share-link").href = link; $("share").hidden = false;
    socket.emit("start_processing", {roomId: e.roomId, config: config()});
    publisherPc = new RTCPeerConnection({iceServers: []});
    localStream.getTracks().forEach(function (t) {
      var init = {direction: "sendonly"};
      // the server decodes every frame on its CPU: a modest bitrate keeps it (and a busy network) up
      if (t.kind === "video") init.sendEncodings = [{maxBitrate: 800000, maxFramerate: 30}];
      publisherPc.addTransceiver(t, init);
    });
    try {
      state.whipLocation = await exchange(publisherPc, e.mediasoupUrl + "/whip");
      state.publishing = true; $("stop").disabled = false;
      socket.emit("sfu_streaming_started", {roomId: e.roomId});
      message("publishing to room " + e.roomId);
      watch();  // the owner sees what viewers get
    } catch (err) {
      message("publish: " + err.message); $("publish").disabled = false;
    }
  });

  async function watch() {
    if (state.watching || !state.roomId) return;
    state.watching = true;
    viewerPc = new RTCPeerConnection({iceServers: []});
    viewerPc.addTransceiver("video", {direction: "recvonly"});
    viewerPc.addTransceiver("audio", {direction: "recvonly"});
    var stream = new MediaStream();
    viewerPc.ontrack = function (ev) { stream.addTrack(ev.track); $("remote").srcObject = stream; };
    try {
      state.whepLocation = await exchange(viewerPc, "/rooms/" + state.roomId + "/whep");
    } catch (err) {
      state.watching = false; message("watch: " + err.message);
    }
  }

  async function stop() {
    $("stop").disabled = true;
    if (state.whipLocation) await fetch(state.whipLocation, {method: "DELETE", headers: headers()});
    if (publisherPc) publisherPc.close();
    if (localStream) localStream.getTracks().forEach(function (t) { t.stop(); });
    state.publishing = false; $("publish").disabled = false;
  }

  CONFIG_FIELDS.concat(["audio_mode"]).forEach(function (name) {
    $(name).addEventListener("change", function () {
      if (state.owner && state.roomId) socket.emit("start_processing", {roomId: state.roomId, config: config()});
    });
  });
  $("publish").addEventListener("click", publish);
  $("stop").addEventListener("click", stop);

  // received fps and latency estimate from the viewer connection's statistics, once a second
  var lastFrames = null;
  setInterval(async function () {
    if (!viewerPc) return;
    var stats = await viewerPc.getStats(), rtt = null, buffer = null;
    stats.forEach(function (s) {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        state.framesDecoded = s.framesDecoded || 0;
        if (lastFrames !== null) $("stat-rx-fps").textContent = state.framesDecoded - lastFrames;
        lastFrames = state.framesDecoded;
        if (s.jitterBufferEmittedCount) buffer = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
      }
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime != null) rtt = 1000 * s.currentRoundTripTime;
    });
    var filter = state.last && state.last.processingMs;
    if (buffer != null) {
      var total = buffer + (filter || 0) + (rtt || 0) / 2;
      $("stat-latency").textContent = Math.round(total) + " ms";
      state.latencyMs = total;
    }
  }, 1000);

  if (state.roomId) { $("publisher-controls").hidden = true; }
})();
