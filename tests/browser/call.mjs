// One real call between the agent console and the demo page's widget, in Chromium with fake
// camera and microphone, measured through each page's `window.__frontdesk.pc.getStats()`.
//
//   node tests/browser/call.mjs '{"base_url":"http://127.0.0.1:8080","agent_token":"eyJ…",
//                                 "widget_key":"wk_…","relay":false,"restart":"none","seconds":5}'
//
// (argv[2] may also name a JSON file.) Config:
//   base_url, agent_token, widget_key  the server, an agent of the key's org (the only one available)
//   relay      force TURN (iceTransportPolicy "relay") on both pages
//   turn       optional RTCIceServer {urls, username, credential} used instead of the server's
//   restart    "none" | "page": the visitor page forces an ICE restart and the time until video
//              flows again is measured | "path": after the line {"phase":"flowing"}, whoever runs
//              this changes the network path; the stall and the recovery are measured
//   seconds    how long media is measured (default 5)
//   cobrowse   after media flows, the visitor types into the demo's checkout form (name, card,
//              password, then a show-password toggle) and the agent's co-browse viewer must show
//              the name and mask the rest, while no frame the agent page receives holds a
//              secret; then `cobrowse_seconds` (default 10) of scripted browsing (scrolling,
//              pointer moves, typing, a product highlighted) measure what reaches the agent
//   external_visitor  only the agent console runs here: after {"phase":"agent_ready"} another
//              program (tests/peers/aiortc_visitor.py) places the call; the console accepts it,
//              measures the video and audio it receives, and waits for the visitor to end it
//
// Prints one JSON line per side and a final {"ok": true|false, ...}; exits 1 when not ok.

import { launch, MEDIA_ARGS, out, sleep, readJsonArg } from './chromium.mjs';

const POLL_MS = 200;


function readConfig(arg) {
  const c = readJsonArg(arg, 'node call.mjs <json config or file>');
  for (const k of ['base_url', 'agent_token', 'widget_key']) {
    if (typeof c[k] !== 'string' || !c[k]) throw new Error(`config: ${k} is required`);
  }
  const restart = c.restart ?? 'none';
  if (!['none', 'page', 'path'].includes(restart)) throw new Error('config: restart is none, page or path');
  return {
    base: c.base_url.replace(/\/+$/, ''),
    agentToken: c.agent_token,
    widgetKey: c.widget_key,
    relay: c.relay === true,
    turn: c.turn ?? null,
    restart,
    seconds: Number(c.seconds ?? 5),
    externalVisitor: c.external_visitor === true,
    cobrowse: c.cobrowse === true,
    cobrowseSeconds: Number(c.cobrowse_seconds ?? 10),
  };
}

/** Polls `probe` until it returns a truthy value; throws `what` after `timeoutMs`. */
async function waitFor(what, probe, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(POLL_MS);
  }
}

/** What the page's peer connection reports, summed per kind. */
function sample(page) {
  return page.evaluate(async () => {
    const fd = window.__frontdesk;
    const pc = fd && fd.pc;
    if (!pc) return null;
    const stats = await pc.getStats();
    const s = {
      t: Date.now(),
      connectionState: pc.connectionState,
      iceConnectionState: pc.iceConnectionState,
      framesDecoded: 0,
      videoPacketsReceived: 0,
      // What the sender reports the page received say was sent to it (RTCP SR).
      videoPacketsReported: 0,
      audioPacketsReceived: 0,
      framesEncoded: 0,
      candidate: null,
    };
    const describe = (c) => c && { type: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol, address: c.address, port: c.port };
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        s.framesDecoded += r.framesDecoded || 0;
        s.videoPacketsReceived += r.packetsReceived || 0;
      } else if (r.type === 'remote-outbound-rtp' && r.kind === 'video') {
        s.videoPacketsReported += r.packetsSent || 0;
      } else if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        s.audioPacketsReceived += r.packetsReceived || 0;
      } else if (r.type === 'outbound-rtp' && r.kind === 'video') {
        s.framesEncoded += r.framesEncoded || 0;
      } else if (r.type === 'transport' && r.selectedCandidatePairId) {
        const pair = stats.get(r.selectedCandidatePairId);
        if (pair) s.candidate = { local: describe(stats.get(pair.localCandidateId)), remote: describe(stats.get(pair.remoteCandidateId)) };
      }
    });
    return s;
  });
}

