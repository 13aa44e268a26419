// frontdesk co-browse viewer: the agent's side. Shows the visitor's page, live and view only,
// from the call's `/v1/cobrowse` socket (docs/protocol.md, "Co-browse"; frame formats in
// cobrowse/PROTOCOL.md). Everything it receives was sanitized by the server.
//
// Rendering: an `<iframe sandbox="allow-same-origin">` (no scripts, forms, popups or navigation)
// on `/agent/cobrowse-frame`, an empty page the server sends with its own CSP (no scripts; images,
// fonts and style sheets from anywhere, inline styles). A snapshot is written into that document
// with document.open/write/close, with a CSP <meta> added to its head as a second fence. (A
// `srcdoc` frame would inherit the console's CSP, which blocks the page's inline styles.) The
// console reads and edits the frame's DOM directly (same origin, scripting disabled inside).
//
// Finding nodes: every element carries `data-fd-id="N"`; a text node is the node right after a
// `<!--N-->` comment. After each snapshot (and for every inserted fragment) the viewer walks the
// new nodes once and keeps a Map id -> element or marker comment; removals take their ids out.
// A `<template data-cobrowse-shadow>` (an open shadow root of the visitor's page) is attached as
// a real shadow root of its parent, its content moved in, so slots and scoped styles work.
//
// Test hook: `window.__frontdesk.viewer` = {frames, lastSeq, state, status, misses, resyncs,
// renderMs (the last snapshot's), doc()}.

const FRAME_PATH = '/agent/cobrowse-frame';
// The CSP written into every snapshot's head (the frame page's own header says the same).
const FRAME_CSP =
  "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline' https: http:; " +
  "font-src https: http: data:; media-src https: http:; form-action 'none'; base-uri 'none'";
// Makes masked fields visible as such to the agent.
const FRAME_STYLE = '[data-fd-masked]{outline:2px dashed rgba(198,40,40,.55)!important;outline-offset:1px}';
const SHADOW_ATTR = 'data-cobrowse-shadow';
// Form controls of the replica get autocomplete="off": the agent's browser must never autofill
// the visitor's page with the agent's own data.
const FORM_TAGS = new Set(['input', 'textarea', 'select', 'form']);
const XLINK_NS = 'http://www.w3.org/1999/xlink';
const XML_NS = 'http://www.w3.org/XML/1998/namespace';
const RESYNC_MIN_MS = 1000; // the server takes one resync per second
const RESYNC_RETRY_MS = [5000, 10000, 20000, 30000]; // no snapshot came: ask again
const RECONNECT_MS = [500, 1000, 2000, 4000, 8000];
// Close codes after which reconnecting cannot help: refused (bad ticket, co-browse off, too many
// viewers), another console took over, the call ended.
const FINAL_CLOSE_CODES = new Set([1008, 4001, 4010]);
const TOO_SLOW = 4011;
const MAX_QUEUED = 512; // frames held while the frame page loads
const DEFAULT_VIEWPORT = { width: 1280, height: 800 };

const STATUS = {
  idle: 'The visitor\u2019s page appears here during a call with co-browse.',
  connecting: 'Connecting to the visitor\u2019s page\u2026',
  reconnecting: 'Reconnecting to the visitor\u2019s page\u2026',
  waiting: 'Waiting for the visitor\u2019s page\u2026',
  live: 'The visitor\u2019s page, live (view only)',
  visitorGone: 'Visitor disconnected',
  disabled: 'Co-browse is off for this call.',
  ended: 'Co-browse ended.',
  refused: 'Co-browse is not available for this call.',
};

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** The co-browse viewer in `section`. One per console; `start()` for each call. */
export class Viewer {
  constructor(section, { frameUrl = FRAME_PATH, WebSocket: Socket = window.WebSocket } = {}) {
    this.section = section;
    this.frameUrl = frameUrl;
    this.Socket = Socket;
    this.statusEl = el('p', 'cobrowse-status', { 'data-testid': 'fd-cobrowse-status', role: 'status', 'aria-live': 'polite' });
    this.stage = el('div', 'cobrowse-stage');
    this.box = el('div', 'cobrowse-box');
    this.pointer = el('div', 'cobrowse-pointer', { 'aria-hidden': 'true' });
    this.pointer.hidden = true;
    this.box.append(this.pointer);
    this.stage.append(this.box);
    this.stage.hidden = true;
    section.replaceChildren(this.statusEl, this.stage);

    this.iframe = null;
    this.ws = null;
    this.url = null;
    this.stopped = true;
    this.failures = 0;
    this.timers = { reconnect: null, resync: null, retry: null };
    this.viewport = { ...DEFAULT_VIEWPORT };
    this.scale = 1;
    this.resetPage();
    this.counters = { frames: 0, misses: 0, resyncs: 0 };
    this.state = 'idle';
    this.setStatus(STATUS.idle);

    const layout = () => this.layout();
    if (window.ResizeObserver) new ResizeObserver(layout).observe(section);
    window.addEventListener('resize', layout);

    this.installHook();
  }

