'use strict';
/*
 * stitcher's page. It asks the service a question as a job (POST /v1/jobs), follows the
 * job's progress events, then draws the answer: a line chart of the series, the totals per
 * Tweet, the engagement rate and the Top Tweets, with downloads as JSON or CSV and a link
 * to the view. `document.body.dataset.state` says where the page is: idle, running, done,
 * failed or cancelled.
 *
 * Tweet IDs are beyond 2^53, so they stay strings throughout.
 */

const TYPES = [
  'impressions', 'engagements', 'favorites', 'retweets', 'replies', 'video_views',
  'media_views', 'media_engagements', 'url_clicks', 'hashtag_clicks', 'detail_expands',
  'permalink_clicks', 'app_install_attempts', 'app_opens', 'email_tweet', 'user_follows',
  'user_profile_clicks',
];
// One colour per type, in the order above, so a type keeps its colour from one view to the next.
const COLORS = [
  '#1f6fd1', '#e8710a', '#1e8e3e', '#d93025', '#8e44ad', '#8c564b', '#d63384', '#5f6368',
  '#a0a200', '#0f9fb5', '#3949ab', '#637939', '#b07d12', '#843c39', '#7b4173', '#00897b', '#c2185b',
];
const KEY_STORAGE = 'stitcher.key';
const PER_TWEET = ['tweet.id', 'engagement.type'];
// The groupings each preset adds to "per tweet".
const PRESETS = {
  daily: { daily: { group_by: ['engagement.type', 'engagement.day'] } },
  totals: {},
  hours: { 'hour of day': { group_by: ['engagement.type', 'engagement.hour'] } },
};
const HOURS = Array.from({ length: 24 }, (_, h) => String(h).padStart(2, '0'));
const DAY_MS = 86400000;

let job = null; // The job being followed: { id, controller, cancelled, began }.
let shown = null; // The answer on screen: { question, answer, text, id }.

const $ = (selector) => document.querySelector(selector);

/* ---- Reading questions and answers (no DOM) ---- */

/** Tweet IDs typed or pasted, separated by whitespace or commas. */
function parseIds(text) {
  return String(text).split(/[\s,]+/).filter(Boolean);
}

/** Orders decimal Tweet IDs as numbers without converting them: by length, then digits. */
function compareIds(a, b) {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

function isFinal(state) {
  return state === 'done' || state === 'failed' || state === 'cancelled';
}

function sameLevels(a, b) {
  return Array.isArray(a) && a.length === b.length && a.every((level, i) => level === b[i]);
}

function parseJson(text) {
  try { return JSON.parse(text); } catch { return null; }
}

/**
 * A question's JSON, with Tweet IDs given as bare numbers read as their digits: IDs pass
 * 2^53, which a JavaScript number cannot hold exactly.
 */
function parseQuestion(text) {
  const exact = String(text).replace(/("tweet_ids"\s*:\s*\[)([^\]]*)\]/, (_, open, items) =>
    `${open}${items.replace(/(^|,)\s*(\d+)\s*(?=,|$)/g, '$1"$2"')}]`);
  return parseJson(exact);
}

/**
 * Sums a grouping's tree by two of its levels, over all its other levels (e.g. over Tweets
 * for a per-day series). Returns Map(row key → Map(column key → count)); a level the
 * grouping does not have is keyed "all".
 */
function sumBy(tree, groupBy, rowLevel, colLevel) {
  const rowAt = groupBy.indexOf(rowLevel);
  const colAt = groupBy.indexOf(colLevel);
  const sums = new Map();
  (function walk(node, keys) {
    if (node === null || node === undefined) return;
    if (typeof node !== 'object') {
      const value = Number(node);
      if (!Number.isFinite(value)) return;
      const row = rowAt < 0 ? 'all' : keys[rowAt];
      const col = colAt < 0 ? 'all' : keys[colAt];
      if (row === undefined || col === undefined) return;
      if (!sums.has(row)) sums.set(row, new Map());
      const cells = sums.get(row);
      cells.set(col, (cells.get(col) || 0) + value);
      return;
    }
    if (keys.length >= groupBy.length) return;
    for (const [key, child] of Object.entries(node)) walk(child, [...keys, key]);
  })(tree, []);
  return sums;
}

