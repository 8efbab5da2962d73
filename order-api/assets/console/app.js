// The operator console: sign-in, navigation and hash routing
// (#/overview, #/failures?…, #/failures/<id>, #/reasons?…, #/orders,
// #/orders/<id>), so that pages are linkable; the token is never in the URL.
import { api, clearToken, setToken, token, whenUnauthorized } from './api.js';
import { h, replace, setUpDialog } from './dom.js';
import { failureDetail, failuresPage, reasonsPage } from './failures.js';
import { orderDetail, ordersPage } from './orders.js';
import { overviewPage } from './overview.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const roleLabel = document.getElementById('role');

/** Who is signed in: { role, mayAct }, or null. */
let ctx = null;
/** Stops what the current page runs (timers), if anything. */
let leave = null;

const roles = {
  operator: 'operator',
  read_only: 'read-only token',
};

/** The sign-in form, with `message` (a problem, or `info`: a plain note). */
function signedOut(message, kind = 'error') {
  clearToken();
  ctx = null;
  nav.hidden = true;
  who.hidden = true;
  stopPage();
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false',
  });
  const error = h('p', { class: `result ${kind}`, role: 'alert', hidden: !message }, message ?? '');
  const form = h('form', { class: 'sign-in', 'aria-labelledby': 'sign-in-title' },
    h('h1', { id: 'sign-in-title' }, 'Sign in'),
    h('p', {}, 'Paste the operator token (api.admin_token) or the read-only token (api.readonly_token). '
      + 'It is kept for this tab only and sent to the API as a bearer token.'),
    h('label', { for: 'token' }, 'Token'),
    input,
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')),
    error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    error.hidden = true;
    setToken(value);
    const problem = await identify();
    if (problem) {
      clearToken();
      error.hidden = false;
      error.className = 'result error';
      error.textContent = problem;
      input.focus();
    } else {
      input.value = '';
      route();
    }
  });
  replace(main, form);
  input.focus();
}

/** Asks the API who the token is; returns a problem to show, or null. */
async function identify() {
  let me;
  try {
    me = await api('me', { quietUnauthorized: true });
  } catch (e) {
    if (e.status === 401) return `The API refused this token: ${e.message}`;
    return `Cannot reach the API (${e.status ?? 'network'}): ${e.message}`;
  }
  if (me.role !== 'operator' && me.role !== 'read_only') {
    const whose = me.role === 'user' ? `an end user's token (user ${me.user_id})` : 'no operator token';
    return `This is ${whose}: the console needs the operator token or the read-only token.`;
  }
  ctx = { role: me.role, mayAct: Boolean(me.may_act) && me.role === 'operator' };
  roleLabel.textContent = `Signed in: ${roles[me.role]}`;
  nav.hidden = false;
  who.hidden = false;
  document.body.classList.toggle('read-only', !ctx.mayAct);
  return null;
}

function stopPage() {
  if (leave) leave();
  leave = null;
}

/** The current hash as a path and its query. */
function location_() {
  const raw = location.hash.replace(/^#/, '') || '/overview';
  const [path, query = ''] = raw.split('?');
  return { path, query: new URLSearchParams(query) };
}

/** A note for the sign-in form the next route draws (signing out). */
let pendingNote = null;

async function route() {
  if (!token()) {
    const note = pendingNote ?? [];
    pendingNote = null;
    return signedOut(...note);
  }
  if (!ctx) {
    const problem = await identify();
    if (problem) return signedOut(problem);
  }
  stopPage();
  const { path, query } = location_();
  const parts = path.split('/').filter(Boolean);
  for (const a of nav.querySelectorAll('a')) {
    const current = a.getAttribute('href') === `#/${parts[0] ?? 'overview'}`;
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = h('div', { class: 'page' });
  replace(main, view);
  const pages = {
    overview: () => overviewPage(view, ctx),
    failures: () => (parts[1] ? failureDetail(view, ctx, parts[1]) : failuresPage(view, ctx, query)),
    reasons: () => reasonsPage(view, ctx, query),
    orders: () => (parts[1] ? orderDetail(view, ctx, parts[1]) : ordersPage(view, ctx, query)),
  };
  const page = pages[parts[0]];
  if (!page) {
    replace(view, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/overview' }, 'Overview')));
    return;
  }
  leave = page() ?? null;
  if (typeof leave?.then === 'function') leave = null; // an async page has no timers
  const heading = view.querySelector('h1');
  if (heading) document.title = `${heading.textContent} · Order Service console`;
}

setUpDialog();
document.getElementById('sign-out').addEventListener('click', () => {
  const note = ['Signed out: the token is forgotten.', 'info'];
  clearToken();
  if (location.hash === '#/overview') {
    signedOut(...note);
  } else {
    // The route the hash change runs draws the form, with the note.
    pendingNote = note;
    location.hash = '#/overview';
  }
});
// The skip link moves the focus; it is not a page.
document.querySelector('a.skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});
whenUnauthorized((e) => signedOut(`The API no longer accepts this token: ${e.message}`));
window.addEventListener('hashchange', () => {
  route();
  main.focus({ preventScroll: true });
});
route();
