// Renders pages of XSS vectors in headless Chromium WITH JavaScript enabled and interacts with
// them like a curious user, so that whatever a vector can run or load, it does. It judges
// nothing: the vectors report themselves with requests to the server that serves the pages
// (cobrowse/tests/chromium_xss.rs records and judges them). This script only reports what it
// did: per page, whether it loaded, how many elements it clicked, how many dialogs opened.
//
//   node tests/browser/xss.mjs '{"base":"http://127.0.0.1:PORT","paths":["/raw/1","/page/1"]}'
//
// (argv[2] may also name a JSON file.) Config:
//   base        the server's origin
//   paths       the pages to visit
//   workers     pages visited at once (default 6)
//   settle_ms   wait after load and after the interactions (default 100)
//
// For each page, in a tab of its context (one for the controls, one for the sanitized pages)
// that goes from page to page: load it (main resource and subresources), wait, press Tab
// through the focusable elements (onfocus/onblur), then click the centre of every element with a
// box, in every frame, one after the other — the mouse moves there first (onmouseover,
// onmouseenter), `javascript:` links and form submissions run, links navigate. After a click
// that took the tab elsewhere, the page is loaded again and the next element is clicked. Dialogs
// are dismissed and counted. Popups are closed.
//
// Prints one JSON line per page, then {"ok": true, "pages": N, "ms": …}; exits 1 on a harness
// error (a page that does not load is reported in its line, not an error).

import { launch, out, sleep, readJsonArg } from './chromium.mjs';

// Every host but 127.0.0.1 fails to resolve: nothing leaves the machine, whatever a vector names.
const NO_DNS = '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1';
const MAX_CLICKS = 40;


function readConfig(arg) {
  const c = readJsonArg(arg, 'node xss.mjs <json config or file>');
  if (typeof c.base !== 'string' || !Array.isArray(c.paths)) throw new Error('config: base and paths are required');
  return {
    base: c.base.replace(/\/+$/, ''),
    paths: c.paths,
    workers: Number(c.workers ?? 6),
    settle: Number(c.settle_ms ?? 100),
  };
}

/** The boxes of the elements, in every frame of the page (main frame first, document order). */
async function boxes(page) {
  const all = [];
  for (const frame of page.frames()) {
    let handles = [];
    try {
      handles = await frame.$$('body, body *');
    } catch {
      continue; // a frame that went away or that Playwright cannot enter
    }
    for (const h of handles) {
      const box = await h.boundingBox().catch(() => null);
      if (box && box.width > 0 && box.height > 0) all.push(box);
      h.dispose().catch(() => {});
    }
  }
  return all;
}

/** Loads `url` in `page`; true, or why not. */
async function load(page, url, cfg) {
  let why = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await page.goto(url, { waitUntil: 'load', timeout: 5000 });
      await sleep(cfg.settle);
      return true;
    } catch (e) {
      why = String(e.message || e).split('\n')[0];
      // A navigation the previous page started late (a form submitted by the last click) can
      // interrupt this one: try again.
      if (!why.includes('interrupted by another navigation')) return why;
      await sleep(cfg.settle);
    }
  }
  return why;
}

/** Visits one page in `tab` (a tab of the right context, reused from page to page). */
async function visit(tab, cfg, path) {
  const { page } = tab;
  const url = cfg.base + path;
  const started = Date.now();
  const report = (tab.report = { path, loaded: false, clicks: 0, reloads: 0, dialogs: 0 });
  try {
    const first = await load(page, url, cfg);
    if (first !== true) {
      report.error = first;
      return report;
    }
    report.loaded = true;
    for (let i = 0; i < 6; i++) await page.keyboard.press('Tab').catch(() => {});
    // Click every element with a box, from the outermost in; reload when a click went elsewhere
    // (the boxes are measured again then: the page may lay out differently once loaded again).
    let list = await boxes(page);
    report.elements = list.length;
    for (let i = 0; i < Math.min(report.elements, MAX_CLICKS); i++) {
      if (page.url() !== url) {
        report.reloads += 1;
        if ((await load(page, url, cfg)) !== true) break;
        list = await boxes(page);
      }
      if (i >= list.length) break;
      const b = list[i];
      await page.mouse.click(b.x + b.width / 2, b.y + b.height / 2).catch(() => {});
      report.clicks += 1;
      await sleep(30);
    }
    await sleep(cfg.settle);
  } catch (e) {
    report.error = String(e.message || e).split('\n')[0];
  }
  report.ms = Date.now() - started;
  return report;
}

/** A tab of `context` that counts the dialogs it opens into its current report. */
async function openTab(context, ours) {
  // The context's 'page' event fires before newPage() resolves; its handler checks `ours` later.
  const page = await context.newPage();
  ours.add(page);
  page.setDefaultTimeout(3000);
  const tab = { page, report: null };
  page.on('dialog', (d) => {
    if (tab.report) tab.report.dialogs += 1;
    // A beforeunload prompt is accepted, or it would keep the tab from the next page.
    (d.type() === 'beforeunload' ? d.accept() : d.dismiss()).catch(() => {});
  });
  return tab;
}

async function main() {
  const started = Date.now();
  const cfg = readConfig(process.argv[2]);
  const browser = await launch([NO_DNS]);
  try {
    // A context of its own for the unsanitized controls and for the sanitized pages.
    const contexts = { raw: await browser.newContext(), page: await browser.newContext() };
    const ours = new Set();
    for (const c of Object.values(contexts)) {
      c.on('page', (p) => {
        // Popups (window.open, target=_blank) are closed once they had a moment to load.
        setTimeout(() => {
          if (!ours.has(p)) p.close().catch(() => {});
        }, 500);
      });
    }
    const queue = cfg.paths.slice();
    const worker = async () => {
      const tabs = {};
      for (;;) {
        const path = queue.shift();
        if (path === undefined) return;
        const kind = path.startsWith('/raw/') ? 'raw' : 'page';
        tabs[kind] ??= await openTab(contexts[kind], ours);
        out(await visit(tabs[kind], cfg, path));
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, cfg.workers) }, worker));
    // Late requests (timers, refreshes) of the last pages.
    await sleep(300);
    out({ ok: true, pages: cfg.paths.length, ms: Date.now() - started });
  } finally {
    await browser.close().catch(() => {});
  }
}

main().catch((e) => {
  out({ ok: false, error: String(e && e.stack ? e.stack : e) });
  process.exit(1);
});
