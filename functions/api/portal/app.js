// The org portal: endpoints, deliveries, the event log and the event-type
// catalogue, over
// the management API (`portal-api/v1/...`, the same routes as `/v1/...`).
// The session token comes in the URL fragment (#token=...), which browsers
// never send to a server; it is kept in sessionStorage and removed from the
// address bar at once. Everything is built with DOM calls (no innerHTML).

const API = new URL('../portal-api/v1/', import.meta.url);
const KEY = 'webhooks.portal.token';
const STATUSES = ['pending', 'delivered', 'dead_lettered', 'canceled'];

// ---------------------------------------------------------------- session

const LINK = /(?:^|[#&])token=([^&]+)/;

// The token of a portal link in the address bar, removed from it at once.
function linkToken() {
  const m = LINK.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, '', location.pathname + location.search + '#/endpoints');
  try { return decodeURIComponent(m[1]); } catch { return m[1]; }
}

function claimsOf(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part));
  } catch {
    return null;
  }
}

const live = (c) => !!c && !(c.exp && c.exp * 1000 <= Date.now());

// The session of this tab. A link for another org than the tab's live
// session asks before it replaces it: a link someone else sent could
// otherwise slip their org in, and endpoints added then would be theirs.
async function takeToken() {
  const incoming = linkToken();
  const stored = sessionStorage.getItem(KEY);
  if (incoming && incoming !== stored) {
    const was = stored ? claimsOf(stored) : null;
    const next = claimsOf(incoming);
    if (!live(was) || was.org_id === next?.org_id || await confirmSwitch(was.org_id, next?.org_id)) {
      sessionStorage.setItem(KEY, incoming);
    }
  }
  return sessionStorage.getItem(KEY);
}

// Asks in the page whether to switch organizations; the safe answer (stay)
// has the focus.
function confirmSwitch(from, to) {
  return new Promise((resolve) => {
    const stay = h('button', { class: 'primary', onclick: () => resolve(false) }, `Stay in ${from}`);
    const go = h('button', { onclick: () => resolve(true) }, `Switch to ${to || 'the other organization'}`);
    main.replaceChildren(h('div', { class: 'notice card', id: 'switch-org', role: 'alertdialog', 'aria-labelledby': 'switch-title', 'aria-describedby': 'switch-text' },
      h('h1', { id: 'switch-title' }, 'Switch organization?'),
      h('p', { id: 'switch-text' }, 'This tab has a portal session for organization ', h('b', {}, from),
        '. The link you opened is for ', to ? h('span', {}, 'organization ', h('b', {}, to)) : 'another organization', '.'),
      h('p', { class: 'muted' }, 'Switch only if you meant to manage that organization\'s webhooks: whatever you add after switching belongs to it.'),
      h('div', { class: 'actions switch' }, stay, go)));
    stay.focus();
  });
}

// The form fields an API error can name: a 400's message starts with the
// field (`filter.data.amount[0].numeric: ...`, `url: ...`).
const FIELDS = ['url', 'description', 'event_types', 'filter', 'headers', 'auth'];

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
    const name = status === 400 ? /^[a-z_]+/.exec(message)?.[0] : null;
    this.field = FIELDS.includes(name) ? name : null;
  }
}

// An error of one form field, shown next to it.
function fieldError(field, message, input) {
  const e = new Error(message);
  e.field = field;
  e.input = input;
  return e;
}

async function api(method, path, body) {
  return (await apiText(method, path, body)).data;
}

// The answer parsed, and its text as it came (JSON.parse rounds long
// numbers: what must show exactly is read from the text).
async function apiText(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(new URL(path, API), init);
  } catch {
    throw new ApiError(0, 'The webhooks service cannot be reached. Check your connection and try again.');
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const message = data?.error?.message || `The request failed (HTTP ${res.status}).`;
    if (res.status === 401) sessionEnded(message);
    throw new ApiError(res.status, message);
  }
  return { data, text };
}

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const main = document.getElementById('main');
const fmtTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const when = (iso) => (iso ? fmtTime.format(new Date(iso)) : '—');
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;

// Once the session has ended, nothing else is shown.
let ended = false;
function render(...nodes) {
  if (!ended) main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

let toastTimer;
function toast(message, bad = false) {
  const t = document.getElementById('toast');
  t.textContent = message;
  t.className = bad ? 'toast bad' : 'toast';
  t.setAttribute('role', bad ? 'alert' : 'status');
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 7000 : 3500);
}

// Runs an action, showing its failure; returns its result or undefined.
async function attempt(fn, done) {
  try {
    const r = await fn();
    if (done) toast(done);
    return r ?? true;
  } catch (e) {
    if (e.status !== 401) toast(e.message, true);
    return undefined;
  }
}

function statusBadge(status) {
  const cls = { delivered: 'ok', pending: 'warn', dead_lettered: 'bad' }[status] || '';
  return h('span', { class: `badge ${cls}` }, status);
}

function enabledBadge(ep) {
  return ep.enabled ? h('span', { class: 'badge ok' }, 'Enabled') : h('span', { class: 'badge bad' }, 'Disabled');
}

function chips(types) {
  return h('div', { class: 'chips' }, types.map((t) => h('span', { class: 'chip' }, t === '*' ? 'all events' : t)));
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied`);
  } catch {
    toast(`Could not copy; select the ${what.toLowerCase()} and copy it by hand`, true);
  }
}

function emptyState(title, text, action) {
  return h('div', { class: 'empty' }, h('h2', {}, title), h('p', { class: 'muted' }, text), action);
}

function errorBox(e) {
  return h('div', { class: 'error', role: 'alert' }, e.message);
}

// ---------------------------------------------------------------- JSON text

// The end of the JSON string that starts at `i` (the index of its closing quote).
function stringEnd(text, i) {
  let j = i + 1;
  while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
  return j;
}

// JSON text indented, without parsing a value: every number and string
// reads exactly as written (JSON.parse would round 12345678901234567890).
function prettyJson(text) {
  let out = '';
  let depth = 0;
  const pad = () => `\n${'  '.repeat(depth)}`;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const j = stringEnd(text, i);
      out += text.slice(i, j + 1);
      i = j;
    } else if (c === '{' || c === '[') {
      let j = i + 1;
      while (/\s/.test(text[j] || '')) j++;
      if (text[j] === (c === '{' ? '}' : ']')) { out += c + text[j]; i = j; continue; }
      depth++;
      out += c + pad();
    } else if (c === '}' || c === ']') {
      depth--;
      out += pad() + c;
    } else if (c === ',') {
      out += `,${pad()}`;
    } else if (c === ':') {
      out += ': ';
    } else if (!/\s/.test(c)) {
      out += c;
    }
  }
  return out;
}

// The text of member `name` of the JSON object `text`, as written; null
// when it has none.
function rawMember(text, name) {
  let depth = 0;
  let key = null;
  let start = -1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const j = stringEnd(text, i);
      if (depth === 1 && start < 0) key = text.slice(i, j + 1);
      i = j;
    } else if (c === ':' && depth === 1 && start < 0) {
      if (key !== null && JSON.parse(key) === name) start = i + 1;
    } else if (c === '{' || c === '[') {
      depth++;
    } else if (c === '}' || c === ']') {
      if (depth === 1 && start >= 0) return text.slice(start, i).trim();
      depth--;
    } else if (c === ',' && depth === 1 && start >= 0) {
      return text.slice(start, i).trim();
    }
  }
  return null;
}

// ---------------------------------------------------------------- dialogs

function dialog(title, fields, submitLabel, onSubmit) {
  const err = h('div', { class: 'error', role: 'alert', hidden: true });
  const form = h('form', { method: 'dialog' }, h('h2', {}, title), fields, err,
    h('div', { class: 'actions' },
      h('button', { type: 'button', value: 'cancel', onclick: () => dlg.close() }, 'Cancel'),
      h('button', { class: 'primary', type: 'submit' }, submitLabel)));
  const dlg = h('dialog', { 'aria-label': title }, form);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    for (const f of form.querySelectorAll('.field-error')) f.hidden = true;
    for (const f of form.querySelectorAll('[aria-invalid]')) f.removeAttribute('aria-invalid');
    try {
      await onSubmit(form);
      dlg.close();
    } catch (e) {
      // An error naming a field of the form is shown next to that field.
      const box = e.field ? form.querySelector(`#f-${e.field}-error`) : null;
      if (box) {
        box.textContent = e.message;
        box.hidden = false;
        const input = e.input || form.querySelector(`#f-${e.field}`);
        if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
      } else {
        err.textContent = e.message;
        err.hidden = false;
      }
    }
  });
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