const events = (page) => page.evaluate(() => (window.__frontdesk ? window.__frontdesk.events : []));
const hasEvent = async (page, type, after = 0) => (await events(page)).some((e) => e.type === type && e.at >= after);
const mediaState = (page) => page.evaluate(() => window.__frontdesk && window.__frontdesk.state.media);
const status = (page) => page.locator('[data-testid=fd-status]').textContent();

async function main() {
  const cfg = readConfig(process.argv[2]);
  const figures = { restart: cfg.restart, relay: cfg.relay };
  let step = 'launch';
  const browser = await launch(MEDIA_ARGS);
  const problems = [];
  const pages = {};
  const first = {};
  const second = {};
  try {
    const options = { relay: cfg.relay, iceServers: cfg.turn ? [cfg.turn] : null };
    const open = async (side) => {
      const context = await browser.newContext();
      await context.grantPermissions(['camera', 'microphone'], { origin: cfg.base });
      await context.addInitScript((o) => {
        window.__frontdeskOptions = o;
      }, options);
      const page = await context.newPage();
      page.setDefaultTimeout(15000);
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') process.stderr.write(`[${side} ${m.type()}] ${m.text()}\n`);
      });
      page.on('pageerror', (e) => problems.push(`${side} page error: ${e.message}`));
      return page;
    };
    const agent = (pages.agent = await open('agent'));
    // Every WebSocket frame the agent's page receives, for the co-browse checks: the secrets
    // typed on the visitor's page must never be in one.
    const agentFrames = { count: 0, bytes: 0, cobrowseBytes: 0, leaks: [] };
    agent.on('websocket', (ws) => {
      const isCobrowse = ws.url().includes('/v1/cobrowse');
      ws.on('framereceived', ({ payload }) => {
        const text = typeof payload === 'string' ? payload : payload.toString('utf8');
        agentFrames.count += 1;
        agentFrames.bytes += Buffer.byteLength(text);
        if (isCobrowse) agentFrames.cobrowseBytes += Buffer.byteLength(text);
        for (const secret of SECRETS) if (text.includes(secret)) agentFrames.leaks.push(secret);
      });
    });
    const visitor = (pages.visitor = await open('visitor'));
    const signalOpen = (page) => page.evaluate(() => !!window.__frontdesk && window.__frontdesk.state.signal === 'open');

    step = 'agent signs in';
    await agent.goto(`${cfg.base}/agent/login#token=${encodeURIComponent(cfg.agentToken)}`);
    await waitFor('the agent console', async () => new URL(agent.url()).pathname === '/agent' && signalOpen(agent), 15000);

    step = 'agent goes available';
    const presence = agent.locator('[data-testid=fd-presence]');
    await waitFor('the presence control (is the agent still in an earlier call?)', () => presence.isEnabled(), 10000);
    await presence.selectOption('available', { timeout: 5000 });
    await waitFor('presence available', async () => (await agent.locator('#fd-presence-state').getAttribute('data-presence')) === 'available', 10000);

    if (cfg.externalVisitor) {
      await visitor.close();
      delete pages.visitor;
      return await agentOnly(cfg, agent, figures, problems, first, second, pages, browser);
    }

    step = 'visitor calls';
    await visitor.goto(`${cfg.base}/demo?key=${encodeURIComponent(cfg.widgetKey)}`);
    await visitor.locator('[data-testid=fd-open]').click();
    await waitFor('the widget to connect', () => signalOpen(visitor), 15000);
    await visitor.locator('[data-testid=fd-call]').click();

    step = 'agent accepts';
    await agent.locator('[data-testid=fd-ring]').waitFor({ state: 'visible', timeout: 15000 });
    figures.countdown_s = Number(await agent.locator('[data-testid=fd-countdown]').textContent());
    await agent.locator('[data-testid=fd-accept]').click();
    await waitFor('call_connected on both sides', async () => (await hasEvent(agent, 'call_connected')) && hasEvent(visitor, 'call_connected'), 10000);
    figures.visitor_status = await status(visitor);

    step = 'media_config';
    await waitFor('media_config on both sides', async () => (await hasEvent(agent, 'media_config')) && hasEvent(visitor, 'media_config'), 10000);

    step = 'media connects';
    const connected = async (page) => {
      const s = await sample(page);
      return s && s.connectionState === 'connected';
    };
    await waitFor('both peer connections connected', async () => (await connected(agent)) && connected(visitor), 20000);

    step = 'media flows';
    const flowing = async (page) => {
      const s = await sample(page);
      return s && s.framesDecoded > 0 && s.audioPacketsReceived > 0;
    };
    await waitFor('video decoded and audio received on both sides', async () => (await flowing(agent)) && flowing(visitor), 15000);

    step = 'measure';
    Object.assign(first, { agent: await sample(agent), visitor: await sample(visitor) });
    await sleep(cfg.seconds * 1000);
    Object.assign(second, { agent: await sample(agent), visitor: await sample(visitor) });
    for (const side of ['agent', 'visitor']) {
      const [a, b] = [first[side], second[side]];
      if (!(b.framesDecoded > a.framesDecoded)) problems.push(`${side}: video stopped (framesDecoded ${a.framesDecoded} → ${b.framesDecoded})`);
      if (!(b.audioPacketsReceived > a.audioPacketsReceived)) problems.push(`${side}: audio stopped`);
      if (cfg.relay && b.candidate && b.candidate.local && b.candidate.local.type !== 'relay') problems.push(`${side}: not relayed (${b.candidate.local.type})`);
    }
    figures.fps = {
      agent: rate(first.agent, second.agent, 'framesDecoded'),
      visitor: rate(first.visitor, second.visitor, 'framesDecoded'),
    };

    if (cfg.cobrowse) {
      step = 'co-browse';
      Object.assign(figures, await cobrowse(agent, visitor, agentFrames, cfg, problems));
    }

    if (cfg.restart === 'page') {
      step = 'forced ICE restart';
      Object.assign(figures, await forcedRestart(agent, visitor, problems));
    } else if (cfg.restart === 'path') {
      step = 'path change';
      Object.assign(figures, await pathChange(agent, visitor, cfg.seconds));
    }

    step = 'visitor ends the call';
    await visitor.locator('[data-testid=fd-end]').click();
    await waitFor('call_ended on both sides', async () => (await hasEvent(agent, 'call_ended')) && hasEvent(visitor, 'call_ended'), 10000);
    await waitFor('the peer connections to close', async () => (await sample(agent)) === null && (await sample(visitor)) === null, 5000);
    figures.end_status = { agent: await status(agent), visitor: await status(visitor) };
    step = 'done';
  } catch (e) {
    problems.push(`${step}: ${e.message.split('\n')[0]}`);
    // Leave no call behind: the agent would stay busy for the next run.
    await endCall(pages.visitor).catch(() => {});
  }
  // One line per side, also after a failure (what each page heard helps most then).
  for (const side of ['agent', 'visitor']) {
    if (!pages[side]) continue;
    const at = (field) => [first[side]?.[field] ?? null, second[side]?.[field] ?? null];
    out({
      side,
      framesDecoded: at('framesDecoded'),
      audioPacketsReceived: at('audioPacketsReceived'),
      videoPacketsReceived: at('videoPacketsReceived'),
      videoPacketsReported: at('videoPacketsReported'),
      at_ms: at('t'),
      candidate: second[side]?.candidate ?? null,
      status: await status(pages[side]).catch(() => null),
      events: (await events(pages[side]).catch(() => [])).map((e) => e.type),
    });
  }
  await browser.close().catch(() => {});
  const ok = problems.length === 0;
  out({ ok, ...figures, ...(ok ? {} : { failed_at: step, problems }) });
  return ok;
}

