// Building the page: elements from data, never HTML from data. Every string
// that comes from the API (message bodies, reasons, notes: poison messages
// are an attacker's) becomes a text node; nothing here parses HTML.

/**
 * An element: h('button', { type: 'button', onclick: f }, 'Retry').
 * Attributes: `class`, `text`, any `on…` handler (a function), `hidden`,
 * `disabled` and other booleans (set when true), everything else with
 * setAttribute. Children: nodes, strings (as text), numbers, arrays, null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'text') {
      el.textContent = String(value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (nodes, text, arrays of them) to `el`. */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Empties `el` and fills it with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A time as the API gives it, shown as UTC without fractions. */
export function time(value) {
  if (!value) return '—';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** A definition list of [label, value] pairs (value: text or node). */
export function facts(label, pairs) {
  return h('dl', { class: 'facts', 'aria-label': label },
    pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v === null || v === undefined ? '—' : v)]));
}

/** A table: headers and rows of cells (text or nodes), scrolling in its own box. */
export function table(caption, headers, rows, { rowAction } = {}) {
  const body = h('tbody');
  for (const row of rows) {
    const tr = h('tr', {}, row.cells.map((c) => h('td', {}, c)));
    if (rowAction && row.href) {
      tr.classList.add('clickable');
      tr.addEventListener('click', (e) => {
        if (e.target.closest('a, button')) return; // the link handles itself
        location.hash = row.href;
      });
    }
    body.append(tr);
  }
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': caption, tabindex: '0' },
    h('table', {},
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      body));
}

/**
 * The outcome of an action, in a live region: `kind` is ok, error or info.
 * Replaces what `box` showed before.
 */
export function say(box, kind, ...content) {
  box.className = `result ${kind}`;
  box.hidden = false;
  replace(box, ...content);
}

/** A live region for outcomes, empty and hidden until something is said. */
export function resultBox() {
  return h('div', { class: 'result', role: 'status', 'aria-live': 'polite', hidden: true });
}

/** An API error as a line of text: status and the API's own message. */
export function errorText(e) {
  if (e && e.status) return `${e.status} ${e.statusText || ''}: ${e.message}`.replace(' :', ':');
  return `The request failed: ${e?.message ?? e}`;
}

/** A page part that could not load: the error's line, announced. */
export function errorLine(e) {
  return h('p', { class: 'result error', role: 'alert' }, errorText(e));
}

let confirming = null;

/**
 * Asks in the page's modal dialog (focus stays inside it, Escape cancels):
 * resolves true on Confirm, false otherwise. `body` is nodes or text
 * describing exactly what will happen.
 */
export function confirmAction({ title, body, confirm = 'Confirm' }) {
  const dialog = document.getElementById('confirm');
  replace(document.getElementById('confirm-title'), title);
  replace(document.getElementById('confirm-body'), body);
  document.getElementById('confirm-ok').textContent = confirm;
  confirming?.(false);
  return new Promise((resolve) => {
    confirming = (answer) => {
      confirming = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    dialog.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

/** Wires the dialog's buttons once. */
export function setUpDialog() {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-form').addEventListener('submit', (e) => {
    e.preventDefault();
    confirming?.(true);
  });
  document.getElementById('confirm-cancel').addEventListener('click', () => confirming?.(false));
  // Escape (the browser's cancel) and any other close: not confirmed.
  dialog.addEventListener('close', () => confirming?.(false));
}

/** A note that actions are off for this token, or nothing. */
export function readOnlyNote(ctx) {
  return ctx.mayAct ? null : h('p', { class: 'note' }, 'read-only token: it may look, not act');
}

/** A link to a page of the console. */
export function link(hash, text) {
  return h('a', { href: hash }, text);
}