// Where an error of form field `field` shows (hidden until there is one).
function fieldErrorBox(field) {
  return h('div', { class: 'field-error', id: `f-${field}-error`, role: 'alert', hidden: true });
}

let eventTypes = null;
async function loadEventTypes() {
  if (!eventTypes) eventTypes = (await api('GET', 'event-types')).data;
  return eventTypes;
}

async function endpointForm(ep) {
  const types = await loadEventTypes();
  const selected = new Set(ep ? ep.event_types : []);
  const all = h('input', { type: 'checkbox', name: 'all', checked: selected.has('*') });
  const boxes = types.map((t) => h('label', { class: 'inline' },
    h('input', { type: 'checkbox', name: 'type', value: t.name, checked: selected.has(t.name) }),
    h('code', {}, t.name)));
  const fields = [
    h('label', { for: 'f-url' }, 'Endpoint URL'),
    h('input', { id: 'f-url', name: 'url', type: 'url', required: true, placeholder: 'https://example.com/webhooks', value: ep?.url ?? '', 'aria-describedby': 'f-url-error' }),
    h('div', { class: 'hint' }, 'We POST signed JSON to this URL.'),
    fieldErrorBox('url'),
    h('label', { for: 'f-desc' }, 'Description (optional)'),
    h('input', { id: 'f-desc', name: 'description', type: 'text', value: ep?.description ?? '' }),
    fieldErrorBox('description'),
    h('label', {}, 'Events to send'),
    h('label', { class: 'inline' }, all, 'All event types, including future ones'),
    h('div', { class: 'types', role: 'group', 'aria-label': 'Event types' }, boxes),
    fieldErrorBox('event_types'),
    h('label', { for: 'f-filter' }, 'Payload filter (optional)'),
    h('textarea', { id: 'f-filter', name: 'filter', rows: 4, spellcheck: 'false', class: 'mono', placeholder: '{"data": {"currency": ["eur"], "amount": [{"numeric": [">", 100]}]}}', 'aria-describedby': 'f-filter-hint f-filter-error' },
      ep?.filter ? JSON.stringify(ep.filter, null, 2) : ''),
    h('div', { class: 'hint', id: 'f-filter-hint' }, 'An event pattern over the body {id, type, created_at, data}: only the events it matches are sent. Exact values, prefix, numeric ranges, exists and anything-but. Empty: every event of the chosen types.'),
    fieldErrorBox('filter'),
  ];
  const headers = headersEditor(ep);
  const auth = authEditor(ep);
  fields.push(h('details', { class: 'more', open: headers.present || auth.present },
    h('summary', {}, 'Custom headers and authentication'), headers.fields, auth.fields));
  return dialog(ep ? 'Edit endpoint' : 'Add endpoint', fields, ep ? 'Save changes' : 'Add endpoint', async (form) => {
    const eventTypesChosen = form.elements.all.checked
      ? ['*']
      : [...form.querySelectorAll('input[name=type]:checked')].map((i) => i.value);
    if (eventTypesChosen.length === 0) throw fieldError('event_types', 'Choose at least one event type (or all of them).');
    const body = { url: form.elements.url.value.trim(), event_types: eventTypesChosen, description: form.elements.description.value };
    const filterText = form.elements.filter.value.trim();
    if (filterText) {
      try {
        body.filter = JSON.parse(filterText);
      } catch (e) {
        throw fieldError('filter', `filter: not valid JSON (${e.message})`);
      }
    } else if (ep?.filter) {
      body.filter = null; // emptied: the filter is removed
    }
    // Sent only when changed here: values and secrets are write-only, so
    // what is not touched stays as stored.
    if (headers.touched()) body.headers = headers.value();
    if (auth.touched()) body.auth = auth.value();
    if (ep) {
      await api('PATCH', `endpoints/${ep.id}`, body);
      toast('Endpoint saved');
      route();
    } else {
      const created = await api('POST', 'endpoints', body);
      toast('Endpoint added');
      location.hash = `#/endpoints/${created.id}`;
    }
  });
}

// Custom headers (CONTRACT section 12): rows of name and value. A read
// shows the names with masked values, so changing them means entering
// every value again.
function headersEditor(ep) {
  const stored = Object.keys(ep?.headers || {});
  let touched = false;
  const list = h('div', { class: 'header-rows', id: 'f-headers', role: 'group', 'aria-label': 'Custom headers' });
  const row = (name = '') => {
    const n = h('input', { type: 'text', class: 'mono', name: 'header-name', 'aria-label': 'Header name', placeholder: 'X-Tenant', value: name, autocomplete: 'off', spellcheck: 'false' });
    const v = h('input', { type: 'text', class: 'mono', name: 'header-value', 'aria-label': `Value of header ${name || '(new)'}`, placeholder: name ? 'hidden: enter it again to change the headers' : 'value', autocomplete: 'off', spellcheck: 'false' });
    n.addEventListener('input', () => v.setAttribute('aria-label', `Value of header ${n.value || '(new)'}`));
    const r = h('div', { class: 'header-row' }, n, v,
      h('button', { type: 'button', 'aria-label': `Remove header ${name || ''}`.trim(), onclick: () => { touched = true; r.remove(); } }, 'Remove'));
    return r;
  };
  for (const name of stored) list.append(row(name));
  list.addEventListener('input', () => { touched = true; });
  const fields = [
    h('label', { for: 'f-headers-add' }, 'Custom headers'),
    list,
    h('button', { type: 'button', id: 'f-headers-add', onclick: () => { touched = true; list.append(row()); list.lastChild.querySelector('input').focus(); } }, 'Add header'),
    h('div', { class: 'hint' }, 'Sent with every delivery (outside the signature), at most 20. Values are kept encrypted and never shown again: to change the headers, enter every value.'),
    fieldErrorBox('headers'),
  ];
  const value = () => {
    const out = {};
    for (const r of list.querySelectorAll('.header-row')) {
      const [n, v] = r.querySelectorAll('input');
      const name = n.value.trim();
      if (!name && !v.value) continue;
      if (!name) throw fieldError('headers', 'headers: a header needs a name', n);
      if (!v.value) throw fieldError('headers', `headers.${name}: enter its value (values are write-only)`, v);
      out[name] = v.value;
    }
    // None left: the stored ones are removed.
    return Object.keys(out).length ? out : (stored.length ? null : undefined);
  };
  return { fields, present: stored.length > 0, touched: () => touched, value };
}