/** The grouping to chart: one by day (summed over hours and Tweets), else one by hour. */
function pickChart(groupings) {
  const entries = Object.entries(groupings || {}).filter(([, g]) => Array.isArray(g && g.group_by));
  const byDay = entries.find(([, g]) => g.group_by.includes('engagement.day'));
  if (byDay) return { name: byDay[0], groupBy: byDay[1].group_by, level: 'engagement.day' };
  const byHour = entries.find(([, g]) => g.group_by.includes('engagement.hour'));
  if (byHour) return { name: byHour[0], groupBy: byHour[1].group_by, level: 'engagement.hour' };
  return null;
}

/** The grouping for the totals table: exactly Tweet then type, else any with both. */
function pickPerTweet(groupings) {
  const entries = Object.entries(groupings || {}).filter(([, g]) => Array.isArray(g && g.group_by));
  const found = entries.find(([, g]) => sameLevels(g.group_by, PER_TWEET))
    || entries.find(([, g]) => PER_TWEET.every((level) => g.group_by.includes(level)));
  return found ? { name: found[0], groupBy: found[1].group_by } : null;
}

/** The form's preset that shows a question's groupings best. */
function presetOf(groupings) {
  const pick = pickChart(groupings);
  if (!pick) return 'totals';
  return pick.level === 'engagement.day' ? 'daily' : 'hours';
}

/**
 * A linked question as given, with what the page shows asked for too: the "per tweet"
 * grouping the table needs (when it has room), the engagement rate and the Top Tweets.
 */
function forThePage(question) {
  const asked = { ...question };
  // The page shows the engagement rate and the Top Tweets: a link that does not ask for
  // them gets them as the form would ask.
  const types = Array.isArray(question.engagement_types) ? question.engagement_types : [];
  if (asked.derive == null && types.includes('impressions') && types.includes('engagements')) {
    asked.derive = ['engagement_rate'];
  }
  if (asked.top == null && typeof types[0] === 'string') asked.top = { by: types[0], n: 10 };
  const groupings = question.groupings && typeof question.groupings === 'object' ? question.groupings : {};
  const list = Object.values(groupings);
  if (list.length >= 3 || list.some((g) => sameLevels(g && g.group_by, PER_TWEET))) return asked;
  let name = 'per tweet';
  for (let i = 2; name in groupings; i++) name = `per tweet ${i}`;
  return { ...asked, groupings: { ...groupings, [name]: { group_by: [...PER_TWEET] } } };
}

/** The UTC days from `start`'s day to the last one before `end` (instants or dates). */
function daysInRange(start, end) {
  const first = Date.parse(`${String(start).slice(0, 10)}T00:00:00Z`);
  const stop = Date.parse(end);
  const days = [];
  if (!Number.isFinite(first) || !Number.isFinite(stop)) return days;
  for (let t = first; t < stop && days.length < 5000; t += DAY_MS) days.push(new Date(t).toISOString().slice(0, 10));
  return days;
}

/** An SVG path through `values`, spread over the plot area `box`, scaled to `max`. */
function linePath(values, max, box) {
  const n = values.length;
  if (n === 0) return '';
  const top = max > 0 ? max : 1;
  const x = (i) => box.left + (n > 1 ? (i * box.width) / (n - 1) : box.width / 2);
  const y = (v) => box.top + box.height - (Math.max(0, Number(v) || 0) / top) * box.height;
  const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  // A lone point is a zero-length line, drawn as a dot by the round line cap.
  return `M${points.join('L')}${n === 1 ? 'h0' : ''}`;
}

/**
 * Reads Server-Sent Events from text arriving in pieces. push() returns the events a piece
 * completes, each { event, data }; comments (keep-alives) are skipped.
 */