/** The agent console takes a call from a visitor that another program plays. */
async function agentOnly(cfg, agent, figures, problems, first, second, pages, browser) {
  let step = 'agent_ready';
  try {
    out({ phase: 'agent_ready' });
    step = 'agent accepts';
    await agent.locator('[data-testid=fd-ring]').waitFor({ state: 'visible', timeout: 60000 });
    await agent.locator('[data-testid=fd-accept]').click();
    step = 'media flows';
    await waitFor('video decoded and audio received', async () => {
      const s = await sample(agent);
      return s && s.framesDecoded > 0 && s.audioPacketsReceived > 0;
    }, 20000);
    first.agent = await sample(agent);
    await sleep(cfg.seconds * 1000);
    second.agent = await sample(agent);
    if (!(second.agent.framesDecoded > first.agent.framesDecoded)) problems.push('agent: video stopped');
    if (!(second.agent.audioPacketsReceived > first.agent.audioPacketsReceived)) problems.push('agent: audio stopped');
    figures.fps = { agent: rate(first.agent, second.agent, 'framesDecoded') };
    step = 'the visitor ends the call';
    await waitFor('call_ended', () => hasEvent(agent, 'call_ended'), 60000);
  } catch (e) {
    problems.push(`${step}: ${e.message.split('\n')[0]}`);
  }
  const at = (field) => [first.agent?.[field] ?? null, second.agent?.[field] ?? null];
  out({
    side: 'agent',
    framesDecoded: at('framesDecoded'),
    audioPacketsReceived: at('audioPacketsReceived'),
    candidate: second.agent?.candidate ?? null,
    events: (await events(agent).catch(() => [])).map((e) => e.type),
  });
  await browser.close().catch(() => {});
  const ok = problems.length === 0;
  out({ ok, ...figures, ...(ok ? {} : { failed_at: step, problems }) });
  void pages;
  return ok;
}

