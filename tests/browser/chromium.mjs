// What every browser harness here shares: how Chromium is started on this machine, and the
// small helpers of a harness that prints JSON lines.
//
// Debian's /usr/bin/chromium, headless; background networking off (the machine's closed network
// refuses Chromium's own connections, many at a time); a fresh profile per launch.

import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';

export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Fake camera and microphone, granted without a prompt, playing without a gesture. */
export const MEDIA_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];

/** Starts Debian's Chromium with CHROMIUM_ARGS and `extra`. */
export function launch(extra = []) {
  return chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: [...CHROMIUM_ARGS, ...extra] });
}

export const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A JSON config given inline or as a file name (argv[2] of the harnesses). */
export function readJsonArg(arg, usage) {
  if (!arg) throw new Error(`usage: ${usage}`);
  return JSON.parse(arg.trim().startsWith('{') ? arg : readFileSync(arg, 'utf8'));
}
