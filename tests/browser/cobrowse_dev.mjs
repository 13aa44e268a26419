// Development harness for the co-browse browser code (web/cobrowse.js, web/viewer.js), without
// the frontdesk server: headless Chromium, a local HTTP server, fake WebSockets and a small
// JavaScript stand-in for the relay (no sanitizer; it checks the widget's protocol invariants
// and renders AgentFrames the way PROTOCOL.md describes them).
//
//   node tests/browser/cobrowse_dev.mjs [--seeds N] [--steps N] [--verbose]
//   node tests/browser/cobrowse_dev.mjs --server cfg.json [--screenshot DIR]   (a running server,
//             see `live` below; --screenshot saves the console and the visitor's page)
//
// Checks:
//   capture   snapshot shape (pre-order, ids, placeholders, no script text, absolute URLs, the
//             widget's UI left out), masking (typed passwords, card numbers, data-sensitive
//             subtrees, a password field toggled to text, a same-origin iframe's fields: no
//             secret in any message), live values, select state, shadow roots, CSSOM and
//             constructed style sheets, iframe srcdoc, size limits, no CSP violation on a
//             strict-CSP host page
//   viewer    a hand-written AgentFrame sequence: ids found, every op, seq gaps and unknown ids
//             ask for a resync (at most once per second), sandbox and CSP of the frame
//   roundtrip random DOM mutations on the host page: no change names an id the relay lacks,
//             the relay's tree after the changes equals a fresh snapshot (same ids), and the
//             viewer's DOM equals the relay's tree
//   live      (--server, a JSON file {base_url, agent_token, widget_key} of a running server,
//             e.g. `frontdesk demo`, whose agent is the only one available) a real call from the
//             demo page: the page reaches the viewer styled and without the widget, the
//             visitor's "Page shared" badge, random mutations through the real relay and
//             sanitizer end up identical in the viewer, a visitor reload comes back, and the
//             call's end tears both sides down
//
// Prints one JSON line per check and exits 1 when one fails.

import { launch, MEDIA_ARGS, sleep } from './chromium.mjs';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const WEB = path.resolve(here, '../../web');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SEEDS = opt('--seeds', 6);
const STEPS = opt('--steps', 150);
const VERBOSE = args.includes('--verbose');
const MASK = '\u2022'.repeat(8);

// The console's policy (src/web.rs `csp`) and the viewer frame's.
const CONSOLE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; " +
  "media-src 'self' blob: mediastream:; frame-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const FRAME_CSP =
  "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline' https: http:; font-src https: http: data:; " +
  "media-src https: http:; form-action 'none'; base-uri 'none'; frame-ancestors 'self'";
// A strict host page: the capture must not need anything inline.
const HOST_CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'nonce-n0nce'; img-src 'self' data:; frame-src 'self'";

// ---------------------------------------------------------------------------------------------
// Pages

const FAKE_SOCKET = `
export class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.bufferedAmount = 0;
    window.__sockets = (window.__sockets || []).concat(this);
    setTimeout(() => { this.readyState = 1; this.onopen && this.onopen({}); }, 0);
  }
  send(text) { window.__socketSent(text); }
  close(code) { this.readyState = 3; this.closedWith = code; }
  deliver(obj) { this.onmessage && this.onmessage({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) }); }
  drop(code) { this.readyState = 3; this.onclose && this.onclose({ code }); }
}
`;

const HOST_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Host page</title>
<link rel="stylesheet" href="host.css">
<script type="module" src="/host.js"></script>
</head>
<body class="page">
<!-- a comment that must never be sent: comment-secret -->
<header id="top"><h1>Shop <em>now</em></h1><a href="checkout?x=1#pay">Pay</a>
<img src="img/logo.png" srcset="img/a.png 1x, img/b,c.png 2x" alt="logo"><svg width="10" height="10"><use href="#icon"></use><use xlink:href="#icon2"></use></svg></header>
<script>var scriptSecret = 'script-secret';</script>
<noscript>noscript-secret</noscript>
<form id="f">
  <input id="name" name="fullname" value="">
  <input id="pw" type="password" name="pw">
  <input id="card" name="card" autocomplete="cc-number">
  <input id="cvv" name="cardCvv">
  <input id="check" type="checkbox">
  <input id="radio1" type="radio" name="r" value="1" checked><input id="radio2" type="radio" name="r" value="2">
  <textarea id="notes">default notes</textarea>
  <select id="size"><option value="s">S</option><option value="m" selected>M</option><option value="l">L</option></select>
  <select id="multi" multiple><option value="a">A</option><option value="b">B</option></select>
  <div data-sensitive id="private" title="title-secret"><p aria-label="aria-secret">private-secret text</p><img alt="alt-secret" src="img/alt-secret.png"><input id="inner" value="inner-secret" placeholder="placeholder-secret"></div>