async function endCall(page) {
  if (!page) return;
  const end = page.locator('[data-testid=fd-end]');
  if (!(await end.isVisible())) return;
  await end.click({ timeout: 2000 });
  await waitFor('call_ended after a failure', () => hasEvent(page, 'call_ended'), 5000);
}

// What the visitor types into the card and password fields (and the toggled password).
const CARD = '4242 4242 4242 4242';
const SECRETS = ['4242 4242', '42424242', 'hunter2'];

/** The agent's co-browse viewer document (the sandboxed iframe; same origin, no scripts). */
function viewerValue(agent, id) {
  return agent.evaluate((id) => {
    const frame = document.querySelector('#fd-cobrowse iframe');
    const doc = frame && frame.contentDocument;
    const el = doc && doc.getElementById(id);
    return el ? { value: el.value, masked: el.hasAttribute('data-fd-masked') } : null;
  }, id);
}

/**
 * The visitor types into the checkout form; the agent's viewer shows the name and masks the
 * card and the password; no frame the agent page received holds a secret. Then scripted
 * browsing measures the co-browse traffic to the agent.
 */
async function cobrowse(agent, visitor, agentFrames, cfg, problems) {
  const figures = {};
  await waitFor('the viewer to show the page', async () => (await viewerValue(agent, 'name')) !== null, 15000);
  const t0 = Date.now();
  await visitor.locator('#name').pressSequentially('Ada Lovelace', { delay: 20 });
  await visitor.locator('#card').pressSequentially(CARD, { delay: 20 });
  await visitor.locator('#password').pressSequentially('hunter2-typed', { delay: 20 });
  // "Show password", then more typing: the field stays masked (sticky on the server).
  await visitor.evaluate(() => {
    document.getElementById('password').type = 'text';
  });
  await visitor.locator('#password').fill('hunter2-shown');
  await waitFor('the typed name in the viewer', async () => (await viewerValue(agent, 'name'))?.value === 'Ada Lovelace', 10000);
  figures.cobrowse_typing_to_viewer_ms = Date.now() - t0;
  await sleep(500);
  const seen = {};
  for (const id of ['name', 'card', 'password']) seen[id] = await viewerValue(agent, id);
  figures.cobrowse_viewer = seen;
  for (const id of ['card', 'password']) {
    const v = seen[id];
    if (!v || !v.masked) problems.push(`co-browse: #${id} is not masked in the viewer (${JSON.stringify(v)})`);
    if (v && SECRETS.some((s) => v.value.includes(s))) problems.push(`co-browse: #${id} shows a secret in the viewer`);
  }
  // Nothing in the viewer can run: it is sandboxed without allow-scripts.
  const sandbox = await agent.evaluate(() => document.querySelector('#fd-cobrowse iframe')?.getAttribute('sandbox'));
  figures.cobrowse_sandbox = sandbox;
  if (sandbox === null || sandbox.includes('allow-scripts')) problems.push(`co-browse: viewer iframe sandbox is ${JSON.stringify(sandbox)}`);

  // Scripted browsing: what a minute of an interactive page costs the agent's link.
  const before = agentFrames.cobrowseBytes;
  const start = Date.now();
  const end = start + cfg.cobrowseSeconds * 1000;
  let i = 0;
  while (Date.now() < end) {
    i += 1;
    await visitor.mouse.move(100 + ((i * 37) % 600), 100 + ((i * 53) % 400), { steps: 4 });
    if (i % 5 === 0) await visitor.mouse.wheel(0, i % 10 === 0 ? -300 : 300);
    if (i % 7 === 0) await visitor.locator('#email').pressSequentially('a', { delay: 30 });
    if (i % 11 === 0) {
      await visitor.evaluate((n) => {
        const p = document.querySelectorAll('.product')[n % 3];
        document.querySelectorAll('.product').forEach((e) => e.classList.remove('picked'));
        p.classList.add('picked');
      }, i);
    }
    await sleep(100);
  }
  const seconds = (Date.now() - start) / 1000;
  figures.cobrowse_kb_per_min = Math.round((((agentFrames.cobrowseBytes - before) / 1000) * 60 * 10) / seconds) / 10;
  figures.cobrowse_frames_to_agent = agentFrames.count;
  if (agentFrames.leaks.length) problems.push(`co-browse: secrets reached the agent's page: ${[...new Set(agentFrames.leaks)].join(', ')}`);
  figures.cobrowse_leaks = agentFrames.leaks.length;
  return figures;
}

