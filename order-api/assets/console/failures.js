// Failures: the filtered, paged list; reasons grouped; one failure's whole
// record with its message shown safely and its retry history; retrying one
// or every match of a filter, resolving by hand. Message bodies and reasons
// are an attacker's (poison messages): they only ever become text.
import { api, searchParams } from './api.js';
import {
  confirmAction, errorLine, errorText, facts, h, link, readOnlyNote, replace, resultBox, say, table, time,
} from './dom.js';

const PAGE_SIZE = 50;
const FILTERS = ['status', 'source', 'retryable', 'from', 'to', 'q', 'reason'];
const STATUSES = ['pending', 'processing', 'success', 'failed', 'resolved'];
const SOURCES = ['rabbitmq', 'kafka', 'api', 'compensator'];

/** The filter of a hash query: only the known keys, only non-empty values. */
function filterOf(query) {
  const filter = {};
  for (const key of FILTERS) {
    const value = query.get(key);
    if (value) filter[key] = value;
  }
  return filter;
}

function hashOf(path, filter, extra = {}) {
  const qs = searchParams({ ...filter, ...extra });
  return `#/${path}${qs ? `?${qs}` : ''}`;
}

function select(id, label, options, value) {
  return [
    h('label', { for: id }, label),
    h('select', { id, name: id },
      h('option', { value: '' }, 'any'),
      options.map((o) => h('option', { value: o, selected: o === value }, o))),
  ];
}

/** The filter form; `onApply` gets the new filter. */
function filterForm(filter, onApply) {
  const field = (id, label, type, extra = {}) => h('div', { class: 'field' },
    h('label', { for: id }, label),
    h('input', { id, name: id, type, value: filter[id] ?? '', ...extra }));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter failures' },
    h('div', { class: 'field' }, select('status', 'Status', STATUSES, filter.status)),
    h('div', { class: 'field' }, select('source', 'Source', SOURCES, filter.source)),
    h('div', { class: 'field' }, select('retryable', 'Retryable', ['true', 'false'], filter.retryable)),
    field('from', 'From (day, UTC)', 'date'),
    field('to', 'To (day, UTC)', 'date'),
    field('q', 'Search reason or message', 'search', { maxlength: '200' }),
    field('reason', 'Reason group (exact)', 'text'),
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', class: 'primary' }, 'Apply'),
      h('button', { type: 'button', onclick: () => onApply({}) }, 'Clear')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const next = {};
    for (const key of FILTERS) {
      const v = String(data.get(key) ?? '').trim();
      if (v) next[key] = v;
    }
    onApply(next);
  });
  return form;
}

function failureRow(f) {
  return {
    href: `#/failures/${f.id}`,
    cells: [
      link(`#/failures/${f.id}`, String(f.id)),
      time(f.created_at),
      f.source,
      h('span', { class: `badge ${f.status}` }, f.status),
      f.retryable ? 'yes' : 'no',
      String(f.retry_count),
      h('span', { class: 'reason' }, f.error_message),
    ],
  };
}

/** #/failures?…: the list, paged, with bulk retry of the filter. */
export function failuresPage(view, ctx, query) {
  const filter = filterOf(query);
  const page = Math.max(1, Number.parseInt(query.get('page') ?? '1', 10) || 1);
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const result = resultBox();
  replace(view,
    h('h1', {}, 'Failures'),
    filterForm(filter, (next) => { location.hash = hashOf('failures', next); }),
    h('p', { class: 'links' },
      link(hashOf('reasons', filter), 'Group these by reason')),
    bulkRetry(ctx, filter, result, () => load()),
    result,
    list);

  async function load() {
    try {
      const data = await api('failures', { query: { ...filter, page, pageSize: PAGE_SIZE } });
      // A search counts up to 10,000: past that, "Older" stays on while pages are full.
      const pages = data.total_capped && data.items.length === data.page_size
        ? page + 1
        : Math.max(1, Math.ceil(data.total / data.page_size));
      const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of failures' },
        h('button', {
          type: 'button', disabled: page <= 1, onclick: () => { location.hash = hashOf('failures', filter, { page: page - 1 }); },
        }, 'Newer'),
        h('span', {}, data.total_capped
          ? `Page ${data.page} · more than ${data.total} failures`
          : `Page ${data.page} of ${pages} · ${data.total} failures`),
        h('button', {
          type: 'button', disabled: page >= pages, onclick: () => { location.hash = hashOf('failures', filter, { page: page + 1 }); },
        }, 'Older'));
      replace(list,
        data.items.length === 0
          ? h('p', { class: 'empty' }, 'No failure matches this filter.')
          : table('Failures', ['Id', 'Created', 'Source', 'Status', 'Retryable', 'Retries', 'Reason'],
            data.items.map(failureRow), { rowAction: true }),
        pager);
    } catch (e) {
      replace(list, errorLine(e));
    }
  }
  load();
}

