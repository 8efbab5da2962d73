// Orders: look one up by id, or list a user's; cancel or change the status
// of one (confirmed first, the API's refusal shown as it says it); the
// order's events from the outbox.
import { api, searchParams } from './api.js';
import {
  confirmAction, errorLine, errorText, facts, h, link, readOnlyNote, replace, resultBox, say, table, time,
} from './dom.js';

const PAGE_SIZE = 20;
const TARGETS = ['completed', 'cancelled', 'failed'];

function lookups(userValue = '') {
  const orderInput = h('input', { id: 'order-id', name: 'order-id', type: 'text', spellcheck: 'false', required: true });
  const byId = h('form', { class: 'lookup', role: 'search', 'aria-label': 'Look up an order' },
    h('label', { for: 'order-id' }, 'Order id'),
    orderInput,
    h('button', { type: 'submit', class: 'primary' }, 'Look up'));
  byId.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = orderInput.value.trim();
    if (id) location.hash = `#/orders/${encodeURIComponent(id)}`;
  });
  const userInput = h('input', {
    id: 'user-id', name: 'user-id', type: 'number', min: '1', value: userValue, inputmode: 'numeric', required: true,
  });
  const byUser = h('form', { class: 'lookup', role: 'search', 'aria-label': "List a user's orders" },
    h('label', { for: 'user-id' }, 'User id'),
    userInput,
    h('button', { type: 'submit', class: 'primary' }, 'List orders'));
  byUser.addEventListener('submit', (e) => {
    e.preventDefault();
    const user = userInput.value.trim();
    if (user) location.hash = `#/orders?${searchParams({ user })}`;
  });
  return h('div', { class: 'lookups' }, byId, byUser);
}

function orderRow(o) {
  return {
    href: `#/orders/${o.order_id}`,
    cells: [link(`#/orders/${encodeURIComponent(o.order_id)}`, o.order_id), time(o.created_at),
      h('span', { class: `badge ${o.status}` }, o.status), String(o.user_id), String(o.product_id),
      String(o.quantity), o.total_amount],
  };
}

/** #/orders[?user=N&page=P]: the look-ups, and a user's orders. */
export function ordersPage(view, ctx, query) {
  const user = query.get('user') ?? '';
  const page = Math.max(1, Number.parseInt(query.get('page') ?? '1', 10) || 1);
  const list = h('div');
  replace(view, h('h1', {}, 'Orders'), lookups(user), list);
  if (!user) return;
  (async () => {
    replace(list, h('p', { class: 'muted' }, 'Loading…'));
    try {
      const data = await api(`users/${encodeURIComponent(user)}/orders`, { query: { page, pageSize: PAGE_SIZE } });
      const pages = Math.max(1, Math.ceil(data.total / data.page_size));
      const go = (p) => { location.hash = `#/orders?${searchParams({ user, page: p })}`; };
      replace(list,
        h('h2', {}, `Orders of user ${user}`),
        data.items.length === 0
          ? h('p', { class: 'empty' }, 'This user has no orders.')
          : table(`Orders of user ${user}`, ['Order', 'Created', 'Status', 'User', 'Product', 'Quantity', 'Total'],
            data.items.map(orderRow), { rowAction: true }),
        h('nav', { class: 'pager', 'aria-label': 'Pages of orders' },
          h('button', { type: 'button', disabled: page <= 1, onclick: () => go(page - 1) }, 'Newer'),
          h('span', {}, `Page ${data.page} of ${pages} · ${data.total} orders`),
          h('button', { type: 'button', disabled: page >= pages, onclick: () => go(page + 1) }, 'Older')));
    } catch (e) {
      replace(list, errorLine(e));
    }
  })();
}

/** #/orders/<id>: one order, its items, its events, and its actions. */
export function orderDetail(view, ctx, id) {
  const record = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const events = h('div');
  const result = resultBox();
  replace(view, h('h1', {}, 'Order'), lookups(), h('p', { class: 'mono' }, id), result, record, events);

  async function load() {
    let o;
    try {
      o = await api(`orders/${encodeURIComponent(id)}`);
    } catch (e) {
      replace(record, errorLine(e));
      replace(events);
      return;
    }
    const target = h('select', { id: 'new-status', name: 'new-status' },
      TARGETS.map((s) => h('option', { value: s }, s)));
    replace(record,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'action', disabled: !ctx.mayAct, onclick: () => cancel(o) }, 'Cancel order…'),
        h('span', { class: 'field inline' }, h('label', { for: 'new-status' }, 'New status'), target),
        h('button', {
          type: 'button', class: 'action', disabled: !ctx.mayAct, onclick: () => setStatus(o, target.value),
        }, 'Change status…'),
        readOnlyNote(ctx)),
      facts('Order', [
        ['Order id', o.order_id], ['Status', o.status], ['User', link(`#/orders?user=${o.user_id}`, String(o.user_id))],
        ['Product', String(o.product_id)], ['Quantity', String(o.quantity)], ['Unit price', o.unit_price],
        ['Total', o.total_amount], ['Seckill', o.seckill_id], ['Created', time(o.created_at)],
        ['Updated', time(o.updated_at)], ['Version', String(o.version)],
      ]),
      h('h2', {}, 'Items'),
      table('Items', ['Product', 'Name', 'Quantity', 'Unit price', 'Total'], (o.items ?? []).map((i) => ({
        cells: [String(i.product_id), i.product_name ?? '—', String(i.quantity), i.unit_price, i.total_price],
      }))));
    try {
      const page = await api('events', { query: { orderId: o.order_id, pageSize: 100 } });
      replace(events, h('h2', {}, 'Events'),
        page.items.length === 0
          ? h('p', { class: 'empty' }, 'No events (or they were purged after publishing).')
          : table('Events', ['Seq', 'Type', 'Status', 'Written', 'Published', 'Attempts', 'Last error'],
            page.items.map((e) => ({
              cells: [String(e.seq), e.event_type, e.status, time(e.created_at), time(e.published_at),
                String(e.attempts), e.last_error ?? '—'],
            }))));
    } catch (e) {
      replace(events, h('h2', {}, 'Events'), errorLine(e));
    }
  }

  async function cancel(o) {
    const ok = await confirmAction({
      title: 'Cancel order',
      body: [h('p', {}, `Order ${o.order_id} (${o.status}) becomes cancelled. `
        + 'Only a pending order can be cancelled; the seckill service gets its unit back.')],
      confirm: 'Cancel the order',
    });
    if (!ok) return;
    await change(() => api(`orders/${encodeURIComponent(o.order_id)}/cancel`, { method: 'PUT' }));
  }

  async function setStatus(o, status) {
    const ok = await confirmAction({
      title: 'Change order status',
      body: [h('p', {}, `Order ${o.order_id} goes from ${o.status} to ${status}. `
        + 'Only a pending order may change; completed, cancelled and failed are final.')],
      confirm: `Set ${status}`,
    });
    if (!ok) return;
    await change(() => api(`orders/${encodeURIComponent(o.order_id)}/status`, { method: 'PUT', body: { status } }));
  }

  async function change(call) {
    try {
      const o = await call();
      say(result, 'ok', `Done: order ${o.order_id} is ${o.status}.`);
    } catch (e) {
      say(result, 'error', errorText(e));
    }
    load();
  }

  load();
}
