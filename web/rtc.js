// frontdesk browser client: signaling (`Signal`) and media (`MediaSession`), shared by the
// visitor widget and the agent console. The wire contract is docs/protocol.md.

const RECONNECT_DELAYS_MS = [500, 1000, 2000, 4000, 8000];
const REQUEST_TIMEOUT_MS = 10000;
// WebSocket pings are invisible to scripts: a `ping` request every 10 s notices a dead network
// (a silent drop would otherwise leave the socket "open" for minutes).
const PROBE_EVERY_MS = 10000;
const PROBE_TIMEOUT_MS = 5000;
// Close codes after which reconnecting cannot help (protocol.md, "Close codes").
const FINAL_CLOSE_CODES = new Set([1008, 4001, 4002]);

// Media recovery (protocol.md, "media_reconnecting"): a connection `disconnected` for 2 s, or
// `failed`, is restarted: attempt 1 at once (the 2 s grace was the wait), attempts 2 and 3
// after RESTART_DELAYS_MS[n-1]; an attempt counts as failed
// when the connection is not back ATTEMPT_TIMEOUT_MS after its offer (or the offer is refused).
const DISCONNECTED_GRACE_MS = 2000;
const RESTART_DELAYS_MS = [0, 1000, 2000];
const ATTEMPT_TIMEOUT_MS = 3000;
// A connection that says `connected` but has received no RTP for this long is restarted too:
// browsers need several seconds of failed consent checks to call a dead path `disconnected`.
// (The other side always sends audio; a stall caused by the other side's path costs one
// harmless renegotiation here.)
const STALL_MS = 2000;
const STALL_CHECK_MS = 500;

/** The `/v1/signal` URL of a server whose HTTP base is `base` (e.g. `http://host:8080`). */
export function signalUrl(base) {
  const u = new URL('/v1/signal', base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

/** Page-level media options: `?relay=1` (or `window.__frontdeskOptions.relay`) forces TURN. */
export function pageOptions() {
  const o = window.__frontdeskOptions || {};
  const q = new URLSearchParams(location.search);
  return {
    relay: q.get('relay') === '1' || o.relay === true,
    iceServers: Array.isArray(o.iceServers) ? o.iceServers : null,
  };
}

/** The claims of a JWT, unverified (the server verifies); null when it is not one. */
export function jwtClaims(token) {
  const part = typeof token === 'string' ? token.split('.')[1] : undefined;
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), '='));
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/**
 * One authenticated signaling connection that comes back by itself.
 *
 * `credential()` returns the `auth` fields and is called on every (re)connection, so a visitor
 * rejoins with the `visitor_token` it was given. Listeners: `on(type, fn)` for server message
 * types, `'*'` for every message, and the local events `state` ({state, code, reason}) and
 * `auth_failed` ({code, message}). States: connecting, open, reconnecting, closed.
 */
