// Agent sign-in: keep a pasted token (or one given as `#token=...`) and open the console.
import { jwtClaims } from './rtc.js';

const TOKEN_KEY = 'frontdesk.agent_token';
const REASONS = {
  invalid_token: 'That token was not accepted. Paste a valid agent token.',
  token_expired: 'Your token has expired. Paste a new one.',
  not_an_agent: 'That user is not an agent of the organization named in the token.',
};

const form = document.getElementById('fd-login');
const field = document.getElementById('fd-token');
const reason = document.getElementById('fd-login-reason');

function say(text) {
  reason.textContent = text;
  reason.hidden = !text;
}

/** Stores the token and opens the console; explains instead when it cannot be a valid one. */
function signIn(raw) {
  const token = raw.trim();
  const claims = jwtClaims(token);
  if (!claims) return say(REASONS.invalid_token);
  if (typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now()) return say(REASONS.token_expired);
  localStorage.setItem(TOKEN_KEY, token);
  location.replace('/agent');
}

const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.has('token')) {
  // Keep the token out of the history and of anything that reads the URL later.
  history.replaceState(null, '', location.pathname + location.search);
  signIn(fragment.get('token'));
} else {
  say(REASONS[new URLSearchParams(location.search).get('reason')] || '');
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  signIn(field.value);
});
