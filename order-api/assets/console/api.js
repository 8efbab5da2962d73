// The JSON API, relative to the page (/console/ → ../api/v1/), so that a
// gateway's path prefix keeps working. The operator's token is kept in
// sessionStorage (this tab only, gone when it closes) and sent as a bearer
// token; it never goes into a URL.

const KEY = 'order-console.token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/** An answer other than 2xx: its status and the API's own message. */
export class ApiError extends Error {
  constructor(status, statusText, code, message) {
    super(message);
    this.status = status;
    this.statusText = statusText;
    this.code = code;
  }
}

/** Called with every 401, so the app can ask for a token again. */
let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

/**
 * Calls `../api/v1/<path>`: `query` (an object; empty values left out) and a
 * JSON `body`. Resolves to the parsed JSON; rejects with an ApiError whose
 * message is the API's `error.message`.
 */
export async function api(path, { method = 'GET', query, body, quietUnauthorized = false } = {}) {
  let url = `../api/v1/${path}`;
  const params = query ? searchParams(query) : '';
  if (params) url += `?${params}`;
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data?.error?.message ?? (text.slice(0, 300) || response.statusText);
    const error = new ApiError(response.status, response.statusText, data?.error?.code, message);
    if (response.status === 401 && !quietUnauthorized) onUnauthorized(error);
    throw error;
  }
  return data;
}

/** `a=1&b=2` from an object, leaving out empty values. */
export function searchParams(query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  return params.toString();
}

/** Today's date, UTC, as YYYY-MM-DD. */
export function todayUtc(now = new Date()) {
  return now.toISOString().slice(0, 10);
}

/** The UTC day `days` before `date` (YYYY-MM-DD). */
export function daysBefore(date, days) {
  const d = new Date(`${date}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() - days);
  return d.toISOString().slice(0, 10);
}