export class Signal {
  constructor(url, credential) {
    this.url = url;
    this.credential = credential;
    this.state = 'idle';
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.listeners = new Map();
    this.failures = 0;
    this.retryTimer = null;
    this.probeTimer = null;
    this.stopped = false;
    this.welcome = null;
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  /** Server messages go to their type's listeners and to '*'; local events only to theirs. */
  emit(type, msg, local = false) {
    for (const key of local ? [type] : [type, '*']) {
      for (const fn of this.listeners.get(key) || []) {
        try {
          fn(msg);
        } catch (e) {
          console.error('frontdesk: listener of', type, 'failed', e);
        }
      }
    }
  }

  setState(state, extra = {}) {
    this.state = state;
    this.emit('state', { type: 'state', state, ...extra }, true);
  }

  /** Opens the connection (again, after `close()` or a final close). */
  connect() {
    this.stopped = false;
    clearTimeout(this.retryTimer);
    this.open();
  }

  open() {
    this.setState(this.failures === 0 && !this.welcome ? 'connecting' : 'reconnecting');
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (ws === this.ws) this.onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws === this.ws) this.onClose(ev.code, ev.reason);
    };
  }

  onFrame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === 'hello') {
      this.authenticate();
      return;
    }
    if (msg.re !== undefined && this.pending.has(msg.re)) {
      const p = this.pending.get(msg.re);
      this.pending.delete(msg.re);
      clearTimeout(p.timer);
      if (msg.type === 'error') p.reject(signalError(msg.code, msg.message));
      else p.resolve(msg);
    }
    this.emit(msg.type, msg);
  }

  async authenticate() {
    const ws = this.ws;
    let welcome;
    try {
      welcome = await this.request({ type: 'auth', ...this.credential() }, true);
    } catch (e) {
      if (ws !== this.ws || e.code === 'disconnected' || e.code === 'timeout') return;
      // Bad credentials: the server closes with 1008; do not come back on our own.
      this.stopped = true;
      this.emit('auth_failed', { type: 'auth_failed', code: e.code, message: e.message }, true);
      return;
    }
    this.welcome = welcome;
    this.failures = 0;
    this.setState('open');
    this.probe(ws);
  }

  probe(ws) {
    this.probeTimer = setTimeout(async () => {
      if (ws !== this.ws) return;
      try {
        await this.request({ type: 'ping' }, false, PROBE_TIMEOUT_MS);
        this.probe(ws);
      } catch (e) {
        if (ws !== this.ws || e.code !== 'timeout') return;
        // No answer: give this socket up at once rather than wait for TCP to notice.
        ws.close();
        this.onClose(4000, 'no_pong');
      }
    }, PROBE_EVERY_MS);
  }

  onClose(code, reason) {
    this.ws = null;
    clearTimeout(this.probeTimer);
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(signalError('disconnected', 'the connection closed'));
    }
    this.pending.clear();
    if (this.stopped || FINAL_CLOSE_CODES.has(code)) {
      this.stopped = true;
      this.setState('closed', { code, reason });
      return;
    }
    const base = RECONNECT_DELAYS_MS[Math.min(this.failures, RECONNECT_DELAYS_MS.length - 1)];
    this.failures += 1;
    this.setState('reconnecting', { code, reason });
    this.retryTimer = setTimeout(() => this.open(), base / 2 + Math.random() * base);
  }

  /** Sends a message without waiting for an answer; dropped when not connected. */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && (this.state === 'open' || msg.type === 'auth')) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  /** Sends a request with a fresh `id`; resolves with its answer, rejects on `error`. */
  request(msg, beforeWelcome = false, timeoutMs = REQUEST_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      if (!beforeWelcome && this.state !== 'open') {
        reject(signalError('disconnected', 'not connected'));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(signalError('timeout', `no answer to ${msg.type}`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      if (!this.send({ ...msg, id })) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(signalError('disconnected', 'not connected'));
      }
    });
  }

  /** Closes for good (until `connect()`). */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.probeTimer);
    if (this.ws) this.ws.close(1000);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function signalError(code, message) {
  const e = new Error(message || code);
  e.code = code;
  return e;
}

/**
 * The media of one call: one RTCPeerConnection to the SFU, offered by this browser, with one
 * audio and one video transceiver, both sendrecv. Started by `media_config`, closed by
 * `call_ended`. `onState(state, detail)` reports: starting, connecting, connected, restarting,
 * failed, closed, and `error` (with a message) when the camera or an offer fails.
 */
export class MediaSession {
  constructor(signal, { localVideo, remoteVideo, onState = () => {}, relay = false, iceServers = null } = {}) {
    this.signal = signal;
    this.localVideo = localVideo;
    this.remoteVideo = remoteVideo;
    this.onState = onState;
    this.forceRelay = relay;
    this.iceServersOverride = iceServers;
    this.pc = null;
    this.callId = null;
    this.state = 'idle';
    this.localStream = null;
    this.attempt = 0; // restart attempt in progress (0: none)
    this.restartTimer = null;
    this.disconnectedTimer = null;
    this.generation = 0; // bumps on close, so late async work of an old pc stops
    this.offerSent = false;
    this.candidateBuffer = [];
    this.restartSeq = 0; // bumps when a restart sequence starts or is abandoned
    this.stallTimer = null;
    this.received = { total: 0, growthAt: 0 }; // inbound RTP packets, when they last grew
    this.lastRestart = null; // {reason, attempt, requestedAt, offerAt, answerAt, connectedAt}
    signal.on('media_config', (m) => this.onConfig(m));
    signal.on('ice_restart_request', (m) => {
      if (m.call_id === this.callId) this.scheduleRestart('server_request');
    });
    signal.on('call_ended', (m) => {
      if (!this.callId || m.call_id === this.callId) this.close();
    });
  }

  setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }

  async onConfig(cfg) {
    if (this.pc && this.callId === cfg.call_id && this.pc.connectionState !== 'closed') {
      // Our signaling came back mid-call: keep the media if it still flows.
      this.pc.setConfiguration(this.rtcConfig(cfg));
      if (this.pc.iceConnectionState !== 'connected' && this.pc.iceConnectionState !== 'completed') {
        this.scheduleRestart('resumed', 0);
      }
      return;
    }
    this.close();
    await this.start(cfg);
  }

  rtcConfig(cfg) {
    const servers = this.iceServersOverride || cfg.ice_servers || [];
    return {
      iceServers: servers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential })),
      iceTransportPolicy: this.forceRelay ? 'relay' : cfg.ice_transport_policy || 'all',
    };
  }

  async start(cfg) {
    const gen = ++this.generation;
    this.callId = cfg.call_id;
    this.setState('starting');
    const pc = new RTCPeerConnection(this.rtcConfig(cfg));
    this.pc = pc;
    this.candidateBuffer = [];

    const remote = new MediaStream();
    if (this.remoteVideo) this.remoteVideo.srcObject = remote;
    pc.ontrack = (ev) => {
      remote.addTrack(ev.track);
      if (this.remoteVideo) this.remoteVideo.play().catch(() => {});
    };
    pc.onicecandidate = (ev) => {
      if (!ev.candidate || !ev.candidate.candidate) return;
      const msg = {
        type: 'ice_candidate',
        call_id: this.callId,
        candidate: ev.candidate.candidate,
        sdp_mid: ev.candidate.sdpMid,
      };
      if (this.offerSent) this.signal.send(msg);
      else this.candidateBuffer.push(msg);
    };
    pc.oniceconnectionstatechange = () => this.watch();
    pc.onconnectionstatechange = () => this.watch();

    let stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    } catch (e) {
      this.setState('error', { message: 'Camera or microphone unavailable: ' + e.message });
    }
    if (gen !== this.generation) {
      if (stream) stream.getTracks().forEach((t) => t.stop());
      return;
    }
    this.localStream = stream;
    if (this.localVideo && stream) {
      this.localVideo.muted = true;
      this.localVideo.srcObject = stream;
      this.localVideo.play().catch(() => {});
    }
    // Exactly one audio then one video transceiver, sendrecv, carrying the local tracks (or
    // sending nothing when the device is missing, so the m-lines stay the same).
    for (const kind of ['audio', 'video']) {
      const track = stream && stream.getTracks().find((t) => t.kind === kind);
      pc.addTransceiver(track || kind, { direction: 'sendrecv', streams: stream ? [stream] : [] });
    }
    this.setState('connecting');
    this.received = { total: 0, growthAt: performance.now() };
    clearInterval(this.stallTimer);
    this.stallTimer = setInterval(() => this.checkStall(gen), STALL_CHECK_MS);
    await this.negotiate(gen, false, 0);
  }

  /** Restarts ICE when media stopped arriving on a connection that still looks connected. */
  async checkStall(gen) {
    const pc = this.pc;
    if (gen !== this.generation || !pc || pc.connectionState !== 'connected') return;
    let total = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp') total += r.packetsReceived || 0;
    });
    const now = performance.now();
    if (total > this.received.total) {
      this.received = { total, growthAt: now };
    } else if (this.attempt === 0 && this.received.total > 0 && now - this.received.growthAt >= STALL_MS) {
      this.received.growthAt = now; // one restart per stall
      this.scheduleRestart('stalled', 0);
    }
  }

  /** One offer/answer exchange. Resolves to true when the answer was applied. */
  async negotiate(gen, restart, attempt) {
    const pc = this.pc;
    try {
      const offer = await pc.createOffer();
      if (gen !== this.generation) return false;
      // Candidates of this offer wait until it is sent (the server refuses them before).
      this.offerSent = false;
      await pc.setLocalDescription(offer);
      if (gen !== this.generation) return false;
      if (this.lastRestart && restart) this.lastRestart.offerAt = performance.now();
      const answer = this.signal.request({
        type: 'media_offer',
        call_id: this.callId,
        sdp: pc.localDescription.sdp,
        restart,
        attempt,
      });
      this.offerSent = true;
      for (const c of this.candidateBuffer.splice(0)) this.signal.send(c);
      const reply = await answer;
      if (gen !== this.generation) return false;
      await pc.setRemoteDescription({ type: 'answer', sdp: reply.sdp });
      if (this.lastRestart && restart) this.lastRestart.answerAt = performance.now();
      return true;
    } catch (e) {
      if (gen !== this.generation) return false;
      console.warn('frontdesk: media offer failed', e.code || '', e.message);
      if (pc.signalingState === 'have-local-offer') {
        await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      }
      if (e.code === 'not_in_call') {
        this.close();
        return false;
      }
      this.setState('error', { message: e.message, code: e.code });
      return false;
    }
  }

  watch() {
    const pc = this.pc;
    if (!pc) return;
    const ice = pc.iceConnectionState;
    const conn = pc.connectionState;
    if (conn === 'connected' && (ice === 'connected' || ice === 'completed')) {
      clearTimeout(this.disconnectedTimer);
      this.disconnectedTimer = null;
      // During a restart, `runAttempt` decides when it is over (the state may never leave
      // `connected` when the old path still works).
      if (this.attempt === 0 && this.state !== 'connected') this.setState('connected');
    } else if (conn === 'failed' || ice === 'failed') {
      this.scheduleRestart('failed');
    } else if (conn === 'disconnected' || ice === 'disconnected') {
      if (!this.disconnectedTimer && this.attempt === 0) {
        this.disconnectedTimer = setTimeout(() => {
          this.disconnectedTimer = null;
          const p = this.pc;
          if (p && (p.connectionState === 'disconnected' || p.iceConnectionState === 'disconnected')) {
            this.scheduleRestart('disconnected');
          }
        }, DISCONNECTED_GRACE_MS);
      }
    }
  }

  /**
   * Starts the restart sequence unless one is running. `firstDelayMs` overrides the wait
   * before attempt 1 (a forced restart goes at once).
   */
  scheduleRestart(reason, firstDelayMs = RESTART_DELAYS_MS[0]) {
    if (!this.pc || this.attempt > 0 || this.state === 'failed') return;
    clearTimeout(this.disconnectedTimer);
    this.disconnectedTimer = null;
    const seq = ++this.restartSeq;
    this.lastRestart = { reason, attempt: 0, requestedAt: performance.now() };
    this.attempt = 1;
    this.setState('restarting', { attempt: 1, reason });
    this.restartTimer = setTimeout(() => this.runAttempt(seq), firstDelayMs);
  }

  async runAttempt(seq) {
    if (seq !== this.restartSeq || !this.pc) return;
    const n = this.attempt;
    this.lastRestart.attempt = n;
    this.pc.restartIce();
    let ok = await this.negotiate(this.generation, true, n);
    const deadline = performance.now() + ATTEMPT_TIMEOUT_MS;
    while (ok && seq === this.restartSeq) {
      if (await this.restartDone()) {
        this.attempt = 0;
        this.lastRestart.connectedAt = performance.now();
        this.setState('connected', { restarted: true });
        return;
      }
      if (performance.now() >= deadline) ok = false;
      else await sleep(100);
    }
    if (seq !== this.restartSeq) return; // closed or superseded
    if (n >= RESTART_DELAYS_MS.length) {
      this.attempt = 0;
      this.signal.send({ type: 'media_failed', call_id: this.callId });
      this.setState('failed');
      return;
    }
    this.attempt = n + 1;
    this.setState('restarting', { attempt: n + 1 });
    this.restartTimer = setTimeout(() => this.runAttempt(seq), RESTART_DELAYS_MS[n]);
  }

  /** Connected again, on a candidate pair of the current ICE credentials. */
  async restartDone() {
    const pc = this.pc;
    if (!pc || pc.connectionState !== 'connected') return false;
    const ufrag = /a=ice-ufrag:(\S+)/.exec((pc.localDescription && pc.localDescription.sdp) || '');
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair || pair.state !== 'succeeded') return false;
    const local = stats.get(pair.localCandidateId);
    if (!ufrag || !local || local.usernameFragment === undefined) return true;
    return local.usernameFragment === ufrag[1];
  }

  /** Restarts ICE now (attempt 1 without its backoff), ending any sequence under way. */
  restart() {
    this.restartSeq += 1;
    clearTimeout(this.restartTimer);
    this.attempt = 0;
    if (this.state === 'failed') this.state = 'connecting';
    this.scheduleRestart('forced', 0);
  }

  close() {
    this.generation += 1;
    this.restartSeq += 1;
    clearInterval(this.stallTimer);
    this.stallTimer = null;
    clearTimeout(this.restartTimer);
    clearTimeout(this.disconnectedTimer);
    this.disconnectedTimer = null;
    this.attempt = 0;
    if (this.localStream) this.localStream.getTracks().forEach((t) => t.stop());
    this.localStream = null;
    if (this.pc) this.pc.close();
    const had = this.pc !== null;
    this.pc = null;
    this.callId = null;
    if (this.localVideo) this.localVideo.srcObject = null;
    if (this.remoteVideo) this.remoteVideo.srcObject = null;
    if (had) this.setState('closed');
  }
}

/**
 * Exposes the session to tests as `window.__frontdesk`: the current `pc`, the `signal`, every
 * server message type received in order (`t`: page clock, `at`: wall clock, both in ms), the
 * states, and `restart()`.
 */
export function expose(signal, media) {
  const fd = {
    get pc() {
      return media.pc;
    },
    signal,
    media,
    events: [],
    state: {
      get signal() {
        return signal.state;
      },
      get media() {
        return media.state;
      },
    },
    restart: () => media.restart(),
  };
  signal.on('*', (m) => {
    // `pong` only answers the liveness probe every 10 s; it would drown the rest.
    if (m.type !== 'pong') fd.events.push({ type: m.type, t: performance.now(), at: Date.now() });
  });
  window.__frontdesk = fd;
  return fd;
}