function sseParser() {
  let buffer = '';
  let event = '';
  let data = [];
  return {
    push(text) {
      buffer += text;
      // A trailing "\r" may be the first half of "\r\n": keep it for the next piece.
      const cut = buffer.endsWith('\r') ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
      buffer = lines.pop() + buffer.slice(cut);
      const events = [];
      for (const line of lines) {
        if (line === '') {
          if (data.length) events.push({ event: event || 'message', data: data.join('\n') });
          event = '';
          data = [];
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'event') event = value;
          else if (field === 'data') data.push(value);
        }
      }
      return events;
    },
  };
}

/** What to tell the user about a failed job, from whatever its status holds. */
function failureMessage(status) {
  const error = status && status.error;
  const messages = (error && Array.isArray(error.errors) && error.errors)
    || (status && Array.isArray(status.errors) && status.errors)
    || (error && typeof error.message === 'string' && [error.message])
    || (typeof error === 'string' && [error]);
  if (messages && messages.length) {
    const code = error && error.status ? ` (${error.status})` : '';
    return `The job failed${code}: ${messages.join('; ')}`;
  }
  return `The job failed: ${JSON.stringify(status)}`;
}

const fmt = (n) => Number(n).toLocaleString('en-US');
const percent = (rate) => (typeof rate === 'number' && Number.isFinite(rate) ? `${(rate * 100).toFixed(2)}%` : '—');
const axisLabel = (n) => (n >= 1e6 ? new Intl.NumberFormat('en-US', { notation: 'compact' }).format(n) : fmt(n));
const instant = (s) => `${String(s).replace('T', ' ').replace(/:00Z$|Z$/, '')} UTC`;
const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/* ---- The DOM ---- */

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) if (value != null) node.setAttribute(name, value);
  node.append(...children.filter((c) => c != null));
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text != null) node.textContent = text;
  return node;
}

const setState = (state) => { document.body.dataset.state = state; };
const showStatus = (text) => { $('#status').textContent = text; };

function showError(messages) {
  const box = $('#error');
  box.textContent = messages.join('\n');
  box.hidden = false;
}

function clearError() {
  $('#error').textContent = '';
  $('#error').hidden = true;
}

function loadKey() {
  try { return sessionStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch { /* Storage is off: the key lives in the field only. */ }
}

const typeBoxes = () => [...document.querySelectorAll('input[name="type"]')];

/** The question the form asks. */
function buildQuestion() {
  const types = typeBoxes().filter((box) => box.checked).map((box) => box.value);
  const question = {
    tweet_ids: parseIds($('#tweet-ids').value),
    engagement_types: types,
    groupings: { 'per tweet': { group_by: [...PER_TWEET] }, ...PRESETS[$('#preset').value] },
    start: $('#start').value,
    end: $('#end').value,
  };
  if (types.includes('impressions') && types.includes('engagements')) question.derive = ['engagement_rate'];
  if (types.length) question.top = { by: types[0], n: 10 };
  return question;
}

/** Shows a question in the form, as far as the form can say it. */
function fillForm(question) {
  if (Array.isArray(question.tweet_ids)) $('#tweet-ids').value = question.tweet_ids.map(String).join('\n');
  if (Array.isArray(question.engagement_types)) {
    for (const box of typeBoxes()) box.checked = question.engagement_types.includes(box.value);
  }
  if (typeof question.start === 'string') $('#start').value = question.start.slice(0, 10);
  if (typeof question.end === 'string') $('#end').value = question.end.slice(0, 10);
  if (question.groupings && typeof question.groupings === 'object') $('#preset').value = presetOf(question.groupings);
}

/* ---- The service ---- */

/** An error answer's messages. */
class ApiError extends Error {
  constructor(messages, status) {
    super(messages.join('\n'));
    this.messages = messages;
    this.status = status;
  }
}

/** A call with the API key; throws ApiError with the service's `errors` when not 2xx. */
async function request(method, path, { accept = 'application/json', body, signal } = {}) {
  const headers = { Authorization: `Bearer ${$('#api-key').value.trim()}`, Accept: accept };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body, signal, cache: 'no-store' });
  if (response.ok) return response;
  const text = await response.text().catch(() => '');
  const parsed = parseJson(text);
  const messages = parsed && Array.isArray(parsed.errors) && parsed.errors.length
    ? parsed.errors.map(String)
    : [`${response.status} ${response.statusText}${text ? `: ${text.slice(0, 300)}` : ''}`];
  throw new ApiError(messages, response.status);
}

