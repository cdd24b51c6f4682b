// The org portal: endpoints, deliveries and the event-type catalogue, over
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

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
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
  return data;
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
    try {
      await onSubmit(form);
      dlg.close();
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
  });
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
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
    h('input', { id: 'f-url', name: 'url', type: 'url', required: true, placeholder: 'https://example.com/webhooks', value: ep?.url ?? '' }),
    h('div', { class: 'hint' }, 'We POST signed JSON to this URL.'),
    h('label', { for: 'f-desc' }, 'Description (optional)'),
    h('input', { id: 'f-desc', name: 'description', type: 'text', value: ep?.description ?? '' }),
    h('label', {}, 'Events to send'),
    h('label', { class: 'inline' }, all, 'All event types, including future ones'),
    h('div', { class: 'types', role: 'group', 'aria-label': 'Event types' }, boxes),
  ];
  return dialog(ep ? 'Edit endpoint' : 'Add endpoint', fields, ep ? 'Save changes' : 'Add endpoint', async (form) => {
    const eventTypesChosen = form.elements.all.checked
      ? ['*']
      : [...form.querySelectorAll('input[name=type]:checked')].map((i) => i.value);
    if (eventTypesChosen.length === 0) throw new Error('Choose at least one event type (or all of them).');
    const body = { url: form.elements.url.value.trim(), event_types: eventTypesChosen, description: form.elements.description.value };
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

// ---------------------------------------------------------------- endpoints

function successRate(deliveries) {
  const done = deliveries.filter((d) => d.status === 'delivered' || d.status === 'dead_lettered');
  if (!done.length) return null;
  const ok = done.filter((d) => d.status === 'delivered').length;
  return { pct: Math.round((100 * ok) / done.length), ok, n: done.length };
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
    const rate = h('td', { 'data-label': 'Success' }, h('span', { class: 'muted' }, '…'));
    const open = () => { location.hash = `#/endpoints/${ep.id}`; };
    const row = h('tr', { class: 'clickable', 'data-testid': 'endpoint-row', 'data-id': ep.id, onclick: open },
      h('td', { class: 'url', 'data-label': 'URL' }, h('div', {},
        h('a', { href: `#/endpoints/${ep.id}`, onclick: (e) => e.stopPropagation() }, ep.url),
        ep.description ? h('div', { class: 'muted small' }, ep.description) : null)),
      h('td', { 'data-label': 'Events' }, chips(ep.event_types)),
      h('td', { 'data-label': 'Status' }, enabledBadge(ep), ep.disabled_reason ? h('div', { class: 'reason' }, ep.disabled_reason) : null),
      rate);
    api('GET', `endpoints/${ep.id}/deliveries?limit=100`).then((page) => {
      const r = successRate(page.data);
      rate.replaceChildren(r
        ? h('span', { class: `badge ${r.pct >= 95 ? 'ok' : r.pct >= 80 ? 'warn' : 'bad'}`, title: `${r.ok} of the last ${r.n} finished deliveries succeeded` }, `${r.pct}%`)
        : h('span', { class: 'muted small' }, 'No deliveries yet'));
    }, () => rate.replaceChildren(h('span', { class: 'muted' }, '—')));
    return row;
  });
  render(head, h('div', { class: 'card flush' }, h('table', { class: 'stack' },
    h('thead', {}, h('tr', {}, h('th', {}, 'URL'), h('th', {}, 'Events'), h('th', {}, 'Status'), h('th', {}, 'Recent success'))),
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
    h('section', { class: 'card', 'aria-label': 'Deliveries' },
      h('div', { class: 'head' }, h('h2', { class: 'grow' }, 'Deliveries'), filter,
        h('button', { onclick: () => loadDeliveries() }, 'Refresh')),
      deliveriesBox,
      h('div', { class: 'actions' }, h('label', { for: 'recover-since', class: 'inline' }, 'Dead-lettered since'), since, recoverBtn)),
  );
  loadDeliveries();
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
      h('td', { 'data-label': 'Event' }, h('code', {}, d.event_type), h('div', { class: 'muted small mono' }, d.event_id)),
      h('td', { 'data-label': 'Created' }, when(d.created_at)),
      h('td', { 'data-label': 'Attempts' }, String(d.attempts.length),
        last ? h('div', { class: 'muted small' }, last.status_code ? `HTTP ${last.status_code}` : (last.error || ''), ` · ${last.latency_ms} ms`) : null),
      h('td', { 'data-label': '' }, h('div', { class: 'actions' },
        h('button', { class: 'link', 'aria-expanded': String(open.has(d.id)), onclick: (e) => { e.stopPropagation(); toggle(); } }, open.has(d.id) ? 'Hide attempts' : 'Attempts'),
        canRetry ? h('button', { 'data-action': 'retry', onclick: async (e) => {
          e.stopPropagation();
          if (await attempt(() => api('POST', `deliveries/${d.id}/retry`), 'Delivery queued again')) reload();
        } }, 'Retry') : null))));
    if (open.has(d.id)) body.append(h('tr', { class: 'detail' }, h('td', { colspan: 5 }, attemptsDetail(d))));
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
  const path = location.hash.replace(/^#\/?/, '') || 'endpoints';
  const [section, id] = path.split('/');
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (section === 'event-types') catalogueView();
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