/** The bulk-retry control: a dry run first, then the real one, confirmed. */
function bulkRetry(ctx, filter, result, reload) {
  // As the API: a status to retry, and never poison failures only.
  const eligible = (filter.status === 'pending' || filter.status === 'failed') && filter.retryable !== 'false';
  const limit = h('input', {
    id: 'bulk-limit', type: 'number', min: '1', max: '1000', value: '100', inputmode: 'numeric',
  });
  const button = h('button', {
    type: 'button', class: 'action', disabled: !ctx.mayAct || !eligible,
  }, 'Retry matching failures…');
  button.addEventListener('click', async () => {
    const body = {
      status: filter.status,
      limit: Number.parseInt(limit.value, 10) || 100,
      source: filter.source,
      from: filter.from,
      to: filter.to,
      q: filter.q,
      reason: filter.reason,
      retryable: filter.retryable === 'true' ? true : undefined,
    };
    for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
    let dry;
    try {
      dry = await api('failures/retry', { method: 'POST', body: { ...body, dry_run: true } });
    } catch (e) {
      say(result, 'error', errorText(e));
      return;
    }
    const what = describeFilter(filter);
    const ok = await confirmAction({
      title: 'Retry matching failures',
      body: [
        h('p', { class: 'count' }, `${dry.matched} failures match; up to ${dry.limit} will be retried now.`),
        h('p', {}, `Filter: ${what}.`),
        h('p', {}, 'Each is retried through the order-creation path; a valid message becomes an order.'),
      ],
      confirm: `Retry up to ${Math.min(dry.matched, dry.limit)}`,
    });
    if (!ok) {
      say(result, 'info', 'Bulk retry cancelled; nothing was retried.');
      return;
    }
    try {
      const r = await api('failures/retry', { method: 'POST', body: { ...body, dry_run: false } });
      say(result, r.failed || r.refused ? 'info' : 'ok',
        h('p', { class: 'summary' },
          `Bulk retry: attempted ${r.attempted}, succeeded ${r.succeeded}, failed ${r.failed}, refused ${r.refused}.`),
        r.results?.length
          ? table('Bulk retry results', ['Failure', 'Outcome', 'Order', 'Reason'], r.results.map((x) => ({
            cells: [link(`#/failures/${x.id}`, String(x.id)), x.outcome,
              x.order_id ? link(`#/orders/${x.order_id}`, x.order_id) : '—', x.reason ?? '—'],
          })))
          : null);
      reload();
    } catch (e) {
      say(result, 'error', errorText(e));
    }
  });
  return h('div', { class: 'bulk' },
    h('div', { class: 'field inline' }, h('label', { for: 'bulk-limit' }, 'At most'), limit),
    button,
    h('p', { class: 'note' }, eligible
      ? 'Retries every retryable failure matching the filter above (a dry run counts them first).'
      : filter.retryable === 'false'
        ? 'Poison failures (retryable: no) are never retried: resolve them by hand.'
        : 'Bulk retry needs the status filter set to pending or failed: the API refuses any other.'),
    readOnlyNote(ctx));
}

function describeFilter(filter) {
  const parts = Object.entries(filter).map(([k, v]) => `${k} = ${v}`);
  return parts.length ? parts.join(', ') : 'none';
}

