// The API docs page of order-api (GET /api/docs): renders every operation of
// the OpenAPI document in headless chromium, can call the API, and loads
// nothing from anywhere but the server (no CDN, no fonts, no validator).
//
// Usage: node tests/browser/docs.test.mjs <base-url>   (scripts/browser-test.sh
// starts order-api and runs this). Writes target/browser/docs.png.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { baseUrl, foreignRequests, launch, listing, openPage, screenshot } from './lib/browser.mjs';

const base = baseUrl();
const timeout = 30_000;
let browser;
let session;
let operations; // [{ method, path, summary, operationId }]

before(async () => {
  const response = await fetch(`${base}/api/v1/openapi.json`);
  assert.equal(response.status, 200, `GET ${base}/api/v1/openapi.json`);
  const doc = await response.json();
  operations = Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops).map(([method, op]) => ({ method, path, ...op })));
  browser = await launch();
  session = await openPage(browser);
});

after(async () => {
  await browser?.close();
});

test('GET /api/docs redirects to /api/docs/, HTML under a strict Content-Security-Policy', async () => {
  const redirect = await fetch(`${base}/api/docs`, { redirect: 'manual' });
  assert.equal(redirect.status, 308, 'GET /api/docs');
  assert.equal(redirect.headers.get('location'), 'docs/', 'a relative Location keeps a gateway prefix');

  const page = await fetch(`${base}/api/docs/`);
  assert.equal(page.status, 200, 'GET /api/docs/');
  assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
  const policy = page.headers.get('content-security-policy') ?? '';
  assert.match(policy, /(^|;)\s*default-src 'self'\s*(;|$)/, `content-security-policy: ${policy}`);
  assert.doesNotMatch(policy, /unsafe|\*|https?:/, `content-security-policy: ${policy}`);
});

test('the page renders every operation of the OpenAPI document', async () => {
  const { page } = session;
  await page.goto(`${base}/api/docs`, { timeout });
  assert.equal(page.url(), `${base}/api/docs/`, 'where the redirect led');

  const getOrder = operations.find((o) => o.method === 'get' && o.path === '/api/v1/orders/{orderId}');
  assert.ok(getOrder?.summary, 'the document describes GET /api/v1/orders/{orderId}');
  await page.getByText(getOrder.summary, { exact: true }).first().waitFor({ timeout });

  const rendered = await page.locator('.opblock').evaluateAll((blocks) => blocks.map((b) => {
    const text = (selector) => b.querySelector(selector)?.textContent.trim() ?? '';
    return `${text('.opblock-summary-method')} ${text('.opblock-summary-path')}`
      .replace(/\u200b/g, '') // Swagger UI breaks long paths with zero-width spaces
      + ` | ${text('.opblock-summary-description')}`;
  }));
  const expected = operations.map((o) => `${o.method.toUpperCase()} ${o.path} | ${o.summary}`);
  assert.deepEqual([...rendered].sort(), [...expected].sort(), 'the operations shown');

  const path = await screenshot(page, 'docs', { fullPage: true });
  console.log(`# screenshot: ${path}`);
});

test('its scripts and stylesheets come from the server, typed and cached for a day', async () => {
  const urls = await session.page.evaluate(() => [
    ...[...document.querySelectorAll('script[src]')].map((s) => s.src),
    ...[...document.querySelectorAll('link[rel=stylesheet]')].map((l) => l.href),
  ]);
  assert.ok(urls.length >= 3, `assets: ${urls}`);
  for (const url of urls) {
    assert.ok(url.startsWith(`${base}/api/docs/`), `${url} is not under ${base}/api/docs/`);
    const response = await fetch(url);
    assert.equal(response.status, 200, `GET ${url}`);
    const type = url.split('?')[0].endsWith('.js') ? 'text/javascript' : 'text/css';
    assert.equal(response.headers.get('content-type'), `${type}; charset=utf-8`, `content-type of ${url}`);
    assert.equal(response.headers.get('cache-control'), 'public, max-age=86400', `cache-control of ${url}`);
    await response.arrayBuffer();
  }
});

test('"Try it out" calls the API from the page', async () => {
  const { page } = session;
  const live = operations.find((o) => o.method === 'get' && o.path === '/health/live');
  assert.ok(live?.operationId, 'the document describes GET /health/live');
  // Operations without a tag are under "default"; the id is Swagger UI's.
  const block = page.locator(`#operations-default-${live.operationId}`);
  await block.locator('.opblock-summary').click({ timeout });
  await block.getByRole('button', { name: 'Try it out' }).click({ timeout });
  await block.getByRole('button', { name: 'Execute' }).click({ timeout });
  const status = block.locator('.live-responses-table tr.response .response-col_status').first();
  await status.waitFor({ timeout });
  assert.equal((await status.textContent()).trim(), '200', 'the status the page shows');
});

test('nothing was loaded from outside the server and nothing went wrong in the page', () => {
  const { record } = session;
  assert.ok(record.requests.length > 0, 'the page made no request at all');
  const foreign = foreignRequests(record, base);
  assert.equal(foreign.length, 0, `requests to other hosts:\n${listing(foreign)}`);
  assert.equal(record.failed.length, 0, `failed requests:\n${listing(record.failed)}`);
  assert.equal(record.badResponses.length, 0, `error responses:\n${listing(record.badResponses)}`);
  assert.equal(record.consoleErrors.length, 0, `console errors:\n${listing(record.consoleErrors)}`);
  assert.equal(record.pageErrors.length, 0, `uncaught exceptions:\n${listing(record.pageErrors)}`);
});