const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;

/** Shows a job status: the state, the slices fetched, the time left. */
function showJob(status) {
  const progress = status.progress || {};
  const bar = $('#progress');
  bar.hidden = false;
  if (progress.slices_total > 0) {
    bar.max = progress.slices_total;
    bar.value = progress.slices_done || 0;
  } else if (!isFinal(status.state)) {
    bar.removeAttribute('value'); // Nothing planned yet: an indeterminate bar.
  } else {
    bar.max = 1;
    bar.value = status.state === 'done' ? 1 : 0;
  }
  if (status.state === 'queued') showStatus('Queued…');
  else if (status.state === 'running') {
    showStatus(`Fetching ${progress.slices_done || 0} of ${progress.slices_total || 0} slices…`);
  }
  const eta = status.state === 'running' && status.eta_secs != null ? `About ${status.eta_secs} s left` : '';
  $('#eta').textContent = eta;
}

/** Follows a job to its final status: its event stream, else polling. */
async function watch(current) {
  try {
    const response = await request('GET', jobPath(current.id), {
      accept: 'text/event-stream', signal: current.controller.signal,
    });
    if ((response.headers.get('Content-Type') || '').includes('text/event-stream') && response.body) {
      const final = await readEvents(response.body);
      if (final) return final;
    } else {
      const status = await response.json();
      showJob(status);
      if (isFinal(status.state)) return status;
    }
  } catch (error) {
    if (current.cancelled || error instanceof ApiError) throw error;
    // The stream broke: polling picks up from here.
  }
  return poll(current);
}

/** Reads `progress` events until the one named after the final state; null if none came. */
async function readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = sseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return null;
    for (const { event, data } of parser.push(decoder.decode(value, { stream: true }))) {
      const status = parseJson(data) || {};
      if (isFinal(event)) {
        reader.cancel().catch(() => {});
        const final = { ...status, state: event };
        showJob(final);
        return final;
      }
      if (event === 'progress') showJob(status);
    }
  }
}

async function poll(current) {
  for (;;) {
    const response = await request('GET', jobPath(current.id), { signal: current.controller.signal });
    const status = await response.json();
    showJob(status);
    if (isFinal(status.state)) return status;
    await sleep(500);
    if (current.cancelled) throw new Error('cancelled');
  }
}

/** Asks `question` as a job, follows it and draws its answer. */
async function run(question) {
  if (job) return;
  const current = { id: null, controller: new AbortController(), cancelled: false, began: Date.now() };
  job = current;
  shown = null;
  clearError();
  $('#results').hidden = true;
  $('#eta').textContent = '';
  $('#run').disabled = true;
  $('#cancel').hidden = false;
  $('#cancel').disabled = false;
  setState('running');
  showStatus('Sending the question…');
  try {
    const created = await (await request('POST', '/v1/jobs', { body: JSON.stringify(question) })).json();
    current.id = created.id;
    if (current.cancelled) {
      await request('DELETE', jobPath(current.id)).catch(() => {});
      throw new Error('cancelled');
    }
    showJob(created);
    const final = await watch(current);
    if (final.state === 'cancelled') current.cancelled = true;
    if (final.state !== 'done') throw new Error(failureMessage(final));
    showStatus('Fetching the answer…');
    const response = await request('GET', `${jobPath(current.id)}/result`, { signal: current.controller.signal });
    const text = await response.text();
    shown = { question, answer: JSON.parse(text), text, id: current.id };
    render();
    showStatus(`Done in ${((Date.now() - current.began) / 1000).toFixed(1)} s`);
    setState('done');
  } catch (error) {
    if (current.cancelled) {
      showStatus('Cancelled');
      setState('cancelled');
    } else {
      showError(error.messages || [error.message]);
      showStatus('Failed');
      setState('failed');
    }
  } finally {
    job = null;
    $('#run').disabled = false;
    $('#cancel').hidden = true;
  }
}

