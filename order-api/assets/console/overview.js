// Overview: today's orders (UTC) by status and amounts, the failure ledger by
// status, the ingest rate, and a chart of the last 14 days; refreshed every
// 5 seconds.
import { api, daysBefore, todayUtc } from './api.js';
import { errorText, facts, h, replace, table } from './dom.js';

const REFRESH_MS = 5000;
const STATUSES = ['pending', 'completed', 'cancelled', 'failed'];
const FAILURE_STATUSES = ['pending', 'processing', 'success', 'failed', 'resolved'];
const COLOURS = { pending: '#b26b00', completed: '#1b7f3b', cancelled: '#6b6b6b', failed: '#b3261e' };

function section(id, title, ...content) {
  return h('section', { class: 'card', 'aria-labelledby': id },
    h('h2', { id }, title), ...content);
}

export function overviewPage(view, ctx) {
  const today = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const failures = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const rate = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const chartBox = h('div', { class: 'chart', role: 'img', 'aria-label': 'Orders per day, last 14 days, by status' });
  const chartTable = h('details', {}, h('summary', {}, 'The chart as a table'));
  const status = h('p', { class: 'muted refreshed', role: 'status' });
  replace(view,
    h('h1', {}, 'Overview'),
    status,
    h('div', { class: 'grid' },
      section('today-title', "Today's orders (UTC)", today),
      section('failures-title', 'Failures by status', failures),
      section('rate-title', 'Ingest', rate)),
    section('chart-title', 'Orders per day, last 14 days (UTC)', chartBox, chartTable));

  let previous = null; // { count, at } of the last refresh
  let plot = null;
  let timer = null;
  let stopped = false;

  async function refresh() {
    const date = todayUtc();
    const now = new Date();
    const hourAgo = new Date(now.getTime() - 3600_000);
    try {
      const [stats, summary, hours, days] = await Promise.all([
        api('stats/orders', { query: { date } }),
        api('failures/summary'),
        api('stats/orders', {
          query: { granularity: 'hour', from: hourAgo.toISOString().slice(0, 13) + ':00:00Z', to: now.toISOString().slice(0, 13) + ':00:00Z' },
        }),
        api('stats/orders', { query: { granularity: 'day', from: daysBefore(date, 13), to: date } }),
      ]);
      if (stopped) return;
      replace(today, facts("Today's orders", [
        ['Date', stats.from],
        ['Orders', String(stats.order_count)],
        ...STATUSES.map((s) => [s, String(stats.by_status?.[s] ?? 0)]),
        ['Total amount', stats.total_amount],
        ['Completed amount', stats.completed_amount],
      ]));
      replace(failures, facts('Failures by status',
        FAILURE_STATUSES.map((s) => [s, String(summary[s] ?? 0)])),
      h('p', {}, h('a', { href: '#/failures?status=pending' }, `Backlog: ${summary.pending ?? 0} pending`)));
      const at = Date.now();
      let perMinute = '—';
      if (previous && previous.date === date && at > previous.at) {
        const minutes = (at - previous.at) / 60_000;
        perMinute = `${((stats.order_count - previous.count) / minutes).toFixed(1)}`;
      }
      previous = { count: stats.order_count, at, date };
      const entries = hours.entries ?? [];
      const current = entries[entries.length - 1];
      const before = entries.length > 1 ? entries[entries.length - 2] : null;
      replace(rate, facts('Ingest', [
        ['Orders per minute (since the last refresh)', perMinute],
        [`This hour (since ${current ? current.hour.slice(11, 16) : '—'} UTC)`, String(current?.order_count ?? 0)],
        ['The hour before', String(before?.order_count ?? 0)],
        ['Failure backlog (pending)', String(summary.pending ?? 0)],
      ]));
      drawChart(days.entries ?? []);
      status.textContent = `Updated ${now.toISOString().slice(11, 19)} UTC; refreshed every ${REFRESH_MS / 1000} s.`;
      status.classList.remove('error');
    } catch (e) {
      if (stopped) return;
      status.textContent = `Refresh failed: ${errorText(e)}`;
      status.classList.add('error');
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  function drawChart(entries) {
    const xs = entries.map((e) => Date.parse(`${e.date}T00:00:00Z`) / 1000);
    const data = [xs, ...STATUSES.map((s) => entries.map((e) => e.by_status?.[s] ?? 0))];
    replace(chartTable, h('summary', {}, 'The chart as a table'),
      table('Orders per day', ['Day', 'Orders', ...STATUSES],
        entries.map((e) => ({ cells: [e.date, String(e.order_count), ...STATUSES.map((s) => String(e.by_status?.[s] ?? 0))] }))));
    if (typeof window.uPlot !== 'function') {
      replace(chartBox, h('p', { class: 'muted' }, 'The chart library did not load.'));
      return;
    }
    const width = Math.max(240, chartBox.clientWidth || 600);
    if (plot) {
      plot.setData(data);
      if (Math.abs(plot.width - width) > 2) plot.setSize({ width, height: 240 });
      return;
    }
    plot = new window.uPlot({
      width,
      height: 240,
      tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
      scales: { x: { time: true } },
      axes: [{}, { label: 'orders' }],
      series: [{}, ...STATUSES.map((s) => ({ label: s, stroke: COLOURS[s], width: 2 }))],
    }, data, chartBox);
  }

  const onResize = () => {
    if (plot) plot.setSize({ width: Math.max(240, chartBox.clientWidth), height: 240 });
  };
  window.addEventListener('resize', onResize);
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    window.removeEventListener('resize', onResize);
    plot?.destroy();
  };
}
