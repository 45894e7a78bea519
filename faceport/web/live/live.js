// faceport live face swap page: webcam frames -> Socket.IO "process_frame" -> "processed_frame" back.
// No build step: plain ES2017, works in current Chromium and Firefox. window.faceportLive exposes
// the page state (for debugging, and for the browser test).
(function () {
  "use strict";

  var MAX_FPS = 15;                       // seed A: at most 15 frames per second per user
  var MIN_INTERVAL_MS = 1000 / MAX_FPS;
  var REPLY_TIMEOUT_MS = 1000;            // a frame unanswered this long counts as dropped
  var FRAME_WIDTH = 640;                  // frames are scaled down to this width before sending
  var JPEG_QUALITY = 0.8;
  var MAX_SOURCE_BYTES = 10 * 1024 * 1024;
  var ALLOWED_EXTENSIONS = [".jpg", ".jpeg", ".png", ".bmp", ".webp"];
  var WINDOW = 30;                        // frames the displayed averages cover

  function $(id) { return document.getElementById(id); }

  // Opened as /?api_key=KEY: the server keeps the key in a cookie; take it out of the address bar and history.
  if (/[?&]api_key=/.test(window.location.search)) window.history.replaceState(null, "", window.location.pathname);

  var ui = {
    connection: $("connection"), reconnect: $("reconnect"),
    dropzone: $("dropzone"), sourceInput: $("source-input"), sourcePreview: $("source-preview"),
    dropzoneText: $("dropzone-text"), sourceState: $("source-state"), clearSource: $("clear-source"),
    camera: $("camera"), start: $("start"), stop: $("stop"), mirror: $("mirror"),
    output: $("output"), frameStatus: $("frame-status"), messages: $("messages"),
    fps: $("stat-fps"), latency: $("stat-latency"), latencyP95: $("stat-latency-p95"),
    serverMs: $("stat-server-ms"), swaps: $("stat-swaps"), errors: $("stat-errors"),
    dropped: $("stat-dropped"), sent: $("stat-sent"),
    optMouthMask: $("opt-mouth-mask"), optEnhancer: $("opt-enhancer"), optBlend: $("opt-blend"),
    optManyFaces: $("opt-many-faces")
  };

  var state = {
    stream: null, sending: false, timer: null,
    inFlight: false, sentAt: 0, lastSendAt: -Infinity, lastSentFrame: null,
    sent: 0, received: 0, swapped: 0, errors: 0, dropped: 0,
    latencies: [], replyTimes: [], serverStats: null, lastPair: null, lastError: null,
    sourceLoaded: false, messages: [], options: null
  };
  window.faceportLive = state;

  var canvas = document.createElement("canvas");
  var context2d = canvas.getContext("2d");

  // ---- messages ---------------------------------------------------------------------------
  function showMessage(text, kind) {
    var last = state.messages[state.messages.length - 1];
    var now = Date.now();
    if (last && last.text === text && now - last.at < 2000) return;  // e.g. upload reply + status_update
    state.messages.push({ text: text, kind: kind || "info", at: now });
    if (state.messages.length > 50) state.messages.shift();
    var item = document.createElement("li");
    item.textContent = new Date().toLocaleTimeString() + " · " + text;
    if (kind) item.className = kind;
    ui.messages.prepend(item);
    while (ui.messages.children.length > 5) ui.messages.lastChild.remove();
  }

  function setConnection(kind, text) {
    ui.connection.dataset.state = kind;
    ui.connection.textContent = text;
  }

  // ---- socket -----------------------------------------------------------------------------
  var socket = io({
    transports: ["websocket", "polling"], tryAllTransports: true,
    reconnection: true, reconnectionDelay: 500, reconnectionDelayMax: 5000, timeout: 10000
  });

  socket.on("connect", function () {
    setConnection("connected", "Connected");
    ui.reconnect.hidden = true;
    state.inFlight = false;
    refreshStatus();
    sendOptions();  // options are per session: a new session gets the page's current ones
  });

  // ---- per-session options (set_options -> options | error) ------------------------------
  function sendOptions() {
    socket.emit("set_options", {
      mouth_mask: ui.optMouthMask.checked, face_enhancer: ui.optEnhancer.checked,
      face_enhancer_blend: Number(ui.optBlend.value), many_faces: ui.optManyFaces.checked
    });
  }

  socket.on("options", function (data) {
    if (data && data.options) state.options = data.options;
  });

  socket.on("error", function (data) {
    showMessage("Options refused: " + (data && data.error ? data.error : "unknown error"), "error");
  });

  [ui.optMouthMask, ui.optEnhancer, ui.optBlend, ui.optManyFaces].forEach(function (input) {
    input.addEventListener("change", sendOptions);
  });

  socket.on("disconnect", function (reason) {
    state.inFlight = false;
    if (reason === "io server disconnect") {
      // The server ended the session (another user took over, or a timeout): do not fight it.
      setConnection("disconnected", "Disconnected");
      ui.reconnect.hidden = false;
    } else if (reason !== "io client disconnect") {
      setConnection("reconnecting", "Reconnecting…");
    }
  });

  socket.on("connect_error", function (err) {
    setConnection("reconnecting", "Cannot reach the server, retrying…");
    if (!socket.active) {
      showMessage("Connection refused: " + (err && err.message ? err.message : "unknown error"), "error");
      ui.reconnect.hidden = false;
    }
  });

  socket.on("status_update", function (data) {
    if (data && data.message) showMessage(data.message);
    refreshStatus();
  });

  socket.on("processed_frame", function (data) {
    var now = performance.now();
    if (state.inFlight) {
      state.latencies.push(now - state.sentAt);
      if (state.latencies.length > WINDOW) state.latencies.shift();
    }
    state.inFlight = false;
    state.received += 1;
    state.replyTimes.push(now);
    if (state.replyTimes.length > WINDOW) state.replyTimes.shift();
    if (data && data.success) {
      state.swapped += 1;
      state.serverStats = data.stats || null;
      state.lastPair = { sent: state.lastSentFrame, received: data.processed };
      ui.output.src = data.processed;
      ui.frameStatus.textContent = "Face swapped";
      ui.frameStatus.className = "row muted";
    } else {
      state.errors += 1;
      state.lastError = (data && data.error) || "Unknown error";
      ui.frameStatus.textContent = state.lastError;
      ui.frameStatus.className = "row error";
      if (data && typeof data.processed === "string" && data.processed.indexOf("data:image/") === 0) {
        ui.output.src = data.processed;
      }
    }
    renderStats();
    schedule(0);
  });

  ui.reconnect.addEventListener("click", function () {
    ui.reconnect.hidden = true;
    setConnection("connecting", "Connecting…");
    socket.connect();
  });

  // ---- status and stats ---------------------------------------------------------------------
  function refreshStatus() {
    return fetch("/status", { cache: "no-store" }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(function (status) {
      state.sourceLoaded = !!status.source_face_loaded;
      ui.sourceState.textContent = state.sourceLoaded ? "Source face ready" : "No source face";
      ui.sourceState.className = state.sourceLoaded ? "" : "muted";
      ui.clearSource.disabled = !state.sourceLoaded;
      if (!state.sourceLoaded) {
        ui.sourcePreview.hidden = true;
        ui.dropzoneText.hidden = false;
      }
      if (!status.models_loaded) {
        showMessage("The server is missing face models: run `faceport models pull` on it.", "error");
      }
    }).catch(function (err) {
      showMessage("Cannot read the server status: " + err.message, "error");
    });
  }

  function percentile(values, p) {
    if (!values.length) return null;
    var sorted = values.slice().sort(function (a, b) { return a - b; });
    return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  }

  function renderStats() {
    var times = state.replyTimes;
    var fps = times.length > 1 ? (times.length - 1) * 1000 / (times[times.length - 1] - times[0]) : 0;
    var p50 = percentile(state.latencies, 0.5);
    var p95 = percentile(state.latencies, 0.95);
    ui.fps.textContent = fps.toFixed(1);
    ui.latency.textContent = p50 === null ? "–" : p50.toFixed(0);
    ui.latencyP95.textContent = p95 === null ? "–" : p95.toFixed(0);
    ui.serverMs.textContent = state.serverStats ? Number(state.serverStats.avg_processing_time).toFixed(1) : "–";
    ui.swaps.textContent = state.serverStats ? state.serverStats.swap_count : state.swapped;
    ui.errors.textContent = state.errors;
    ui.dropped.textContent = state.dropped;
    ui.sent.textContent = state.sent;
  }

  // ---- source upload ---------------------------------------------------------------------------
  function extensionOf(name) {
    var dot = name.lastIndexOf(".");
    return dot < 0 ? "" : name.slice(dot).toLowerCase();
  }

  function uploadSource(file) {
    if (!file) return;
    if (ALLOWED_EXTENSIONS.indexOf(extensionOf(file.name)) < 0) {
      showMessage("“" + file.name + "” is not a JPG, PNG, BMP or WebP image.", "error");
      return;
    }
    if (file.size > MAX_SOURCE_BYTES) {
      showMessage("“" + file.name + "” is " + (file.size / 1048576).toFixed(1) + " MB; the limit is 10 MB.", "error");
      return;
    }
    var body = new FormData();
    body.append("image", file, file.name);
    showMessage("Uploading " + file.name + "…");
    // While this page streams, the server takes a new source only from its own session: send the Socket.IO sid.
    var headers = socket.connected && socket.id ? { "X-SocketIO-SID": socket.id } : {};
    fetch("/upload_source", { method: "POST", body: body, headers: headers }).then(function (response) {
      return response.json().catch(function () {
        return { success: false, message: "Upload failed (HTTP " + response.status + ")" };
      });
    }).then(function (result) {
      if (result.success) {
        showMessage(result.message, "ok");
        ui.sourcePreview.src = URL.createObjectURL(file);
        ui.sourcePreview.hidden = false;
        ui.dropzoneText.hidden = true;
      } else {
        showMessage("Source not accepted: " + result.message, "error");
      }
      return refreshStatus();
    }).catch(function (err) {
      showMessage("Upload failed: " + err.message, "error");
    });
  }

  ui.sourceInput.addEventListener("change", function () {
    uploadSource(ui.sourceInput.files[0]);
    ui.sourceInput.value = "";
  });
  ui.dropzone.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); ui.sourceInput.click(); }
  });
  ["dragenter", "dragover"].forEach(function (name) {
    ui.dropzone.addEventListener(name, function (event) {
      event.preventDefault();
      ui.dropzone.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    ui.dropzone.addEventListener(name, function () { ui.dropzone.classList.remove("over"); });
  });
  ui.dropzone.addEventListener("drop", function (event) {
    event.preventDefault();
    var files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) uploadSource(files[0]);
  });
  // a file dropped next to the zone must not make the browser navigate away
  window.addEventListener("dragover", function (event) { event.preventDefault(); });
  window.addEventListener("drop", function (event) { event.preventDefault(); });

  ui.clearSource.addEventListener("click", function () {
    if (!socket.connected) {
      showMessage("Not connected: the source can be cleared once the connection is back.", "error");
      return;
    }
    socket.emit("clear_source");
  });

  // ---- camera and frame loop -----------------------------------------------------------------
  function cameraError(err) {
    var name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      return "Camera permission was denied. Allow camera access for this page and press Start again.";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") return "No camera was found.";
    if (name === "NotReadableError") return "The camera is in use by another application.";
    return "Cannot start the camera: " + (err && err.message ? err.message : String(err));
  }

  function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showMessage(window.isSecureContext ? "This browser cannot capture a camera."
        : "Camera capture needs a secure page: open it over HTTPS or at http://localhost.", "error");
      return;
    }
    ui.start.disabled = true;
    var constraints = { audio: false, video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } } };
    navigator.mediaDevices.getUserMedia(constraints).then(function (stream) {
      state.stream = stream;
      ui.camera.srcObject = stream;
      return ui.camera.play();
    }).then(function () {
      ui.stop.disabled = false;
      state.sending = true;
      if (!state.sourceLoaded) showMessage("Camera on. Upload a source face to start swapping.");
      schedule(0);
    }).catch(function (err) {
      ui.start.disabled = false;
      showMessage(cameraError(err), "error");
    });
  }

  function stopCamera() {
    state.sending = false;
    clearTimeout(state.timer);
    if (state.stream) state.stream.getTracks().forEach(function (track) { track.stop(); });
    state.stream = null;
    ui.camera.srcObject = null;
    ui.start.disabled = false;
    ui.stop.disabled = true;
  }

  function schedule(delay) {
    clearTimeout(state.timer);
    if (state.sending) state.timer = setTimeout(tick, Math.max(0, delay));
  }

  // Send the next frame only when the previous answer came back (or timed out), at most MAX_FPS a second.
  function tick() {
    if (!state.sending) return;
    var now = performance.now();
    if (state.inFlight) {
      var waited = now - state.sentAt;
      if (waited < REPLY_TIMEOUT_MS) { schedule(REPLY_TIMEOUT_MS - waited); return; }
      state.inFlight = false;
      state.dropped += 1;
      renderStats();
    }
    var wait = state.lastSendAt + MIN_INTERVAL_MS - now;
    if (wait > 0) { schedule(wait); return; }
    var video = ui.camera;
    if (!socket.connected || video.readyState < 2 || !video.videoWidth) { schedule(100); return; }
    var width = Math.min(FRAME_WIDTH, video.videoWidth);
    var height = Math.round(video.videoHeight * width / video.videoWidth);
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    context2d.drawImage(video, 0, 0, width, height);
    var frame = canvas.toDataURL("image/jpeg", JPEG_QUALITY);
    state.lastSentFrame = frame;
    state.inFlight = true;
    state.sentAt = now;
    state.lastSendAt = now;
    state.sent += 1;
    socket.emit("process_frame", { frame: frame });
    schedule(REPLY_TIMEOUT_MS);
  }

  ui.start.addEventListener("click", startCamera);
  ui.stop.addEventListener("click", stopCamera);
  ui.mirror.addEventListener("change", function () {
    ui.camera.classList.toggle("mirror", ui.mirror.checked);
    ui.output.classList.toggle("mirror", ui.mirror.checked);
  });

  renderStats();
})();