/** Cancels the job being followed: the service forgets it. */
async function cancel() {
  const current = job;
  if (!current) return;
  current.cancelled = true;
  $('#cancel').disabled = true;
  showStatus('Cancelling…');
  current.controller.abort();
  if (current.id) await request('DELETE', jobPath(current.id)).catch((e) => showError(e.messages || [e.message]));
}

/* ---- Drawing the answer ---- */

function render() {
  const { question, answer } = shown;
  const data = answer.data || {};
  $('#results').hidden = false;
  drawMeta(answer.meta || {}, data);
  drawChart();
  drawRate(answer.derived);
  drawTotals(data, question, answer.derived);
  drawTop(answer.top, question.top);
}

const askedTypes = (question) => (Array.isArray(question.engagement_types) ? question.engagement_types : []);

function drawMeta(meta, data) {
  const parts = [];
  const calls = meta.upstream_calls;
  if (calls != null) parts.push(`${fmt(calls)} upstream call${calls === 1 ? '' : 's'}`);
  if (meta.duration_ms != null) parts.push(`${(meta.duration_ms / 1000).toFixed(1)} s`);
  const start = meta.start || data.start;
  const end = meta.end || data.end;
  if (start && end) parts.push(`${instant(start)} → ${instant(end)}`);
  if (meta.end_clamped) parts.push('end clamped to the hour in progress');
  $('#meta').textContent = parts.join(' · ');
}

/** The line chart: one path per engagement type, by day or by hour of day. */
function drawChart() {
  const box = $('#chart-box');
  const { question, answer } = shown;
  const data = answer.data || {};
  const pick = pickChart(question.groupings);
  const tree = pick && data[pick.name];
  box.hidden = !tree || typeof tree !== 'object';
  if (box.hidden) return;

  const sums = sumBy(tree, pick.groupBy, 'engagement.type', pick.level);
  const types = pick.groupBy.includes('engagement.type')
    ? [...new Set([...askedTypes(question), ...sums.keys()])]
    : ['all'];
  const keys = new Set(pick.level === 'engagement.hour' ? HOURS : daysInRange(data.start, data.end));
  for (const cells of sums.values()) for (const key of cells.keys()) keys.add(key);
  const xs = [...keys].sort();
  const series = types.map((type) => {
    const cells = sums.get(type) || new Map();
    return { type, values: xs.map((x) => cells.get(x) || 0) };
  });
  const max = Math.max(0, ...series.flatMap((s) => s.values));

  const width = Math.max(300, Math.round(box.clientWidth || 720));
  const height = width < 560 ? 220 : 300;
  const plot = { left: 58, top: 14, width: width - 58 - 14, height: height - 14 - 30 };
  const bottom = plot.top + plot.height;
  const by = pick.level === 'engagement.hour' ? 'hour of day (UTC)' : 'day (UTC)';
  const nodes = [svg('title', { id: 'chart-title' }, `${types.join(', ')} by ${by}`)];

  // Gridlines and counts at 0, half and the largest count.
  for (const share of [0, 0.5, 1]) {
    const y = (bottom - share * plot.height).toFixed(1);
    nodes.push(svg('line', { class: share ? 'grid' : 'axis', x1: plot.left, x2: plot.left + plot.width, y1: y, y2: y }));
    if (max > 0 || share === 0) {
      const attrs = { class: 'tick', x: plot.left - 6, y, 'text-anchor': 'end', 'dominant-baseline': 'middle' };
      nodes.push(svg('text', attrs, axisLabel(Math.round(share * max))));
    }
  }
  nodes.push(svg('line', { class: 'axis', x1: plot.left, x2: plot.left, y1: plot.top, y2: bottom }));

  // Day or hour labels: first, last, and a few between.
  const at = pick.level === 'engagement.hour' ? [0, 6, 12, 18, 23] : [0, Math.floor((xs.length - 1) / 2), xs.length - 1];
  [...new Set(at)].filter((i) => i >= 0 && i < xs.length).forEach((i, k, all) => {
    const x = plot.left + (xs.length > 1 ? (i * plot.width) / (xs.length - 1) : plot.width / 2);
    const anchor = all.length > 1 && k === 0 ? 'start' : all.length > 1 && k === all.length - 1 ? 'end' : 'middle';
    nodes.push(svg('text', { class: 'tick', x: x.toFixed(1), y: height - 8, 'text-anchor': anchor }, xs[i]));
  });

  for (const { type, values } of series) {
    const path = svg('path', { class: 'series', 'data-type': type, d: linePath(values, max, plot), stroke: colorOf(type) });
    path.append(svg('title', {}, `${type}: ${fmt(values.reduce((a, b) => a + b, 0))} in all`));
    nodes.push(path);
  }
  const chart = $('#chart');
  chart.setAttribute('viewBox', `0 0 ${width} ${height}`);
  chart.replaceChildren(...nodes);
  $('#legend').replaceChildren(...types.map((type) => {
    // Coloured through the CSSOM: the page's policy allows no inline style attributes.
    const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
    swatch.style.background = colorOf(type);
    return el('li', { 'data-type': type }, swatch, type);
  }));
}

