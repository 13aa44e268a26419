// frontdesk agent console: presence, incoming calls, the call's video, the visitor's page.
import { Signal, MediaSession, expose, signalUrl, pageOptions, jwtClaims } from './rtc.js';
import { Viewer } from './viewer.js';

const TOKEN_KEY = 'frontdesk.agent_token';
const LOGIN_URL = '/agent/login';
const SIGN_IN_AGAIN = new Set(['invalid_token', 'token_expired', 'not_an_agent']);

function toLogin(reason) {
  localStorage.removeItem(TOKEN_KEY);
  location.replace(reason ? `${LOGIN_URL}?reason=${encodeURIComponent(reason)}` : LOGIN_URL);
}

const $ = (id) => document.getElementById(id);

function main() {
  const token = localStorage.getItem(TOKEN_KEY);
  const claims = jwtClaims(token);
  if (!token) return toLogin();
  if (!claims || typeof claims.exp !== 'number') return toLogin('invalid_token');
  if (claims.exp * 1000 <= Date.now()) return toLogin('token_expired');

  const ui = {
    presence: $('fd-presence'),
    presenceState: $('fd-presence-state'),
    notice: $('fd-notice'),
    status: $('fd-status'),
    ring: $('fd-ring'),
    countdown: $('fd-countdown'),
    accept: $('fd-accept'),
    reject: $('fd-reject'),
    end: $('fd-end'),
    local: $('fd-local'),
    remote: $('fd-remote'),
    logout: $('fd-logout'),
  };
  let presence = 'offline';
  let call = { id: null, phase: 'idle' }; // idle | ringing | connected
  let ringTimer = null;
  const notices = { org: '', presence: '' };

  const setStatus = (text) => {
    ui.status.textContent = text;
  };
  const showNotice = () => {
    const text = notices.org || notices.presence;
    ui.notice.textContent = text;
    ui.notice.hidden = !text;
  };
  const setPresence = (p) => {
    presence = p;
    ui.presenceState.textContent = p.replace('_', ' ');
    ui.presenceState.dataset.presence = p;
    ui.presence.value = p === 'available' ? 'available' : 'away';
    ui.presence.disabled = signal.state !== 'open' || p === 'ringing' || p === 'in_call';
  };
  const stopRing = () => {
    clearInterval(ringTimer);
    ringTimer = null;
    ui.ring.hidden = true;
  };
  const setCall = (phase, id) => {
    call = { phase, id: phase === 'idle' ? null : id ?? call.id };
    if (phase !== 'ringing') stopRing();
    ui.end.hidden = phase !== 'connected';
    if (phase === 'idle') viewer.stop();
  };

  const opts = pageOptions();
  const signal = new Signal(signalUrl(location.origin), () => ({ agent_token: token }));
  const media = new MediaSession(signal, {
    localVideo: ui.local,
    remoteVideo: ui.remote,
    relay: opts.relay,
    iceServers: opts.iceServers,
    onState: (state, detail) => {
      if (call.phase !== 'connected') return;
      if (state === 'restarting') setStatus('Reconnecting…');
      else if (state === 'connected') setStatus('In call');
      else if (state === 'failed') setStatus('Video connection lost');
      else if (state === 'error' && detail) setStatus(`In call — media problem: ${detail.message}`);
    },
  });
  expose(signal, media);
  // The visitor's page, live, during calls with co-browse (after `expose`: its test hook joins
  // `window.__frontdesk`).
  const viewer = new Viewer($('fd-cobrowse'));

  signal.on('state', (s) => {
    if (s.state === 'reconnecting') setStatus('Reconnecting…');
    if (s.state === 'closed') {
      setCall('idle');
      if (s.code === 4001) setStatus('This console was opened in another tab or window.');
      else if (s.code === 4002) setStatus('You were removed from the organization.');
      else setStatus('Disconnected.');
    }
    setPresence(s.state === 'open' ? presence : 'offline');
  });
  signal.on('auth_failed', (e) => {
    if (SIGN_IN_AGAIN.has(e.code)) return toLogin(e.code);
    setStatus(`Cannot sign in: ${e.message}`);
  });
  signal.on('welcome', (m) => {
    if (m.org_status === 'active') notices.org = '';
    showNotice();
    if (m.call && m.call.state !== 'ended') {
      setCall('connected', m.call.call_id);
      setStatus(m.call.state === 'reconnecting' ? 'Visitor reconnecting…' : 'In call');
    } else {
      setCall('idle');
      setStatus('Ready');
    }
    setPresence(m.presence || 'away');
  });
  signal.on('presence', (m) => {
    notices.presence = m.message || '';
    showNotice();
    setPresence(m.presence);
  });
  signal.on('org_status', (m) => {
    notices.org = m.status === 'active' ? '' : m.message;
    showNotice();
  });
  signal.on('ring', (m) => {
    setCall('ringing', m.call_id);
    const deadline = performance.now() + m.ring_timeout_ms;
    const tick = () => {
      const left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
      ui.countdown.textContent = String(left);
      if (left === 0) stopRing();
    };
    clearInterval(ringTimer);
    ringTimer = setInterval(tick, 250);
    tick();
    ui.accept.disabled = false;
    ui.reject.disabled = false;
    ui.ring.hidden = false;
    setStatus('Incoming call');
  });
  signal.on('ring_cancelled', (m) => {
    if (m.call_id !== call.id) return;
    setCall('idle');
    const why = {
      no_answer: 'Missed call.',
      visitor_left: 'The visitor left before you answered.',
      disconnected: 'The call was cancelled: connection lost.',
      org_blocked: 'The call was cancelled: calls are blocked for your organization.',
      removed: 'The call was cancelled.',
    };
    setStatus(why[m.reason] || 'The call was cancelled.');
  });
  signal.on('rejected', () => {
    setCall('idle');
    setStatus('Call rejected.');
  });
  signal.on('call_connected', (m) => {
    setCall('connected', m.call_id);
    setStatus('In call');
  });
  signal.on('call_resumed', (m) => {
    setCall('connected', m.call_id);
    setStatus(m.state === 'reconnecting' ? 'Visitor reconnecting…' : 'In call');
  });
  signal.on('cobrowse_config', (m) => {
    if (m.enabled === true && typeof m.url === 'string' && call.phase !== 'idle') viewer.start(m.url);
    else viewer.disabled();
  });
  signal.on('visitor_reconnecting', () => setStatus('Visitor reconnecting…'));
  signal.on('visitor_reconnected', () => setStatus('In call'));
  signal.on('media_reconnecting', (m) =>
    setStatus(m.side === 'visitor' ? 'Visitor reconnecting…' : 'Reconnecting…'),
  );
  signal.on('media_reconnected', () => {
    if (call.phase === 'connected') setStatus('In call');
  });
  signal.on('media_failed', (m) =>
    setStatus(m.side === 'visitor' ? "The visitor's video connection was lost" : 'Video connection lost'),
  );
  signal.on('call_ended', (m) => {
    setCall('idle');
    setStatus(`Call ended: ${m.message}`);
  });

  ui.presence.addEventListener('change', () => {
    const wanted = ui.presence.value;
    ui.presence.disabled = true;
    signal
      .request({ type: 'set_presence', presence: wanted })
      .catch((e) => {
        notices.presence = e.message;
        showNotice();
      })
      .finally(() => setPresence(presence));
  });
  ui.accept.addEventListener('click', () => {
    ui.accept.disabled = ui.reject.disabled = true;
    signal.request({ type: 'accept', call_id: call.id }).catch((e) => {
      setCall('idle');
      setStatus(`Could not accept: ${e.message}`);
    });
  });
  ui.reject.addEventListener('click', () => {
    ui.accept.disabled = ui.reject.disabled = true;
    signal.request({ type: 'reject', call_id: call.id }).catch(() => setCall('idle'));
  });
  ui.end.addEventListener('click', () => {
    ui.end.disabled = true;
    signal
      .request({ type: 'end_call', call_id: call.id })
      .catch((e) => setStatus(`Could not end the call: ${e.message}`))
      .finally(() => {
        ui.end.disabled = false;
      });
  });
  ui.logout.addEventListener('click', () => {
    signal.close();
    toLogin();
  });
  // Sound may have been blocked when the media started without a click (reload mid-call).
  document.addEventListener('click', () => {
    if (ui.remote.srcObject && ui.remote.paused) ui.remote.play().catch(() => {});
  });

  signal.connect();
}

main();
