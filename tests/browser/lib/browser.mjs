// Shared by the browser tests in tests/browser/: launches Debian's chromium
// through playwright-core (no browser download) and opens pages while
// recording what they do, so each test can check that a page loads nothing
// from outside the server and logs no error.
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

/** The repository's root folder. */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Debian's chromium, or $CHROMIUM. */
export const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

/** Flags for a quiet headless chromium that talks to no Google service. */
export const chromiumArgs = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * The server under test: the first argument, else $BASE_URL, without a
 * trailing slash. Exits with a usage message if there is none.
 */
export function baseUrl() {
  const raw = process.argv[2] || process.env.BASE_URL;
  if (!raw) {
    console.error(`usage: node ${process.argv[1]} <base-url>   (or BASE_URL=<base-url>)`);
    process.exit(2);
  }
  return raw.replace(/\/+$/, '');
}

/** Starts chromium. */
export function launch() {
  return chromium.launch({ executablePath, args: chromiumArgs });
}

/**
 * A new page in its own context, with a record of every request it makes,
 * every failed request, every response of 400 or more, console errors,
 * uncaught exceptions, Content-Security-Policy violations and JavaScript
 * dialogs (alert, confirm: dismissed and recorded).
 */
export async function openPage(browser, { viewport = { width: 1280, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const record = {
    requests: [], failed: [], badResponses: [], consoleErrors: [], pageErrors: [], cspViolations: [], dialogs: [],
  };
  await page.exposeFunction('__recordCspViolation', (line) => record.cspViolations.push(line));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__recordCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  page.on('dialog', async (d) => {
    record.dialogs.push(`${d.type()}: ${d.message()}`);
    await d.dismiss().catch(() => {});
  });
  page.on('request', (r) => record.requests.push(`${r.method()} ${r.url()}`));
  page.on('requestfailed', (r) =>
    record.failed.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText ?? 'failed'}`));
  page.on('response', (r) => {
    if (r.status() >= 400) record.badResponses.push(`${r.status()} ${r.request().method()} ${r.url()}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error') {
      const { url, lineNumber } = m.location();
      record.consoleErrors.push(`${m.text()}${url ? ` (${url}:${lineNumber})` : ''}`);
    }
  });
  page.on('pageerror', (e) => record.pageErrors.push(e.stack || String(e)));
  return { context, page, record };
}

/** The recorded requests that went anywhere but `base`'s origin. */
export function foreignRequests(record, base) {
  const origin = new URL(base).origin;
  return record.requests.filter((line) => {
    const url = line.slice(line.indexOf(' ') + 1);
    // data: and blob: URLs never leave the browser.
    if (url.startsWith('data:') || url.startsWith('blob:')) return false;
    return new URL(url).origin !== origin;
  });
}

/** Saves a screenshot as target/browser/<name>.png and returns its path. */
export async function screenshot(page, name, options = {}) {
  const path = join(repoRoot, 'target', 'browser', `${name}.png`);
  await mkdir(dirname(path), { recursive: true });
  await page.screenshot({ path, ...options });
  return path;
}

/** One line per item, indented, for assertion messages. */
export function listing(items) {
  return items.map((i) => `  ${i}`).join('\n');
}