const colorOf = (type) => COLORS[TYPES.indexOf(type)] || '#444';

function drawRate(derived) {
  const rate = derived && derived.engagement_rate;
  const out = $('#rate');
  $('#rate-box').hidden = !rate;
  if (!rate) {
    out.textContent = '';
    out.removeAttribute('data-overall');
    return;
  }
  out.textContent = percent(rate.overall);
  out.dataset.overall = String(rate.overall);
}

const countCell = (type, value) => el('td', { 'data-type': type, 'data-value': String(value) }, fmt(value));

/** The totals per Tweet, with a row of sums and, when derived, each Tweet's rate. */
function drawTotals(data, question, derived) {
  const pick = pickPerTweet(question.groupings);
  const tree = pick && data[pick.name];
  $('#totals-box').hidden = !tree || typeof tree !== 'object';
  if ($('#totals-box').hidden) return;

  const types = askedTypes(question);
  const sums = sumBy(tree, pick.groupBy, 'tweet.id', 'engagement.type');
  const ids = [...sums.keys()].sort(compareIds);
  const rates = derived && derived.engagement_rate;
  const deleted = new Set((data.unavailable_tweet_ids || []).map(String));
  const count = (id, type) => sums.get(id).get(type) || 0;

  const head = el('tr', {}, el('th', { scope: 'col' }, 'Tweet'),
    ...types.map((type) => el('th', { scope: 'col' }, type)),
    rates ? el('th', { scope: 'col' }, 'Engagement rate') : null);
  const rows = ids.map((id) => el('tr', { 'data-tweet-id': id, class: deleted.has(id) ? 'deleted' : null },
    el('th', { scope: 'row' }, id, deleted.has(id) ? ' (deleted)' : null),
    ...types.map((type) => countCell(type, count(id, type))),
    rates ? el('td', { class: 'rate' }, percent((rates.by_tweet || {})[id])) : null));
  const sum = el('tr', { class: 'sum' }, el('th', { scope: 'row' }, 'All Tweets'),
    ...types.map((type) => countCell(type, ids.reduce((total, id) => total + count(id, type), 0))),
    rates ? el('td', { class: 'rate' }, percent(rates.overall)) : null);
  $('#totals').replaceChildren(el('thead', {}, head), el('tbody', {}, ...rows), el('tfoot', {}, sum));

  const note = $('#unavailable');
  note.hidden = deleted.size === 0;
  const listed = [...deleted].sort(compareIds).join(', ');
  note.textContent = deleted.size ? `Deleted or unavailable, so not counted: ${listed}` : '';
  const notes = (Array.isArray(data.errors) ? data.errors : []).map((message) => el('li', {}, String(message)));
  $('#notes').replaceChildren(...notes);
}

