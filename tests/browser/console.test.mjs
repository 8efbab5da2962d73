// The operator console of order-api (GET /console/), in headless chromium,
// against the real API and PostgreSQL that scripts/browser-test.sh starts and
// seeds. One test per user story: sign in (operator, end user refused),
// overview figures equal to the API's, filters, retrying one failure, bulk
// retry of a filter, hostile messages shown as inert text, the read-only
// token, narrow screens; and nothing loaded from elsewhere, no console error,
// no Content-Security-Policy violation.
//
// Usage: CONSOLE_OPERATOR_TOKEN=… CONSOLE_READONLY_TOKEN=… CONSOLE_USER_TOKEN=…
//        node tests/browser/console.test.mjs <base-url>
// Writes the screenshots docs/console/{overview,failures,failure,reasons,orders}.png
// (1280 px wide) and target/browser/console-narrow-*.png; a failing test
// leaves the page's HTML, its record and a screenshot in
// target/browser/console-failed-<test>.*.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  baseUrl, foreignRequests, launch, listing, openPage, repoRoot, screenshot,
} from './lib/browser.mjs';

const base = baseUrl();
const timeout = 30_000;
const operatorToken = process.env.CONSOLE_OPERATOR_TOKEN;
const readonlyToken = process.env.CONSOLE_READONLY_TOKEN;
const userToken = process.env.CONSOLE_USER_TOKEN;
if (!operatorToken || !readonlyToken) {
  console.error('CONSOLE_OPERATOR_TOKEN and CONSOLE_READONLY_TOKEN are needed (scripts/browser-test.sh sets them)');
  process.exit(2);
}

let browser;
const sessions = {}; // name → { context, page, record }
/** Responses of 400 or more that a test asked for, as "status METHOD url-pattern". */
const expectedBad = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

// ------------------------------------------------------------- helpers ---

/** The API from node, with a token; rejects unless 2xx. */
async function api(path, { token = operatorToken, method = 'GET', body } = {}) {
  const response = await fetch(`${base}/api/v1/${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  return { status: response.status, data };
}

async function get(path, token) {
  const { status, data } = await api(path, { token });
  assert.equal(status, 200, `GET /api/v1/${path}: ${JSON.stringify(data)}`);
  return data;
}

/** The id of the one failure whose body or reason contains `q`. */
async function failureId(q) {
  const page = await get(`failures?q=${encodeURIComponent(q)}`);
  assert.equal(page.items.length, 1, `failures matching ${q}: ${JSON.stringify(page.items.map((f) => f.id))}`);
  return page.items[0].id;
}

/** Runs a test's body; on failure, leaves the page, its record and a screenshot. */
async function story(name, session, body) {
  try {
    await body(session.page);
  } catch (e) {
    const dir = join(repoRoot, 'target', 'browser');
    await mkdir(dir, { recursive: true });
    const stem = join(dir, `console-failed-${name}`);
    await writeFile(`${stem}.html`, await session.page.content().catch((x) => String(x)));
    await writeFile(`${stem}.log.json`, JSON.stringify(session.record, null, 2));
    await session.page.screenshot({ path: `${stem}.png`, fullPage: true }).catch(() => {});
    console.log(`# page, record and screenshot of the failure: ${stem}.*`);
    throw e;
  }
}

async function session(name, viewport) {
  sessions[name] = await openPage(browser, viewport ? { viewport } : undefined);
  return sessions[name];
}