/** #/reasons?…: the reasons of the filtered failures, grouped. */
export function reasonsPage(view, ctx, query) {
  const filter = filterOf(query);
  const { reason: _ignored, ...rest } = filter;
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  replace(view,
    h('h1', {}, 'Failure reasons'),
    filterForm(rest, (next) => { location.hash = hashOf('reasons', next); }),
    h('p', { class: 'links' }, link(hashOf('failures', rest), 'Back to the list')),
    list);
  (async () => {
    try {
      const data = await api('failures/reasons', { query: { ...rest, limit: 100 } });
      replace(list,
        h('p', {}, `${data.total} failures in ${data.groups.length} reason groups. Choose one to list its failures.`),
        h('ul', { class: 'groups', 'aria-label': 'Reason groups' },
          data.groups.map((g) => h('li', {},
            h('a', { href: hashOf('failures', { ...rest, reason: g.reason }) },
              h('span', { class: 'count' }, `${g.count} ×`), ' ', h('span', { class: 'reason' }, g.reason))))));
    } catch (e) {
      replace(list, errorLine(e));
    }
  })();
}

/** The bytes of standard base64. */
function bytesOf(base64) {
  const raw = atob(base64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** A hex dump: offset, 16 bytes in hex, printable ASCII. */
export function hexDump(bytes) {
  const lines = [];
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const row = bytes.slice(offset, offset + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${offset.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  return lines.join('\n');
}

/** The message, safely: text (JSON pretty-printed), or hex and base64. */
function messageView(f) {
  const notes = [];
  notes.push(`${f.message_size} bytes as received; kept as ${f.message_encoding}.`);
  if (f.message_truncated) {
    notes.push(' Truncated: only the first bytes were kept, not the whole message.');
  }
  const parts = [h('p', { class: 'note' }, notes.join(''))];
  if (f.message_encoding === 'base64') {
    let dump;
    try {
      dump = hexDump(bytesOf(f.message_data));
    } catch {
      dump = '(not valid base64)';
    }
    parts.push(h('h3', {}, 'Hex dump'), h('pre', { class: 'body', tabindex: '0', 'aria-label': 'Message hex dump' }, dump));
    parts.push(h('h3', {}, 'Base64'), h('pre', { class: 'body', tabindex: '0', 'aria-label': 'Message base64' }, f.message_data));
  } else {
    // The text exactly as received: a poison message is judged on its own
    // characters (1.10 is not 1.1).
    parts.push(h('p', { class: 'muted' }, 'As received'),
      h('pre', { class: 'body', tabindex: '0', 'aria-label': 'Message body' }, f.message_data));
    let pretty = null;
    try {
      pretty = JSON.stringify(JSON.parse(f.message_data), null, 2);
    } catch { /* not JSON: the text alone */ }
    if (pretty !== null && pretty !== f.message_data) {
      parts.push(h('details', {},
        h('summary', {}, 'As JSON, indented (read by the browser: numbers and repeated keys may differ from the text)'),
        h('pre', { class: 'body', tabindex: '0', 'aria-label': 'Message body as indented JSON' }, pretty)));
    }
  }
  return parts;
}

/** #/failures/<id>: everything about one failure, and its actions. */
export function failureDetail(view, ctx, id) {
  const record = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const result = resultBox();
  replace(view, h('h1', {}, `Failure ${id}`), h('p', { class: 'links' }, link('#/failures', 'All failures')), result, record);

  async function load() {
    let f;
    try {
      f = await api(`failures/${encodeURIComponent(id)}`);
    } catch (e) {
      replace(record, errorLine(e));
      return;
    }
    const known = ['id', 'status', 'retryable', 'source', 'retry_count', 'error_message', 'created_at', 'updated_at',
      'next_retry_at', 'locked_until', 'order_id', 'resolution_note', 'message_encoding', 'message_size', 'message_truncated'];
    const shown = (k, v) => {
      if (v === null || v === undefined) return '—';
      if (k.endsWith('_at') || k === 'locked_until') return time(v);
      if (k === 'order_id') return link(`#/orders/${encodeURIComponent(v)}`, v);
      if (typeof v === 'boolean') return v ? 'yes' : 'no';
      if (typeof v === 'object') return JSON.stringify(v);
      return String(v);
    };
    const extra = Object.keys(f).filter((k) => !known.includes(k) && k !== 'message_data' && k !== 'attempts');
    // What the API would allow now: a retry of a pending or failed
    // retryable failure, resolving a pending or failed one.
    const open = f.status === 'pending' || f.status === 'failed';
    // A claim whose lease lapsed (its retrier died) may be retried by hand.
    const lapsed = f.status === 'processing' && f.locked_until && new Date(f.locked_until) < new Date();
    const retryable = (open || lapsed) && f.retryable;
    const actions = h('div', { class: 'actions' },
      h('button', {
        type: 'button', class: 'action', disabled: !ctx.mayAct || !retryable, onclick: () => retryOne(f),
      }, 'Retry now…'),
      h('button', {
        type: 'button', class: 'action', disabled: !ctx.mayAct || !open, onclick: () => resolveOne(f),
      }, 'Resolve by hand…'),
      readOnlyNote(ctx),
      ctx.mayAct && !retryable
        ? h('p', { class: 'note' }, open
          ? 'Not retryable: this message can never become an order; resolve it by hand.'
          : f.status === 'processing'
            ? 'Being retried right now: look again in a moment.'
            : `Nothing to do: the failure is ${f.status}.`)
        : null);
    const attempts = f.attempts ?? [];
    replace(record,
      actions,
      h('section', { 'aria-labelledby': 'record-title' },
        h('h2', { id: 'record-title' }, 'Record'),
        facts('Failure record', [...known, ...extra].map((k) => [k, shown(k, f[k])]))),
      h('section', { 'aria-labelledby': 'message-title' },
        h('h2', { id: 'message-title' }, 'Message'), messageView(f)),
      h('section', { 'aria-labelledby': 'attempts-title' },
        h('h2', { id: 'attempts-title' }, 'Retry history'),
        attempts.length === 0
          ? h('p', { class: 'empty' }, 'Not retried yet.')
          : table('Retry attempts', ['At', 'Outcome', 'Reason', 'Order'], attempts.map((a) => ({
            cells: [time(a.at), a.outcome, a.reason ?? '—', a.order_id ? link(`#/orders/${a.order_id}`, a.order_id) : '—'],
          })))));
  }

  async function retryOne(f) {
    const ok = await confirmAction({
      title: `Retry failure ${f.id}`,
      body: [
        h('p', {}, `Failure ${f.id} (${f.status}, retried ${f.retry_count} times) goes through the order-creation path now.`),
        h('p', {}, 'A valid message becomes an order (or finds the one that exists); an invalid one is marked poison.'),
      ],
      confirm: 'Retry now',
    });
    if (!ok) return;
    try {
      const r = await api(`failures/${f.id}/retry`, { method: 'POST' });
      const good = r.outcome === 'created' || r.outcome === 'duplicate';
      say(result, good ? 'ok' : 'error',
        h('p', { class: 'summary' }, `Retry of failure ${f.id}: ${r.outcome}; status now ${r.failure?.status ?? '?'}.`),
        r.order_id ? h('p', {}, 'Order: ', link(`#/orders/${r.order_id}`, r.order_id)) : null,
        r.reason ? h('p', {}, `Reason: ${r.reason}`) : null);
    } catch (e) {
      say(result, 'error', errorText(e));
    }
    load();
  }

  async function resolveOne(f) {
    const note = h('textarea', { id: 'resolve-note', rows: '3', maxlength: '1000', required: true });
    const ok = await confirmAction({
      title: `Resolve failure ${f.id} by hand`,
      body: [
        h('p', {}, `Failure ${f.id} becomes resolved: it is never retried again and is kept with your note.`),
        h('label', { for: 'resolve-note' }, 'Note (why, what was done)'),
        note,
      ],
      confirm: 'Resolve',
    });
    if (!ok) return;
    try {
      const r = await api(`failures/${f.id}/resolve`, { method: 'POST', body: { note: note.value } });
      const status = r.failure?.status ?? r.status ?? 'resolved';
      say(result, 'ok', `Failure ${f.id} resolved; status now ${status}.`);
    } catch (e) {
      say(result, 'error', errorText(e));
    }
    load();
  }

  load();
}
