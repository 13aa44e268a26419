// frontdesk visitor widget. One tag embeds it on any page:
//
//   <script src="https://frontdesk.example/widget.js" data-key="wk_..."></script>
//
// A classic script: it finds its server from its own URL and loads the shared client
// (`/web/rtc.js`) from there as a module. Everything it adds to the page is prefixed `fd-`.
(function () {
  'use strict';
  var script = document.currentScript;
  if (!script || window.__frontdeskWidget) return;
  window.__frontdeskWidget = true;
  var key = script.getAttribute('data-key') || '';
  var base = new URL(script.src, location.href).href.replace(/\/widget\.js([?#].*)?$/, '');
  import(base + '/web/rtc.js').then(
    function (rtc) {
      var start = function () {
        mount(rtc, base, key);
      };
      if (document.body) start();
      else document.addEventListener('DOMContentLoaded', start);
    },
    function (e) {
      console.error('frontdesk: cannot load the widget client', e);
    }
  );

  var CSS = [
    '.fd-root{position:fixed;right:20px;bottom:20px;z-index:2147483000;font:14px/1.4 system-ui,sans-serif;color:#1d2330}',
    '.fd-root [hidden]{display:none!important}',
    '.fd-root button{font:inherit;cursor:pointer;border:0;border-radius:6px;padding:8px 14px}',
    '.fd-open{background:#2456d3;color:#fff;border-radius:999px!important;padding:12px 20px!important;box-shadow:0 4px 14px rgba(0,0,0,.25)}',
    '.fd-panel{position:absolute;right:0;bottom:56px;width:320px;background:#fff;border-radius:10px;box-shadow:0 8px 30px rgba(0,0,0,.3);overflow:hidden}',
    '.fd-head{display:flex;justify-content:space-between;align-items:center;background:#2456d3;color:#fff;padding:8px 12px;font-weight:600}',
    '.fd-head button{background:transparent;color:#fff;padding:2px 8px;font-size:18px;line-height:1}',
    '.fd-statusbar{display:flex;gap:8px;align-items:center;padding:8px 12px;min-height:22px}',
    '.fd-status{flex:1}',
    '.fd-recording{background:#c62828;color:#fff;border-radius:4px;padding:1px 6px;font-size:12px;font-weight:600}',
    '.fd-recording::before{content:"\\25CF  "}',
    '.fd-sharing{background:#2456d3;color:#fff;border-radius:4px;padding:1px 6px;font-size:12px;font-weight:600}',
    '.fd-note{padding:0 12px 6px;color:#8a5a00;font-size:12px}',
    '.fd-videos{position:relative;background:#111;aspect-ratio:4/3}',
    '.fd-videos video{display:block;background:#111}',
    '.fd-remote{width:100%;height:100%;object-fit:cover}',
    '.fd-local{position:absolute;right:8px;bottom:8px;width:30%;border:2px solid #fff;border-radius:4px}',
    '.fd-actions{display:flex;gap:8px;justify-content:flex-end;padding:10px 12px}',
    '.fd-call{background:#2e7d32;color:#fff}',
    '.fd-end{background:#c62828;color:#fff}',
    '.fd-root button:disabled{opacity:.5;cursor:default}',
  ].join('\n');

  // A constructed stylesheet is not an inline <style>, so it also works under a strict CSP.
  function addStyles() {
    try {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      document.adoptedStyleSheets = document.adoptedStyleSheets.concat([sheet]);
    } catch (e) {
      var style = document.createElement('style');
      style.id = 'fd-style'; // the widget's own: never shared by co-browse
      style.textContent = CSS;
      document.head.appendChild(style);
    }
  }

  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === 'text') node.textContent = props[k];
      else if (k === 'testid') node.setAttribute('data-testid', props[k]);
      else if (k === 'className') node.className = props[k];
      else node.setAttribute(k, props[k]);
    });
    (children || []).forEach(function (c) {
      node.appendChild(c);
    });
    return node;
  }

  // Remembers the visitor across reloads of this tab (the server lets a visitor rejoin a call).
  function memory(widgetKey) {
    var name = 'frontdesk.visitor.' + widgetKey;
    function read() {
      try {
        return JSON.parse(sessionStorage.getItem(name) || '{}');
      } catch (e) {
        return {};
      }
    }
    return {
      get: function (field) {
        return read()[field];
      },
      set: function (field, value) {
        var v = read();
        v[field] = value;
        try {
          sessionStorage.setItem(name, JSON.stringify(v));
        } catch (e) {
          /* storage unavailable: the visitor simply cannot rejoin after a reload */
        }
      },
      clear: function () {
        try {
          sessionStorage.removeItem(name);
        } catch (e) {
          /* nothing to clear */
        }
      },
    };
  }

  function mount(rtc, base, widgetKey) {
    addStyles();
    var store = memory(widgetKey);
    var ui = {
      open: el('button', { id: 'fd-open', testid: 'fd-open', className: 'fd-open', type: 'button', 'aria-expanded': 'false', text: 'Talk to us' }),
      close: el('button', { className: 'fd-close', type: 'button', 'aria-label': 'Close', text: '\u00d7' }),
      status: el('span', { id: 'fd-status', testid: 'fd-status', className: 'fd-status', role: 'status', 'aria-live': 'polite' }),
      note: el('div', { className: 'fd-note', hidden: '' }),
      remote: el('video', { id: 'fd-remote', testid: 'fd-remote', className: 'fd-remote', autoplay: '', playsinline: '' }),
      local: el('video', { id: 'fd-local', testid: 'fd-local', className: 'fd-local', autoplay: '', playsinline: '' }),
      call: el('button', { id: 'fd-call', testid: 'fd-call', className: 'fd-call', type: 'button', text: 'Start video call' }),
      end: el('button', { id: 'fd-end', testid: 'fd-end', className: 'fd-end', type: 'button', text: 'End call', hidden: '' }),
      badge: null,
      sharing: null,
    };
    ui.local.muted = true;
    var statusbar = el('div', { className: 'fd-statusbar' }, [ui.status]);
    var panel = el('div', { id: 'fd-panel', className: 'fd-panel', role: 'dialog', 'aria-label': 'Talk to us', hidden: '' }, [
      el('div', { className: 'fd-head' }, [el('span', { text: 'Talk to us' }), ui.close]),
      statusbar,
      ui.note,
      el('div', { className: 'fd-videos' }, [ui.remote, ui.local]),
      el('div', { className: 'fd-actions' }, [ui.call, ui.end]),
    ]);
    document.body.appendChild(el('div', { id: 'fd-widget', className: 'fd-root' }, [panel, ui.open]));

    var call = { id: null, phase: 'idle' }; // idle | pending | connected
    var agentName = store.get('agent_name') || '';
    var authFailed = false;

    function setStatus(text) {
      ui.status.textContent = text;
    }
    function connectedText() {
      return agentName ? 'Connected with ' + agentName : 'Connected';
    }
    function setRecording(on) {
      if (on && !ui.badge) {
        ui.badge = el('span', { id: 'fd-recording', testid: 'fd-recording', className: 'fd-recording', text: 'Recording' });
        statusbar.appendChild(ui.badge);
      } else if (!on && ui.badge) {
        ui.badge.remove();
        ui.badge = null;
      }
    }
    function setPhase(phase, callId) {
      call.phase = phase;
      if (callId !== undefined) call.id = callId;
      ui.call.hidden = phase !== 'idle';
      ui.call.disabled = false;
      ui.end.hidden = phase === 'idle';
      if (phase === 'idle') {
        call.id = null;
        setRecording(false);
        stopCobrowse();
      }
    }

    // Co-browse: while a call has it, the agent sees this page (cobrowse.js, loaded on demand).
    // The badge tells the visitor whenever an agent is actually watching.
    var cobrowse = { capture: null, callId: null, url: null };
    function setSharing(on) {
      if (on && !ui.sharing) {
        ui.sharing = el('span', {
          id: 'fd-sharing',
          testid: 'fd-sharing',
          className: 'fd-sharing',
          text: 'Page shared',
          title: 'Your agent can see this page (passwords and card numbers stay hidden)',
        });
        statusbar.appendChild(ui.sharing);
      } else if (!on && ui.sharing) {
        ui.sharing.remove();
        ui.sharing = null;
      }
    }
    function startCobrowse(m) {
      if (cobrowse.callId === m.call_id && cobrowse.url === m.url) return; // a signaling reconnect
      stopCobrowse();
      cobrowse.callId = m.call_id;
      cobrowse.url = m.url;
      import(base + '/web/cobrowse.js').then(
        function (mod) {
          if (cobrowse.callId !== m.call_id || cobrowse.url !== m.url || cobrowse.capture) return;
          cobrowse.capture = mod.startCapture({
            url: m.url,
            base: base,
            onState: function (state) {
              setSharing(state === 'active');
            },
          });
        },
        function (e) {
          console.error('frontdesk: cannot load co-browse', e && e.name);
        }
      );
    }
    function stopCobrowse() {
      if (cobrowse.capture) cobrowse.capture.stop();
      cobrowse.capture = null;
      cobrowse.callId = null;
      cobrowse.url = null;
      setSharing(false);
    }
    function showPanel(show) {
      panel.hidden = !show;
      ui.open.setAttribute('aria-expanded', String(show));
    }

    var opts = rtc.pageOptions();
    var signal = new rtc.Signal(rtc.signalUrl(base), function () {
      var token = store.get('visitor_token');
      return token ? { visitor_token: token } : { widget_key: widgetKey, page_url: location.href };
    });
    var media = new rtc.MediaSession(signal, {
      localVideo: ui.local,
      remoteVideo: ui.remote,
      relay: opts.relay,
      iceServers: opts.iceServers,
      onState: function (state, detail) {
        if (state === 'restarting') setStatus('Reconnecting\u2026');
        else if (state === 'connected' && call.phase === 'connected') setStatus(connectedText());
        else if (state === 'failed') setStatus('Video connection lost');
        if (state === 'error' && detail && detail.message) {
          ui.note.textContent = detail.message;
          ui.note.hidden = false;
        } else if (state === 'connected' || state === 'closed') {
          ui.note.hidden = true;
        }
      },
    });
    rtc.expose(signal, media);

    signal.on('state', function (s) {
      if (s.state === 'connecting') setStatus('Connecting\u2026');
      else if (s.state === 'reconnecting') setStatus('Reconnecting\u2026');
      else if (s.state === 'closed' && !authFailed) {
        setPhase('idle');
        setStatus(s.code === 4001 ? 'This conversation continues in another tab.' : 'Disconnected.');
      }
    });
    signal.on('auth_failed', function (e) {
      if (store.get('visitor_token') && (e.code === 'invalid_token' || e.code === 'token_expired')) {
        store.clear(); // an old session: start a new one with the widget key
        signal.connect();
        return;
      }
      authFailed = true;
      setPhase('idle');
      ui.call.disabled = true;
      setStatus(e.code === 'invalid_widget_key' ? 'Video calls are not available here right now.' : 'Cannot connect: ' + e.message);
    });
    signal.on('welcome', function (m) {
      if (m.visitor_token) store.set('visitor_token', m.visitor_token);
      if (m.call) {
        showPanel(true);
        setPhase(m.call.state === 'connected' || m.call.state === 'reconnecting' ? 'connected' : 'pending', m.call.call_id);
        setStatus(call.phase === 'connected' ? connectedText() : 'Ringing\u2026');
      } else {
        if (call.phase !== 'idle') setStatus('Call ended');
        else setStatus('Talk to us on video.');
        setPhase('idle');
      }
    });
    signal.on('call_requested', function (m) {
      setPhase('pending', m.call_id);
    });
    signal.on('ringing', function (m) {
      setPhase('pending', m.call_id);
      setStatus('Ringing\u2026');
    });
    signal.on('queued', function (m) {
      setPhase('pending', m.call_id);
      setStatus('You are number ' + m.position + ' in line');
    });
    signal.on('unavailable', function (m) {
      setPhase('idle');
      setStatus(m.message);
    });
    signal.on('call_connected', function (m) {
      if (m.agent_name) {
        agentName = m.agent_name;
        store.set('agent_name', agentName);
      }
      setPhase('connected', m.call_id);
      setStatus(connectedText());
    });
    signal.on('call_resumed', function (m) {
      setPhase(m.state === 'connected' || m.state === 'reconnecting' ? 'connected' : 'pending', m.call_id);
      if (m.state === 'reconnecting') setStatus('Your agent is reconnecting\u2026');
      else if (call.phase === 'connected') setStatus(connectedText());
    });
    signal.on('agent_reconnecting', function () {
      setStatus('Your agent is reconnecting\u2026');
    });
    signal.on('agent_reconnected', function () {
      setStatus(connectedText());
    });
    signal.on('media_reconnecting', function () {
      setStatus('Reconnecting\u2026');
    });
    signal.on('media_reconnected', function () {
      if (call.phase === 'connected') setStatus(connectedText());
    });
    signal.on('media_failed', function () {
      setStatus('Video connection lost');
    });
    signal.on('cobrowse_config', function (m) {
      if (m.enabled === true && typeof m.url === 'string' && call.phase !== 'idle') startCobrowse(m);
      else stopCobrowse();
    });
    signal.on('recording', function (m) {
      setRecording(m.active === true && call.phase === 'connected');
    });
    signal.on('call_ended', function (m) {
      setPhase('idle');
      store.set('agent_name', '');
      agentName = '';
      setStatus('Call ended: ' + m.message);
    });

    var connected = false;
    function ensureConnected() {
      if (!connected) {
        connected = true;
        signal.connect();
      }
    }
    ui.open.addEventListener('click', function () {
      var show = panel.hidden;
      showPanel(show);
      if (show) ensureConnected();
    });
    ui.close.addEventListener('click', function () {
      showPanel(false);
    });
    ui.call.addEventListener('click', function () {
      ui.call.disabled = true;
      ensureConnected();
      setStatus('Connecting\u2026');
      whenOpen().then(function () {
        return signal.request({ type: 'request_call' });
      }).catch(function (e) {
        ui.call.disabled = false;
        setStatus(e.code === 'call_in_progress' ? 'A call is already in progress.' : 'Could not start the call: ' + e.message);
      });
    });
    ui.end.addEventListener('click', function () {
      if (!call.id) return;
      ui.end.disabled = true;
      signal.request({ type: 'end_call', call_id: call.id }).catch(function () {
        /* call_ended (or an error when already over) updates the panel */
      }).then(function () {
        ui.end.disabled = false;
      });
    });
    // Browsers may block sound that starts without a click (e.g. after a reload mid-call).
    panel.addEventListener('click', function () {
      if (ui.remote.srcObject && ui.remote.paused) ui.remote.play().catch(function () {});
    });

    function whenOpen() {
      return new Promise(function (resolve, reject) {
        if (signal.state === 'open') return resolve();
        var off = signal.on('state', function (s) {
          if (s.state === 'open') {
            off();
            resolve();
          } else if (s.state === 'closed') {
            off();
            reject(Object.assign(new Error('not connected'), { code: 'disconnected' }));
          }
        });
      });
    }

    // A visitor who reloads mid-call comes straight back.
    if (store.get('visitor_token')) ensureConnected();
    else setStatus('Talk to us on video.');
  }
})();