// Endpoint auth (CONTRACT section 12): none, Basic, or OAuth2 client
// credentials. Passwords and client secrets are write-only.
function authEditor(ep) {
  const stored = ep?.auth || null;
  let touched = false;
  const input = (id, label, attrs = {}) => [
    h('label', { for: id }, label),
    h('input', { id, type: 'text', autocomplete: 'off', spellcheck: 'false', ...attrs }),
  ];
  const type = h('select', { id: 'f-auth', name: 'auth_type', 'aria-describedby': 'f-auth-error' },
    h('option', { value: '' }, 'None (the signatures only)'),
    h('option', { value: 'basic', selected: stored?.type === 'basic' }, 'Basic'),
    h('option', { value: 'oauth2_client_credentials', selected: stored?.type === 'oauth2_client_credentials' }, 'OAuth2 client credentials'));
  const secretHint = stored ? 'write-only: enter it again to change the authentication' : '';
  const basic = h('div', { class: 'auth-fields', 'data-auth': 'basic' },
    input('f-auth-username', 'Username', { value: stored?.username ?? '' }),
    input('f-auth-password', 'Password', { type: 'password', autocomplete: 'new-password', placeholder: secretHint }));
  const oauth = h('div', { class: 'auth-fields', 'data-auth': 'oauth2_client_credentials' },
    input('f-auth-token-url', 'Token URL', { type: 'url', placeholder: 'https://auth.example.com/oauth/token', value: stored?.token_url ?? '' }),
    input('f-auth-client-id', 'Client ID', { value: stored?.client_id ?? '' }),
    input('f-auth-client-secret', 'Client secret', { type: 'password', autocomplete: 'new-password', placeholder: secretHint }),
    input('f-auth-scope', 'Scope (optional)', { value: stored?.scope ?? '' }));
  const show = () => {
    basic.hidden = type.value !== 'basic';
    oauth.hidden = type.value !== 'oauth2_client_credentials';
  };
  show();
  type.addEventListener('change', () => { touched = true; show(); });
  for (const box of [basic, oauth]) box.addEventListener('input', () => { touched = true; });
  const fields = [
    h('label', { for: 'f-auth' }, 'Authentication'),
    type, basic, oauth,
    h('div', { class: 'hint' }, 'Sets Authorization on each POST, for receivers behind a gateway that cannot check a signature: Basic, or a bearer token fetched from the token URL and cached.'),
    fieldErrorBox('auth'),
  ];
  const need = (id, what) => {
    const el = document.getElementById(id);
    const v = el.value.trim();
    if (!v) throw fieldError('auth', `auth.${what}: required${el.type === 'password' && stored ? ' (write-only: enter it again)' : ''}`, el);
    return v;
  };
  const value = () => {
    if (type.value === 'basic') {
      return { type: 'basic', username: need('f-auth-username', 'username'), password: document.getElementById('f-auth-password').value || need('f-auth-password', 'password') };
    }
    if (type.value === 'oauth2_client_credentials') {
      const out = { type: type.value, token_url: need('f-auth-token-url', 'token_url'), client_id: need('f-auth-client-id', 'client_id'), client_secret: need('f-auth-client-secret', 'client_secret') };
      const scope = document.getElementById('f-auth-scope').value.trim();
      if (scope) out.scope = scope;
      return out;
    }
    return null;
  };
  return { fields, present: !!stored, touched: () => touched && (type.value !== '' || !!stored), value };
}

// ---------------------------------------------------------------- endpoints

function successRate(deliveries) {
  const done = deliveries.filter((d) => d.status === 'delivered' || d.status === 'dead_lettered');
  if (!done.length) return null;
  const ok = done.filter((d) => d.status === 'delivered').length;
  return { pct: Math.round((100 * ok) / done.length), ok, n: done.length };
}

const rateClass = (pct) => (pct >= 95 ? 'ok' : pct >= 80 ? 'warn' : 'bad');

// A rate in whole percent that reads 100% only when nothing failed.
function percent(rate) {
  const pct = Math.round(rate * 100);
  return rate < 1 ? Math.min(pct, 99) : pct;
}

// The listing's `health`: the last day's success rate and counts.
function healthSummary(hl) {
  const counts = [`${hl.delivered} delivered`, `${hl.dead_lettered} failed`];
  if (hl.pending) counts.push(`${hl.pending} pending`);
  const detail = h('div', { class: 'muted small' }, counts.join(' · '));
  if (hl.success_rate === null || hl.success_rate === undefined) {
    return h('div', {}, h('span', { class: 'muted small' }, hl.pending ? 'No finished deliveries' : 'No deliveries'), hl.pending ? detail : null);
  }
  const pct = percent(hl.success_rate);
  return h('div', {}, h('span', { class: `badge ${rateClass(pct)}`, title: `${hl.delivered} of ${hl.delivered + hl.dead_lettered} finished deliveries of the last ${hl.window_hours} hours succeeded` }, `${pct}%`), detail);
}