</form>
<table id="tab"><tbody><tr><td>cell</td></tr></tbody></table>
<div id="scroller"><div class="tall">tall</div></div>
<x-card id="card1"><span slot="title">Light title</span><span>light body</span></x-card>
<x-late id="late"><b>late light</b></x-late>
<style id="cssom" nonce="n0nce"></style>
<iframe id="same" src="/inner.html" width="300" height="120"></iframe>
<iframe id="cross" src="http://localhost:1/nowhere" width="100" height="50"></iframe>
<div id="fuzz"></div>
<div id="fd-widget" class="fd-root"><span>widget-secret</span><input id="fd-x" value="widget-input-secret"></div>
</body></html>`;

const INNER_HTML = `<!doctype html><html><head><style>p{color:rgb(0,128,0);background:url(bg.png)}</style></head>
<body><p>inner <b>frame</b> text</p><!-- inner-comment-secret --><script>var s='inner-script-secret'</script>
<input id="ipw" type="password"><input id="itext" value="inner visible"><a href="page2.html">link</a></body></html>`;

const HOST_JS = `
import { startCapture } from '/web/cobrowse.js';
import { FakeSocket } from '/fake.js';
window.__cspViolations = 0;
window.__cspWhat = [];
document.addEventListener('securitypolicyviolation', (e) => { window.__cspViolations += 1; window.__cspWhat.push(e.violatedDirective + ' ' + e.blockedURI); });
// A shadow root with a slot and scoped styles, and a constructed sheet in it.
customElements.define('x-card', class extends HTMLElement {
  constructor() {
    super();
    const r = this.attachShadow({ mode: 'open' });
    r.innerHTML = '<style>b{color:rgb(0,0,255)}</style><b>shadow bold</b><slot name="title"></slot><div class="in"><slot></slot></div>';
    const sheet = new CSSStyleSheet();
    sheet.replaceSync('.in{border:1px solid rgb(1,2,3)}');
    r.adoptedStyleSheets = [sheet];
  }
});
// A constructed sheet on the document, and the widget's own (left out).
const docSheet = new CSSStyleSheet();
docSheet.replaceSync('.page{margin:3px}');
const widgetSheet = new CSSStyleSheet();
widgetSheet.replaceSync('.fd-root{color:red}');
document.adoptedStyleSheets = [docSheet, widgetSheet];
// CSS-in-JS: rules inserted through the CSSOM into an empty <style>.
document.getElementById('cssom').sheet.insertRule('.cssom-rule{color:rgb(9,9,9)}');
window.__capture = () => startCapture({ url: '/v1/cobrowse?ticket=t', base: location.origin, WebSocket: FakeSocket });
window.__ready = true;
`;

const CONSOLE_HTML = `<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/web/style.css">
<script type="module" src="/console.js"></script></head>
<body class="console"><main><section class="call"></section><section id="fd-cobrowse" class="cobrowse"></section></main></body></html>`;

const CONSOLE_JS = `
import { Viewer } from '/web/viewer.js';
import { FakeSocket } from '/fake.js';
window.__viewer = new Viewer(document.getElementById('fd-cobrowse'), { WebSocket: FakeSocket });
window.__ready = true;
`;

function serve() {
  const files = {
    '/host.html': ['text/html', HOST_HTML, HOST_CSP],
    '/inner.html': ['text/html', INNER_HTML, HOST_CSP],
    '/host.js': ['application/javascript', HOST_JS],
    '/host.css': ['text/css', 'body{font:14px sans-serif} #scroller{height:40px;overflow:auto} .tall{height:400px}'],
    '/fake.js': ['application/javascript', FAKE_SOCKET],
    '/console.html': ['text/html', CONSOLE_HTML, CONSOLE_CSP],
    '/console.js': ['application/javascript', CONSOLE_JS],
    '/agent/cobrowse-frame': ['text/html', '<!doctype html><html><head><meta charset="utf-8"></head><body></body></html>', FRAME_CSP],
  };
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    let f = files[p];
    if (!f && p.startsWith('/web/')) {
      try {
        const body = readFileSync(path.join(WEB, path.basename(p)), 'utf8');
        f = [p.endsWith('.css') ? 'text/css' : 'application/javascript', body];
      } catch {
        f = null;
      }
    }
    if (!f) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    const headers = { 'content-type': f[0] + '; charset=utf-8', 'cache-control': 'no-store' };
    if (f[2]) headers['content-security-policy'] = f[2];
    res.writeHead(200, headers);
    res.end(f[1]);
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

// ---------------------------------------------------------------------------------------------
// A stand-in relay: protocol checks and AgentFrames (PROTOCOL.md), no sanitizing.

const VOID = new Set(['area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track', 'wbr']);
const RAW = new Set(['style', 'title', 'textarea']);
const FORM_TAGS = new Set(['input', 'textarea', 'select', 'form']);
const DROP = new Set(['script', 'noscript']);
const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const escAttr = (s) => esc(s).replace(/"/g, '&quot;');

class MiniRelay {
  constructor() {
    this.nodes = new Map();
    this.root = null;
    this.seq = 0;
    this.problems = [];
  }

  problem(s) {
    this.problems.push(s);
  }

  make(n, parent) {
    const node = { id: n.id, tag: n.tag, text: n.text, attrs: { ...(n.attrs || {}) }, value: n.value, checked: n.checked, children: [], parent };
    if (typeof n.id !== 'number' || !(n.id >= 1)) this.problem(`bad id ${n.id}`);
    if (node.tag === undefined && node.text === undefined && (n.attrs || n.value !== undefined)) this.problem('placeholder with content');
    this.nodes.set(n.id, node);
    return node;
  }

  snapshot(msg) {
    this.nodes = new Map();
    this.root = null;
    const list = msg.nodes;
    if (!Array.isArray(list) || !list.length) {
      this.problem('empty snapshot');
      return null;
    }
    list.forEach((n, i) => {
      if (this.nodes.has(n.id)) return this.problem(`snapshot: id ${n.id} twice`);
      if (i === 0) {
        if (n.parent !== undefined) this.problem('snapshot: the root has a parent');
        if (n.tag !== 'html') this.problem('snapshot: the root is not html');
        this.root = this.make(n, null);
        return;
      }
      const p = this.nodes.get(n.parent);
      if (!p) return this.problem(`snapshot: node ${n.id} before its parent ${n.parent}`);
      if (!p.tag) return this.problem(`snapshot: parent ${n.parent} is not an element`);
      p.children.push(this.make(n, p));
    });
    return { seq: ++this.seq, type: 'snapshot', html: '<!DOCTYPE html>' + this.render(this.root) };
  }

  visible(n) {
    if (!n.tag && (n.text === undefined || RAW.has(n.parent?.tag))) return false;
    for (let c = n; c; c = c.parent) if (c.tag && DROP.has(c.tag)) return false;
    return true;
  }

  renderedAttrs(n) {
    const out = {};
    for (const [k, v] of Object.entries(n.attrs)) {
      if (/^on/i.test(k)) continue;
      if (n.tag === 'input' && ((k === 'value' && n.value !== undefined) || (k === 'checked' && n.checked !== undefined))) continue;
      if (n.tag === 'textarea' && k === 'value') continue;
      if (n.tag === 'iframe' && k === 'sandbox') continue;
      out[k] = v;
    }
    if (n.tag === 'input') {
      if (n.value !== undefined) out.value = n.value;
      if (n.checked === true) out.checked = '';
    }
    if (n.tag === 'iframe') out.sandbox = '';
    out['data-fd-id'] = String(n.id);
    return out;
  }

  render(n) {
    if (n.tag) {
      if (DROP.has(n.tag)) return '';
      let s = '<' + n.tag;
      for (const [k, v] of Object.entries(this.renderedAttrs(n))) s += ` ${k}="${escAttr(v)}"`;
      s += '>';
      if (VOID.has(n.tag)) return s;
      if (RAW.has(n.tag)) {
        const text = n.tag === 'textarea' && n.value !== undefined ? n.value : n.children.filter((c) => c.text !== undefined).map((c) => c.text).join('');
        s += n.tag === 'style' ? text.replace(/</g, '\\3c ') : esc(text);
      } else {
        for (const c of n.children) s += this.render(c);
      }
      return s + `</${n.tag}>`;
    }
    if (n.text !== undefined) return `<!--${n.id}-->` + esc(n.text);
    return '';
  }

  forget(n) {
    this.nodes.delete(n.id);
    for (const c of n.children) this.forget(c);
  }

  detach(n, ops) {
    const p = n.parent;
    const i = p.children.indexOf(n);
    if (i >= 0) p.children.splice(i, 1);
    this.forget(n);
    if (n.text !== undefined && RAW.has(p.tag)) {
      if (this.visible(p)) ops.push({ op: 'replace', id: p.id, html: this.render(p) });
    } else if (this.visible(n)) {
      ops.push({ op: 'remove', id: n.id });
    }
  }

  changes(msg) {
    if (!this.root) {
      this.problem('changes before a snapshot');
      return null;
    }
    const ops = [];
    for (const c of msg.changes) {
      const n = c.id === null || c.id === undefined ? null : this.nodes.get(c.id);
      switch (c.type) {
        case 'add':
          this.add(c, ops);
          break;
        case 'remove':
          if (!n) this.problem(`remove: unknown id ${c.id}`);
          else if (!n.parent) this.problem('remove: the root');
          else this.detach(n, ops);
          break;
        case 'attr':
          if (!n || !n.tag) {
            this.problem(`attr: unknown element ${c.id}`);
            break;
          }
          if (c.value === null) delete n.attrs[c.name];
          else n.attrs[c.name] = c.value;
          if (this.visible(n)) ops.push({ op: 'attrs', id: n.id, attrs: this.renderedAttrs(n) });
          break;
        case 'text':
          if (!n || n.text === undefined) {
            this.problem(`text: unknown text node ${c.id}`);
            break;
          }
          n.text = c.text;
          if (RAW.has(n.parent.tag)) {
            if (this.visible(n.parent)) ops.push({ op: 'replace', id: n.parent.id, html: this.render(n.parent) });
          } else if (this.visible(n)) ops.push({ op: 'text', id: n.id, text: c.text });
          break;
        case 'value':
          if (!n || !['input', 'textarea', 'select'].includes(n.tag)) {
            this.problem(`value: unknown control ${c.id}`);
            break;
          }
          if (c.value !== undefined) n.value = c.value;
          if (c.checked !== undefined) n.checked = c.checked;
          if (this.visible(n)) ops.push({ op: 'value', id: n.id, value: c.value ?? null, checked: c.checked ?? null });
          break;
        case 'scroll':
          if (c.id !== null && !n) this.problem(`scroll: unknown id ${c.id}`);
          else ops.push({ op: 'scroll', id: c.id, x: c.x, y: c.y });
          break;
        case 'pointer':
          ops.push({ op: 'pointer', x: c.x, y: c.y, kind: c.kind });
          break;
        case 'viewport':
          ops.push({ op: 'viewport', width: c.width, height: c.height });
          break;
        case 'selection':
          if ((c.anchor !== undefined && !this.nodes.has(c.anchor)) || (c.focus !== undefined && !this.nodes.has(c.focus))) {
            this.problem('selection: unknown id');
          } else ops.push({ op: 'selection', anchor: c.anchor, anchorOffset: c.anchorOffset, focus: c.focus, focusOffset: c.focusOffset });
          break;
        default:
          this.problem(`unknown change type ${c.type}`);
      }
    }
    return ops.length ? { seq: ++this.seq, type: 'changes', ops } : null;
  }

  add(c, ops) {
    const parent = this.nodes.get(c.parent);
    if (!parent || !parent.tag) return this.problem(`add: unknown parent ${c.parent}`);
    const ids = c.nodes.map((n) => n.id);
    if (ids.includes(c.parent) || (c.prev != null && ids.includes(c.prev))) return this.problem('add: parent or prev inside the added nodes');
    if (c.prev != null) {
      const pv = this.nodes.get(c.prev);
      if (!pv) return this.problem(`add: unknown prev ${c.prev}`);
      if (pv.parent !== parent) return this.problem(`add: prev ${c.prev} is not a child of ${c.parent}`);
    }
    if (c.nodes[0].parent !== undefined && c.nodes[0].parent !== c.parent) this.problem('add: root parent differs');
    for (const id of ids) {
      const old = this.nodes.get(id);
      if (old) {
        if (old === this.root) return this.problem('add: moves the root');
        this.detach(old, ops);
      }
    }
    if (!this.nodes.has(c.parent) || (c.prev != null && !this.nodes.has(c.prev))) return this.problem('add: parent or prev moved away');
    const root = this.make(c.nodes[0], parent);
    const at = c.prev == null ? 0 : parent.children.indexOf(this.nodes.get(c.prev)) + 1;
    parent.children.splice(at, 0, root);
    for (const n of c.nodes.slice(1)) {
      const p = this.nodes.get(n.parent);
      if (!p || !ids.includes(n.parent)) {
        this.problem(`add: node ${n.id} under ${n.parent}, outside the subtree`);
        continue;
      }
      if (this.nodes.has(n.id)) {
        this.problem(`add: id ${n.id} twice`);
        continue;
      }
      p.children.push(this.make(n, p));
    }
    if (root.text !== undefined && RAW.has(parent.tag)) {
      if (this.visible(parent)) ops.push({ op: 'replace', id: parent.id, html: this.render(parent) });
    } else if (this.visible(root)) {
      const sibs = parent.children;
      let prev = null;
      for (let i = sibs.indexOf(root) - 1; i >= 0; i--) {
        if (this.visible(sibs[i])) {
          prev = sibs[i].id;
          break;
        }
      }
      ops.push({ op: 'insert', parent: parent.id, prev, html: this.render(root) });
    }
  }

  /** The tree with ids, for comparing with a fresh snapshot. */
  canonIds(n = this.root) {
    if (!n) return '';
    if (n.tag) {
      const attrs = Object.keys(n.attrs).sort().map((k) => `${k}=${JSON.stringify(n.attrs[k])}`).join(' ');
      const live = `${n.value === undefined ? '' : ' v=' + JSON.stringify(n.value)}${n.checked === undefined ? '' : ' c=' + n.checked}`;
      return `${n.id}<${n.tag} ${attrs}${live}>[${n.children.map((c) => this.canonIds(c)).join(',')}]`;
    }
    if (n.text !== undefined) return `${n.id}${JSON.stringify(n.text)}`;
    return `${n.id}#`;
  }

  /** What the viewer should show, without ids (compare with canonDom in the viewer page). */
  canonView(n = this.root) {
    if (n.tag) {
      if (DROP.has(n.tag)) return '';
      const a = this.renderedAttrs(n);
      delete a['data-fd-id'];
      delete a.sandbox;
      if (FORM_TAGS.has(n.tag)) delete a.autocomplete; // the viewer turns it off
      let live = '';
      if (n.tag === 'input') {
        const type = (a.type || 'text').toLowerCase();
        if (type === 'checkbox' || type === 'radio') live = `{c=${'checked' in a}}`;
        else live = `{v=${a.value ?? ''}}`;
        delete a.value;
        delete a.checked;
      }
      if (n.tag === 'textarea') live = `{v=${n.value ?? n.children.map((c) => c.text ?? '').join('')}}`;
      const attrs = Object.keys(a).sort().map((k) => `${k}=${JSON.stringify(a[k])}`).join(' ');
      let inner = '';
      if (n.tag === 'textarea') inner = '';
      else if (RAW.has(n.tag)) inner = JSON.stringify(n.children.map((c) => c.text ?? '').join(''));
      else inner = n.children.map((c) => this.canonView(c)).join('');
      return `<${n.tag} ${attrs}${live}>${inner}</>`;
    }
    if (n.text !== undefined && n.text !== '') return JSON.stringify(n.text);
    return '';
  }
}

