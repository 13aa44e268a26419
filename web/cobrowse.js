// frontdesk co-browse capture: the visitor's side. Loaded by the widget (like rtc.js) when a
// call's `cobrowse_config` says `enabled`, stopped when the call ends. It sends the page to the
// call's `/v1/cobrowse` socket as one full snapshot, then batches of changes; the wire formats
// are in cobrowse/PROTOCOL.md and docs/protocol.md ("Co-browse").
//
// The server sanitizes and masks everything again and never trusts this code; masking here is
// defence in depth. Nothing of the page is ever written to the console.
//
// How the page is described
// - Every captured node gets a numeric id (WeakMap node -> record, counter from 1, never
//   reused). A record also remembers where the relay believes the node is (its parent's record
//   and that parent's version when it was sent), so the capture knows which ids the relay has
//   without a second tree: a node is "known" when its chain of parents up to the snapshot root
//   is still the one that was sent.
// - The widget's own UI (id or class starting with `fd-`) and `script`/`noscript` are never
//   captured. Comments become placeholders (no content).
// - An open shadow root is sent as the first child of its host, a
//   `<template data-cobrowse-shadow="open">` whose children are the shadow root's children;
//   the agent's viewer attaches it as a shadow root again, so slots and scoped styles work.
// - Constructed style sheets (`adoptedStyleSheets`) and rules inserted through the CSSOM into an
//   empty `<style>` (CSS-in-JS) are sent as synthetic `<style>` text.
// - A same-origin iframe is sent with its document serialized into `srcdoc` (live values
//   written as attributes, scripts and comments removed); the server sanitizes it recursively.
//   A cross-origin iframe is sent as an empty element.
// - Live state: `value` of text-like inputs and textareas, `checked` of checkboxes and radios,
//   and for a `select` the `selected` attribute of its options (the relay renders option state
//   from attributes only).
//
// Test hook: `window.__frontdesk.cobrowse` = {state, viewers, sent: {snapshots, batches, bytes},
// skipped: {snapshots, batches}, errors: {code: count}, lastSnapshot: {nodes, bytes, ms}}.

const MASK = '\u2022'.repeat(8); // what the relay writes for every masked value
const MAX_SNAPSHOT_BYTES = 5 * 1024 * 1024;
const MAX_BATCH_BYTES = 256 * 1024;
const MAX_NODES = 250000;
const MAX_DEPTH = 500; // the relay refuses snapshots deeper than 512 levels
const MAX_ATTRIBUTE_BYTES = 64 * 1024; // longer values are dropped by the relay anyway
const MAX_ATTRIBUTES = 256;
const MAX_SRCDOC_BYTES = 60 * 1024; // an iframe's srcdoc is one attribute (64 KiB at most)
const MAX_SRCDOC_NESTING = 3;
const MAX_STYLE_TEXT = 1024 * 1024; // synthetic style sheets longer than this are not sent
const FLUSH_MS = 100; // at most one change batch per 100 ms
const POLL_MS = 1000; // checks what no event reports (programmatic values, CSSOM, shadow roots)
const FRAME_EVERY_MS = 1000; // an iframe's srcdoc is re-sent at most this often
const MAX_DIRTY = 20000; // pending changes beyond which a fresh snapshot is cheaper
const MAX_MESSAGES_PER_FLUSH = 8; // more than this: send a snapshot instead
const MAX_BUFFERED = 1024 * 1024; // unsent socket bytes beyond which nothing more is queued
const DRAIN_WAIT_MS = 250;
const VIEWERS_WAIT_MS = 1000;
const SNAPSHOT_COALESCE_MS = 50;
const MAX_INTERNAL_ERRORS = 20; // then the capture gives up on this page // after connecting, wait this long for the viewer count
const RECONNECT_MS = [500, 1000, 2000, 4000, 8000, 15000];
// The server takes a burst of 4 snapshots, then one per 2 s; stay under it.
const SNAPSHOT_BURST = 3;
const SNAPSHOT_EVERY_MS = 2000;
// Close codes after which reconnecting cannot help: policy (bad ticket, co-browse off), another
// tab took over the call's capture, the call ended.
const FINAL_CLOSE_CODES = new Set([1008, 4001, 4010]);
const SHADOW_ATTR = 'data-cobrowse-shadow';

const XLINK_NS = 'http://www.w3.org/1999/xlink';
const XML_NS = 'http://www.w3.org/XML/1998/namespace';
const XMLNS_NS = 'http://www.w3.org/2000/xmlns/';

// Elements never captured (with their content).
const SKIP_TAGS = new Set(['script', 'noscript']);
// Attributes holding one URL, made absolute (the relay drops relative URLs it cannot resolve).
const URL_ATTRS = new Set([
  'href', 'src', 'action', 'formaction', 'poster', 'background', 'cite', 'longdesc', 'data',
  'codebase', 'manifest', 'icon', 'xlink:href',
]);
const SRCSET_ATTRS = new Set(['srcset', 'imagesrcset']);
// In a sensitive subtree these attributes become the mask (as on the relay: rules.rs).
const MASKED_ATTRS = new Set(['value', 'placeholder', 'title', 'alt', 'label', 'abbr', 'summary', 'content']);
// Input types whose `.value` is what the visitor typed (others: the attribute, or a file path).
const TEXT_INPUT_TYPES = new Set([
  'text', 'search', 'email', 'url', 'tel', 'password', 'number', 'date', 'datetime-local',
  'month', 'week', 'time', 'color', 'range',
]);
const SENSITIVE_INPUT_TYPES = new Set(['password', 'tel', 'hidden']);
// The relay's name heuristics (cobrowse/src/rules.rs): a word, or two or three adjacent words
// joined, of an element's name, id or autocomplete.
const SENSITIVE_WORDS = new Set([
  'cvv', 'cvc', 'csc', 'cvn', 'iban', 'ssn', 'cardnumber', 'cardnum', 'cardno', 'ccnumber',
  'ccnum', 'ccno', 'creditcard', 'securitycode', 'socialsecurity', 'password', 'passwd', 'pwd',
  'onetimecode',
]);

/**
 * Starts capturing this page to the co-browse socket at `url` (relative to `base`, the
 * frontdesk server). Returns the capture; `stop()` ends it. `WebSocket` may be replaced (tests).
 */
export function startCapture({ url, base = location.href, WebSocket: Socket = window.WebSocket, onState } = {}) {
  const c = new Capture(wsUrl(url, base), Socket, onState);
  c.start();
  return c;
}