async function endpointsView() {
  const addBtn = h('button', { class: 'primary', onclick: () => endpointForm(null) }, 'Add endpoint');
  const head = h('div', { class: 'head' }, h('h1', { class: 'grow' }, 'Endpoints'), addBtn);
  render(head, h('p', { class: 'muted' }, 'Loading endpoints…'));
  let endpoints = [];
  try {
    let cursor = null;
    do {
      const page = await api('GET', `endpoints?limit=250${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      endpoints = endpoints.concat(page.data);
      cursor = page.next_cursor;
    } while (cursor);
  } catch (e) {
    render(head, errorBox(e));
    return;
  }
  if (!endpoints.length) {
    render(head, h('div', { class: 'card' }, emptyState('No endpoints yet',
      'Add the URL of a service that should receive your events. Each delivery is signed, retried for up to three days, and listed here.',
      h('button', { class: 'primary', onclick: () => endpointForm(null) }, 'Add your first endpoint'))));
    return;
  }
  const rows = endpoints.map((ep) => {
    const rate = h('td', { 'data-label': 'Health', 'data-testid': 'endpoint-health' }, h('span', { class: 'muted' }, '…'));
    const open = () => { location.hash = `#/endpoints/${ep.id}`; };
    const row = h('tr', { class: 'clickable', 'data-testid': 'endpoint-row', 'data-id': ep.id, onclick: open },
      h('td', { class: 'url', 'data-label': 'URL' }, h('div', {},
        h('a', { href: `#/endpoints/${ep.id}`, onclick: (e) => e.stopPropagation() }, ep.url),
        ep.description ? h('div', { class: 'muted small' }, ep.description) : null)),
      h('td', { 'data-label': 'Events' }, chips(ep.event_types)),
      h('td', { 'data-label': 'Status' }, enabledBadge(ep), ep.disabled_reason ? h('div', { class: 'reason' }, ep.disabled_reason) : null),
      rate);
    if (ep.health) {
      rate.replaceChildren(healthSummary(ep.health));
      return row;
    }
    // A listing without figures: the endpoint's last 100 deliveries.
    api('GET', `endpoints/${ep.id}/deliveries?limit=100`).then((page) => {
      const r = successRate(page.data);
      rate.replaceChildren(r
        ? h('span', { class: `badge ${rateClass(r.pct)}`, title: `${r.ok} of the last ${r.n} finished deliveries succeeded` }, `${r.pct}%`)
        : h('span', { class: 'muted small' }, 'No deliveries yet'));
    }, () => rate.replaceChildren(h('span', { class: 'muted' }, '—')));
    return row;
  });
  render(head, h('div', { class: 'card flush' }, h('table', { class: 'stack' },
    h('thead', {}, h('tr', {}, h('th', {}, 'URL'), h('th', {}, 'Events'), h('th', {}, 'Status'), h('th', {}, 'Health (24 h)'))),
    h('tbody', {}, rows))));
}

// ---------------------------------------------------------------- one endpoint

let refreshTimer;

async function endpointView(id) {
  let ep;
  try {
    ep = await api('GET', `endpoints/${encodeURIComponent(id)}`);
  } catch (e) {
    render(h('p', {}, h('a', { href: '#/endpoints' }, '← All endpoints')), errorBox(e));
    return;
  }
  const types = await loadEventTypes().catch(() => []);
  const testType = h('select', { class: 'compact', 'aria-label': 'Test event type' },
    types.map((t) => h('option', { value: t.name, selected: ep.event_types.includes(t.name) && !ep.event_types.includes('*') ? true : null }, t.name)));
  const toggle = ep.enabled
    ? h('button', { onclick: () => setEnabled(false) }, 'Disable')
    : h('button', { class: 'primary', onclick: () => setEnabled(true) }, 'Enable');
  async function setEnabled(enabled) {
    if (await attempt(() => api('PATCH', `endpoints/${ep.id}`, { enabled }), enabled ? 'Endpoint enabled' : 'Endpoint disabled')) route();
  }
  async function remove() {
    dialog('Delete this endpoint?', [h('p', {}, 'No more events will be sent to ', h('b', {}, ep.url), '. Pending deliveries are canceled. This cannot be undone.')], 'Delete endpoint', async () => {
      await api('DELETE', `endpoints/${ep.id}`);
      toast('Endpoint deleted');
      location.hash = '#/endpoints';
    });
  }
  const secretCode = h('code', { id: 'secret' }, 'whsec_••••••••••••••••••••••••');
  let revealed = null;
  const revealBtn = h('button', { onclick: async () => {
    if (revealed) { revealed = null; secretCode.textContent = 'whsec_••••••••••••••••••••••••'; revealBtn.textContent = 'Reveal'; return; }
    const r = await attempt(() => api('GET', `endpoints/${ep.id}/secret`));
    if (r) { revealed = r.secret; secretCode.textContent = r.secret; revealBtn.textContent = 'Hide'; }
  } }, 'Reveal');
  const copyBtn = h('button', { onclick: async () => {
    const r = revealed ? { secret: revealed } : await attempt(() => api('GET', `endpoints/${ep.id}/secret`));
    if (r) copy(r.secret, 'Secret');
  } }, 'Copy');
  const rotateBtn = h('button', { onclick: () => dialog('Rotate the signing secret?', [
    h('p', {}, 'A new secret signs every delivery from now on. For 24 hours the old one also signs (a second ', h('code', {}, 'v1,'), ' entry in ', h('code', {}, 'webhook-signature'), '), so you can switch your receiver without dropping events. ', h('code', {}, 'X-Signature'), ' uses the new secret only.')],
  'Rotate secret', async () => {
    const r = await api('POST', `endpoints/${ep.id}/rotate-secret`, {});
    revealed = r.secret;
    secretCode.textContent = r.secret;
    revealBtn.textContent = 'Hide';
    toast('Secret rotated; the old one keeps signing for 24 hours');
  }) }, 'Rotate…');

  const filter = h('select', { class: 'compact', id: 'status-filter', 'aria-label': 'Filter deliveries by status', onchange: () => loadDeliveries() },
    h('option', { value: '' }, 'All statuses'), STATUSES.map((s) => h('option', { value: s }, s)));
  const deliveriesBox = h('div', {}, h('p', { class: 'muted' }, 'Loading deliveries…'));
  const open = new Set();

  async function loadDeliveries() {
    clearTimeout(refreshTimer);
    const q = filter.value ? `&status=${filter.value}` : '';
    // Each request examines a bounded number of deliveries, so a filtered
    // page can come back short with a cursor: follow a few to fill it.
    const page = { data: [], next_cursor: null };
    try {
      let cursor = null;
      for (let n = 0; n < 5 && page.data.length < 50; n++) {
        const c = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
        const part = await api('GET', `endpoints/${ep.id}/deliveries?limit=${50 - page.data.length}${q}${c}`);
        page.data = page.data.concat(part.data);
        cursor = part.next_cursor;
        if (!cursor) break;
      }
    } catch (e) {
      deliveriesBox.replaceChildren(errorBox(e));
      return;
    }
    if (!main.contains(deliveriesBox)) return;
    deliveriesBox.replaceChildren(deliveriesTable(page.data, open, loadDeliveries));
    if (page.data.some((d) => d.status === 'pending')) refreshTimer = setTimeout(loadDeliveries, 2000);
    else refreshTimer = setTimeout(loadDeliveries, 10000);
  }

  const since = h('input', { type: 'datetime-local', id: 'recover-since', class: 'compact', step: 1 });
  since.value = localInput(new Date(Date.now() - 24 * 3600 * 1000));
  const recoverBtn = h('button', { onclick: async () => {
    const d = new Date(since.value);
    if (Number.isNaN(d.getTime())) { toast('Choose the time to recover from', true); return; }
    // One request goes through a bounded part of the endpoint's
    // deliveries; its next_cursor says where the next goes on.
    const from = d.toISOString().replace(/\.\d{3}Z$/, 'Z');
    const r = await attempt(async () => {
      let requeued = 0;
      let cursor = null;
      do {
        const part = await api('POST', `endpoints/${ep.id}/recover`, { since: from, cursor });
        requeued += part.requeued;
        cursor = part.next_cursor;
      } while (cursor);
      return { requeued };
    });
    if (r) { toast(`${r.requeued} dead-lettered ${r.requeued === 1 ? 'delivery' : 'deliveries'} sent again`); loadDeliveries(); }
  } }, 'Recover dead-lettered');

  render(
    h('p', {}, h('a', { href: '#/endpoints' }, '← All endpoints')),
    h('div', { class: 'head' },
      h('h1', { class: 'grow url', id: 'endpoint-url' }, ep.url),
      enabledBadge(ep)),
    ep.disabled_reason ? h('div', { class: 'error', role: 'note' }, h('b', {}, 'Disabled: '), ep.disabled_reason, ep.enabled ? '' : ' Enable the endpoint to receive events again.') : null,
    h('div', { class: 'grid2' },
      h('section', { class: 'card', 'aria-label': 'Details' },
        h('dl', { class: 'kv' },
          h('dt', {}, 'ID'), h('dd', { class: 'mono' }, ep.id),
          h('dt', {}, 'Events'), h('dd', {}, chips(ep.event_types)),
          h('dt', {}, 'Description'), h('dd', {}, ep.description || h('span', { class: 'muted' }, 'None')),
          h('dt', {}, 'Filter'), h('dd', {}, ep.filter
            ? h('pre', { class: 'tight', id: 'endpoint-filter' }, JSON.stringify(ep.filter, null, 2))
            : h('span', { class: 'muted' }, 'None: every event of its types')),
          Object.keys(ep.headers || {}).length ? [h('dt', {}, 'Headers'), h('dd', { id: 'endpoint-headers' },
            h('div', { class: 'chips' }, Object.keys(ep.headers).map((n) => h('span', { class: 'chip' }, `${n}: ••••`))))] : null,
          ep.auth ? [h('dt', {}, 'Authentication'), h('dd', { id: 'endpoint-auth' },
            ep.auth.type === 'basic' ? `Basic, as ${ep.auth.username ?? '?'}`
              : ep.auth.type === 'oauth2_client_credentials' ? `OAuth2 client credentials from ${ep.auth.token_url ?? '?'}` : ep.auth.type)] : null,
          h('dt', {}, 'Created'), h('dd', {}, when(ep.created_at)),
          h('dt', {}, 'Updated'), h('dd', {}, when(ep.updated_at))),
        h('div', { class: 'actions' }, h('button', { onclick: () => endpointForm(ep) }, 'Edit'), toggle,
          h('button', { class: 'danger', onclick: remove }, 'Delete'))),
      h('section', { class: 'card', 'aria-label': 'Signing secret and test' },
        h('h2', {}, 'Signing secret'),
        h('div', { class: 'secret' }, secretCode, revealBtn, copyBtn, rotateBtn),
        h('p', { class: 'hint' }, 'Verify every request with this secret. ', h('a', { href: '#/event-types' }, 'How to verify signatures')),
        h('h2', {}, 'Send a test event'),
        h('div', { class: 'actions' }, testType, h('button', { class: 'primary', id: 'send-test', onclick: async () => {
          const r = await attempt(() => api('POST', `endpoints/${ep.id}/test`, { event_type: testType.value }), `Test ${testType.value} event sent`);
          if (r) setTimeout(loadDeliveries, 500);
        } }, 'Send test event')))),
    healthCard(ep),
    h('section', { class: 'card', 'aria-label': 'Deliveries' },
      h('div', { class: 'head' }, h('h2', { class: 'grow' }, 'Deliveries'), filter,
        h('button', { onclick: () => loadDeliveries() }, 'Refresh')),
      deliveriesBox,
      h('div', { class: 'actions' }, h('label', { for: 'recover-since', class: 'inline' }, 'Dead-lettered since'), since, recoverBtn)),
  );
  loadDeliveries();
}

// ---------------------------------------------------------------- health chart

const SVG_NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

const isoSeconds = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

// The windows of the chart: label, hours.
const WINDOWS = [['1 hour', 1], ['24 hours', 24], ['7 days', 168]];

// The endpoint's deliveries by outcome over three windows, from
// GET .../stats: an inline SVG drawn here (nothing from elsewhere).
function healthCard(ep) {
  const box = h('div', {}, h('p', { class: 'muted small' }, 'Loading…'));
  const now = Date.now();
  Promise.all(WINDOWS.map(([, hours]) => api('GET', `endpoints/${ep.id}/stats?since=${encodeURIComponent(isoSeconds(now - hours * 3600e3))}`)))
    .then((stats) => box.replaceChildren(statsChart(stats), statsLegend(stats[1])),
      (e) => box.replaceChildren(errorBox(e)));
  return h('section', { class: 'card', 'aria-label': 'Health' },
    h('h2', {}, 'Health'),
    h('p', { class: 'muted small' }, 'Deliveries made in each window (by the hour they were made), by outcome.'),
    box);
}

function statsChart(stats) {
  const W = 640;
  const ROW = 30;
  const BAR = 18;
  const LABEL = 80;
  const RIGHT = 56;
  const span = W - LABEL - RIGHT;
  const said = stats.map((st, i) => `${WINDOWS[i][0]}: ${st.delivered} delivered, ${st.dead_lettered} failed, ${st.pending} pending`);
  const chart = svg('svg', { viewBox: `0 0 ${W} ${ROW * stats.length}`, class: 'chart', role: 'img', 'aria-label': `Deliveries by outcome. ${said.join('; ')}.`, 'data-testid': 'stats-chart' });
  stats.forEach((st, i) => {
    const y = i * ROW + (ROW - BAR) / 2;
    const total = st.delivered + st.dead_lettered + st.pending;
    const g = svg('g', { 'data-testid': 'stats-bar', 'data-hours': WINDOWS[i][1], 'data-delivered': st.delivered, 'data-failed': st.dead_lettered, 'data-pending': st.pending });
    g.append(svg('text', { x: 0, y: y + BAR - 5, class: 'label' }, WINDOWS[i][0]));
    g.append(svg('rect', { x: LABEL, y, width: span, height: BAR, rx: 4, class: 'track' }));
    let x = LABEL;
    for (const [n, cls, what] of [[st.delivered, 'ok', 'delivered'], [st.dead_lettered, 'bad', 'failed (dead-lettered)'], [st.pending, 'pending', 'pending']]) {
      if (!n) continue;
      const w = (span * n) / total;
      g.append(svg('rect', { x: x.toFixed(2), y, width: w.toFixed(2), height: BAR, class: cls }, svg('title', {}, `${n} ${what}`)));
      x += w;
    }
    const rate = st.success_rate === null || st.success_rate === undefined ? (total ? 'pending' : 'none') : `${percent(st.success_rate)}%`;
    g.append(svg('text', { x: W, y: y + BAR - 5, 'text-anchor': 'end', class: 'value' }, rate));
    chart.append(g);
  });
  return chart;
}

function statsLegend(day) {
  const ms = (v) => (v === null || v === undefined ? '—' : `${v} ms`);
  return h('div', { class: 'legend small' },
    h('span', {}, h('i', { class: 'swatch ok' }), 'delivered'),
    h('span', {}, h('i', { class: 'swatch bad' }), 'failed (dead-lettered)'),
    h('span', {}, h('i', { class: 'swatch pending' }), 'pending'),
    h('span', { class: 'muted' }, `24 hours: ${day.failed_attempts} failed ${day.failed_attempts === 1 ? 'attempt' : 'attempts'}, latency p50 ${ms(day.latency_ms?.p50)}, p95 ${ms(day.latency_ms?.p95)}`));
}

function localInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function deliveriesTable(deliveries, open, reload) {
  if (!deliveries.length) {
    return emptyState('No deliveries here yet', 'Deliveries appear as events are sent to this endpoint. Send a test event to try it.');
  }
  const body = h('tbody', {});
  for (const d of deliveries) {
    const last = d.attempts[d.attempts.length - 1];
    const toggle = () => {
      if (open.has(d.id)) open.delete(d.id); else open.add(d.id);
      reload();
    };
    const canRetry = d.status === 'dead_lettered' || d.status === 'canceled';
    body.append(h('tr', { class: 'clickable', 'data-testid': 'delivery-row', 'data-id': d.id, onclick: toggle },
      h('td', { 'data-label': 'Status' }, statusBadge(d.status)),
      h('td', { 'data-label': 'Event' }, h('code', {}, d.event_type),
        h('div', { class: 'small mono' }, h('a', { href: `#/events/${d.event_id}`, onclick: (e) => e.stopPropagation() }, d.event_id))),
      h('td', { 'data-label': 'Created' }, when(d.created_at)),
      h('td', { 'data-label': 'Attempts' }, String(d.attempts.length),
        last ? h('div', { class: 'muted small' }, last.status_code ? `HTTP ${last.status_code}` : (last.error || ''), ` · ${last.latency_ms} ms`) : null),
      h('td', { 'data-label': '' }, h('div', { class: 'actions' },
        h('button', { class: 'link', 'aria-expanded': String(open.has(d.id)), onclick: (e) => { e.stopPropagation(); toggle(); } }, open.has(d.id) ? 'Hide attempts' : 'Attempts'),
        canRetry ? h('button', { 'data-action': 'retry', onclick: async (e) => {
          e.stopPropagation();
          if (await attempt(() => api('POST', `deliveries/${d.id}/retry`), 'Delivery queued again')) reload();
        } }, 'Retry') : null))));
    if (open.has(d.id)) {
      body.append(h('tr', { class: 'detail' }, h('td', { colspan: 5 },
        h('p', { class: 'small' }, h('a', { href: `#/deliveries/${d.id}`, 'data-testid': 'delivery-link' }, 'The body and headers sent →')),
        attemptsDetail(d))));
    }
  }
  return h('table', { class: 'stack' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Status'), h('th', {}, 'Event'), h('th', {}, 'Created'), h('th', {}, 'Attempts'), h('th', {}, h('span', { class: 'skip' }, 'Actions')))),
    body);
}

function attemptsDetail(d) {
  const info = [];
  if (d.next_attempt_at && d.status === 'pending') info.push(h('p', { class: 'small' }, 'Next attempt: ', when(d.next_attempt_at)));
  if (d.last_error && d.status === 'dead_lettered') info.push(h('p', { class: 'small reason' }, 'Dead-lettered: ', d.last_error));
  if (!d.attempts.length) return h('div', {}, info, h('p', { class: 'muted small' }, 'No attempt yet.'));
  return h('div', {}, info, h('table', { class: 'attempts' },
    h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, `Time (${zone})`), h('th', {}, 'Result'), h('th', {}, 'Latency'), h('th', {}, 'Response body'))),
    h('tbody', {}, d.attempts.map((a) => h('tr', {},
      h('td', {}, String(a.number)),
      h('td', {}, when(a.at)),
      h('td', {}, a.status_code ? h('span', { class: `badge ${a.status_code < 300 ? 'ok' : 'bad'}` }, `HTTP ${a.status_code}`) : h('span', { class: 'badge bad' }, a.error || 'error')),
      h('td', {}, `${a.latency_ms} ms`),
      h('td', {}, a.response_body ? h('pre', {}, a.response_body) : h('span', { class: 'muted' }, '—')))))));
}