// Runs in the viewer page: the viewer's document in the form of MiniRelay.canonView.
function canonDomInPage() {
  const doc = window.__frontdesk.viewer.doc();
  const SHADOW = 'data-cobrowse-shadow';
  const RAWT = new Set(['style', 'title', 'textarea']);
  const kids = (n) => {
    if (n.localName === 'template') {
      if (n.hasAttribute(SHADOW) && n.parentNode && n.parentNode.shadowRoot && n.content.childNodes.length === 0) return n.parentNode.shadowRoot.childNodes;
      return n.content.childNodes;
    }
    return n.childNodes;
  };
  const canon = (n) => {
    if (n.nodeType === 3) return n.data === '' ? '' : JSON.stringify(n.data);
    if (n.nodeType !== 1 || !n.hasAttribute('data-fd-id')) return '';
    const a = {};
    for (const at of n.attributes) a[at.name] = at.value;
    delete a['data-fd-id'];
    delete a.sandbox;
    if (['input', 'textarea', 'select', 'form'].includes(n.localName)) delete a.autocomplete;
    let live = '';
    if (n.localName === 'input') {
      if (n.type === 'checkbox' || n.type === 'radio') live = `{c=${n.checked}}`;
      else live = `{v=${n.value}}`;
      delete a.value;
      delete a.checked;
    }
    if (n.localName === 'textarea') live = `{v=${n.value}}`;
    const attrs = Object.keys(a).sort().map((k) => `${k}=${JSON.stringify(a[k])}`).join(' ');
    let inner = '';
    if (n.localName === 'textarea') inner = '';
    else if (RAWT.has(n.localName)) inner = JSON.stringify(n.textContent);
    else for (const c of kids(n)) inner += canon(c);
    return `<${n.localName} ${attrs}${live}>${inner}</>`;
  };
  return canon(doc.documentElement);
}

// ---------------------------------------------------------------------------------------------

const results = [];
function report(check, ok, detail = {}) {
  results.push({ check, ok });
  process.stdout.write(JSON.stringify({ check, ok, ...detail }) + '\n');
}

/** The widget on the host page, the viewer on the console page, the relay between them. */
async function pipeline(browser, base) {
  const relay = new MiniRelay();
  const sent = []; // every message text the capture sent
  const viewerSent = [];
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const host = await ctx.newPage();
  const consolePage = await ctx.newPage();
  const errors = [];
  for (const [name, p] of [['host', host], ['console', consolePage]]) {
    p.on('pageerror', (e) => {
      errors.push(`${name}: ${e.message}`);
      process.stderr.write(`[${name} pageerror] ${e.message}\n`);
    });
    p.on('console', (m) => {
      if (VERBOSE || (m.type() === 'error' && !/Content Security Policy|404/.test(m.text()))) process.stderr.write(`[${name} ${m.type()}] ${m.text().slice(0, 300)}\n`);
    });
  }
  let chain = Promise.resolve();
  const toViewer = (frame) => {
    chain = chain.then(() => consolePage.evaluate((f) => window.__sockets[window.__sockets.length - 1].deliver(f), frame).catch(() => {}));
    return chain;
  };
  const toHost = (msg) => host.evaluate((m) => window.__sockets[window.__sockets.length - 1].deliver(m), msg);
  const state = { before: null, snapshots: 0, resyncs: 0 };
  await host.exposeFunction('__socketSent', (text) => {
    sent.push(text);
    const msg = JSON.parse(text);
    if (msg.type === 'snapshot') {
      state.before = relay.canonIds();
      state.snapshots += 1;
      const f = relay.snapshot(msg);
      state.after = relay.canonIds();
      if (f) toViewer(f);
    } else if (msg.type === 'changes') {
      const f = relay.changes(msg);
      if (f) toViewer(f);
    } else relay.problem(`unknown message type ${msg.type}`);
  });
  await consolePage.exposeFunction('__socketSent', (text) => {
    viewerSent.push(text);
    if (JSON.parse(text).type === 'resync') {
      state.resyncs += 1;
      toHost({ type: 'snapshot_request', reason: 'viewer_asked' }).catch(() => {});
    }
  });
  await consolePage.goto(base + '/console.html');
  await consolePage.waitForFunction(() => window.__ready === true);
  await host.goto(base + '/host.html');
  await host.waitForFunction(() => window.__ready === true);
  await consolePage.evaluate(() => window.__viewer.start('/v1/cobrowse?ticket=agent'));
  await consolePage.waitForFunction(() => window.__sockets && window.__sockets.length === 1 && window.__sockets[0].readyState === 1);
  await consolePage.evaluate(() => window.__sockets[0].deliver({ type: 'visitor', connected: true }));
  await host.evaluate(() => {
    window.__cspBefore = window.__cspWhat.length; // the test page's own inline <style>s
    window.__cap = window.__capture();
  });
  await host.waitForFunction(() => window.__sockets && window.__sockets[0].readyState === 1);
  await toHost({ type: 'viewers', count: 1 });
  return { relay, sent, viewerSent, host, consolePage, errors, toHost, toViewer, state, flushed: () => chain, ctx };
}