function rate(a, b, field) {
  const ms = b.t - a.t;
  return ms > 0 ? Math.round(((b[field] - a[field]) * 10000) / ms) / 10 : 0;
}

/** The visitor page restarts ICE; how long until video is decoded again after it completed. */
async function forcedRestart(agent, visitor, problems) {
  const t0 = Date.now();
  await visitor.evaluate(() => window.__frontdesk.restart());
  await waitFor('the restart to complete', async () => (await visitor.evaluate(() => window.__frontdesk.media.lastRestart?.connectedAt)) !== undefined, 20000);
  const tDone = Date.now();
  const after = { agent: await sample(agent), visitor: await sample(visitor) };
  const grew = async (page, side) => {
    const s = await sample(page);
    return s && s.framesDecoded > after[side].framesDecoded;
  };
  await waitFor('video decoded again on both sides', async () => (await grew(agent, 'agent')) && grew(visitor, 'visitor'), 10000);
  const tFlow = Date.now();
  const inPage = await visitor.evaluate(() => {
    const r = window.__frontdesk.media.lastRestart;
    return { attempt: r.attempt, offer_to_answer_ms: Math.round(r.answerAt - r.offerAt), answer_to_connected_ms: Math.round(r.connectedAt - r.answerAt) };
  });
  // protocol.md: both sides hear media_reconnecting, then media_reconnected.
  try {
    await waitFor('media_reconnecting and media_reconnected on both sides', async () => {
      for (const page of [agent, visitor]) {
        if (!(await hasEvent(page, 'media_reconnecting', t0)) || !(await hasEvent(page, 'media_reconnected', t0))) return false;
      }
      return true;
    }, 10000);
  } catch (e) {
    problems.push(`restart: ${e.message}`);
  }
  return { restart_ms: tFlow - t0, restart_complete_ms: tDone - t0, restart_detail: inPage };
}

/**
 * Tells the runner the call is flowing, then waits for video to stall on either side (the
 * runner changed the path) and to flow again on both; measures the outage.
 */
async function pathChange(agent, visitor, seconds) {
  out({ phase: 'flowing' });
  const last = {};
  const lastGrowth = {};
  const poll = async () => {
    const now = Date.now();
    for (const [side, page] of [['agent', agent], ['visitor', visitor]]) {
      const s = await sample(page);
      const f = s ? s.framesDecoded : 0;
      if (last[side] === undefined || f > last[side]) lastGrowth[side] = now;
      last[side] = f;
    }
    return now;
  };
  await poll();
  const stalledSince = await waitFor('video to stall (the path change)', async () => {
    const now = await poll();
    const oldest = Math.min(lastGrowth.agent, lastGrowth.visitor);
    return now - oldest >= 1000 ? oldest : null;
  }, seconds * 1000 + 30000);
  const recovered = await waitFor('video to flow again on both sides', async () => {
    await poll();
    return lastGrowth.agent > stalledSince + 1000 && lastGrowth.visitor > stalledSince + 1000 ? Math.max(lastGrowth.agent, lastGrowth.visitor) : null;
  }, 60000);
  const restarts = {};
  for (const [side, page] of [['agent', agent], ['visitor', visitor]]) {
    restarts[side] = await page.evaluate(() => {
      const r = window.__frontdesk.media.lastRestart;
      return r && {
        reason: r.reason,
        attempt: r.attempt,
        connected: r.connectedAt !== undefined,
        restart_to_connected_ms: r.connectedAt !== undefined ? Math.round(r.connectedAt - r.requestedAt) : null,
      };
    });
  }
  return { outage_ms: recovered - stalledSince, restarts };
}

const deadline = setTimeout(() => {
  out({ ok: false, problems: ['the harness ran out of time'] });
  process.exit(2);
}, 10 * 60 * 1000);

main().then(
  (ok) => {
    clearTimeout(deadline);
    process.exit(ok ? 0 : 1);
  },
  (e) => {
    out({ ok: false, problems: [e.message] });
    process.exit(1);
  },
);