  /** `window.__frontdesk.viewer`, for tests (again on start: the console may replace the object). */
  installHook() {
    const fd = window.__frontdesk || (window.__frontdesk = {});
    if (fd.viewer && fd.viewer.owner === this) return;
    const self = this;
    fd.viewer = {
      owner: this,
      get frames() {
        return self.counters.frames;
      },
      get lastSeq() {
        return self.lastSeq;
      },
      get state() {
        return self.state;
      },
      get status() {
        return self.statusEl.textContent;
      },
      get misses() {
        return self.counters.misses;
      },
      get resyncs() {
        return self.counters.resyncs;
      },
      get renderMs() {
        return self.renderMs;
      },
      doc: () => (this.iframe ? this.iframe.contentDocument : null),
    };
  }

  resetPage() {
    this.nodes = new Map(); // id -> element | marker comment
    this.shadowOf = new WeakMap(); // marker template -> the ShadowRoot it became
    this.templateOf = new WeakMap(); // ShadowRoot | template content -> its template
    this.hasPage = false;
    this.lastSeq = null;
    this.awaiting = true; // changes are ignored until a snapshot
    this.queue = [];
    this.lastScroll = null;
  }

  /** Shows the call's co-browse from `url` (the `cobrowse_config` url). Idempotent per url. */
  start(url) {
    const wsUrl = toWsUrl(url);
    if (!this.stopped && this.url === wsUrl) return;
    this.stop(null);
    this.installHook();
    this.stopped = false;
    this.refusal = null;
    this.url = wsUrl;
    this.failures = 0;
    this.visitor = null;
    this.visitorSeen = false;
    this.resetPage();
    this.makeFrame();
    this.stage.hidden = false;
    this.stage.classList.remove('stale');
    this.layout();
    this.connect();
  }

  /** The call has co-browse off. */
  disabled() {
    this.stop(STATUS.disabled);
  }