async function captureChecks(browser, base) {
  const p = await pipeline(browser, base);
  const { host, consolePage, sent, relay } = p;
  await host.waitForFunction(() => window.__frontdesk.cobrowse.sent.snapshots >= 1, null, { timeout: 5000 });
  await sleep(300);
  const snap = JSON.parse(sent.find((t) => JSON.parse(t).type === 'snapshot'));
  const problems = [];
  const ids = new Set();
  snap.nodes.forEach((n, i) => {
    if (ids.has(n.id)) problems.push(`id ${n.id} twice`);
    if (i > 0 && !ids.has(n.parent)) problems.push(`node ${n.id}: parent ${n.parent} not earlier`);
    ids.add(n.id);
  });
  if (snap.nodes[0].tag !== 'html' || snap.nodes[0].parent !== undefined) problems.push('root is not a parentless html');
  if (snap.baseUrl !== base + '/host.html') problems.push(`baseUrl ${snap.baseUrl}`);
  const tags = snap.nodes.map((n) => n.tag).filter(Boolean);
  if (tags.includes('script') || tags.includes('noscript')) problems.push('script or noscript sent');
  if (!snap.nodes.some((n) => n.tag === undefined && n.text === undefined)) problems.push('no comment placeholder');
  const byAttr = (name, value) => snap.nodes.find((n) => n.attrs && n.attrs[name] === value);
  const a = snap.nodes.find((n) => n.tag === 'a');
  if (!a || a.attrs.href !== base + '/checkout?x=1#pay') problems.push(`href not absolute: ${a && a.attrs.href}`);
  const img = snap.nodes.find((n) => n.tag === 'img');
  if (!img || img.attrs.src !== base + '/img/logo.png') problems.push('img src not absolute');
  if (!img || img.attrs.srcset !== `${base}/img/a.png 1x, ${base}/img/b,c.png 2x`) problems.push(`srcset: ${img && img.attrs.srcset}`);
  const uses = snap.nodes.filter((n) => n.tag === 'use');
  if (uses.length !== 2 || uses[0].attrs.href !== '#icon' || uses[1].attrs['xlink:href'] !== '#icon2') problems.push('svg use fragments changed');
  if (byAttr('id', 'name')?.value !== '') problems.push('name: live value missing');
  if ('value' in (byAttr('id', 'pw') || {})) problems.push('password value sent');
  const check = byAttr('id', 'check');
  if (!check || check.checked !== false) problems.push('checkbox state missing');
  const sizeOpts = snap.nodes.filter((n) => n.tag === 'option' && n.parent === byAttr('id', 'size').id);
  if (sizeOpts.map((o) => 'selected' in o.attrs).join() !== 'false,true,false') problems.push('select state');
  const textarea = byAttr('id', 'notes');
  if (textarea?.value !== 'default notes') problems.push('textarea value');
  // Shadow root: a template first under the host, with the shadow content.
  const host1 = byAttr('id', 'card1');
  const tpl = snap.nodes.find((n) => n.parent === host1.id);
  if (!tpl || tpl.tag !== 'template' || tpl.attrs['data-cobrowse-shadow'] !== 'open') problems.push('shadow template not first');
  const tplKids = snap.nodes.filter((n) => n.parent === tpl.id).map((n) => n.tag);
  if (tplKids.join() !== 'style,b,slot,div,style') problems.push(`shadow children: ${tplKids}`);
  const text = (t) => snap.nodes.some((n) => typeof n.text === 'string' && n.text.includes(t));
  if (!text('.in')) problems.push('shadow adopted sheet missing');
  if (!text('.page')) problems.push('document adopted sheet missing');
  if (text('.fd-root')) problems.push('the widget sheet was sent');
  if (!text('.cssom-rule')) problems.push('CSSOM rules missing');
  const same = byAttr('id', 'same');
  if (!same || !same.attrs.srcdoc || !same.attrs.srcdoc.includes('inner <b>frame</b> text')) problems.push('same-origin iframe srcdoc missing');
  if (same && !same.attrs.srcdoc.includes(`url(${base}/bg.png)`)) problems.push('iframe css url not absolute');
  if (same && !same.attrs.srcdoc.includes(`href="${base}/page2.html"`)) problems.push('iframe href not absolute');
  const cross = byAttr('id', 'cross');
  if (!cross || 'srcdoc' in cross.attrs) problems.push('cross-origin iframe has a srcdoc');
  report('capture: snapshot shape', problems.length === 0, { problems, nodes: snap.nodes.length, bytes: sent[0].length });

  // Typing: secrets never leave the page.
  await host.locator('#name').pressSequentially('Ada Lovelace', { delay: 5 });
  await host.locator('#pw').pressSequentially('hunter2', { delay: 5 });
  await host.locator('#card').pressSequentially('4242424242424242', { delay: 5 });
  await host.locator('#cvv').pressSequentially('987', { delay: 5 });
  await host.locator('#inner').fill('inner-typed-secret');
  await host.evaluate(() => {
    document.getElementById('pw').type = 'text'; // "show password"
  });
  await host.locator('#pw').fill('hunter2-shown');
  await host.frameLocator('#same').locator('#ipw').pressSequentially('frame-secret', { delay: 5 });
  await host.frameLocator('#same').locator('#itext').fill('frame visible typed');
  await host.locator('#check').check();
  await host.locator('#radio2').check();
  await host.locator('#size').selectOption('l');
  await host.locator('#multi').selectOption(['a', 'b']);
  await host.locator('#notes').fill('new notes');
  await host.evaluate(() => {
    document.getElementById('name').value = 'Set By Script'; // no event: found by the poll
  });
  await sleep(1600);
  const all = sent.join('\n');
  const secrets = ['hunter2', '4242', '987', 'title-secret', 'aria-secret', 'alt-secret', 'placeholder-secret', 'inner-typed-secret', 'inner-secret', 'frame-secret', 'private-secret', 'comment-secret', 'script-secret', 'noscript-secret', 'widget-secret', 'widget-input-secret', 'inner-comment-secret', 'inner-script-secret'];
  const leaked = secrets.filter((s) => all.includes(s));
  report('capture: no secret in any message', leaked.length === 0, { leaked, messages: sent.length });

  await p.flushed();
  const seen = await consolePage.evaluate(() => {
    const d = window.__frontdesk.viewer.doc();
    const v = (id) => d.getElementById(id);
    const frame = d.getElementById('same');
    return {
      name: v('name').value,
      check: v('check').checked,
      radio1: v('radio1').checked,
      radio2: v('radio2').checked,
      size: v('size').value,
      multi: Array.from(v('multi').selectedOptions).map((o) => o.value).join(),
      notes: v('notes').value,
      srcdocHasTyped: (frame.getAttribute('srcdoc') || '').includes('frame visible typed'),
      shadowBold: (() => {
        const host = d.getElementById('card1');
        const b = host.shadowRoot && host.shadowRoot.querySelector('b');
        return b ? getComputedStyle(b).color : null;
      })(),
      slotted: (() => {
        const host = d.getElementById('card1');
        const s = host.shadowRoot && host.shadowRoot.querySelector('slot[name="title"]');
        return s ? s.assignedNodes().map((n) => n.textContent).join() : null;
      })(),
      lightBold: getComputedStyle(d.querySelector('h1 em')).color,
    };
  });
  const want = { name: 'Set By Script', check: true, radio1: false, radio2: true, size: 'l', multi: 'a,b', notes: 'new notes', srcdocHasTyped: true, shadowBold: 'rgb(0, 0, 255)', slotted: 'Light title', lightBold: 'rgb(0, 0, 0)' };
  const diff = Object.keys(want).filter((k) => seen[k] !== want[k]);
  report('capture→viewer: live values, select, shadow root', diff.length === 0, { diff: diff.map((k) => `${k}: ${JSON.stringify(seen[k])} != ${JSON.stringify(want[k])}`) });

  // A shadow root attached after the snapshot (a custom element defined late).
  await host.evaluate(() => {
    customElements.define('x-late', class extends HTMLElement {
      connectedCallback() {
        if (!this.shadowRoot) this.attachShadow({ mode: 'open' }).innerHTML = '<i>late shadow</i><slot></slot>';
      }
    });
  });
  await sleep(1500);
  await p.flushed();
  const late = await consolePage.evaluate(() => {
    const h = window.__frontdesk.viewer.doc().getElementById('late');
    return h && h.shadowRoot ? h.shadowRoot.textContent : null;
  });
  report('capture→viewer: shadow root attached later', late === 'late shadow', { late });

  // CSSOM rules added later, and a constructed sheet replaced.
  await host.evaluate(() => {
    document.getElementById('cssom').sheet.insertRule('.later-rule{color:rgb(7,7,7)}');
    const s = new CSSStyleSheet();
    s.replaceSync('.later-adopted{color:rgb(8,8,8)}');
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, s];
  });
  await sleep(1500);
  await p.flushed();
  const styles = await consolePage.evaluate(() => window.__frontdesk.viewer.doc().documentElement.outerHTML);
  report('capture→viewer: CSSOM and adopted sheets follow', styles.includes('.later-rule') && styles.includes('.later-adopted'), {});

  const csp = await host.evaluate(() => window.__cspWhat.slice(window.__cspBefore).filter((w) => !w.includes('localhost:1')));
  report('capture: no CSP violation on a strict host page', csp.length === 0, { violations: csp });

  // Size limits: a 300 KiB subtree is not a batch (a snapshot carries it); a 6 MiB page is
  // not sent at all.
  const snapsBefore = await host.evaluate(() => window.__frontdesk.cobrowse.sent.snapshots);
  await host.evaluate(() => {
    const d = document.createElement('div');
    d.textContent = 'x'.repeat(300 * 1024);
    document.getElementById('fuzz').append(d);
  });
  await sleep(2500);
  const bigBatches = sent.filter((t) => t.length > 256 * 1024 && JSON.parse(t).type === 'changes').length;
  const snapsAfter = await host.evaluate(() => window.__frontdesk.cobrowse.sent.snapshots);
  report('capture: an oversized batch becomes a snapshot', bigBatches === 0 && snapsAfter === snapsBefore + 1, { bigBatches, snapshots: snapsAfter - snapsBefore });
  const countBefore = sent.length;
  await host.evaluate(() => {
    const d = document.createElement('div');
    d.textContent = 'y'.repeat(6 * 1024 * 1024);
    document.getElementById('fuzz').append(d);
  });
  // (Snapshots are rate-limited: a burst of 3, then one per 2 s.)
  for (let i = 0; i < 40 && !(await host.evaluate(() => window.__frontdesk.cobrowse.skipped.snapshots)); i++) await sleep(200);
  const hugeSent = sent.slice(countBefore).some((t) => t.length > 5 * 1024 * 1024);
  const skipped = await host.evaluate(() => window.__frontdesk.cobrowse.skipped.snapshots);
  report('capture: a page over 5 MiB is not sent', !hugeSent && skipped >= 1, { skipped });

  // A large page: time to capture it and to render it in the viewer (figures, loose bounds).
  await host.evaluate(() => {
    const f = document.getElementById('fuzz');
    f.textContent = '';
    const rows = [];
    for (let i = 0; i < 4000; i++) rows.push(`<div class="row r${i % 7}" title="row ${i}"><span>item ${i}</span> <b>${i * 3}</b> <a href="p/${i}">open</a><input value="v${i}"></div>`);
    f.innerHTML = rows.join('');
  });
  await sleep(2500);
  await host.evaluate(() => window.__sockets[window.__sockets.length - 1].deliver({ type: 'snapshot_request', reason: 'viewer_asked' }));
  await sleep(2500);
  await p.flushed();
  const big = await host.evaluate(() => window.__frontdesk.cobrowse.lastSnapshot);
  const renderMs = await consolePage.evaluate(() => window.__frontdesk.viewer.renderMs);
  const rowsShown = await consolePage.evaluate(() => window.__frontdesk.viewer.doc().querySelectorAll('#fuzz .row').length);
  report('capture→viewer: a page of ~30 000 nodes', big.nodes > 28000 && big.ms < 3000 && renderMs < 3000 && rowsShown === 4000, { ...big, renderMs, rowsShown });

  // A backed-up socket: nothing more is queued; the coalesced changes follow once it drains.
  const beforeJam = sent.length;
  const snapsJam = await host.evaluate(() => window.__frontdesk.cobrowse.sent.snapshots);
  await host.evaluate(() => {
    window.__sockets[window.__sockets.length - 1].bufferedAmount = 8 * 1024 * 1024;
    const t = document.getElementById('top');
    for (let i = 0; i < 20; i++) t.setAttribute('data-jam', String(i));
    t.append('jammed');
  });
  await sleep(800);
  const whileJammed = sent.length - beforeJam;
  await host.evaluate(() => {
    window.__sockets[window.__sockets.length - 1].bufferedAmount = 0;
  });
  await sleep(600);
  const afterJam = sent.slice(beforeJam).map((t) => JSON.parse(t));
  const jamOk = whileJammed === 0 && afterJam.length === 1 && afterJam[0].type === 'changes' && (await host.evaluate(() => window.__frontdesk.cobrowse.sent.snapshots)) === snapsJam;
  const attrChanges = afterJam.length ? afterJam[0].changes.filter((c) => c.type === 'attr' && c.name === 'data-jam') : [];
  report('capture: a backed-up socket holds the coalesced changes until it drains', jamOk && attrChanges.length === 1 && attrChanges[0].value === '19', { whileJammed, after: afterJam.map((m) => m.type) });

  // Stop: nothing more is sent, listeners gone.
  await host.evaluate(() => window.__cap.stop());
  const n = sent.length;
  await host.evaluate(() => {
    document.getElementById('top').append('after stop');
    window.scrollTo(0, 10);
  });
  await sleep(400);
  report('capture: stop() stops', sent.length === n && (await host.evaluate(() => window.__frontdesk.cobrowse.state)) === 'stopped', {});
  report('capture: relay saw no protocol problem', relay.problems.length === 0, { problems: relay.problems.slice(0, 10) });
  report('capture: no page error', p.errors.length === 0, { errors: p.errors.slice(0, 5) });
  await p.ctx.close();
}