function drawTop(top, asked) {
  $('#top-box').hidden = !Array.isArray(top);
  if (!Array.isArray(top)) return;
  $('#top-title').textContent = `Top Tweets by ${(asked && asked.by) || 'count'}`;
  $('#top').replaceChildren(...top.map(({ tweet_id: id, value }) => el('li',
    { 'data-tweet-id': String(id), 'data-value': String(value) }, `${id} — ${fmt(value)}`)));
}

/* ---- Downloads and links ---- */

function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el('a', { href: url, download: name, hidden: '' });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function downloadCsv() {
  if (!shown) return;
  try {
    const response = await request('GET', `${jobPath(shown.id)}/result?format=csv`, { accept: 'text/csv' });
    save(await response.blob(), 'stitcher.csv');
  } catch (error) {
    showError(error.messages || [error.message]);
  }
}

/** A link that shows the same view (the key is never in it). */
async function copyLink() {
  const question = shown ? shown.question : buildQuestion();
  const link = `${location.origin}/#q=${encodeURIComponent(JSON.stringify(question))}`;
  const field = $('#link');
  field.value = link;
  $('#link-box').hidden = false;
  try {
    await navigator.clipboard.writeText(link);
    $('#link-note').textContent = '(copied)';
  } catch {
    $('#link-note').textContent = '(copy it from here)';
    field.select();
  }
}

/**
 * A link `#key=…&q=…` (or `#q=…`): keeps the key for this tab, drops it from the address
 * bar, and returns the question, or null.
 */
function questionFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get('key');
  const raw = params.get('q');
  if (key === null && raw === null) return null;
  if (key) {
    storeKey(key);
    $('#api-key').value = key;
  }
  const hash = raw === null ? '' : `#q=${encodeURIComponent(raw)}`;
  history.replaceState(null, '', `${location.pathname}${location.search}${hash}`);
  if (raw === null) return null;
  const question = parseQuestion(raw);
  if (!question || typeof question !== 'object' || Array.isArray(question)) {
    showError(['The link’s question is not valid JSON.']);
    setState('failed');
    return null;
  }
  return { question, keyGiven: Boolean(key) };
}

function onSubmit(event) {
  event.preventDefault();
  const question = buildQuestion();
  const problems = [];
  if (!question.tweet_ids.length) problems.push('Enter at least one Tweet ID.');
  if (!question.engagement_types.length) problems.push('Pick at least one engagement type.');
  if (!$('#api-key').value.trim()) problems.push('Enter your API key.');
  if (problems.length) {
    showError(problems);
    setState('failed');
    return;
  }
  storeKey($('#api-key').value.trim());
  run(question);
}

function init() {
  const now = Date.now();
  $('#end').value = isoDay(now);
  $('#start').value = isoDay(now - 90 * DAY_MS);
  $('#api-key').value = loadKey();
  $('#api-key').addEventListener('input', (event) => storeKey(event.target.value.trim()));
  $('#ask').addEventListener('submit', onSubmit);
  $('#cancel').addEventListener('click', cancel);
  $('#copy-link').addEventListener('click', copyLink);
  $('#download-csv').addEventListener('click', downloadCsv);
  $('#download-json').addEventListener('click', () => {
    if (shown) save(new Blob([shown.text], { type: 'application/json' }), 'stitcher.json');
  });
  let frame = 0;
  window.addEventListener('resize', () => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => { if (shown) drawChart(); });
  });

  const linked = questionFromHash();
  if (!linked) return;
  fillForm(linked.question);
  // Only a link that carries its key runs at once: a link without one (from anywhere)
  // must not spend the key this tab already holds without a click.
  if (linked.keyGiven) run(forThePage(linked.question));
  else if ($('#api-key').value.trim()) showStatus('Check the question, then Run.');
  else showStatus('Enter your API key, then Run.');
}

document.addEventListener('DOMContentLoaded', init);