function wsUrl(url, base) {
  const u = new URL(url, base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

// ---------------------------------------------------------------------------------------------
// Small pure helpers

/** UTF-8 length of a string, without encoding it. */
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Is the UTF-8 form of `s` at most `limit` bytes? (Cheap for the common cases.) */
function fits(s, limit) {
  if (s.length > limit) return false;
  if (s.length * 3 <= limit) return true;
  return utf8Length(s) <= limit;
}

const isLower = (c) => c >= 97 && c <= 122;
const isUpper = (c) => c >= 65 && c <= 90;
const isDigit = (c) => c >= 48 && c <= 57;
const isAlpha = (c) => isLower(c) || isUpper(c);

/** The relay's word split: non-alphanumerics, camelCase humps, CAPSWord, letters|digits. */
function words(s) {
  const out = [];
  let start = -1;
  for (let i = 0; i < s.length && out.length < 64; i++) {
    const c = s.charCodeAt(i);
    if (!isAlpha(c) && !isDigit(c)) {
      if (start >= 0) out.push(s.slice(start, i));
      start = -1;
      continue;
    }
    if (start >= 0) {
      const p = s.charCodeAt(i - 1);
      const nextLower = i + 1 < s.length && isLower(s.charCodeAt(i + 1));
      if ((isLower(p) && isUpper(c)) || (isUpper(p) && isUpper(c) && nextLower) || isAlpha(p) !== isAlpha(c)) {
        out.push(s.slice(start, i));
        start = i;
      }
    } else start = i;
  }
  if (start >= 0 && out.length < 64) out.push(s.slice(start));
  return out.map((w) => w.toLowerCase());
}

function nameSensitive(value) {
  if (!value || value.length > 512) return false;
  const w = words(value);
  for (let i = 0; i < w.length; i++) {
    let joined = '';
    for (let k = i; k < Math.min(w.length, i + 3); k++) {
      joined += w[k];
      if (SENSITIVE_WORDS.has(joined)) return true;
    }
  }
  return false;
}

function autocompleteSensitive(value) {
  return value.split(/\s+/).some((t) => {
    const l = t.toLowerCase();
    return (l.length > 3 && l.startsWith('cc-')) || l === 'current-password' || l === 'new-password' || l === 'one-time-code';
  });
}

/** Does this element itself make its subtree sensitive (the relay's rules, cobrowse/src/lib.rs)? */
function ownSensitive(el) {
  const ds = el.getAttribute('data-sensitive');
  if (ds !== null && ds.trim().toLowerCase() !== 'false') return true;
  if (el.hasAttribute('data-fd-masked')) return true;
  if (el.localName === 'input') {
    const t = (el.getAttribute('type') || '').trim().toLowerCase();
    if (SENSITIVE_INPUT_TYPES.has(t) || el.type === 'password') return true;
  }
  const ac = el.getAttribute('autocomplete');
  if (ac && (autocompleteSensitive(ac) || nameSensitive(ac))) return true;
  return nameSensitive(el.getAttribute('name')) || nameSensitive(el.getAttribute('id'));
}

/** The widget's own UI: ids and classes prefixed `fd-` (the whole `.fd-root` panel). */
function isExcluded(el) {
  const id = el.getAttribute('id');
  if (id && id.startsWith('fd-')) return true;
  const cls = el.getAttribute('class');
  return !!cls && /(^|\s)fd-/.test(cls);
}

/** What a masked text becomes (whitespace-only text stays a space, as on the relay). */
function maskText(t) {
  return /^\s*$/.test(t) ? (t ? ' ' : '') : MASK;
}

function absoluteUrl(value, base) {
  const t = value.trim();
  // Fragments (`#icon` in SVG `use`) stay as they are: the relay keeps them only that way.
  if (!t || t[0] === '#' || /^[a-z][a-z0-9+.-]*:/i.test(t)) return value;
  try {
    return new URL(t, base).href;
  } catch {
    return value;
  }
}

/** `srcset` with every candidate URL absolute (the HTML candidate parsing, simplified). */
function absoluteSrcset(value, base) {
  const out = [];
  let i = 0;
  const s = value;
  while (i < s.length) {
    while (i < s.length && /[\s,]/.test(s[i])) i++;
    if (i >= s.length) break;
    let j = i;
    while (j < s.length && !/\s/.test(s[j])) j++;
    let url = s.slice(i, j);
    let desc = '';
    i = j;
    if (/,$/.test(url)) {
      url = url.replace(/,+$/, '');
    } else {
      let depth = 0;
      let k = i;
      for (; k < s.length; k++) {
        const c = s[k];
        if (c === '(') depth++;
        else if (c === ')') depth = Math.max(0, depth - 1);
        else if (c === ',' && depth === 0) break;
      }
      desc = s.slice(i, k).trim();
      i = k + 1;
    }
    out.push(absoluteUrl(url, base) + (desc ? ' ' + desc : ''));
  }
  return out.join(', ');
}

/** CSS text with relative `url()`s made absolute (for iframe documents, whose base differs). */
function absoluteCss(css, base) {
  return css.replace(/url\(\s*(['"]?)([^'")]*)\1\s*\)/gi, (m, q, u) => `url(${q}${absoluteUrl(u, base)}${q})`);
}

function attrQualifiedName(el, local, ns) {
  if (!ns) return local;
  const a = el.getAttributeNodeNS(ns, local);
  if (a) return a.name;
  if (ns === XLINK_NS) return 'xlink:' + local;
  if (ns === XML_NS) return 'xml:' + local;
  if (ns === XMLNS_NS) return local === 'xmlns' ? local : 'xmlns:' + local;
  return local;
}

function sheetRules(sheet) {
  try {
    return sheet.cssRules;
  } catch {
    return null; // a cross-origin sheet
  }
}

/** A synthetic node: captured and addressed like a DOM node, but made up by the capture. */
class Synth {
  constructor(kind, owner) {
    this.kind = kind; // 'adopted' (a <style>), 'adopted-text', 'cssom-text'
    this.owner = owner; // adopted: the Document or ShadowRoot; cssom-text: the <style>
  }
}

// ---------------------------------------------------------------------------------------------

class Capture {
  constructor(url, Socket, onState) {
    this.url = url;
    this.Socket = Socket;
    this.onState = typeof onState === 'function' ? onState : () => {};
    this.ws = null;
    this.stopped = false;
    this.active = false; // observing and sending (a viewer is watching)
    this.failures = 0;
    this.timers = { flush: null, poll: null, reconnect: null, viewers: null };
    this.lastFlush = 0;
    this.snapshotTokens = SNAPSHOT_BURST;
    this.snapshotTokensAt = 0;

    this.recs = new WeakMap(); // node | ShadowRoot | Synth -> {id, parent, pver, ver, alive}
    this.nextId = 1;
    this.version = 0;
    this.rootRec = null; // the record of the last snapshot's root; null: the relay has nothing
    this.rootNode = null;
    this.sticky = new WeakSet(); // elements found sensitive once stay sensitive
    this.excludedSeen = new WeakSet();
    this.lastValue = new WeakMap(); // control -> last value/checked sent; option -> selected

    // Things found while capturing that need watching.
    this.shadows = new Set(); // hooked open shadow roots
    this.frames = new Map(); // hooked iframe document -> {el: its iframe, top: the iframe of this page}
    this.frameSent = new WeakMap(); // iframe -> time its srcdoc was last sent
    this.controls = new Set(); // captured form controls (polled for programmatic values)
    this.cssomStyles = new Map(); // empty <style> sent with CSSOM rules -> rules signature
    this.maybeShadow = new Set(); // custom elements that may attach a shadow root later
    this.adopted = new Map(); // Document | ShadowRoot -> {style: Synth, text: Synth, sig}
    this.sheetIds = new WeakMap();
    this.nextSheetId = 1;
    this.widgetSheets = new WeakMap();

    this.resetDirty();
    this.observer = new MutationObserver(this.guard((records) => this.onMutations(records)));
    this.handlers = {
      input: this.guard((e) => this.onInput(e)),
      scroll: this.guard((e) => this.onScroll(e)),
      pointer: this.guard((e) => this.onPointer(e)),
      resize: this.guard(() => {
        this.viewportDirty = true;
        this.schedule();
      }),
      selection: this.guard(() => {
        this.selectionDirty = true;
        this.schedule();
      }),
      load: this.guard((e) => this.onLoad(e)),
      frameInput: this.guard((e) => this.onFrameEvent(e)),
    };
    this.stats = {
      state: 'connecting',
      viewers: null,
      sent: { snapshots: 0, batches: 0, bytes: 0 },
      skipped: { snapshots: 0, batches: 0 },
      errors: {},
      lastSnapshot: null,
    };
    const fd = window.__frontdesk || (window.__frontdesk = {});
    fd.cobrowse = this.stats;
  }

  /** Wraps a handler so that nothing escapes into the host page; an internal error resyncs. */
  guard(fn) {
    return (...args) => {
      try {
        return fn(...args);
      } catch (e) {
        // The name only: a message could quote page content.
        console.warn('frontdesk co-browse: internal error', e && e.name);
        this.internalErrors = (this.internalErrors || 0) + 1;
        if (this.internalErrors > MAX_INTERNAL_ERRORS) {
          // Something about this page defeats the capture: stop rather than resend it forever.
          this.stop('failed');
          return undefined;
        }
        this.needSnapshot = true;
        this.schedule();
        return undefined;
      }
    };
  }

  setState(state) {
    this.stats.state = state;
    try {
      this.onState(state);
    } catch {
      /* the widget's business */
    }
  }

  resetDirty() {
    this.added = new Set();
    this.removed = new Set();
    this.attrs = new Map(); // element -> Set of qualified attribute names
    this.texts = new Set();
    this.values = new Set();
    this.scrolls = new Set(); // document | element
    this.dirtyFrames = new Set();
    this.pointer = []; // up to 4 {x, y, kind}
    this.viewportDirty = false;
    this.selectionDirty = false;
    this.overflow = false;
  }

  dirtyCount() {
    return this.added.size + this.removed.size + this.attrs.size + this.texts.size + this.values.size;
  }

  // ----- connection -------------------------------------------------------------------------

  start() {
    this.connect();
  }

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
    this.setState(this.failures ? 'reconnecting' : 'connecting');
    ws.onopen = this.guard(() => {
      if (ws !== this.ws) return;
      this.failures = 0;
      this.setState('open');
      // The server tells the viewer count first; with nobody watching, stay idle.
      this.timers.viewers = setTimeout(this.guard(() => this.activate()), VIEWERS_WAIT_MS);
    });
    ws.onmessage = this.guard((ev) => {
      if (ws === this.ws && typeof ev.data === 'string') this.onMessage(ev.data);
    });
    ws.onclose = this.guard((ev) => {
      if (ws === this.ws) this.onClose(ev.code);
    });
  }

  onClose(code) {
    this.ws = null;
    clearTimeout(this.timers.viewers);
    this.deactivate();
    if (this.stopped) return;
    if (FINAL_CLOSE_CODES.has(code)) {
      this.stop(code === 4010 ? 'ended' : 'refused');
      return;
    }
    this.reconnectLater();
  }

  reconnectLater() {
    const base = RECONNECT_MS[Math.min(this.failures, RECONNECT_MS.length - 1)];
    this.failures += 1;
    this.setState('reconnecting');
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(this.guard(() => this.connect()), base / 2 + Math.random() * base);
  }

  onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'viewers') {
      clearTimeout(this.timers.viewers);
      this.stats.viewers = typeof msg.count === 'number' ? msg.count : null;
      if (msg.count === 0) this.deactivate();
      else if (!this.active) this.activate(); // a joining viewer also asks for a snapshot
    } else if (msg.type === 'snapshot_request') {
      clearTimeout(this.timers.viewers);
      if (!this.active) this.activate();
      else this.requestSnapshot();
    } else if (msg.type === 'error') {
      this.onServerError(String(msg.code || 'unknown'));
    }
  }

  onServerError(code) {
    this.stats.errors[code] = (this.stats.errors[code] || 0) + 1;
    // The code only: the server's messages never quote content, but there is no need.
    console.warn('frontdesk co-browse: the server refused a message:', code);
    if (code === 'cobrowse_disabled' || code === 'invalid_ticket') return; // the close follows
    if (code === 'snapshot_too_large' || code === 'too_many_nodes' || code === 'too_deep' || code === 'no_root') {
      // This page cannot be sent: the relay keeps what it had; wait for the next request.
      this.rootRec = null;
      return;
    }
    // A batch (or anything) was refused: the relay's tree and ours differ now.
    this.requestSnapshot();
  }

  stop(reason = 'stopped') {
    if (this.stopped) return;
    this.stopped = true;
    this.deactivate();
    for (const t of Object.values(this.timers)) {
      clearTimeout(t);
      clearInterval(t);
    }
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        /* already closed */
      }
    }
    this.setState(reason);
  }

  // ----- observing --------------------------------------------------------------------------

  /** Starts observing the page and sends a snapshot (a viewer is watching). */
  activate() {
    if (this.stopped || !this.ws) return;
    if (!this.active) {
      this.active = true;
      this.setState('active');
      this.attach();
    }
    this.requestSnapshot();
  }

  /** Stops observing (nobody watches, or the socket is gone); the next activation resnapshots. */
  deactivate() {
    if (!this.active) return;
    this.active = false;
    this.detach();
    this.rootRec = null;
    this.resetDirty();
    if (!this.stopped && this.ws) this.setState('idle');
  }

  attach() {
    const opts = { capture: true, passive: true };
    window.addEventListener('input', this.handlers.input, opts);
    window.addEventListener('change', this.handlers.input, opts);
    document.addEventListener('scroll', this.handlers.scroll, opts);
    window.addEventListener('pointermove', this.handlers.pointer, opts);
    window.addEventListener('pointerdown', this.handlers.pointer, opts);
    window.addEventListener('pointerup', this.handlers.pointer, opts);
    window.addEventListener('click', this.handlers.pointer, opts);
    window.addEventListener('resize', this.handlers.resize, opts);
    document.addEventListener('selectionchange', this.handlers.selection, opts);
    document.addEventListener('load', this.handlers.load, opts);
    this.observer.observe(document, observeOptions());
    this.timers.poll = setInterval(this.guard(() => this.poll()), POLL_MS);
  }

  detach() {
    const opts = { capture: true };
    window.removeEventListener('input', this.handlers.input, opts);
    window.removeEventListener('change', this.handlers.input, opts);
    document.removeEventListener('scroll', this.handlers.scroll, opts);
    window.removeEventListener('pointermove', this.handlers.pointer, opts);
    window.removeEventListener('pointerdown', this.handlers.pointer, opts);
    window.removeEventListener('pointerup', this.handlers.pointer, opts);
    window.removeEventListener('click', this.handlers.pointer, opts);
    window.removeEventListener('resize', this.handlers.resize, opts);
    document.removeEventListener('selectionchange', this.handlers.selection, opts);
    document.removeEventListener('load', this.handlers.load, opts);
    this.observer.disconnect();
    clearInterval(this.timers.poll);
    clearTimeout(this.timers.flush);
    this.timers.flush = null;
    for (const root of this.shadows) this.unhookShadow(root);
    this.shadows.clear();
    for (const doc of this.frames.keys()) this.unhookFrameDoc(doc);
    this.frames.clear();
    this.controls.clear();
    this.cssomStyles.clear();
    this.maybeShadow.clear();
    this.adopted.clear();
  }

  hookShadow(root) {
    if (this.shadows.has(root)) return;
    this.shadows.add(root);
    this.observer.observe(root, observeOptions());
    // These events do not leave a shadow root (not composed).
    const opts = { capture: true, passive: true };
    root.addEventListener('scroll', this.handlers.scroll, opts);
    root.addEventListener('change', this.handlers.input, opts);
    root.addEventListener('load', this.handlers.load, opts);
  }

  unhookShadow(root) {
    const opts = { capture: true };
    root.removeEventListener('scroll', this.handlers.scroll, opts);
    root.removeEventListener('change', this.handlers.input, opts);
    root.removeEventListener('load', this.handlers.load, opts);
  }

  /** Watches a same-origin iframe's document; changes in it re-send the iframe's srcdoc. */
  hookFrame(doc, el, top) {
    const known = this.frames.get(doc);
    if (known && known.el === el && known.top === top) return;
    this.frames.set(doc, { el, top });
    this.observer.observe(doc, observeOptions());
    const opts = { capture: true, passive: true };
    doc.addEventListener('input', this.handlers.frameInput, opts);
    doc.addEventListener('change', this.handlers.frameInput, opts);
    doc.addEventListener('load', this.handlers.frameInput, opts);
  }

  unhookFrameDoc(doc) {
    const opts = { capture: true };
    try {
      doc.removeEventListener('input', this.handlers.frameInput, opts);
      doc.removeEventListener('change', this.handlers.frameInput, opts);
      doc.removeEventListener('load', this.handlers.frameInput, opts);
    } catch {
      /* a document that went away */
    }
  }

  // ----- events -----------------------------------------------------------------------------

  onMutations(records) {
    if (!this.active) return;
    for (const r of records) {
      const t = r.target;
      const doc = t.nodeType === 9 ? t : t.ownerDocument;
      if (doc !== document) {
        const frame = this.frames.get(doc);
        if (frame) this.dirtyFrames.add(frame.top);
        continue;
      }
      if (r.type === 'childList') {
        // A <style> sent with CSSOM rules got real content: send it again, whole.
        if (this.cssomStyles.has(t)) this.added.add(t);
        for (const n of r.addedNodes) this.added.add(n);
        for (const n of r.removedNodes) this.removed.add(n);
      } else if (r.type === 'attributes') {
        this.onAttribute(t, r.attributeName, r.attributeNamespace);
      } else if (r.type === 'characterData') {
        if (t.nodeType === 3) this.texts.add(t);
      }
    }
    if (this.dirtyCount() > MAX_DIRTY) {
      // Diffing that much costs more than a snapshot: drop it all and send the page again.
      this.resetDirty();
      this.overflow = true;
    }
    this.schedule();
  }

  onAttribute(el, local, ns) {
    const name = attrQualifiedName(el, local, ns);
    const tag = el.localName;
    if (tag === 'option' && name === 'selected') {
      const select = el.closest('select');
      if (select) this.values.add(select);
      return;
    }
    if (tag === 'iframe' && (name === 'srcdoc' || name === 'src')) {
      this.dirtyFrames.add(el); // its new document is sent (and hooked) once it loads
      if (name === 'srcdoc') return; // the live document is sent instead
    }
    if (name === 'id' || name === 'class') {
      // Did it become (or stop being) part of the widget's UI?
      if (isExcluded(el)) {
        this.excludedSeen.add(el);
        this.removed.add(el);
        return;
      }
      if (this.excludedSeen.has(el)) {
        this.excludedSeen.delete(el);
        this.added.add(el);
      }
    }
    let names = this.attrs.get(el);
    if (!names) this.attrs.set(el, (names = new Set()));
    names.add(name);
  }

  onInput(e) {
    const el = e.composedPath ? e.composedPath()[0] : e.target;
    if (!el || el.nodeType !== 1) return;
    const tag = el.localName;
    if (tag !== 'input' && tag !== 'textarea' && tag !== 'select') return;
    this.values.add(el);
    if (tag === 'input' && el.type === 'radio' && el.name) {
      // Checking a radio unchecks the others of its group without an event.
      const root = el.getRootNode();
      if (root.querySelectorAll) {
        for (const r of root.querySelectorAll('input[type="radio"]')) if (r.name === el.name) this.values.add(r);
      }
    }
    this.schedule();
  }

  onScroll(e) {
    const t = e.target;
    if (t === document || t === document.documentElement || t === document.scrollingElement) this.scrolls.add(document);
    else if (t && t.nodeType === 1) this.scrolls.add(t);
    this.schedule();
  }

  onPointer(e) {
    if (e.isPrimary === false) return;
    const kind = e.type === 'pointermove' ? 'move' : e.type === 'pointerdown' ? 'down' : e.type === 'pointerup' ? 'up' : 'click';
    const p = { type: 'pointer', x: Math.round(e.clientX * 10) / 10, y: Math.round(e.clientY * 10) / 10, kind };
    const last = this.pointer[this.pointer.length - 1];
    if (kind === 'move' && last && last.kind === 'move') this.pointer[this.pointer.length - 1] = p;
    else {
      this.pointer.push(p);
      if (this.pointer.length > 4) this.pointer.shift();
    }
    this.schedule();
  }

  onLoad(e) {
    const t = e.target;
    if (t && t.nodeType === 1 && t.localName === 'iframe') {
      this.dirtyFrames.add(t);
      this.schedule();
    }
  }

  onFrameEvent(e) {
    const t = e.target;
    const doc = t && (t.nodeType === 9 ? t : t.ownerDocument);
    const frame = doc && this.frames.get(doc);
    if (frame) {
      this.dirtyFrames.add(frame.top);
      this.schedule();
    }
  }

  /** What no event reports: programmatic values, CSSOM rules, late shadow roots, cleanup. */
  poll() {
    if (!this.active) return;
    for (const el of this.controls) {
      if (!el.isConnected) this.controls.delete(el);
      else if (this.valueChanged(el)) this.values.add(el);
    }
    for (const [style, sig] of this.cssomStyles) {
      if (!style.isConnected) this.cssomStyles.delete(style);
      else if (style.firstChild) this.added.add(style);
      else if (cssomSignature(style) !== sig) {
        this.cssomStyles.set(style, cssomSignature(style));
        this.texts.add(this.cssomTextOf(style));
      }
    }
    for (const el of this.maybeShadow) {
      if (!el.isConnected) this.maybeShadow.delete(el);
      else if (el.shadowRoot) {
        this.maybeShadow.delete(el);
        this.added.add(el); // send the host again, now with its shadow root
      }
    }
    for (const root of this.shadows) {
      if (!root.host.isConnected) {
        this.unhookShadow(root);
        this.shadows.delete(root);
        this.adopted.delete(root);
      }
    }
    for (const [doc, { el, top }] of this.frames) {
      let current = null;
      try {
        current = el.contentDocument;
      } catch {
        /* cross-origin now */
      }
      if (!top.isConnected || !el.isConnected || current !== doc) {
        this.unhookFrameDoc(doc);
        this.frames.delete(doc);
      }
    }
    // Constructed style sheets: the document's and every hooked shadow root's.
    for (const owner of [document, ...this.shadows]) {
      const entry = this.adopted.get(owner);
      const sig = this.adoptedSignature(owner);
      if (entry ? entry.sig === sig : sig === '') continue;
      if (entry && this.known(entry.text)) {
        entry.sig = sig;
        this.texts.add(entry.text);
      } else {
        // Not sent yet: send its container again, which now includes the sheet.
        this.adoptedEntry(owner).sig = sig;
        const container = owner === document ? document.head : owner;
        if (container) this.added.add(container);
      }
    }
    if (this.dirtyCount() || this.dirtyFrames.size) this.schedule();
  }

  // ----- the captured tree ------------------------------------------------------------------

  rec(n) {
    let r = this.recs.get(n);
    if (!r) {
      r = { id: this.nextId++, parent: null, pver: 0, ver: 0, alive: false };
      this.recs.set(n, r);
    }
    return r;
  }

  /** Records that the relay now has `n` under `parent` (null: the root). */
  commit(n, parent) {
    const r = this.rec(n);
    r.parent = parent ? this.rec(parent) : null;
    r.pver = r.parent ? r.parent.ver : 0;
    r.ver = ++this.version;
    r.alive = true;
  }

  /** Does the relay have `n`, where it is now in our records? */
  known(n) {
    let r = this.recs.get(n);
    for (let hops = 0; r && hops <= MAX_DEPTH + 8; hops++) {
      if (!r.alive) return false;
      if (!r.parent) return r === this.rootRec;
      if (r.pver !== r.parent.ver) return false; // the parent was sent again since
      r = r.parent;
    }
    return false;
  }

  /** The node the relay knows as `n`'s parent, or null when `n` is not captured there. */
  captureParent(n) {
    if (n instanceof Synth) {
      if (n.kind === 'adopted') return n.owner === document ? document.head : n.owner;
      if (n.kind === 'adopted-text') return this.adopted.get(n.owner)?.style || null;
      return n.owner; // cssom-text: its <style>
    }
    if (n.nodeType === 11) return n.host && n.host.shadowRoot === n ? n.host : null; // open shadow root
    const p = n.parentNode;
    if (!p) return null;
    if (p.nodeType === 11) return p.host && p.host.shadowRoot === p ? p : null;
    if (p.nodeType !== 1) return null;
    const tag = p.localName;
    // Not rendered, so not captured: an iframe's fallback content, a template's own children
    // (its content is captured instead), what is under a script.
    if (tag === 'iframe' || tag === 'template' || SKIP_TAGS.has(tag) || this.cssomStyles.has(p)) return null;
    return p;
  }

  /** Is `n` part of the captured page (attached, not in the widget, not under a script)? */
  captured(n) {
    const root = document.documentElement;
    let cur = n;
    for (let hops = 0; cur && hops <= MAX_DEPTH + 8; hops++) {
      if (cur === root) return true;
      if (cur.nodeType === 1 && (SKIP_TAGS.has(cur.localName) || isExcluded(cur))) return false;
      if (cur.nodeType === 10) return false; // doctype
      cur = this.captureParent(cur);
    }
    return false;
  }

  /** Is `n` a node the capture sends at all (as a child of a captured node)? */
  included(n) {
    if (n instanceof Synth) return true;
    switch (n.nodeType) {
      case 1:
        if (SKIP_TAGS.has(n.localName)) return false;
        if (isExcluded(n)) {
          this.excludedSeen.add(n);
          return false;
        }
        return true;
      case 3:
      case 4:
      case 7:
      case 8:
        return true;
      case 11:
        return true; // a shadow root (only ever listed by children())
      default:
        return false;
    }
  }

  /** `n`'s children in capture order. */
  children(n) {
    if (n instanceof Synth) {
      if (n.kind === 'adopted') return [this.adopted.get(n.owner).text];
      return [];
    }
    if (n.nodeType === 11) {
      const kids = Array.from(n.childNodes);
      const sheet = this.adoptedEntry(n);
      if (sheet) kids.push(sheet.style);
      return kids;
    }
    if (n.nodeType !== 1) return [];
    const tag = n.localName;
    if (tag === 'iframe') return [];
    if (tag === 'template' && n.content) return Array.from(n.content.childNodes);
    if (tag === 'style') {
      if (!n.firstChild && cssomRuleCount(n) > 0) {
        this.cssomStyles.set(n, cssomSignature(n));
        return [this.cssomTextOf(n)];
      }
      this.cssomStyles.delete(n);
    }
    const kids = [];
    if (n.shadowRoot) kids.push(n.shadowRoot);
    for (let c = n.firstChild; c; c = c.nextSibling) kids.push(c);
    if (n === document.head) {
      const sheet = this.adoptedEntry(document);
      if (sheet) kids.push(sheet.style);
    }
    return kids;
  }

  cssomTextOf(style) {
    if (!this.cssomTexts) this.cssomTexts = new WeakMap();
    let s = this.cssomTexts.get(style);
    if (!s) this.cssomTexts.set(style, (s = new Synth('cssom-text', style)));
    return s;
  }

  /** The synthetic <style> of an owner's constructed sheets (null when it has none). */
  adoptedEntry(owner) {
    const sig = this.adoptedSignature(owner);
    let entry = this.adopted.get(owner);
    if (sig === '') {
      if (entry) entry.sig = '';
      return entry && this.known(entry.style) ? entry : null;
    }
    if (!entry) {
      entry = { style: new Synth('adopted', owner), text: new Synth('adopted-text', owner), sig };
      this.adopted.set(owner, entry);
    }
    entry.sig = sig;
    return entry;
  }

  adoptedSignature(owner) {
    let sheets;
    try {
      sheets = owner.adoptedStyleSheets;
    } catch {
      return '';
    }
    if (!sheets || !sheets.length) return '';
    let sig = '';
    for (const sheet of sheets) {
      if (this.isWidgetSheet(sheet)) continue;
      let id = this.sheetIds.get(sheet);
      if (!id) this.sheetIds.set(sheet, (id = this.nextSheetId++));
      const rules = sheetRules(sheet);
      sig += id + ':' + (rules ? rules.length : 0) + ';';
    }
    return sig;
  }

  /** The widget's own constructed sheet: every rule is about `.fd-` elements. */
  isWidgetSheet(sheet) {
    let v = this.widgetSheets.get(sheet);
    if (v === undefined) {
      const rules = sheetRules(sheet);
      v = !!rules && rules.length > 0 && Array.from(rules).every((r) => typeof r.selectorText === 'string' && r.selectorText.startsWith('.fd-'));
      this.widgetSheets.set(sheet, v);
    }
    return v;
  }

  adoptedText(owner) {
    let text = '';
    for (const sheet of owner.adoptedStyleSheets || []) {
      if (this.isWidgetSheet(sheet)) continue;
      const rules = sheetRules(sheet);
      if (!rules) continue;
      for (const r of rules) text += r.cssText + '\n';
      if (text.length > MAX_STYLE_TEXT) return '';
    }
    return text;
  }

  /** Is `n` (or what contains it) sensitive? Sticky: once sensitive, always. */
  sensitive(n) {
    for (let cur = n, hops = 0; cur && hops <= MAX_DEPTH + 8; hops++) {
      if (!(cur instanceof Synth) && cur.nodeType === 1) {
        if (this.sticky.has(cur)) {
          if (n.nodeType === 1) this.sticky.add(n);
          return true;
        }
        if (ownSensitive(cur)) {
          this.sticky.add(cur);
          if (n.nodeType === 1) this.sticky.add(n);
          return true;
        }
      }
      cur = this.captureParent(cur);
    }
    return false;
  }

  /** Depth of a known node (the root is 1). */
  depthOf(n) {
    let d = 0;
    for (let r = this.recs.get(n); r && d <= MAX_DEPTH + 8; r = r.parent) d++;
    return d;
  }

  /**
   * Appends the subtree of `root` (capture order, pre-order) to `out` as protocol nodes and
   * records each as known under its capture parent. `sens`: `root` is in a sensitive subtree.
   * Returns false when the node limit was reached.
   */
  serialize(root, parent, depth, sens, out, sent) {
    const stack = [[root, parent, depth, sens]];
    const snapshot = !parent;
    while (stack.length) {
      const [n, p, d, s] = stack.pop();
      if (out.length >= MAX_NODES) return false;
      const { node, sensitive } = this.describe(n, p, s);
      out.push(node);
      this.commit(n, p);
      if (sent) sent.add(n);
      if (d >= MAX_DEPTH) continue;
      const kids = this.children(n);
      if (snapshot && kids.length && n.nodeType === 1 && n !== document.scrollingElement && (n.scrollTop || n.scrollLeft)) {
        this.scrolls.add(n);
      }
      for (let i = kids.length - 1; i >= 0; i--) {
        if (this.included(kids[i])) stack.push([kids[i], n, d + 1, sensitive]);
      }
    }
    return true;
  }

  /** One node in the protocol's form; also notes what needs watching. */
  describe(n, parent, inherited) {
    const id = this.rec(n).id;
    const pid = parent ? this.rec(parent).id : undefined;
    if (n instanceof Synth) {
      if (n.kind === 'adopted') return { node: { id, parent: pid, tag: 'style' }, sensitive: false };
      const text = n.kind === 'adopted-text' ? this.adoptedText(n.owner) : cssomText(n.owner);
      return { node: { id, parent: pid, text: inherited ? maskText(text) : text }, sensitive: inherited };
    }
    switch (n.nodeType) {
      case 1:
        return this.describeElement(n, id, pid, inherited);
      case 3:
      case 4:
        return { node: { id, parent: pid, text: inherited ? maskText(n.data) : n.data }, sensitive: inherited };
      case 11:
        this.hookShadow(n);
        return { node: { id, parent: pid, tag: 'template', attrs: { [SHADOW_ATTR]: 'open' } }, sensitive: inherited };
      default:
        return { node: { id, parent: pid }, sensitive: inherited }; // comments: placeholders
    }
  }

  describeElement(el, id, pid, inherited) {
    let sens = inherited || this.sticky.has(el) || ownSensitive(el);
    if (sens) this.sticky.add(el);
    const tag = el.localName;
    const node = { id, parent: pid, tag, attrs: this.attrsOf(el, sens) };
    if (tag === 'input') {
      const type = el.type;
      if (type === 'checkbox' || type === 'radio') {
        if (!sens) {
          node.checked = el.checked;
          this.lastValue.set(el, el.checked);
          this.controls.add(el);
        }
      } else if (TEXT_INPUT_TYPES.has(type) && !sens) {
        node.value = el.value;
        this.lastValue.set(el, el.value);
        this.controls.add(el);
      }
    } else if (tag === 'textarea' && !sens) {
      node.value = el.value;
      this.lastValue.set(el, el.value);
      this.controls.add(el);
    } else if (tag === 'select' && !sens) {
      this.controls.add(el);
      this.lastValue.set(el, selectSignature(el));
    } else if (tag === 'option' && !sens) {
      this.lastValue.set(el, el.selected);
    }
    if (el.shadowRoot) this.hookShadow(el.shadowRoot);
    else if (tag.includes('-')) this.maybeShadow.add(el);
    return { node, sensitive: sens };
  }

  /** An element's attributes as sent: no handlers, absolute URLs, masks, live option state. */
  attrsOf(el, sens) {
    const out = {};
    const base = el.baseURI || document.baseURI;
    let n = 0;
    for (const a of el.attributes) {
      if (n >= MAX_ATTRIBUTES) break;
      const name = a.name;
      const lower = name.toLowerCase();
      const v = this.attrValue(el, lower, a.value, sens, base);
      if (v === null) continue;
      out[name] = v;
      n++;
    }
    const tag = el.localName;
    if (tag === 'option' && !sens && el.selected) out.selected = '';
    if (tag === 'iframe') {
      const doc = this.frameSrcdoc(el);
      if (doc !== null) out.srcdoc = doc;
      this.frameSent.set(el, performance.now());
    }
    return out;
  }

  /** One attribute's value as sent, or null to leave it out. */
  attrValue(el, lower, value, sens, base) {
    if (lower.startsWith('on')) return null; // event handlers (the relay drops them too)
    if (value.length > MAX_ATTRIBUTE_BYTES) return null;
    const tag = el.localName;
    if (tag === 'option' && lower === 'selected') return null; // written from the live state
    if (tag === 'iframe' && lower === 'srcdoc') return null; // written from the live document
    if (sens) {
      // What the relay does to a masked element, done here first.
      if (lower === 'checked' || lower === 'selected' || lower === 'srcdoc' || URL_ATTRS.has(lower) || SRCSET_ATTRS.has(lower)) return null;
      if (MASKED_ATTRS.has(lower) || lower.startsWith('aria-') || (lower.startsWith('data-') && lower !== 'data-sensitive' && !lower.startsWith('data-fd-'))) {
        return MASK;
      }
      return value;
    }
    if (URL_ATTRS.has(lower)) return absoluteUrl(value, base);
    if (SRCSET_ATTRS.has(lower)) return absoluteSrcset(value, base);
    return value;
  }

  // ----- same-origin iframes ----------------------------------------------------------------

  /** The iframe's document as a srcdoc string, or null (cross-origin, empty or too large). */
  frameSrcdoc(iframe, top = iframe, nesting = 0) {
    let doc = null;
    try {
      doc = iframe.contentDocument;
    } catch {
      return null;
    }
    if (!doc || !doc.documentElement) return null;
    this.hookFrame(doc, iframe, top);
    const html = this.serializeDocument(doc, top, nesting);
    return html !== null && fits(html, MAX_SRCDOC_BYTES) ? html : null;
  }

  /**
   * A document as HTML with its live state, without scripts, comments or handlers: a copy is
   * imported into an inert document (no custom element upgrades, no loads) and edited there.
   */
  serializeDocument(doc, top, nesting) {
    if (!this.inert) this.inert = document.implementation.createHTMLDocument('');
    const src = doc.documentElement;
    const copy = this.inert.importNode(src, true);
    const base = doc.baseURI;
    const drop = [];
    const stack = [[src, copy, this.sticky.has(src) || ownSensitive(src)]];
    let count = 0;
    while (stack.length) {
      const [a, b, inherited] = stack.pop();
      if (++count > MAX_NODES) return null;
      if (a.nodeType === 3 || a.nodeType === 4) {
        if (inherited) b.data = maskText(a.data);
        continue;
      }
      if (a.nodeType !== 1) {
        drop.push(b); // comments, processing instructions
        continue;
      }
      const tag = a.localName;
      if (SKIP_TAGS.has(tag) || isExcluded(a)) {
        drop.push(b);
        continue;
      }
      const sens = inherited || this.sticky.has(a) || ownSensitive(a);
      if (sens) this.sticky.add(a);
      for (const attr of Array.from(b.attributes)) {
        const lower = attr.name.toLowerCase();
        let v = this.attrValue(a, lower, attr.value, sens, base);
        if (v !== null && lower === 'style') v = absoluteCss(v, base);
        if (v === null) b.removeAttribute(attr.name);
        else if (v !== attr.value) b.setAttribute(attr.name, v);
      }
      if (tag === 'input') {
        const type = a.type;
        if (type === 'checkbox' || type === 'radio') b.toggleAttribute('checked', !sens && a.checked);
        else if (TEXT_INPUT_TYPES.has(type)) b.setAttribute('value', sens ? MASK : a.value);
      } else if (tag === 'textarea') {
        b.textContent = sens ? MASK : a.value;
        continue;
      } else if (tag === 'option') {
        b.toggleAttribute('selected', !sens && a.selected);
      } else if (tag === 'style') {
        const css = a.firstChild ? a.textContent : cssomText(a);
        b.textContent = sens ? MASK : absoluteCss(css, base);
        continue;
      } else if (tag === 'iframe') {
        b.textContent = '';
        const inner = nesting + 1 < MAX_SRCDOC_NESTING ? this.frameSrcdoc(a, top, nesting + 1) : null;
        if (inner !== null && !sens) b.setAttribute('srcdoc', inner);
        continue;
      }
      if (tag === 'template' && a.content) {
        for (let i = a.content.childNodes.length - 1; i >= 0; i--) stack.push([a.content.childNodes[i], b.content.childNodes[i], sens]);
      }
      for (let i = a.childNodes.length - 1; i >= 0; i--) stack.push([a.childNodes[i], b.childNodes[i], sens]);
    }
    for (const d of drop) d.remove();
    return '<!DOCTYPE html>' + copy.outerHTML;
  }

  // ----- sending ----------------------------------------------------------------------------

  schedule(minDelay = 0) {
    if (this.timers.flush || !this.active) return;
    const wait = Math.max(minDelay, this.lastFlush + FLUSH_MS - performance.now());
    this.timers.flush = setTimeout(this.guard(() => this.flush()), wait);
  }

  requestSnapshot() {
    this.needSnapshot = true;
    // Requests come in pairs (a viewer joins, then asks): let them meet in one snapshot.
    this.schedule(SNAPSHOT_COALESCE_MS);
  }

  /** Sends what changed since the last flush (or a snapshot when one is due). */
  flush() {
    this.timers.flush = null;
    if (!this.active || !this.ws || this.ws.readyState !== 1) return;
    this.lastFlush = performance.now();
    const records = this.observer.takeRecords();
    if (records.length) this.onMutations(records);
    if (this.timers.flush) {
      clearTimeout(this.timers.flush);
      this.timers.flush = null;
    }
    if (document.documentElement !== this.rootNode) this.needSnapshot = true;
    if (this.ws.bufferedAmount > MAX_BUFFERED) {
      // The network is slower than the page: keep coalescing (bounded by MAX_DIRTY, past which
      // a snapshot replaces it all) and send once the socket has drained.
      this.timers.flush = setTimeout(this.guard(() => this.flush()), DRAIN_WAIT_MS);
      return;
    }
    if (this.needSnapshot || this.overflow || !this.rootRec) {
      if (!this.needSnapshot && !this.overflow) {
        this.resetDirty(); // the relay has no page of ours: wait for a snapshot request
        return;
      }
      this.sendSnapshot();
      return;
    }
    const changes = this.collect();
    if (changes === null || !this.sendChanges(changes)) {
      this.stats.skipped.batches += 1;
      this.requestSnapshot();
    }
  }

  snapshotAllowed() {
    const now = performance.now();
    this.snapshotTokens = Math.min(SNAPSHOT_BURST, this.snapshotTokens + (now - this.snapshotTokensAt) / SNAPSHOT_EVERY_MS);
    this.snapshotTokensAt = now;
    if (this.snapshotTokens >= 1) {
      this.snapshotTokens -= 1;
      return 0;
    }
    return (1 - this.snapshotTokens) * SNAPSHOT_EVERY_MS;
  }

  sendSnapshot() {
    const wait = this.snapshotAllowed();
    if (wait > 0) {
      this.timers.flush = setTimeout(this.guard(() => this.flush()), wait);
      return;
    }
    this.needSnapshot = false;
    this.resetDirty();
    const started = performance.now();
    const root = document.documentElement;
    this.rootNode = root;
    this.rootRec = null;
    if (!root) return;
    const nodes = [];
    // Hooks are found again while serializing.
    this.controls.clear();
    this.cssomStyles.clear();
    this.maybeShadow.clear();
    const complete = this.serialize(root, null, 1, false, nodes, null);
    const msg = { type: 'snapshot', nodes };
    if (/^https?:/.test(document.baseURI)) msg.baseUrl = document.baseURI;
    const text = complete ? JSON.stringify(msg) : null;
    if (text === null || !fits(text, MAX_SNAPSHOT_BYTES)) {
      this.stats.skipped.snapshots += 1;
      console.warn('frontdesk co-browse: this page is too large to share (over 5 MiB or 250 000 nodes)');
      this.resetDirty();
      return; // rootRec stays null: nothing is sent until the next snapshot request
    }
    this.ws.send(text);
    this.rootRec = this.recs.get(root);
    const bytes = utf8Length(text);
    this.stats.sent.snapshots += 1;
    this.stats.sent.bytes += bytes;
    this.stats.lastSnapshot = { nodes: nodes.length, bytes, ms: Math.round(performance.now() - started) };
    // What a snapshot does not carry: the viewport, scroll positions, the selection.
    this.viewportDirty = true;
    this.selectionDirty = true;
    this.scrolls.add(document);
    this.schedule();
  }

  /** The changes since the last flush, in the relay's order; null: send a snapshot instead. */
  collect() {
    const out = [];
    const sent = new Set(); // nodes sent whole in this batch

    // 1. Removals first, so that insert positions only name nodes that stay.
    for (const n of this.removed) {
      if (this.known(n) && !this.captured(n)) {
        out.push({ type: 'remove', id: this.rec(n).id });
        const r = this.rec(n);
        r.alive = false;
        r.ver = ++this.version;
      }
    }

    // 2. Additions and moves, each subtree whole. A node whose capture ancestor is also
    // pending is carried by that ancestor's add.
    const pending = new Set();
    for (const n of this.added) {
      if (n.ownerDocument === document && this.captured(n)) pending.add(n);
    }
    for (const n of Array.from(pending)) {
      if (!pending.has(n)) continue;
      if (sent.has(n)) {
        pending.delete(n);
        continue;
      }
      let covered = false;
      for (let a = this.captureParent(n), hops = 0; a && hops <= MAX_DEPTH + 8; a = this.captureParent(a), hops++) {
        if (pending.has(a)) {
          covered = true;
          break;
        }
      }
      if (covered) continue; // stays pending: not a valid `prev` until its ancestor is sent
      pending.delete(n);
      const parent = this.captureParent(n);
      if (!parent || !this.known(parent)) continue;
      const depth = this.depthOf(parent) + 1;
      if (depth > MAX_DEPTH) continue;
      const prev = this.prevOf(n, parent, pending);
      const nodes = [];
      if (!this.serialize(n, parent, depth, this.sensitive(parent), nodes, sent)) return null;
      out.push({ type: 'add', parent: this.rec(parent).id, prev, nodes });
    }

    // 3. Attributes, texts and values of nodes the relay has (and did not just get whole).
    for (const [el, names] of this.attrs) {
      if (sent.has(el) || el.ownerDocument !== document || !this.known(el)) continue;
      const sens = this.sensitive(el);
      const base = el.baseURI || document.baseURI;
      for (const name of names) {
        const lower = name.toLowerCase();
        if (lower.startsWith('on')) continue;
        const raw = el.getAttribute(name);
        // A value that cannot be sent (too long) is removed for the agent.
        const value = raw === null ? null : this.attrValue(el, lower, raw, sens, base);
        out.push({ type: 'attr', id: this.rec(el).id, name, value });
      }
    }
    for (const t of this.texts) {
      if (sent.has(t) || !this.known(t)) continue;
      let text;
      if (t instanceof Synth) {
        text = t.kind === 'adopted-text' ? this.adoptedText(t.owner) : cssomText(t.owner);
      } else {
        if (t.ownerDocument !== document) continue;
        text = t.data;
      }
      if (this.sensitive(t)) text = maskText(text);
      out.push({ type: 'text', id: this.rec(t).id, text });
    }
    for (const el of this.values) {
      if (sent.has(el) || el.ownerDocument !== document || !this.known(el)) continue;
      // A sensitive field's input is not sent at all, not even that it happened.
      if (this.sensitive(el)) {
        this.controls.delete(el);
        continue;
      }
      this.valueChanges(el, out, sent);
    }

    // 4. Iframe documents that changed (each at most once per FRAME_EVERY_MS).
    const now = performance.now();
    for (const f of this.dirtyFrames) {
      if (sent.has(f) || !this.known(f)) {
        this.dirtyFrames.delete(f);
        continue;
      }
      if (now - (this.frameSent.get(f) || 0) < FRAME_EVERY_MS) continue; // stays dirty
      this.dirtyFrames.delete(f);
      this.frameSent.set(f, now);
      const doc = this.sensitive(f) ? null : this.frameSrcdoc(f);
      out.push({ type: 'attr', id: this.rec(f).id, name: 'srcdoc', value: doc });
    }
    const framesLeft = new Set(this.dirtyFrames);

    // 5. What carries no content.
    for (const t of this.scrolls) {
      if (t === document) {
        out.push({ type: 'scroll', id: null, x: Math.round(window.scrollX), y: Math.round(window.scrollY) });
      } else if (t.isConnected && this.known(t)) {
        out.push({ type: 'scroll', id: this.rec(t).id, x: Math.round(t.scrollLeft), y: Math.round(t.scrollTop) });
      }
    }
    if (this.viewportDirty) out.push({ type: 'viewport', width: window.innerWidth, height: window.innerHeight });
    for (const p of this.pointer) out.push(p);
    if (this.selectionDirty) {
      const s = this.selection();
      if (s) out.push(s);
    }

    this.resetDirty();
    if (framesLeft.size) {
      this.dirtyFrames = framesLeft;
      clearTimeout(this.timers.flush);
      this.timers.flush = setTimeout(this.guard(() => this.flush()), FRAME_EVERY_MS);
    }
    return out;
  }

  /** Where `n` goes: after its nearest earlier capture sibling that the relay has in place. */
  prevOf(n, parent, pending) {
    const parentRec = this.rec(parent);
    const settled = (s) => !pending.has(s) && this.known(s) && this.recs.get(s).parent === parentRec;
    if (n instanceof Synth || n.nodeType === 11) {
      // Synthetic sheets go last, shadow roots first.
      if (n.nodeType === 11) return null;
      const kids = this.children(parent);
      for (let i = kids.length - 1; i >= 0; i--) if (kids[i] !== n && settled(kids[i])) return this.rec(kids[i]).id;
      return null;
    }
    for (let s = n.previousSibling; s; s = s.previousSibling) if (settled(s)) return this.rec(s).id;
    // A light child of a shadow host comes after the host's shadow root.
    if (parent.nodeType === 1 && parent.shadowRoot && n.parentNode === parent && settled(parent.shadowRoot)) {
      return this.rec(parent.shadowRoot).id;
    }
    return null;
  }

  valueChanged(el) {
    const tag = el.localName;
    const last = this.lastValue.get(el);
    if (tag === 'select') return selectSignature(el) !== last;
    if (el.type === 'checkbox' || el.type === 'radio') return el.checked !== last;
    return el.value !== last;
  }

  valueChanges(el, out, sent) {
    const tag = el.localName;
    const id = this.rec(el).id;
    if (tag === 'select') {
      // Option state travels as `selected` attributes (the relay renders options from those).
      this.lastValue.set(el, selectSignature(el));
      for (const o of el.options) {
        if (sent.has(o) || !this.known(o)) continue;
        if (this.lastValue.get(o) === o.selected) continue;
        this.lastValue.set(o, o.selected);
        out.push({ type: 'attr', id: this.rec(o).id, name: 'selected', value: o.selected ? '' : null });
      }
      return;
    }
    if (tag === 'input' && (el.type === 'checkbox' || el.type === 'radio')) {
      if (this.lastValue.get(el) === el.checked) return;
      this.lastValue.set(el, el.checked);
      this.controls.add(el);
      out.push({ type: 'value', id, checked: el.checked });
      return;
    }
    if (tag === 'textarea' || (tag === 'input' && TEXT_INPUT_TYPES.has(el.type))) {
      if (this.lastValue.get(el) === el.value) return;
      this.lastValue.set(el, el.value);
      this.controls.add(el);
      out.push({ type: 'value', id, value: el.value });
    }
  }

  selection() {
    const sel = document.getSelection();
    let msg = { type: 'selection' };
    if (sel && sel.rangeCount && !sel.isCollapsed) {
      const a = sel.anchorNode;
      const f = sel.focusNode;
      if (a && f && this.known(a) && this.known(f) && !this.sensitive(a) && !this.sensitive(f)) {
        msg = { type: 'selection', anchor: this.rec(a).id, anchorOffset: sel.anchorOffset, focus: this.rec(f).id, focusOffset: sel.focusOffset };
      }
    }
    const key = JSON.stringify(msg);
    if (key === this.lastSelection) return null;
    this.lastSelection = key;
    return msg;
  }

  /** Sends the changes in batches of at most 256 KiB; false when they do not fit. */
  sendChanges(changes) {
    if (!changes.length) return true;
    const head = '{"type":"changes","changes":[';
    const tail = ']}';
    const batches = [];
    let cur = [];
    let size = head.length + tail.length;
    for (const c of changes) {
      const s = JSON.stringify(c);
      const n = utf8Length(s) + 1;
      if (n + head.length + tail.length > MAX_BATCH_BYTES) return false; // one huge subtree
      if (size + n > MAX_BATCH_BYTES) {
        batches.push(cur);
        cur = [];
        size = head.length + tail.length;
      }
      cur.push(s);
      size += n;
    }
    if (cur.length) batches.push(cur);
    if (batches.length > MAX_MESSAGES_PER_FLUSH) return false;
    for (const b of batches) {
      const text = head + b.join(',') + tail;
      this.ws.send(text);
      this.stats.sent.batches += 1;
      this.stats.sent.bytes += utf8Length(text);
    }
    return true;
  }
}

function observeOptions() {
  return { childList: true, attributes: true, characterData: true, subtree: true };
}

function cssomRuleCount(style) {
  const rules = style.sheet ? sheetRules(style.sheet) : null;
  return rules ? rules.length : 0;
}

function cssomSignature(style) {
  return String(cssomRuleCount(style));
}

/** The rules of a <style> filled through the CSSOM (`insertRule`), as text. */
function cssomText(style) {
  const rules = style.sheet ? sheetRules(style.sheet) : null;
  if (!rules) return '';
  let text = '';
  for (const r of rules) {
    text += r.cssText + '\n';
    if (text.length > MAX_STYLE_TEXT) return '';
  }
  return text;
}

function selectSignature(select) {
  let s = '';
  for (const o of select.options) s += o.selected ? '1' : '0';
  return s;
}