async function viewerChecks(browser, base) {
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const out = [];
  await page.exposeFunction('__socketSent', (t) => out.push(JSON.parse(t)));
  await page.goto(base + '/console.html');
  await page.waitForFunction(() => window.__ready === true);
  await page.evaluate(() => window.__viewer.start('/v1/cobrowse?ticket=agent'));
  await page.waitForFunction(() => window.__sockets && window.__sockets[0] && window.__sockets[0].readyState === 1);
  const deliver = (m) => page.evaluate((m) => window.__sockets[window.__sockets.length - 1].deliver(m), m);
  await deliver({ type: 'visitor', connected: true });
  const status1 = await page.evaluate(() => window.__frontdesk.viewer.status);
  const snapshot = {
    seq: 1,
    type: 'snapshot',
    html:
      '<!DOCTYPE html><html data-fd-id="1"><head data-fd-id="2"><style data-fd-id="9">p{color:rgb(200,0,0)}</style></head><body class="checkout" data-fd-id="3">' +
      '<input type="password" name="pw" value="\u2022\u2022\u2022\u2022\u2022\u2022\u2022\u2022" data-fd-masked="" data-fd-id="4">' +
      '<p data-fd-id="5"><!--6-->Hello<!--7--></p><input type="checkbox" checked="" data-fd-id="8">' +
      '<x-host data-fd-id="10"><template data-cobrowse-shadow="open" data-fd-id="11"><b data-fd-id="12"><!--13-->in shadow</b><slot data-fd-id="14"></slot></template><!--15-->light</x-host>' +
      '<div data-fd-id="16" style="height:50px;overflow:auto"><div data-fd-id="17" style="height:500px"></div></div><table data-fd-id="18"><tbody data-fd-id="19"></tbody></table>' +
      '</body></html>',
  };
  await deliver(snapshot);
  const r1 = await page.evaluate(() => {
    const d = window.__frontdesk.viewer.doc();
    const frame = document.querySelector('#fd-cobrowse iframe');
    const host = d.querySelector('x-host');
    return {
      sandbox: frame.getAttribute('sandbox'),
      inert: frame.inert,
      autocomplete: Array.from(d.querySelectorAll('input')).map((i) => i.getAttribute('autocomplete')).join(),
      pointerEvents: getComputedStyle(frame).pointerEvents,
      csp: !!d.querySelector('meta[http-equiv="Content-Security-Policy"]'),
      pColor: getComputedStyle(d.querySelector('p')).color,
      shadow: host.shadowRoot ? host.shadowRoot.textContent : null,
      slotted: host.shadowRoot ? host.shadowRoot.querySelector('slot').assignedNodes().map((n) => n.textContent).join('') : null,
      status: window.__frontdesk.viewer.status,
      seq: window.__frontdesk.viewer.lastSeq,
    };
  });
  const ok1 = r1.sandbox === 'allow-same-origin' && r1.inert && r1.autocomplete === 'off,off' && r1.pointerEvents === 'none' && r1.csp && r1.pColor === 'rgb(200, 0, 0)' && r1.shadow === 'in shadow' && r1.slotted === 'light' && r1.seq === 1;
  report('viewer: snapshot rendered in a sandboxed frame, styles and shadow root applied', ok1, { ...r1, statusBefore: status1, resyncsAtOpen: out.length });

  await deliver({
    seq: 2,
    type: 'changes',
    ops: [
      { op: 'insert', parent: 5, prev: 6, html: '<b data-fd-id="20"><!--21-->new</b>' },
      { op: 'text', id: 6, text: 'Hello again' },
      { op: 'text', id: 7, text: ' tail' },
      { op: 'attrs', id: 3, attrs: { class: 'checkout busy', 'data-fd-id': '3' } },
      { op: 'value', id: 8, value: null, checked: false },
      { op: 'replace', id: 9, html: '<style data-fd-id="9">p{color:rgb(0,150,0)}</style>' },
      { op: 'insert', parent: 11, prev: 12, html: '<i data-fd-id="22"><!--23-->added in shadow</i>' },
      { op: 'insert', parent: 19, prev: null, html: '<tr data-fd-id="24"><td data-fd-id="25"><!--26-->cell</td></tr>' },
      { op: 'scroll', id: 16, x: 0, y: 100 },
      { op: 'viewport', width: 800, height: 600 },
      { op: 'pointer', x: 400, y: 300, kind: 'click' },
      { op: 'selection', anchor: 6, anchorOffset: 0, focus: 6, focusOffset: 5 },
    ],
  });
  const r2 = await page.evaluate(() => {
    const d = window.__frontdesk.viewer.doc();
    const frame = document.querySelector('#fd-cobrowse iframe');
    const dot = document.querySelector('.cobrowse-pointer');
    return {
      p: d.querySelector('p').textContent,
      body: d.body.className,
      checked: d.querySelector('[data-fd-id="8"]').checked,
      pColor: getComputedStyle(d.querySelector('p')).color,
      shadow: d.querySelector('x-host').shadowRoot.textContent,
      cell: d.querySelector('td') ? d.querySelector('td').textContent : null,
      scrolled: d.querySelector('[data-fd-id="16"]').scrollTop,
      frameWidth: frame.style.width,
      transform: frame.style.transform,
      dot: !dot.hidden && dot.style.transform,
      selection: d.getSelection().toString(),
      misses: window.__frontdesk.viewer.misses,
    };
  });
  const ok2 =
    r2.p === 'Hello againnew tail' && r2.body === 'checkout busy' && r2.checked === false && r2.pColor === 'rgb(0, 150, 0)' && r2.shadow === 'in shadowadded in shadow' &&
    r2.cell === 'cell' && r2.scrolled === 100 && r2.frameWidth === '800px' && /^scale\(/.test(r2.transform) && !!r2.dot && r2.selection === 'Hello' && r2.misses === 0;
  report('viewer: every change op applies', ok2, r2);

  await deliver({ seq: 3, type: 'changes', ops: [{ op: 'remove', id: 6 }, { op: 'remove', id: 20 }, { op: 'remove', id: 10 }] });
  const r3 = await page.evaluate(() => {
    const d = window.__frontdesk.viewer.doc();
    return { p: d.querySelector('p').innerHTML, host: !!d.querySelector('x-host') };
  });
  report('viewer: removals (text with its marker, elements)', r3.p === '<!--7--> tail' && !r3.host, r3);

  // A seq gap asks for a resync; so does an unknown id, at most once per second.
  await sleep(1100);
  const before = out.filter((m) => m.type === 'resync').length;
  await deliver({ seq: 5, type: 'changes', ops: [{ op: 'text', id: 7, text: 'ignored' }] });
  await deliver({ seq: 6, type: 'changes', ops: [{ op: 'text', id: 7, text: 'ignored too' }] });
  await sleep(100);
  const afterGap = out.filter((m) => m.type === 'resync').length;
  const ignored = await page.evaluate(() => window.__frontdesk.viewer.doc().querySelector('p').textContent);
  await deliver({ ...snapshot, seq: 7 });
  await deliver({ seq: 8, type: 'changes', ops: [{ op: 'text', id: 999, text: 'x' }] });
  await deliver({ seq: 9, type: 'changes', ops: [{ op: 'remove', id: 998 }] });
  await sleep(100);
  const afterUnknown = out.filter((m) => m.type === 'resync').length;
  await sleep(1100);
  const later = out.filter((m) => m.type === 'resync').length;
  report('viewer: seq gap and unknown ids ask for a resync, at most once per second', afterGap === before + 1 && ignored === ' tail' && later - afterGap === 1 && afterUnknown === afterGap, {
    before,
    afterGap,
    afterUnknown,
    later,
  });

  // Reconnects: too slow (4011) comes back at once and asks again; call ended (4010) stops.
  await page.evaluate(() => window.__sockets[window.__sockets.length - 1].drop(4011));
  await page.waitForFunction(() => window.__sockets.length === 2 && window.__sockets[1].readyState === 1);
  await sleep(1100); // resyncs stay at most one per second, reconnects included
  const resyncOnReconnect = out.filter((m) => m.type === 'resync').length > later;
  await deliver({ type: 'visitor', connected: false });
  const gone = await page.evaluate(() => window.__frontdesk.viewer.status);
  await page.evaluate(() => window.__sockets[window.__sockets.length - 1].drop(4010));
  await sleep(100);
  const ended = await page.evaluate(() => ({ status: window.__frontdesk.viewer.status, frame: !!document.querySelector('#fd-cobrowse iframe'), sockets: window.__sockets.length }));
  report('viewer: 4011 reconnects and resyncs, visitor gone shown, 4010 tears down', resyncOnReconnect && gone === 'Visitor disconnected' && !ended.frame && ended.sockets === 2, { gone, ended });
  report('viewer: no page error', errors.length === 0, { errors });
  await ctx.close();
}

/** Random DOM changes on the host page (a seeded generator, valid HTML nesting only). */
function fuzzInPage({ seed, steps }) {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  const pick = (a) => a[Math.floor(rnd() * a.length)];
  const word = () => pick(['alpha', 'beta', 'gamma', 'delta', 'eps', 'zeta', 'eta']) + Math.floor(rnd() * 100);
  const root = document.getElementById('fuzz');
  if (!customElements.get('x-fz')) {
    customElements.define('x-fz', class extends HTMLElement {});
  }
  const all = () => {
    const out = [];
    const walk = (n) => {
      for (const c of n.childNodes) {
        out.push(c);
        if (c.nodeType === 1) walk(c);
        if (c.shadowRoot) {
          out.push(c.shadowRoot);
          walk(c.shadowRoot);
        }
      }
    };
    walk(root);
    return out;
  };
  const blocks = () => [root, ...all().filter((n) => (n.nodeType === 1 && (n.localName === 'div' || n.localName === 'x-fz')) || n.nodeType === 11)];
  const inlines = () => all().filter((n) => n.nodeType === 1 && (n.localName === 'span' || n.localName === 'b'));
  const make = (block) => {
    const r = rnd();
    if (r < 0.3) return document.createTextNode(word());
    if (r < 0.38) return document.createComment(word());
    if (!block || r < 0.6) {
      const e = document.createElement(pick(['span', 'b']));
      if (rnd() < 0.5) e.textContent = word();
      return e;
    }
    if (r < 0.7) {
      const e = document.createElement('x-fz');
      if (rnd() < 0.6) {
        const sr = e.attachShadow({ mode: 'open' });
        sr.innerHTML = `<span>${word()}</span><slot></slot>`;
      }
      e.append(word());
      return e;
    }
    if (r < 0.75) {
      const e = document.createElement('input');
      e.value = word();
      return e;
    }
    const e = document.createElement('div');
    e.className = word();
    if (rnd() < 0.5) e.innerHTML = `<span>${word()}</span> <b>${word()}</b>`;
    return e;
  };
  const ops = [];
  for (let i = 0; i < steps; i++) {
    const r = rnd();
    const nodes = all();
    if (r < 0.3 || nodes.length < 5) {
      const inline = rnd() < 0.3 && inlines().length;
      const parent = inline ? pick(inlines()) : pick(blocks());
      const n = make(!inline);
      const ref = parent.childNodes.length && rnd() < 0.7 ? pick(Array.from(parent.childNodes)) : null;
      parent.insertBefore(n, ref);
      ops.push('insert');
    } else if (r < 0.45) {
      const n = pick(nodes);
      if (n.nodeType !== 11) n.remove();
      ops.push('remove');
    } else if (r < 0.6) {
      const n = pick(nodes);
      if (n.nodeType === 11) continue;
      const isBlock = n.nodeType === 1 && (n.localName === 'div' || n.localName === 'x-fz' || n.localName === 'input');
      const inside = (t) => {
        for (let c = t; c; c = c.parentNode || c.host) if (c === n) return true;
        return false;
      };
      const targets = (isBlock ? blocks() : [...blocks(), ...inlines()]).filter((t) => !inside(t));
      if (!targets.length) continue;
      const parent = pick(targets);
      const ref = parent.childNodes.length && rnd() < 0.5 ? pick(Array.from(parent.childNodes)) : null;
      if (ref === n) continue;
      parent.insertBefore(n, ref);
      ops.push('move');
    } else if (r < 0.72) {
      const els = nodes.filter((n) => n.nodeType === 1);
      if (!els.length) continue;
      const e = pick(els);
      const name = pick(['title', 'data-x', 'class', 'lang']);
      if (rnd() < 0.25) e.removeAttribute(name);
      else e.setAttribute(name, word());
      ops.push('attr');
    } else if (r < 0.82) {
      const texts = nodes.filter((n) => n.nodeType === 3);
      if (!texts.length) continue;
      pick(texts).data = word();
      ops.push('text');
    } else if (r < 0.88) {
      const inputs = nodes.filter((n) => n.localName === 'input');
      if (!inputs.length) continue;
      const inp = pick(inputs);
      inp.value = word();
      if (rnd() < 0.5) inp.dispatchEvent(new Event('input', { bubbles: true, composed: true }));
      ops.push('value');
    } else if (r < 0.92) {
      const els = nodes.filter((n) => n.nodeType === 1 && n.localName === 'div');
      if (!els.length) continue;
      const e = pick(els);
      // Becomes (or stops being) widget UI: left out of the capture.
      e.classList.toggle('fd-hidden-ui');
      ops.push('exclude');
    } else if (r < 0.96) {
      const els = nodes.filter((n) => n.nodeType === 1 && n.localName === 'div');
      if (!els.length) continue;
      pick(els).innerHTML = `<span>${word()}</span>${word()}<!--c--><div>${word()}</div>`;
      ops.push('innerHTML');
    } else {
      const parent = pick(blocks());
      const frag = document.createDocumentFragment();
      for (let k = 0; k < 3; k++) frag.append(make(true));
      parent.append(frag);
      ops.push('fragment');
    }
  }
  return ops.length;
}

async function roundtrip(browser, base, seed) {
  const p = await pipeline(browser, base);
  const { host, consolePage, relay, state } = p;
  await host.waitForFunction(() => window.__frontdesk.cobrowse.sent.snapshots >= 1, null, { timeout: 5000 });
  await sleep(300);
  // Bursts of changes with waits in between, so that batches interleave with the changes.
  let done = 0;
  for (let round = 0; round < 8; round++) {
    done += await host.evaluate(fuzzInPage, { seed: seed * 1000 + round, steps: Math.ceil(STEPS / 8) });
    await sleep(Math.floor(((seed * 7 + round * 13) % 5) * 40));
  }
  await sleep(1600); // the 1 s poll and the iframe throttle
  await p.flushed();
  const viewerCanon = await consolePage.evaluate(canonDomInPage);
  const relayView = relay.canonView();
  const snapsBefore = state.snapshots;
  await p.toHost({ type: 'snapshot_request', reason: 'viewer_asked' });
  const deadline = Date.now() + 5000;
  while (state.snapshots === snapsBefore && Date.now() < deadline) await sleep(50);
  const sameIds = state.before === state.after;
  await sleep(300);
  await p.flushed();
  const viewerAfter = await consolePage.evaluate(canonDomInPage);
  const relayAfter = relay.canonView();
  const detail = { seed, ops: done, problems: relay.problems.slice(0, 5), snapshots: state.snapshots, bytes: p.sent.reduce((n, t) => n + t.length, 0), messages: p.sent.length };
  if (!sameIds) detail.firstDiff = firstDiff(state.before, state.after);
  if (viewerCanon !== relayView) detail.viewerDiff = firstDiff(relayView, viewerCanon);
  if (viewerAfter !== relayAfter) detail.viewerAfterDiff = firstDiff(relayAfter, viewerAfter);
  report(
    `roundtrip seed ${seed}: relay = fresh snapshot, viewer = relay`,
    relay.problems.length === 0 && sameIds && viewerCanon === relayView && viewerAfter === relayAfter && p.errors.length === 0,
    detail,
  );
  await p.ctx.close();
}

function firstDiff(a, b) {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return { at: i, expected: a.slice(Math.max(0, i - 80), i + 120), actual: b.slice(Math.max(0, i - 80), i + 120) };
}

/** Runs in a page: a subtree in comparable form (shadow roots as their template, no ids). */
function canonSubtree({ selector, viewer }) {
  const doc = viewer ? window.__frontdesk.viewer.doc() : document;
  const root = doc.querySelector(selector);
  if (!root) return null;
  const excluded = (e) => /(^|\s)fd-/.test(e.getAttribute('class') || '') || (e.getAttribute('id') || '').startsWith('fd-');
  const attrsOf = (e) => {
    const a = {};
    const form = ['input', 'textarea', 'select', 'form'].includes(e.localName);
    for (const at of e.attributes) {
      if (at.name !== 'data-fd-id' && !(e.localName === 'input' && at.name === 'value') && !(form && at.name === 'autocomplete')) a[at.name] = at.value;
    }
    return Object.keys(a).sort().map((k) => `${k}=${JSON.stringify(a[k])}`).join(' ');
  };
  const canon = (n) => {
    if (n.nodeType === 3) return n.data ? JSON.stringify(n.data) : '';
    if (n.nodeType === 11) {
      let inner = '';
      for (const c of n.childNodes) inner += canon(c);
      return `<template data-cobrowse-shadow="open">${inner}</>`;
    }
    if (n.nodeType !== 1 || n.localName === 'script' || (!viewer && excluded(n))) return '';
    if (viewer && n.localName === 'template' && n.hasAttribute('data-cobrowse-shadow')) {
      const host = n.parentNode;
      return host && host.shadowRoot ? canon(host.shadowRoot) : '<template-not-attached>';
    }
    let inner = !viewer && n.shadowRoot ? canon(n.shadowRoot) : '';
    for (const c of n.childNodes) inner += canon(c);
    const live = n.localName === 'input' ? `{v=${n.value}}` : '';
    return `<${n.localName} ${attrsOf(n)}${live}>${inner}</>`;
  };
  return canon(root);
}

/** A real call from the demo page to the console of a running server. */
async function live(cfgPath) {
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
  const base = cfg.base_url.replace(/\/+$/, '');
  const browser = await launch(MEDIA_ARGS);
  const errors = [];
  const open = async (side) => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.grantPermissions(['camera', 'microphone'], { origin: base });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    page.on('pageerror', (e) => errors.push(`${side}: ${e.message}`));
    page.on('console', (m) => {
      if (VERBOSE || m.type() === 'error' || m.type() === 'warning') process.stderr.write(`[${side} ${m.type()}] ${m.text().slice(0, 300)}\n`);
    });
    return page;
  };
  const waitFor = async (what, probe, ms = 15000) => {
    const end = Date.now() + ms;
    for (;;) {
      const v = await probe().catch(() => null);
      if (v) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(150);
    }
  };
  try {
    const agent = await open('agent');
    const visitor = await open('visitor');
    await agent.goto(`${base}/agent/login#token=${encodeURIComponent(cfg.agent_token)}`);
    await waitFor('the console', () => agent.evaluate(() => location.pathname === '/agent' && window.__frontdesk && window.__frontdesk.state.signal === 'open'));
    const idle = await agent.evaluate(() => window.__frontdesk.viewer.status);
    await waitFor('presence control', () => agent.locator('[data-testid=fd-presence]').isEnabled());
    await agent.locator('[data-testid=fd-presence]').selectOption('available');
    await visitor.goto(`${base}/demo?key=${encodeURIComponent(cfg.widget_key)}`);
    await visitor.locator('[data-testid=fd-open]').click();
    await waitFor('the widget', () => visitor.evaluate(() => window.__frontdesk && window.__frontdesk.state.signal === 'open'));
    await visitor.locator('[data-testid=fd-call]').click();
    await agent.locator('[data-testid=fd-ring]').waitFor({ state: 'visible' });
    await agent.locator('[data-testid=fd-accept]').click();
    const t0 = Date.now();
    const viewerHas = (sel) => agent.evaluate((sel) => {
      const d = window.__frontdesk.viewer.doc();
      return !!(d && d.querySelector(sel));
    }, sel);
    await waitFor('the page in the viewer', () => viewerHas('#checkout-form'));
    const firstPageMs = Date.now() - t0;
    const shown = await agent.evaluate(() => {
      const d = window.__frontdesk.viewer.doc();
      const w = d.defaultView;
      return {
        widget: !!d.querySelector('#fd-widget, .fd-root, #fd-open'),
        styled: w.getComputedStyle(d.querySelector('.product')).borderTopStyle === 'solid',
        status: window.__frontdesk.viewer.status,
        masked: Array.from(d.querySelectorAll('[data-fd-masked]')).map((e) => e.id).sort().join(),
      };
    });
    const badge = await visitor.evaluate(() => !!document.querySelector('#fd-sharing'));
    await sleep(1000);
    const cap = await visitor.evaluate(() => window.__frontdesk.cobrowse);
    // The viewer's resync and the server's viewer_joined meet in one snapshot (the visitor may
    // also have sent one before the viewer connected).
    report('live: the demo page in the viewer, styled, without the widget; badge shown', !shown.widget && shown.styled && badge && shown.masked === 'card,password' && cap.sent.snapshots <= 2, {
      ...shown,
      badge,
      idle,
      firstPageMs,
      snapshots: cap.sent.snapshots,
      viewers: cap.viewers,
    });

    if (args.includes('--screenshot')) {
      // The console and the visitor's page side by side, for a look (pointer dot included).
      await visitor.mouse.move(400, 300);
      await visitor.mouse.down();
      await visitor.mouse.up();
      await sleep(300);
      const dir = args[args.indexOf('--screenshot') + 1];
      await agent.screenshot({ path: path.join(dir, 'cobrowse-console.png') });
      await visitor.screenshot({ path: path.join(dir, 'cobrowse-visitor.png') });
    }

    // Random mutations on the visitor's page, through the real relay and sanitizer.
    await visitor.evaluate(() => {
      const d = document.createElement('div');
      d.id = 'fuzz';
      document.querySelector('main').append(d);
    });
    let ops = 0;
    for (let round = 0; round < 10; round++) {
      ops += await visitor.evaluate(fuzzInPage, { seed: 4242 + round, steps: 25 });
      await sleep(60 * (round % 4));
    }
    await sleep(1800);
    const want = await visitor.evaluate(canonSubtree, { selector: '#fuzz', viewer: false });
    const got = await agent.evaluate(canonSubtree, { selector: '#fuzz', viewer: true });
    const metrics = await (await fetch(`${base}/metrics`)).text().catch(() => '');
    const metric = (name) => Number((new RegExp(`^${name} (\\S+)`, 'm').exec(metrics) || [])[1]);
    const detail = { ops, desync: metric('frontdesk_cobrowse_desync_requests_total'), misses: await agent.evaluate(() => window.__frontdesk.viewer.misses) };
    if (want !== got) detail.diff = firstDiff(want || '', got || '');
    report('live: random mutations reach the viewer intact', want === got && detail.misses === 0, detail);

    // The visitor reloads mid-call: the widget rejoins and the page comes back.
    await visitor.reload();
    await waitFor('the viewer to lose the fuzz area', async () => !(await viewerHas('#fuzz')), 15000);
    await waitFor('the page again after the reload', () => viewerHas('#checkout-form'), 15000);
    report('live: a visitor reload comes back in the viewer', true, { status: await agent.evaluate(() => window.__frontdesk.viewer.status) });

    // The agent reloads the console mid-call: the viewer comes back with the page.
    await agent.reload();
    await waitFor('the page in the viewer after a console reload', () => viewerHas('#checkout-form'), 20000);
    report('live: a console reload comes back in the viewer', true, { status: await agent.evaluate(() => window.__frontdesk.viewer.status) });

    // The call ends: both sides stop.
    await agent.locator('[data-testid=fd-end]').click();
    await waitFor('teardown', async () => {
      const a = await agent.evaluate(() => !document.querySelector('#fd-cobrowse iframe') && window.__frontdesk.viewer.state === 'stopped');
      const v = await visitor.evaluate(() => !document.querySelector('#fd-sharing') && ['stopped', 'ended'].includes(window.__frontdesk.cobrowse && window.__frontdesk.cobrowse.state));
      return a && v;
    }, 10000);
    report('live: the call end tears down the viewer and the capture', true, {});
    report('live: no page error', errors.length === 0, { errors: errors.slice(0, 5) });
  } catch (e) {
    report('live: call flow', false, { error: String(e.message || e) });
  } finally {
    await browser.close();
  }
}

async function main() {
  if (args.includes('--server')) {
    await live(args[args.indexOf('--server') + 1]);
    const failed = results.filter((r) => !r.ok);
    process.stdout.write(JSON.stringify({ ok: failed.length === 0, checks: results.length, failed: failed.map((f) => f.check) }) + '\n');
    process.exit(failed.length ? 1 : 0);
  }
  const server = await serve();
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await launch();
  try {
    await captureChecks(browser, base);
    await viewerChecks(browser, base);
    for (let seed = 1; seed <= SEEDS; seed++) await roundtrip(browser, base, seed);
  } finally {
    await browser.close();
    server.close();
  }
  const failed = results.filter((r) => !r.ok);
  process.stdout.write(JSON.stringify({ ok: failed.length === 0, checks: results.length, failed: failed.map((f) => f.check) }) + '\n');
  process.exit(failed.length ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