  /** Tears the viewer down (call over); `text` replaces the status line (null: keep it). */
  stop(text = STATUS.idle) {
    this.stopped = true;
    for (const t of Object.values(this.timers)) clearTimeout(t);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        /* already closed */
      }
    }
    if (this.iframe) {
      this.iframe.remove(); // drops the visitor's page from memory
      this.iframe = null;
    }
    this.resetPage();
    this.url = null;
    this.stage.hidden = true;
    this.pointer.hidden = true;
    this.state = 'stopped';
    if (text !== null) this.setStatus(text);
  }

  setStatus(text) {
    if (this.statusEl.textContent !== text) this.statusEl.textContent = text;
  }

  updateStatus() {
    if (this.stopped) return;
    const open = this.ws && this.ws.readyState === 1;
    this.stage.classList.toggle('stale', this.visitor === false || !open);
    if (!open) this.setStatus(this.failures ? STATUS.reconnecting : STATUS.connecting);
    else if (this.visitor === false && (this.hasPage || this.visitorSeen)) this.setStatus(STATUS.visitorGone);
    else if (!this.hasPage) this.setStatus(STATUS.waiting);
    else this.setStatus(STATUS.live);
  }

  makeFrame() {
    const f = el('iframe', 'cobrowse-frame', {
      sandbox: 'allow-same-origin',
      referrerpolicy: 'no-referrer',
      tabindex: '-1',
      inert: '', // view only: no focus or input reaches the replica
      title: 'The visitor\u2019s page (view only)',
      'data-testid': 'fd-cobrowse-frame',
    });
    this.frameReady = false;
    f.addEventListener('load', () => {
      if (f !== this.iframe) return;
      if (!this.frameReady) {
        this.frameReady = true;
        this.drain();
      } else if (this.lastScroll) {
        // The page's images have loaded: the scroll position may only be reachable now.
        this.scrollWindow(this.lastScroll.x, this.lastScroll.y);
      }
    });
    f.src = new URL(this.frameUrl, location.href).href;
    this.box.insertBefore(f, this.pointer);
    this.iframe = f;
    this.layout();
  }

  // ----- connection -------------------------------------------------------------------------

  connect() {
    if (this.stopped) return;
    let ws;
    try {
      ws = new this.Socket(this.url);
    } catch {
      this.reconnectLater();
      return;
    }
    this.ws = ws;
    this.state = 'connecting';
    this.updateStatus();
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.failures = 0;
      this.state = 'open';
      // Whatever we show may be old: ask for the page (the server also asks the visitor when a
      // viewer joins; the widget answers both with one snapshot).
      this.lastSeq = null;
      this.awaiting = true;
      this.requestResync();
      this.updateStatus();
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws || typeof ev.data !== 'string') return;
      try {
        this.onMessage(ev.data);
      } catch (e) {
        console.warn('frontdesk co-browse viewer: a frame failed', e && e.name);
        this.counters.misses += 1;
        this.requestResync();
      }
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.onClose(ev.code);
    };
  }

  onClose(code) {
    if (this.stopped) return;
    clearTimeout(this.timers.resync);
    clearTimeout(this.timers.retry);
    if (FINAL_CLOSE_CODES.has(code)) {
      const text = code === 4010 ? STATUS.ended : this.refusal || STATUS.refused;
      this.stop(text);
      return;
    }
    if (code === TOO_SLOW) {
      // We fell behind: come back at once and ask for the page again.
      this.state = 'reconnecting';
      this.updateStatus();
      this.timers.reconnect = setTimeout(() => this.connect(), 0);
      return;
    }
    this.reconnectLater();
  }

  reconnectLater() {
    const base = RECONNECT_MS[Math.min(this.failures, RECONNECT_MS.length - 1)];
    this.failures += 1;
    this.state = 'reconnecting';
    this.updateStatus();
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this.connect(), base / 2 + Math.random() * base);
  }

  /** Asks the visitor's widget for a new snapshot (at most once per second). */
  requestResync(now = false) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return; // sent on (re)connect anyway
    const wait = now || this.lastResyncAt === undefined ? 0 : Math.max(0, this.lastResyncAt + RESYNC_MIN_MS - performance.now());
    if (wait > 0) {
      if (!this.timers.resync) {
        this.timers.resync = setTimeout(() => {
          this.timers.resync = null;
          this.requestResync(true);
        }, wait);
      }
      return;
    }
    clearTimeout(this.timers.resync);
    this.timers.resync = null;
    this.lastResyncAt = performance.now();
    this.counters.resyncs += 1;
    ws.send(JSON.stringify({ type: 'resync' }));
    // If no snapshot comes (the visitor may be between pages), ask again later.
    clearTimeout(this.timers.retry);
    const attempt = this.resyncAttempt || 0;
    this.timers.retry = setTimeout(() => {
      if (this.awaiting && this.visitor !== false) {
        this.resyncAttempt = attempt + 1;
        this.requestResync();
      }
    }, RESYNC_RETRY_MS[Math.min(attempt, RESYNC_RETRY_MS.length - 1)]);
  }

  onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'visitor':
        this.visitor = msg.connected === true;
        if (this.visitor) this.visitorSeen = true;
        this.updateStatus();
        return;
      case 'error':
        // The code only (never content).
        console.warn('frontdesk co-browse viewer: server error', String(msg.code));
        if (msg.code === 'cobrowse_disabled') this.refusal = STATUS.disabled;
        return;
      case 'snapshot':
      case 'changes':
        break;
      default:
        return;
    }
    if (!this.frameReady) {
      if (msg.type === 'snapshot') this.queue = [msg];
      else if (this.queue.length) this.queue.push(msg);
      if (this.queue.length > MAX_QUEUED) {
        this.queue = [];
        this.requestResync();
      }
      return;
    }
    this.apply(msg);
  }

  drain() {
    const q = this.queue;
    this.queue = [];
    for (const m of q) this.apply(m);
  }

  apply(msg) {
    const seq = Number(msg.seq);
    if (msg.type === 'snapshot') {
      if (typeof msg.html !== 'string') return;
      this.renderSnapshot(msg.html);
      this.lastSeq = seq;
      this.awaiting = false;
      this.resyncAttempt = 0;
      clearTimeout(this.timers.retry);
      this.counters.frames += 1;
      this.updateStatus();
      return;
    }
    if (this.awaiting || !Array.isArray(msg.ops)) return;
    if (seq === this.lastSeq) return; // an empty batch repeats the last seq
    if (seq !== this.lastSeq + 1) {
      // A frame was missed: what follows may not fit. Wait for a new page.
      this.awaiting = true;
      this.requestResync();
      return;
    }
    this.lastSeq = seq;
    this.counters.frames += 1;
    for (const op of msg.ops) {
      let ok = false;
      try {
        ok = this.applyOp(op);
      } catch {
        ok = false;
      }
      if (!ok) {
        this.counters.misses += 1;
        this.requestResync();
      }
    }
  }

  // ----- the page ---------------------------------------------------------------------------

  get doc() {
    return this.iframe ? this.iframe.contentDocument : null;
  }

  renderSnapshot(html) {
    const doc = this.doc;
    if (!doc) return;
    const started = performance.now();
    this.nodes = new Map();
    this.shadowOf = new WeakMap();
    this.templateOf = new WeakMap();
    doc.open();
    doc.write(withHead(html));
    doc.close();
    const shadows = this.index(doc);
    this.attachShadows(shadows);
    this.hasPage = true;
    this.lastScroll = null;
    this.renderMs = Math.round(performance.now() - started);
  }

  /**
   * Adds the ids of `root` and everything under it (template contents and attached shadow roots
   * included) to the map, turns autocomplete off on its form controls, and returns the
   * shadow-root templates found, outermost first.
   */
  index(root) {
    const shadows = [];
    const roots = [root];
    while (roots.length) {
      const r = roots.shift();
      const doc = r.nodeType === 9 ? r : r.ownerDocument;
      const walker = doc.createTreeWalker(r, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_COMMENT);
      for (let n = walker.currentNode; n; n = walker.nextNode()) {
        if (n.nodeType === 1) {
          const id = n.getAttribute('data-fd-id');
          if (id !== null) this.nodes.set(Number(id), n);
          if (FORM_TAGS.has(n.localName)) n.setAttribute('autocomplete', 'off');
          if (n.localName === 'template' && n.content) {
            this.templateOf.set(n.content, n);
            roots.push(n.content);
            if (n.hasAttribute(SHADOW_ATTR)) shadows.push(n);
          }
        } else if (n.nodeType === 8 && /^\d+$/.test(n.data)) {
          this.nodes.set(Number(n.data), n);
        }
      }
    }
    return shadows;
  }

  /** Takes the ids of `root` and everything under it out of the map. */
  unindex(root) {
    const roots = [root];
    while (roots.length) {
      const r = roots.pop();
      const doc = r.nodeType === 9 ? r : r.ownerDocument;
      const walker = doc.createTreeWalker(r, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_COMMENT);
      for (let n = walker.currentNode; n; n = walker.nextNode()) {
        let id = null;
        if (n.nodeType === 1) {
          id = n.getAttribute('data-fd-id');
          if (n.localName === 'template' && n.content) roots.push(n.content);
          const sr = this.shadowOf.get(n);
          if (sr) roots.push(sr);
        } else if (n.nodeType === 8 && /^\d+$/.test(n.data)) {
          id = n.data;
        }
        if (id !== null && this.nodes.get(Number(id)) === n) this.nodes.delete(Number(id));
      }
    }
  }

  /** Turns `<template data-cobrowse-shadow>` children into real shadow roots of their parent. */
  attachShadows(templates) {
    for (const t of templates) {
      const host = t.parentNode;
      if (!host || host.nodeType !== 1) continue;
      let root = host.shadowRoot;
      if (!root) {
        try {
          root = host.attachShadow({ mode: 'open' });
        } catch {
          continue; // this element cannot host one: its content stays in the template
        }
      } else {
        const old = this.templateOf.get(root);
        if (old && old !== t) this.unindex(root);
        root.replaceChildren();
      }
      root.append(t.content);
      this.shadowOf.set(t, root);
      this.templateOf.set(root, t);
    }
  }

  /** An element by id. */
  element(id) {
    const n = this.nodes.get(Number(id));
    return n && n.nodeType === 1 ? n : null;
  }

  /** Where children of element `e` live (a template's content or its shadow root). */
  container(e) {
    if (e.localName === 'template') return this.shadowOf.get(e) || e.content;
    return e;
  }

  /** The last DOM node of id `n`: for a text id, its text after the marker (if any). */
  end(n) {
    if (n.nodeType === 8) {
      const t = n.nextSibling;
      return t && t.nodeType === 3 ? t : n;
    }
    return n;
  }

  /** The element whose context HTML replacing or inserting next to `n` is parsed in. */
  contextOf(n) {
    const p = n.parentNode;
    if (!p) return null;
    if (p.nodeType === 1) return p;
    return this.templateOf.get(p) || (p.host ? p.host : null);
  }

  /** `html` parsed in the context of element `ctx` (no scripts run: the frame has none). */
  parse(ctx, html) {
    const doc = ctx.ownerDocument;
    const range = doc.createRange();
    range.selectNodeContents(ctx);
    const frag = range.createContextualFragment(html);
    // The parser may add elements the relay never wrote (a <head> before a <body> in an <html>
    // context, a <body> around content in a <head>): every relay element has an id, so unwrap
    // top-level elements without one.
    for (const c of Array.from(frag.childNodes)) {
      if (c.nodeType === 1 && !c.hasAttribute('data-fd-id')) c.replaceWith(...c.childNodes);
    }
    return frag;
  }

  applyOp(op) {
    switch (op.op) {
      case 'insert':
        return this.insert(op);
      case 'replace':
        return this.replace(op);
      case 'remove':
        return this.remove(op);
      case 'attrs':
        return this.setAttrs(op);
      case 'text':
        return this.setText(op);
      case 'value':
        return this.setValue(op);
      case 'scroll':
        return this.scroll(op);
      case 'pointer':
        this.showPointer(op);
        return true;
      case 'viewport':
        this.setViewport(op);
        return true;
      case 'selection':
        this.select(op);
        return true;
      default:
        return true; // a newer server: ignore what we do not know
    }
  }

  insert({ parent, prev, html }) {
    const p = this.element(parent);
    if (!p || typeof html !== 'string') return false;
    const c = this.container(p);
    let before;
    if (prev === null || prev === undefined) {
      before = c.firstChild;
    } else {
      const pn = this.nodes.get(Number(prev));
      if (!pn) return false;
      const last = this.end(pn);
      if (last.parentNode !== c) return false;
      before = last.nextSibling;
    }
    const frag = this.parse(p, html);
    const shadows = this.index(frag);
    c.insertBefore(frag, before);
    this.attachShadows(shadows);
    return true;
  }

  replace({ id, html }) {
    const old = this.element(id);
    if (!old || typeof html !== 'string') return false;
    const ctx = this.contextOf(old);
    if (!ctx) return false;
    const frag = this.parse(ctx, html);
    this.unindex(old);
    const shadows = this.index(frag);
    const oldShadow = this.shadowOf.get(old);
    old.replaceWith(frag);
    if (oldShadow && !shadows.some((t) => t.parentNode === oldShadow.host)) oldShadow.replaceChildren();
    this.attachShadows(shadows);
    return true;
  }

  remove({ id }) {
    const n = this.nodes.get(Number(id));
    if (!n) return false;
    if (n.nodeType === 8) {
      const t = n.nextSibling;
      if (t && t.nodeType === 3) t.remove();
      n.remove();
      this.nodes.delete(Number(id));
      return true;
    }
    this.unindex(n);
    const sr = this.shadowOf.get(n);
    if (sr) sr.replaceChildren(); // a shadow root cannot be detached: empty it
    n.remove();
    return true;
  }

  setAttrs({ id, attrs }) {
    const e = this.element(id);
    if (!e || !attrs || typeof attrs !== 'object') return false;
    const form = FORM_TAGS.has(e.localName);
    for (const a of Array.from(e.attributes)) {
      if (!Object.prototype.hasOwnProperty.call(attrs, a.name) && !(form && a.name === 'autocomplete')) e.removeAttribute(a.name);
    }
    for (const [name, value] of Object.entries(attrs)) {
      if (form && name === 'autocomplete') continue;
      if (typeof value !== 'string' || e.getAttribute(name) === value) continue;
      try {
        if (name.startsWith('xlink:')) e.setAttributeNS(XLINK_NS, name, value);
        else if (name.startsWith('xml:')) e.setAttributeNS(XML_NS, name, value);
        else e.setAttribute(name, value);
      } catch {
        /* a name this DOM refuses: the rest still applies */
      }
    }
    return true;
  }

  setText({ id, text }) {
    const m = this.nodes.get(Number(id));
    if (!m || m.nodeType !== 8 || typeof text !== 'string') return false;
    const t = m.nextSibling;
    if (t && t.nodeType === 3) t.data = text;
    else m.after(m.ownerDocument.createTextNode(text));
    return true;
  }

  setValue({ id, value, checked }) {
    const e = this.element(id);
    if (!e) return false;
    if (typeof value === 'string' && 'value' in e) e.value = value;
    if (typeof checked === 'boolean' && 'checked' in e) e.checked = checked;
    return true;
  }

  scroll({ id, x, y }) {
    if (id === null || id === undefined) {
      this.lastScroll = { x, y };
      this.scrollWindow(x, y);
      return true;
    }
    const e = this.element(id);
    if (!e) return false;
    e.scrollLeft = x;
    e.scrollTop = y;
    return true;
  }

  scrollWindow(x, y) {
    const win = this.iframe && this.iframe.contentWindow;
    if (win) win.scrollTo(x, y);
  }

  setViewport({ width, height }) {
    if (!(width > 0 && height > 0)) return;
    this.viewport = { width: Math.min(width, 10000), height: Math.min(height, 10000) };
    this.layout();
  }

  /** Sizes the frame to the visitor's viewport and scales it to fit the section. */
  layout() {
    if (!this.iframe) return;
    const { width, height } = this.viewport;
    const avail = this.stage.clientWidth || this.section.clientWidth || width;
    const top = this.stage.getBoundingClientRect().top;
    const availH = Math.max(240, window.innerHeight - Math.max(0, top) - 24);
    const s = Math.min(1, avail / width, availH / height);
    this.scale = s > 0 ? s : 1;
    const f = this.iframe.style;
    f.width = `${width}px`;
    f.height = `${height}px`;
    f.transform = `scale(${this.scale})`;
    this.box.style.width = `${Math.round(width * this.scale)}px`;
    this.box.style.height = `${Math.round(height * this.scale)}px`;
    if (this.lastPointer) this.placePointer(this.lastPointer);
  }

  showPointer(p) {
    if (typeof p.x !== 'number' || typeof p.y !== 'number') return;
    this.lastPointer = p;
    this.pointer.hidden = false;
    this.placePointer(p);
    if (p.kind === 'click' || p.kind === 'down') {
      this.pointer.classList.remove('click');
      void this.pointer.offsetWidth; // restart the animation
      this.pointer.classList.add('click');
    }
  }

  placePointer(p) {
    this.pointer.style.transform = `translate(${p.x * this.scale}px, ${p.y * this.scale}px)`;
  }

  select(op) {
    const doc = this.doc;
    const sel = doc && doc.getSelection();
    if (!sel) return;
    const at = (id, offset) => {
      let n = this.nodes.get(Number(id));
      if (!n) return null;
      if (n.nodeType === 8) {
        const t = n.nextSibling;
        if (!t || t.nodeType !== 3) return null;
        n = t;
      }
      const max = n.nodeType === 3 ? n.data.length : n.childNodes.length;
      return [n, Math.max(0, Math.min(Number(offset) || 0, max))];
    };
    const a = op.anchor === undefined || op.anchor === null ? null : at(op.anchor, op.anchorOffset);
    const f = op.focus === undefined || op.focus === null ? null : at(op.focus, op.focusOffset);
    if (!a || !f) {
      sel.removeAllRanges();
      return;
    }
    try {
      sel.setBaseAndExtent(a[0], a[1], f[0], f[1]);
    } catch {
      sel.removeAllRanges();
    }
  }
}

/** The snapshot with the frame's CSP, referrer policy and styles first in its head. */
function withHead(html) {
  const extra =
    `<meta http-equiv="Content-Security-Policy" content="${FRAME_CSP}">` +
    '<meta name="referrer" content="no-referrer">' +
    `<style>${FRAME_STYLE}</style>`;
  // The first `<head` tag is the real one: the sanitizer escapes `<` in text and attributes.
  const m = /<head(?=[\s>/])[^>]*>/i.exec(html);
  if (m) {
    const at = m.index + m[0].length;
    return html.slice(0, at) + extra + html.slice(at);
  }
  const d = /^\s*<!DOCTYPE[^>]*>/i.exec(html);
  return d ? d[0] + extra + html.slice(d[0].length) : extra + html;
}

function toWsUrl(url) {
  const u = new URL(url, location.href);
  if (u.protocol === 'https:') u.protocol = 'wss:';
  else if (u.protocol === 'http:') u.protocol = 'ws:';
  return u.href;
}