// ---------------------------------------------------------------- events

const EVENTS_PAGE = 25;

// The endpoints of the org by id (for where deliveries went).
async function endpointsById() {
  const byId = new Map();
  let cursor = null;
  do {
    const page = await api('GET', `endpoints?limit=250${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    for (const ep of page.data) byId.set(ep.id, ep);
    cursor = page.next_cursor;
  } while (cursor);
  return byId;
}

// The event log, newest first: `type` filters it, `cursor` is where a page
// starts (from the page before's "Older").
async function eventsView(params) {
  const type = params.get('type') || '';
  const cursor = params.get('cursor') || '';
  const types = await loadEventTypes().catch(() => []);
  const select = h('select', { id: 'event-type-filter', class: 'compact', 'aria-label': 'Event type' },
    h('option', { value: '' }, 'All types'),
    types.map((t) => h('option', { value: t.name, selected: t.name === type }, t.name)));
  select.addEventListener('change', () => { location.hash = eventsLink(select.value, null); });
  const head = h('div', { class: 'head' }, h('h1', { class: 'grow' }, 'Events'), select,
    h('button', { onclick: () => route() }, 'Refresh'));
  render(head, h('p', { class: 'muted' }, 'Loading events…'));
  // With a type, a page may come back short with a cursor (each request
  // reads a bounded part of the log): follow a few to fill it.
  const events = [];
  let next = cursor || null;
  try {
    for (let n = 0; n < 5 && events.length < EVENTS_PAGE; n++) {
      const q = new URLSearchParams({ limit: String(EVENTS_PAGE - events.length) });
      if (type) q.set('type', type);
      if (next) q.set('cursor', next);
      const page = await api('GET', `events?${q}`);
      events.push(...page.data);
      next = page.next_cursor;
      if (!next) break;
    }
  } catch (e) {
    render(head, errorBox(e));
    return;
  }
  const paging = h('div', { class: 'actions paging' },
    cursor ? h('a', { class: 'btn', href: eventsLink(type, null) }, '← Newest') : null,
    next ? h('a', { class: 'btn', id: 'events-older', href: eventsLink(type, next) }, 'Older →') : null);
  if (!events.length) {
    render(head, h('div', { class: 'card' }, emptyState(type ? `No ${type} events here` : 'No events yet',
      next ? 'None in this part of the log; older ones may match.' : 'Events your systems publish are listed here, newest first, with their payload and where each went.',
      next ? paging : null)));
    return;
  }
  const rows = events.map((e) => h('tr', { class: 'clickable', 'data-testid': 'event-row', 'data-id': e.id, onclick: () => { location.hash = `#/events/${e.id}`; } },
    h('td', { 'data-label': 'Type' }, h('code', {}, e.type)),
    h('td', { 'data-label': 'Event', class: 'mono small' }, h('a', { href: `#/events/${e.id}`, onclick: (ev) => ev.stopPropagation() }, e.id)),
    h('td', { 'data-label': `Time (${zone})` }, when(e.created_at))));
  render(head,
    h('div', { class: 'card flush' }, h('table', { class: 'stack' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Type'), h('th', {}, 'Event'), h('th', {}, `Time (${zone})`))),
      h('tbody', {}, rows))),
    paging);
}

function eventsLink(type, cursor) {
  const q = new URLSearchParams();
  if (type) q.set('type', type);
  if (cursor) q.set('cursor', cursor);
  const text = q.toString();
  return `#/events${text ? `?${text}` : ''}`;
}

// One event: its payload as published, and where it went.
async function eventView(id) {
  const back = h('p', {}, h('a', { href: '#/events' }, '← Events'));
  let event;
  let text;
  let endpoints;
  try {
    ({ data: event, text } = await apiText('GET', `events/${encodeURIComponent(id)}`));
    endpoints = await endpointsById().catch(() => new Map());
  } catch (e) {
    render(back, errorBox(e));
    return;
  }
  const data = rawMember(text, 'data') ?? JSON.stringify(event.data);
  const payload = prettyJson(data);
  const rows = event.deliveries.map((d) => {
    const ep = endpoints.get(d.endpoint_id);
    return h('tr', { 'data-testid': 'event-delivery-row', 'data-id': d.id },
      h('td', { 'data-label': 'Endpoint', class: 'url' }, ep
        ? h('a', { href: `#/endpoints/${ep.id}` }, ep.url)
        : h('span', { class: 'mono small' }, d.endpoint_id)),
      h('td', { 'data-label': 'Status' }, statusBadge(d.status)),
      h('td', { 'data-label': '' }, h('a', { href: `#/deliveries/${d.id}` }, 'Delivery →')));
  });
  render(back,
    h('div', { class: 'head' }, h('h1', { class: 'grow' }, h('code', {}, event.type))),
    h('section', { class: 'card', 'aria-label': 'Event' },
      h('dl', { class: 'kv' },
        h('dt', {}, 'ID'), h('dd', { class: 'mono' }, event.id),
        h('dt', {}, 'Type'), h('dd', {}, h('code', {}, event.type)),
        h('dt', {}, 'Published'), h('dd', {}, when(event.created_at))),
      h('h2', { class: 'gap' }, 'Payload'),
      h('pre', { id: 'event-payload', tabindex: 0 }, payload),
      h('button', { onclick: () => copy(data, 'Payload') }, 'Copy payload')),
    h('section', { class: 'card', 'aria-label': 'Where it went' },
      h('div', { class: 'head' }, h('h2', { class: 'grow' }, 'Where it went'), h('button', { onclick: () => route() }, 'Refresh')),
      rows.length
        ? h('table', { class: 'stack' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Endpoint'), h('th', {}, 'Status'), h('th', {}, h('span', { class: 'skip' }, 'Delivery')))),
          h('tbody', {}, rows))
        : h('p', { class: 'muted' }, 'No delivery (yet): no endpoint takes this type, its filters left it out, or it is still being fanned out.')));
}

// One delivery: where it went, its attempts, and the exact request sent.
async function deliveryView(id) {
  clearTimeout(refreshTimer);
  let d;
  try {
    d = await api('GET', `deliveries/${encodeURIComponent(id)}`);
  } catch (e) {
    render(h('p', {}, h('a', { href: '#/events' }, '← Events')), errorBox(e));
    return;
  }
  const ep = await api('GET', `endpoints/${encodeURIComponent(d.endpoint_id)}`).catch(() => null);
  const canRetry = d.status === 'dead_lettered' || d.status === 'canceled';
  const retry = canRetry ? h('button', { 'data-action': 'retry', onclick: async () => {
    if (await attempt(() => api('POST', `deliveries/${d.id}/retry`), 'Delivery queued again')) route();
  } }, 'Retry') : null;
  const req = d.request;
  let exact = true;
  const body = req ? h('pre', { id: 'request-body', tabindex: 0 }, req.body) : null;
  const toggle = req ? h('button', { 'aria-pressed': 'false', onclick: () => {
    exact = !exact;
    body.textContent = exact ? req.body : prettyJson(req.body);
    toggle.setAttribute('aria-pressed', String(!exact));
    toggle.textContent = exact ? 'Pretty-print' : 'Show the exact bytes';
  } }, 'Pretty-print') : null;
  const attempted = d.attempts.length ? d.attempts[d.attempts.length - 1].number : null;
  render(
    h('p', { class: 'actions' }, h('a', { href: `#/events/${d.event_id}` }, '← Event'), ep ? h('a', { href: `#/endpoints/${ep.id}` }, 'Endpoint') : null),
    h('div', { class: 'head' }, h('h1', { class: 'grow' }, 'Delivery'), statusBadge(d.status), retry),
    h('section', { class: 'card', 'aria-label': 'Delivery' },
      h('dl', { class: 'kv' },
        h('dt', {}, 'ID'), h('dd', { class: 'mono' }, d.id),
        h('dt', {}, 'Endpoint'), h('dd', { class: 'url', id: 'delivery-endpoint' }, ep ? h('a', { href: `#/endpoints/${ep.id}` }, ep.url) : h('span', { class: 'mono' }, `${d.endpoint_id} (deleted)`)),
        h('dt', {}, 'Event'), h('dd', {}, h('code', {}, d.event_type), ' ', h('a', { class: 'mono small', href: `#/events/${d.event_id}` }, d.event_id)),
        h('dt', {}, 'Created'), h('dd', {}, when(d.created_at)))),
    h('section', { class: 'card', 'aria-label': 'Request' },
      h('h2', {}, 'Request sent'),
      req ? [
        h('p', { class: 'muted small' }, `POST, with the headers of ${attempted ? `attempt ${attempted}` : 'its first attempt'}. Values derived from the signing secret are masked.`),
        h('table', { class: 'headers', id: 'request-headers' }, h('tbody', {}, Object.entries(req.headers).map(([name, value]) => h('tr', { 'data-testid': 'request-header' },
          h('td', { class: 'nowrap' }, h('code', {}, name)),
          h('td', {}, h('code', { class: /^\*+$/.test(value) ? 'masked' : null }, value)))))),
        h('div', { class: 'head gap' }, h('h2', { class: 'grow' }, 'Body'), toggle, h('button', { onclick: () => copy(req.body, 'Body') }, 'Copy body')),
        h('p', { class: 'muted small' }, 'Exactly the bytes sent, and signed.'),
        body,
      ] : h('p', { class: 'muted' }, 'Its event is no longer kept, so the body cannot be shown.')),
    h('section', { class: 'card', 'aria-label': 'Attempts' }, h('h2', {}, 'Attempts'), attemptsDetail(d)));
  if (d.status === 'pending') refreshTimer = setTimeout(() => { if (location.hash === `#/deliveries/${id}`) route(); }, 2000);
}

// ---------------------------------------------------------------- catalogue

const EXAMPLES = {
  lead_won: { lead_id: 'lead_8812', client_id: 'cli_2210', value: 12000, currency: 'eur', owner: 'maria@example.com' },
  lead_lost: { lead_id: 'lead_8813', reason: 'budget', owner: 'maria@example.com' },
  proposal_accepted: { proposal_id: 'prop_301', client_id: 'cli_2210', total: 8400, currency: 'eur' },
  'meeting.booked': { meeting_id: 'mtg_77', client_id: 'cli_2210', starts_at: '2026-12-03T10:00:00Z', duration_minutes: 30 },
  'invoice.paid': { invoice_id: 'in_1001', client_id: 'cli_2210', amount: 4200, currency: 'eur' },
  payment_failed: { invoice_id: 'in_1002', amount: 990, currency: 'eur', failure_reason: 'card_declined' },
  'project.completed': { project_id: 'prj_45', client_id: 'cli_2210', completed_at: '2026-11-30T17:00:00Z' },
  'task.completed': { task_id: 'tsk_9001', project_id: 'prj_45', assignee: 'li@example.com' },
  'client.created': { client_id: 'cli_2210', name: 'Acme GmbH', email: 'billing@acme.example' },
  'billing.suspended': { subscription_id: 'sub_12', reason: 'unpaid' },
  'survey.submitted': { survey_id: 'srv_5', client_id: 'cli_2210', score: 9 },
};

const HEADERS = [
  ['Content-Type', 'Always application/json.'],
  ['User-Agent', 'devsphere-webhooks/<version>.'],
  ['webhook-id', 'The event id. Stable across retries: use it to ignore duplicates.'],
  ['webhook-timestamp', 'Unix seconds of this attempt. Refuse requests more than 5 minutes old.'],
  ['webhook-signature', 'v1,<base64 HMAC-SHA256> of "{webhook-id}.{webhook-timestamp}.{body}" with the base64-decoded secret (after whsec_). Two entries, space-separated, for 24 h after a rotation.'],
  ['X-Signature', 'sha256=<hex HMAC-SHA256> of the raw body, keyed with the whole secret string.'],
  ['X-Webhook-Event', 'The event type, e.g. invoice.paid.'],
  ['X-Webhook-Delivery', 'The delivery id (one per endpoint and event).'],
  ['X-Webhook-Attempt', '1 for the first attempt, then 2, 3, …'],
];

const SNIPPETS = {
  'Python (standardwebhooks)': `# pip install standardwebhooks
from standardwebhooks.webhooks import Webhook

wh = Webhook("whsec_...")  # this endpoint's signing secret

def handle(request):
    # raw body bytes, exactly as received; raises on a bad signature
    event = wh.verify(request.body, dict(request.headers))
    if already_processed(request.headers["webhook-id"]):
        return 200
    process(event["type"], event["data"])
    return 200`,
  'Node (standardwebhooks)': `// npm install standardwebhooks
import { Webhook } from "standardwebhooks";

const wh = new Webhook("whsec_...");  // this endpoint's signing secret

app.post("/webhooks", express.raw({ type: "application/json" }), (req, res) => {
  let event;
  try {
    event = wh.verify(req.body, req.headers);  // raw body; throws on a bad signature
  } catch {
    return res.status(400).end();
  }
  process(event.type, event.data);
  res.status(204).end();
});`,
  'Plain HMAC (X-Signature)': `# Python, standard library only
import hashlib, hmac

def valid(secret: str, body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)   # header = X-Signature

// Node
const crypto = require("crypto");
function valid(secret, rawBody, header) {
  const expected = "sha256=" + crypto.createHmac("sha256", secret).update(rawBody).digest("hex");
  return header.length === expected.length &&
    crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(header));
}`,
};

async function catalogueView() {
  render(h('div', { class: 'head' }, h('h1', {}, 'Event types')), h('p', { class: 'muted' }, 'Loading…'));
  let types;
  try {
    types = await loadEventTypes();
  } catch (e) {
    render(h('h1', {}, 'Event types'), errorBox(e));
    return;
  }
  const tabs = Object.keys(SNIPPETS);
  const code = h('pre', { id: 'snippet', tabindex: 0 }, SNIPPETS[tabs[0]]);
  const tabButtons = tabs.map((name, i) => h('button', { role: 'tab', 'aria-selected': String(i === 0), onclick: (e) => {
    for (const b of tabButtons) b.setAttribute('aria-selected', 'false');
    e.currentTarget.setAttribute('aria-selected', 'true');
    code.textContent = SNIPPETS[name];
  } }, name));
  render(
    h('div', { class: 'head' }, h('h1', {}, 'Event types')),
    h('p', { class: 'muted' }, 'Every delivery is a POST with a JSON body {id, type, created_at, data}. Expand a type for an example.'),
    h('section', { class: 'card catalogue', 'aria-label': 'Catalogue' }, types.map((t) => {
      const example = { id: 'evt_01JDQ4Z8W5X3T2M9K7H6G5F4E3', type: t.name, created_at: '2026-11-27T06:00:00Z', data: EXAMPLES[t.name] || {} };
      return h('details', {}, h('summary', {}, h('code', {}, t.name), h('span', { class: 'muted' }, t.description)),
        h('pre', {}, JSON.stringify(example, null, 2)));
    })),
    h('section', { class: 'card', 'aria-label': 'Headers' }, h('h2', {}, 'Headers of every delivery'),
      h('table', { class: 'stack' }, h('tbody', {}, HEADERS.map(([k, v]) => h('tr', {}, h('td', { 'data-label': 'Header', class: 'nowrap' }, h('code', {}, k)), h('td', { 'data-label': 'Meaning' }, v)))))),
    h('section', { class: 'card', 'aria-label': 'Verify signatures' }, h('h2', {}, 'Verify signatures'),
      h('p', { class: 'muted small' }, 'Verify against the raw body bytes, before parsing JSON. The webhook-* headers follow the Standard Webhooks specification, so its libraries work unchanged.'),
      h('div', { class: 'tabs', role: 'tablist' }, tabButtons),
      code,
      h('button', { onclick: () => copy(code.textContent, 'Snippet') }, 'Copy snippet')),
  );
}

// ---------------------------------------------------------------- shell

function sessionEnded(message) {
  if (ended) return;
  clearTimeout(refreshTimer);
  sessionStorage.removeItem(KEY);
  document.querySelector('.top nav').hidden = true;
  document.getElementById('who').textContent = '';
  render(h('div', { class: 'notice card', id: 'session-ended', role: 'alert' },
    h('h1', {}, 'This portal session has ended'),
    h('p', { class: 'muted' }, message.charAt(0).toUpperCase() + message.slice(1) + (/[.!]$/.test(message) ? '' : '.')),
    h('p', {}, 'Open the webhooks portal again from DevSphere to get a new link.')));
  ended = true;
  for (const dlg of document.querySelectorAll('dialog')) dlg.close();
}

function header() {
  const who = document.getElementById('who');
  if (!claims) return;
  const exp = claims.exp ? new Date(claims.exp * 1000) : null;
  who.replaceChildren(h('div', {}, 'Organization ', h('b', { id: 'org' }, claims.org_id || '?')),
    exp ? h('div', {}, 'Session until ', new Intl.DateTimeFormat(undefined, { timeStyle: 'short' }).format(exp)) : null);
  if (exp) {
    const left = exp.getTime() - Date.now();
    if (left > 0 && left < 2 ** 31) setTimeout(() => sessionEnded('The session reached its end time.'), left);
  }
}

function route() {
  clearTimeout(refreshTimer);
  if (!token) {
    sessionEnded('This page was opened without a session link.');
    return;
  }
  const [path, query] = (location.hash.replace(/^#\/?/, '') || 'endpoints').split('?');
  const [section, id] = path.split('/');
  // A delivery belongs with the events it is one of.
  const nav = section === 'deliveries' ? 'events' : section;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (section === 'event-types') catalogueView();
  else if (section === 'events' && id) eventView(decodeURIComponent(id));
  else if (section === 'events') eventsView(new URLSearchParams(query || ''));
  else if (section === 'deliveries' && id) deliveryView(decodeURIComponent(id));
  else if (section === 'endpoints' && id) endpointView(decodeURIComponent(id));
  else endpointsView();
  main.focus({ preventScroll: true });
}

const token = await takeToken();
const claims = token ? claimsOf(token) : null;

// A portal link opened in this tab while the page is open: load it afresh,
// so it goes through takeToken like any other.
addEventListener('hashchange', () => (LINK.test(location.hash) ? location.reload() : route()));
header();
route();