/** Signs in on the sign-in form with `token`. */
async function signIn(page, token, hash = '#/overview') {
  await page.goto(`${base}/console/${hash}`, { timeout });
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** The <dt> → <dd> text pairs of the definition list in `region`. */
async function facts(region) {
  const list = region.locator('dl').first();
  await list.waitFor({ timeout });
  return list.evaluate((dl) => Object.fromEntries(
    [...dl.querySelectorAll('dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent])));
}

/** The first cell of every body row of the table in region `name`. */
async function firstColumn(page, name) {
  const region = page.getByRole('region', { name, exact: true });
  await region.waitFor({ timeout });
  return region.locator('tbody tr td:first-child').allTextContents();
}

/** Waits for the pager to say `total` failures, then returns the listed ids. */
async function listedFailures(page, total) {
  await page.getByText(new RegExp(`· ${total} failures$`)).waitFor({ timeout });
  if (total === 0) return [];
  return (await firstColumn(page, 'Failures')).map(Number);
}

async function shot(page, name) {
  const dir = join(repoRoot, 'docs', 'console');
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`# screenshot: ${path}`);
}

const today = () => new Date().toISOString().slice(0, 10);

// --------------------------------------------------------------- tests ---

test('GET /console redirects to /console/, HTML under the console policy', async () => {
  const redirect = await fetch(`${base}/console`, { redirect: 'manual' });
  assert.equal(redirect.status, 308, 'GET /console');
  assert.equal(redirect.headers.get('location'), 'console/');
  const page = await fetch(`${base}/console/`);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.equal(page.headers.get('content-security-policy'),
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    + "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
});

test("an end user's token is refused with a clear message", { skip: !userToken && 'no CONSOLE_USER_TOKEN' }, async () => {
  const s = await session('user');
  await story('user', s, async (page) => {
    await signIn(page, userToken);
    await page.getByRole('alert').filter({ hasText: "This is an end user's token" }).waitFor({ timeout });
    assert.equal(await page.getByRole('navigation', { name: 'Pages' }).isVisible(), false, 'no pages offered');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'the refused token is not kept');
  });
});

test('signed in with the operator token, the overview shows what the API says', async () => {
  const s = await session('operator');
  await story('overview', s, async (page) => {
    await signIn(page, operatorToken);
    await page.getByText('Signed in: operator').waitFor({ timeout });
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor({ timeout });

    const shown = await facts(page.getByRole('region', { name: "Today's orders (UTC)" }));
    const stats = await get(`stats/orders?date=${today()}`);
    assert.ok(stats.order_count >= 3, `the seeded orders count today: ${JSON.stringify(stats)}`);
    assert.equal(shown.Orders, String(stats.order_count), 'orders today');
    for (const status of ['pending', 'completed', 'cancelled', 'failed']) {
      assert.equal(shown[status], String(stats.by_status[status]), `${status} today`);
    }
    assert.equal(shown['Total amount'], stats.total_amount);
    assert.equal(shown['Completed amount'], stats.completed_amount);

    const failures = await facts(page.getByRole('region', { name: 'Failures by status' }));
    const summary = await get('failures/summary');
    for (const status of ['pending', 'processing', 'success', 'failed', 'resolved']) {
      assert.equal(failures[status], String(summary[status]), `${status} failures`);
    }
    const ingest = await facts(page.getByRole('region', { name: 'Ingest' }));
    assert.equal(ingest['Failure backlog (pending)'], String(summary.pending));

    // The chart: drawn by uPlot, and its table holds the same 14 days.
    await page.locator('.chart canvas').first().waitFor({ timeout });
    const days = await get(`stats/orders?granularity=day&from=${new Date(Date.now() - 13 * 86400_000).toISOString().slice(0, 10)}&to=${today()}`);
    await page.getByText('The chart as a table').click();
    const rows = await page.getByRole('region', { name: 'Orders per day', exact: true }).locator('tbody tr')
      .evaluateAll((trs) => trs.map((tr) => [...tr.cells].slice(0, 2).map((c) => c.textContent)));
    assert.deepEqual(rows, days.entries.map((e) => [e.date, String(e.order_count)]));
    await page.getByText('The chart as a table').click();
    await shot(page, 'overview');
  });
});

test('filtering failures by status and by text shows the matching rows', async () => {
  const s = sessions.operator;
  await story('filter', s, async (page) => {
    await page.getByRole('link', { name: 'Failures', exact: true }).click();
    const all = await get('failures?pageSize=50');
    assert.deepEqual(await listedFailures(page, all.total), all.items.map((f) => f.id), 'all failures, newest first');
    await shot(page, 'failures');

    await page.getByLabel('Status', { exact: true }).selectOption('failed');
    await page.getByRole('button', { name: 'Apply' }).click();
    const failed = await get('failures?status=failed&pageSize=50');
    assert.ok(failed.total >= 7, `seeded poison failures: ${failed.total}`);
    assert.deepEqual(await listedFailures(page, failed.total), failed.items.map((f) => f.id), 'status failed');
    assert.ok(page.url().includes('status=failed'), `the filter is in the URL: ${page.url()}`);

    await page.getByLabel('Search reason or message').fill('decimal places');
    await page.getByRole('button', { name: 'Apply' }).click();
    const decimals = await get(`failures?status=failed&q=${encodeURIComponent('decimal places')}`);
    assert.equal(decimals.total, 3, 'the three unit_price poison messages');
    assert.deepEqual(await listedFailures(page, 3), decimals.items.map((f) => f.id), 'status failed, q');

    // Grouped by reason, then one group chosen.
    await page.goto(`${base}/console/#/reasons?status=failed`);
    const reasons = await get('failures/reasons?status=failed');
    const groups = page.getByRole('list', { name: 'Reason groups' });
    await groups.waitFor({ timeout });
    const shownGroups = (await groups.getByRole('link').allTextContents()).map((t) => t.replace(/\s+/g, ' '));
    assert.deepEqual(shownGroups, reasons.groups.map((g) => `${g.count} × ${g.reason}`.replace(/\s+/g, ' ')));
    const decimalGroup = reasons.groups.find((g) => g.reason.includes('decimal places'));
    assert.equal(decimalGroup?.count, 3, `the unit_price group: ${JSON.stringify(reasons.groups)}`);
    await shot(page, 'reasons');
    await groups.getByRole('link', { name: new RegExp(`^3 × ${decimalGroup.reason.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`) }).click();
    const byReason = await get(`failures?status=failed&reason=${encodeURIComponent(decimalGroup.reason)}`);
    assert.deepEqual(await listedFailures(page, 3), byReason.items.map((f) => f.id), 'the group chosen');
  });
});

test('retrying one pending failure creates its order; the order can be cancelled and a refused change says why', async () => {
  const s = sessions.operator;
  await story('retry-one', s, async (page) => {
    const id = await failureId('single_retry');
    await page.goto(`${base}/console/#/failures/${id}`);
    await page.getByRole('button', { name: 'Retry now…' }).click({ timeout });
    const dialog = page.getByRole('dialog', { name: `Retry failure ${id}` });
    await dialog.waitFor({ timeout });
    await dialog.getByRole('button', { name: 'Retry now' }).click();
    const outcome = page.getByRole('status').filter({ hasText: `Retry of failure ${id}` });
    await outcome.getByText(`Retry of failure ${id}: created; status now success.`).waitFor({ timeout });

    const failure = await get(`failures/${id}`);
    assert.equal(failure.status, 'success');
    assert.ok(failure.order_id, 'the failure names its order');
    await outcome.getByRole('link', { name: failure.order_id }).waitFor({ timeout });
    // The record reloads: status success, the attempt in the history.
    const record = await facts(page.getByRole('region', { name: 'Record' }));
    assert.equal(record.status, 'success');
    assert.deepEqual(failure.attempts.map((a) => a.outcome), ['created'], 'one retry, which created the order');
    assert.deepEqual(
      await page.getByRole('region', { name: 'Retry attempts', exact: true }).locator('tbody tr td:nth-child(2)').allTextContents(),
      ['created']);
    await shot(page, 'failure');

    // The order it made: cancel it, then try a change the rules refuse.
    await outcome.getByRole('link', { name: failure.order_id }).click();
    await page.getByRole('heading', { name: 'Events' }).waitFor({ timeout });
    await page.getByRole('button', { name: 'Cancel order…' }).click();
    await page.getByRole('dialog', { name: 'Cancel order' }).getByRole('button', { name: 'Cancel the order' }).click();
    await page.getByText(`Done: order ${failure.order_id} is cancelled.`).waitFor({ timeout });
    assert.equal((await get(`orders/${failure.order_id}`)).status, 'cancelled');

    await page.getByLabel('New status').selectOption('completed');
    await page.getByRole('button', { name: 'Change status…' }).click();
    await page.getByRole('dialog', { name: 'Change order status' }).getByRole('button', { name: 'Set completed' }).click();
    expectedBad.push(`409 PUT ${base}/api/v1/orders/${failure.order_id}/status`);
    // The API's own message, as node gets it (the refusal changes nothing).
    const refused = await api(`orders/${failure.order_id}/status`, { method: 'PUT', body: { status: 'completed' } });
    assert.equal(refused.status, 409);
    await page.getByRole('status').getByText(refused.data.error.message, { exact: false }).waitFor({ timeout });
    assert.equal((await get(`orders/${failure.order_id}`)).status, 'cancelled');
    const events = await firstColumn(page, 'Events');
    assert.ok(events.length >= 2, `order.created and order.cancelled: ${events}`);
    await shot(page, 'orders');
  });
});

test('bulk retry of a filter: a dry run counts, the confirmed run retries them all', async () => {
  const s = sessions.operator;
  await story('bulk', s, async (page) => {
    // Without a pending or failed status filter, bulk retry is not offered.
    await page.goto(`${base}/console/#/failures`);
    await page.getByText('Bulk retry needs the status filter set to pending or failed').waitFor({ timeout });
    assert.equal(await page.getByRole('button', { name: 'Retry matching failures…' }).isDisabled(), true);
    // Nor for poison failures only, which are never retried.
    await page.goto(`${base}/console/#/failures?status=failed&retryable=false`);
    await page.getByText('Poison failures (retryable: no) are never retried').waitFor({ timeout });
    assert.equal(await page.getByRole('button', { name: 'Retry matching failures…' }).isDisabled(), true);

    const before = await get('failures?status=pending&q=bulk_retry');
    assert.equal(before.total, 3, 'the three bulk_retry failures are pending');
    await page.goto(`${base}/console/#/failures?status=pending&q=bulk_retry`);
    await listedFailures(page, 3);
    const bulk = page.getByRole('button', { name: 'Retry matching failures…' });
    const dialog = page.getByRole('dialog', { name: 'Retry matching failures' });
    // From the keyboard: the dialog takes the focus, Escape closes it and
    // nothing is retried.
    await bulk.focus();
    await page.keyboard.press('Enter');
    await dialog.getByText('3 failures match; up to 100 will be retried now.').waitFor({ timeout });
    assert.equal(await dialog.evaluate((d) => d.contains(document.activeElement)), true, 'the focus is in the dialog');
    await page.keyboard.press('Escape');
    await page.getByText('Bulk retry cancelled; nothing was retried.').waitFor({ timeout });
    assert.equal(await dialog.isVisible(), false, 'Escape closed the dialog');
    assert.equal((await get('failures?status=pending&q=bulk_retry')).total, 3, 'nothing was retried');

    await bulk.click();
    await dialog.getByText('3 failures match; up to 100 will be retried now.').waitFor({ timeout });
    await dialog.getByRole('button', { name: 'Retry up to 3' }).click();
    await page.getByText('Bulk retry: attempted 3, succeeded 3, failed 0, refused 0.').waitFor({ timeout });

    const afterwards = await get('failures?q=bulk_retry');
    assert.deepEqual(afterwards.items.map((f) => f.status), ['success', 'success', 'success']);
    assert.ok(afterwards.items.every((f) => f.order_id), 'each names its order');
    // The list reloads: none of them is pending any more.
    await listedFailures(page, 0);
  });
});

test('a hostile poison message is shown as inert text', async () => {
  const s = sessions.operator;
  await story('hostile', s, async (page) => {
    const id = await failureId('onerror');
    const failure = await get(`failures/${id}`);
    await page.goto(`${base}/console/#/failures?q=onerror`);
    await listedFailures(page, 1);
    await page.getByText(failure.error_message, { exact: true }).waitFor({ timeout });
    await page.getByRole('link', { name: String(id), exact: true }).click();
    const body = page.getByLabel('Message body', { exact: true });
    await body.waitFor({ timeout });
    const text = await body.textContent();
    assert.ok(text.includes('"<img src=x onerror=alert(1)>"'), text);
    assert.ok(text.includes('"<script>alert(2)</script>"'), text);
    assert.equal(text, failure.message_data, 'the text exactly as received');

    const dom = await page.evaluate(() => ({
      images: document.querySelectorAll('img').length,
      handlers: document.querySelectorAll('[onerror], [onload], [onclick]').length,
      scripts: [...document.scripts].map((sc) => sc.src),
    }));
    assert.equal(dom.images, 0, 'no <img> from the data');
    assert.equal(dom.handlers, 0, 'no inline handler from the data');
    assert.ok(dom.scripts.every((src) => src.startsWith(`${base}/console/`)), `scripts: ${dom.scripts}`);
    assert.deepEqual(s.record.dialogs, [], 'no dialog opened');

    // Bytes that are not UTF-8: a hex dump and the base64.
    const binary = await failureId('not UTF-8');
    await page.goto(`${base}/console/#/failures/${binary}`);
    await page.getByLabel('Message hex dump').getByText('ff fe 00 01 6e 6f 74', { exact: false }).waitFor({ timeout });
    assert.equal(await page.getByLabel('Message base64').textContent(), (await get(`failures/${binary}`)).message_data);
  });
});

test('a failure is resolved by hand with a note', async () => {
  const s = sessions.operator;
  await story('resolve', s, async (page) => {
    const id = await failureId('poison_e');
    await page.goto(`${base}/console/#/failures/${id}`);
    await page.getByRole('button', { name: 'Resolve by hand…' }).click({ timeout });
    const dialog = page.getByRole('dialog', { name: `Resolve failure ${id} by hand` });
    await dialog.getByLabel('Note (why, what was done)').fill('refunded by hand, ticket OPS-1');
    await dialog.getByRole('button', { name: 'Resolve' }).click();
    await page.getByText(`Failure ${id} resolved; status now resolved.`).waitFor({ timeout });
    const failure = await get(`failures/${id}`);
    assert.equal(failure.status, 'resolved');
    assert.equal(failure.resolution_note, 'refunded by hand, ticket OPS-1');
    const record = await facts(page.getByRole('region', { name: 'Record' }));
    assert.equal(record.resolution_note, 'refunded by hand, ticket OPS-1');
  });
});

test('the read-only token sees everything and changes nothing', async () => {
  const s = await session('readonly');
  await story('readonly', s, async (page) => {
    const pendingId = await failureId('readonly_pending');
    const order = (await get('users/9202/orders')).items[0];
    const state = async () => JSON.stringify([
      await get('failures/summary'), (await get(`failures/${pendingId}`)).status, (await get(`orders/${order.order_id}`)).status,
    ]);
    const before = await state();

    await signIn(page, readonlyToken, '#/failures?status=pending');
    await page.getByText('Signed in: read-only token').waitFor({ timeout });
    await listedFailures(page, (await get('failures?status=pending')).total);
    assert.equal(await page.getByRole('button', { name: 'Retry matching failures…' }).isDisabled(), true);
    await page.getByText('read-only token: it may look, not act').waitFor({ timeout });

    await page.goto(`${base}/console/#/failures/${pendingId}`);
    await page.getByRole('button', { name: 'Retry now…' }).waitFor({ timeout });
    assert.equal(await page.getByRole('button', { name: 'Retry now…' }).isDisabled(), true);
    assert.equal(await page.getByRole('button', { name: 'Resolve by hand…' }).isDisabled(), true);
    await page.getByText('read-only token: it may look, not act').waitFor({ timeout });

    await page.goto(`${base}/console/#/orders/${order.order_id}`);
    await page.getByRole('button', { name: 'Cancel order…' }).waitFor({ timeout });
    assert.equal(await page.getByRole('button', { name: 'Cancel order…' }).isDisabled(), true);
    assert.equal(await page.getByRole('button', { name: 'Change status…' }).isDisabled(), true);

    assert.equal(await state(), before, 'nothing changed');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Token').waitFor({ timeout });
    // Signed out from an order's page: the note stays on the sign-in form.
    await page.getByText('Signed out: the token is forgotten.').waitFor({ timeout });
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'signing out forgets the token');
  });
});

test('at 390 px wide no page overflows sideways', async () => {
  const s = await session('narrow', { width: 390, height: 844 });
  await story('narrow', s, async (page) => {
    const hostile = await failureId('onerror');
    const order = (await get('users/9202/orders')).items[0];
    await page.goto(`${base}/console/`, { timeout });
    await page.getByLabel('Token').waitFor({ timeout });
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'the sign-in page');
    await signIn(page, operatorToken);
    const pages = [
      ['overview', '#/overview', () => page.getByRole('region', { name: "Today's orders (UTC)" }).locator('dl')],
      ['failures', '#/failures', () => page.getByRole('region', { name: 'Failures', exact: true })],
      ['failure', `#/failures/${hostile}`, () => page.getByLabel('Message body', { exact: true })],
      ['reasons', '#/reasons', () => page.getByRole('list', { name: 'Reason groups' })],
      ['order', `#/orders/${order.order_id}`, () => page.getByRole('heading', { name: 'Events' })],
      ['user-orders', '#/orders?user=9202', () => page.getByRole('region', { name: 'Orders of user 9202' })],
    ];
    for (const [name, hash, ready] of pages) {
      await page.goto(`${base}/console/${hash}`);
      await ready().waitFor({ timeout });
      const width = await page.evaluate(() => ({
        scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
      }));
      assert.ok(width.scroll <= width.inner, `${name}: the page is ${width.scroll} px wide in a ${width.inner} px window`);
      await screenshot(page, `console-narrow-${name}`, { fullPage: true });
    }
  });
});

test('nothing was loaded from elsewhere, no error, no policy violation, no token in a URL', () => {
  const expected = (line) => expectedBad.some((e) => line.startsWith(e));
  for (const [name, { record }] of Object.entries(sessions)) {
    assert.ok(record.requests.length > 0, `${name}: no request at all`);
    const foreign = foreignRequests(record, base);
    assert.equal(foreign.length, 0, `${name}: requests to other hosts:\n${listing(foreign)}`);
    const leaked = record.requests.filter((r) => [operatorToken, readonlyToken, userToken].some((t) => t && r.includes(t)));
    assert.equal(leaked.length, 0, `${name}: a token in a URL:\n${listing(leaked)}`);
    assert.equal(record.failed.length, 0, `${name}: failed requests:\n${listing(record.failed)}`);
    const bad = record.badResponses.filter((line) => !expected(line));
    assert.equal(bad.length, 0, `${name}: error responses:\n${listing(bad)}`);
    // Chromium logs each error response it was asked for as a console error.
    const errors = record.consoleErrors.filter((line) =>
      !(/status of 409/.test(line) && expectedBad.length > 0));
    assert.equal(errors.length, 0, `${name}: console errors:\n${listing(errors)}`);
    assert.equal(record.pageErrors.length, 0, `${name}: uncaught exceptions:\n${listing(record.pageErrors)}`);
    assert.equal(record.cspViolations.length, 0, `${name}: policy violations:\n${listing(record.cspViolations)}`);
    assert.equal(record.dialogs.length, 0, `${name}: dialogs:\n${listing(record.dialogs)}`);
  }
});
