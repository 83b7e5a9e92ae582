'use strict';
/*
 * stitcher's page. It asks the service a question as a job (POST /v1/jobs), follows the
 * job's progress events, then draws the answer: the engagement rate and the Top Tweets,
 * one small chart per type on its own scale over a shared time axis, and the totals per
 * Tweet in a table sorted and paged at will, with downloads as JSON or CSV and a link to
 * the view. `document.body.dataset.state` says where the page is: idle, running, done,
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
  weekly: { weekly: { group_by: ['engagement.type', 'engagement.week'] } },
  monthly: { monthly: { group_by: ['engagement.type', 'engagement.month'] } },
  totals: {},
  hours: { 'hour of day': { group_by: ['engagement.type', 'engagement.hour'] } },
};
// The time levels a chart may run along, the finest first, with the preset that shows each.
const TIME_LEVELS = [
  ['engagement.day', 'daily'], ['engagement.week', 'weekly'], ['engagement.month', 'monthly'],
  ['engagement.hour', 'hours'],
];
const HOURS = Array.from({ length: 24 }, (_, h) => String(h).padStart(2, '0'));
const DAY_MS = 86400000;
// The API's first day: nothing can be asked before it.
const FIRST_DAY = '2014-09-01';
// Rows of the totals table shown at once, until "Show all".
const PAGE_ROWS = 50;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

let job = null; // The job being followed: { id, controller, cancelled, began }.
let shown = null; // The answer on screen: { question, answer, text, id }.
let table = null; // The totals table: { columns, rows, sum, sort, descending, page, all }.

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

/**
 * The grouping to chart: one by day (summed over hours and Tweets), else by week, by month,
 * else by hour of the day.
 */
function pickChart(groupings) {
  const entries = Object.entries(groupings || {}).filter(([, g]) => Array.isArray(g && g.group_by));
  for (const [level] of TIME_LEVELS) {
    const found = entries.find(([, g]) => g.group_by.includes(level));
    if (found) return { name: found[0], groupBy: found[1].group_by, level };
  }
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
  return TIME_LEVELS.find(([level]) => level === pick.level)[1];
}

/** The zone a question counts its days in: its own, else UTC. */
const zoneOf = (question) => (typeof question.time_zone === 'string' && question.time_zone) || 'UTC';

/** The browser's own time zone, or UTC when it does not say. */
function browserZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch { return 'UTC'; }
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

/** An SVG path through `values`, spread over the plot area `box`, scaled to `top`. */
function linePath(values, top, box) {
  const n = values.length;
  if (n === 0) return '';
  const x = (i) => xAt(i, n, box);
  const y = (v) => box.top + box.height - (Math.max(0, Number(v) || 0) / (top > 0 ? top : 1)) * box.height;
  const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  // A lone point is a zero-length line, drawn as a dot by the round line cap.
  return `M${points.join('L')}${n === 1 ? 'h0' : ''}`;
}

/** Where the `i`th of `n` points lies across the plot area `box`. */
function xAt(i, n, box) {
  return box.left + (n > 1 ? (i * box.width) / (n - 1) : box.width / 2);
}

/**
 * Round ticks from 0 up past `max`, about `count` of them: steps of 1, 2 or 5 times a
 * power of ten. Returns { top, ticks }.
 */
function niceTicks(max, count = 4) {
  if (!(max > 0)) return { top: 1, ticks: [0, 1] };
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const top = Math.ceil(max / step) * step;
  const ticks = [];
  for (let t = 0; t <= top + step / 2; t += step) ticks.push(Math.round(t * 1e9) / 1e9);
  return { top, ticks };
}

/**
 * The ticks of a time axis over `keys` (days `YYYY-MM-DD`, or hours `00`–`23`), at most
 * about `most` of them: [{ index, label }]. Days are marked at whole steps (1, 2 or 7 days,
 * 2 weeks) or at the first of months (every 1, 2, 3, 6 or 12 months), hours every 1 to 6.
 */
function timeTicks(keys, level, most) {
  const n = keys.length;
  if (n === 0) return [];
  if (level === 'engagement.hour') {
    const step = [1, 2, 3, 4, 6].find((s) => Math.ceil(24 / s) <= most) || 6;
    return keys.map((key, index) => ({ index, label: key })).filter(({ label }) => Number(label) % step === 0);
  }
  if (level === 'engagement.month') {
    // Months `YYYY-MM`: every 1, 2, 3, 6 or 12 of them, the year on January and the first.
    const step = [1, 2, 3, 6, 12].find((s) => Math.ceil(n / s) <= most) || 12;
    return keys.map((key, index) => ({ index, key })).filter(({ index }) => index % step === 0)
      .map(({ index, key }) => {
        const [year, month] = key.split('-').map(Number);
        const label = index === 0 || month === 1 ? `${MONTHS[month - 1]} ${year}` : MONTHS[month - 1];
        return { index, label };
      });
  }
  const date = (key) => new Date(`${key}T00:00:00Z`);
  const label = (d, withYear) => `${MONTHS[d.getUTCMonth()]} ${withYear ? d.getUTCFullYear() : d.getUTCDate()}`;
  if (n <= 120) {
    const step = [1, 2, 7, 14, 28].find((s) => Math.ceil(n / s) <= most) || 28;
    return keys.map((key, index) => ({ index, key })).filter(({ index }) => index % step === 0)
      .map(({ index, key }) => ({ index, label: label(date(key), false) }));
  }
  const firsts = keys.map((key, index) => ({ index, key })).filter(({ key }) => key.endsWith('-01'));
  const step = [1, 2, 3, 6, 12].find((s) => Math.ceil(firsts.length / s) <= most) || 12;
  return firsts.filter(({ key }) => (date(key).getUTCMonth()) % step === 0)
    .map(({ index, key }) => ({ index, label: label(date(key), true) }));
}

/** The totals table's rows in order: by column `sort` (descending or not), ties by Tweet. */
function sortRows(rows, sort, descending) {
  const value = (row) => (sort === 'tweet' ? row.id : row.values[sort]);
  const sign = descending ? -1 : 1;
  return [...rows].sort((a, b) => {
    const [x, y] = [value(a), value(b)];
    const order = sort === 'tweet' ? compareIds(x, y)
      : (x == null ? -Infinity : x) - (y == null ? -Infinity : y);
    return sign * order || compareIds(a.id, b.id);
  });
}

/**
 * What is wrong with a range the form holds, by field: dates given, in order, from the
 * API's first day on. Returns { start?, end? } with a message for each field at fault.
 */
function rangeProblems(start, end) {
  const problems = {};
  if (!start) problems.start = 'Enter the first day.';
  else if (start < FIRST_DAY) problems.start = `The API has nothing before ${FIRST_DAY}: start on that day or later.`;
  if (!end) problems.end = 'Enter the day after the last one.';
  else if (start && end <= start) problems.end = 'Must be after the first day (this day itself is not included).';
  return problems;
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
const axisLabel = (n) => (n >= 1e4 ? new Intl.NumberFormat('en-US', { notation: 'compact' }).format(n) : fmt(n));
const instant = (s) => `${String(s).replace('T', ' ').replace(/:00Z$|Z$/, '')} UTC`;
const local = (s) => String(s).replace('T', ' ').replace(/:00([+-]\d\d:\d\d)$/, '');
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
  const zone = $('#time-zone').value.trim();
  if (zone && zone !== 'UTC') question.time_zone = zone;
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
  $('#time-zone').value = zoneOf(question);
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

/** Shows a job status: what it is doing, the slices done, the time left. */
function showJob(status) {
  const progress = status.progress || {};
  const bar = $('#progress');
  bar.hidden = false;
  const total = progress.slices_total || 0;
  // Slices held or before the Tweets existed need no call: they count as done.
  const ready = (progress.slices_done || 0) + (progress.slices_synthesized || 0) + (progress.slices_from_store || 0);
  if (total > 0) {
    bar.max = total;
    bar.value = Math.min(ready, total);
  } else if (!isFinal(status.state)) {
    bar.removeAttribute('value'); // Nothing planned yet: an indeterminate bar.
  } else {
    bar.max = 1;
    bar.value = status.state === 'done' ? 1 : 0;
  }
  if (status.state === 'queued') showStatus('Queued…');
  else if (status.state === 'running') {
    if (progress.stage === 'answering') showStatus('Putting the answer together…');
    else if (total === 0 || progress.stage === 'planning') showStatus('Reading what is known and planning the calls…');
    else {
      const kept = total - (progress.slices_synthesized || 0) - (progress.slices_from_store || 0);
      const from = progress.slices_from_store ? `; ${fmt(progress.slices_from_store)} from memory` : '';
      showStatus(`Fetched ${fmt(progress.slices_done || 0)} of ${fmt(kept)} slices${from}…`);
    }
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
  drawRate(answer.derived);
  drawTop(answer.top, question.top);
  drawChart();
  drawTotals(data, question, answer.derived);
  // The answer is below the form: bring it into view, and focus there for the keyboard.
  $('#results').scrollIntoView({ block: 'start' });
  $('#results').focus({ preventScroll: true });
}

const askedTypes = (question) => (Array.isArray(question.engagement_types) ? question.engagement_types : []);

function drawMeta(meta, data) {
  const parts = [];
  const calls = meta.upstream_calls;
  if (calls != null) parts.push(`${fmt(calls)} upstream call${calls === 1 ? '' : 's'}`);
  if (meta.duration_ms != null) parts.push(`${(meta.duration_ms / 1000).toFixed(1)} s`);
  const start = meta.start || data.start;
  const end = meta.end || data.end;
  if (meta.local_start && meta.local_end) {
    parts.push(`${local(meta.local_start)} → ${local(meta.local_end)} ${meta.time_zone}`);
  } else if (start && end) parts.push(`${instant(start)} → ${instant(end)}`);
  const cut = Object.values(meta.partial_buckets || {}).flat();
  if (cut.length) parts.push(`${cut.join(', ')} only in part`);
  if (meta.end_clamped) parts.push('end clamped to the hour in progress');
  $('#meta').textContent = parts.join(' · ');
}

/**
 * One small chart per engagement type, each on its own scale (a type with few counts is
 * not flattened by one with many), over one time axis: days, or hours of the day. Pointing
 * at any of them reads every type's value at that day or hour.
 */
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
  const zone = zoneOf(question);
  // The answer's buckets are dense; UTC days are filled in besides, should a grouping lack one.
  const utcDays = pick.level === 'engagement.day' && zone === 'UTC' ? daysInRange(data.start, data.end) : [];
  const keys = new Set(pick.level === 'engagement.hour' ? HOURS : utcDays);
  for (const cells of sums.values()) for (const key of cells.keys()) keys.add(key);
  const xs = [...keys].sort();
  const hourly = pick.level === 'engagement.hour';
  const unit = { 'engagement.day': 'day', 'engagement.week': 'week', 'engagement.month': 'month' }[pick.level];
  const per = hourly ? `per hour of the day (${zone}), summed over the days` : `per ${unit} (${zone})`;

  const width = Math.max(280, Math.round($('#charts').clientWidth || 720));
  const height = width < 560 ? 150 : 170;
  const plot = { left: 56, top: 10, width: width - 56 - 16, height: height - 10 - 26 };
  const ticks = timeTicks(xs, pick.level, Math.max(2, Math.floor(plot.width / 70)));
  const charts = types.map((type) => {
    const cells = sums.get(type) || new Map();
    const values = xs.map((x) => cells.get(x) || 0);
    return drawOne(type, values, { xs, ticks, plot, width, height, per });
  });
  const title = hourly ? `hour of the day (${zone})` : `${unit === 'week' ? 'week from Monday' : unit} (${zone})`;
  $('#charts').replaceChildren(...charts.map((c) => c.figure), el('p', { class: 'axis-title' }, title));
  $('#readout').textContent = 'Point at a chart to read its values.';
  const read = (index) => {
    if (index === null) {
      for (const c of charts) c.point(null);
      $('#readout').textContent = 'Point at a chart to read its values.';
      return;
    }
    const at = hourly ? `${xs[index]}:00–${xs[index]}:59 ${zone}` : xs[index];
    const parts = charts.map((c) => `${c.type} ${fmt(c.point(index))}`);
    $('#readout').textContent = `${at}: ${parts.join(' · ')}`;
  };
  for (const c of charts) c.listen(read);
}

/** One type's chart: its figure, `point(index)` to mark a value, `listen(read)` for the pointer. */
function drawOne(type, values, { xs, ticks, plot, width, height, per }) {
  const max = Math.max(0, ...values);
  const { top, ticks: levels } = niceTicks(max);
  const bottom = plot.top + plot.height;
  const y = (v) => bottom - (v / top) * plot.height;
  const nodes = [svg('title', {}, `${type} ${per}`)];
  for (const level of levels) {
    const at = y(level).toFixed(1);
    nodes.push(svg('line', { class: level ? 'grid' : 'axis', x1: plot.left, x2: plot.left + plot.width, y1: at, y2: at }));
    const attrs = { class: 'tick', x: plot.left - 6, y: at, 'text-anchor': 'end', 'dominant-baseline': 'middle' };
    nodes.push(svg('text', attrs, axisLabel(level)));
  }
  nodes.push(svg('line', { class: 'axis', x1: plot.left, x2: plot.left, y1: plot.top, y2: bottom }));
  ticks.forEach(({ index, label }, k) => {
    const x = xAt(index, xs.length, plot);
    nodes.push(svg('line', { class: 'axis', x1: x.toFixed(1), x2: x.toFixed(1), y1: bottom, y2: bottom + 4 }));
    const anchor = k === 0 && x - plot.left < 20 ? 'start' : 'middle';
    nodes.push(svg('text', { class: 'tick', x: x.toFixed(1), y: height - 6, 'text-anchor': anchor }, label));
  });
  const path = svg('path', { class: 'series', 'data-type': type, d: linePath(values, top, plot), stroke: colorOf(type) });
  nodes.push(path);
  const guide = svg('line', { class: 'guide', y1: plot.top, y2: bottom, visibility: 'hidden' });
  const dot = svg('circle', { class: 'dot', r: 3.5, fill: colorOf(type), visibility: 'hidden' });
  const value = svg('text', { class: 'value', y: plot.top + 10, visibility: 'hidden' });
  const hit = svg('rect', { class: 'hit', x: plot.left, y: plot.top, width: plot.width, height: plot.height });
  nodes.push(guide, dot, value, hit);
  const chart = svg('svg', {
    class: 'chart', role: 'img', viewBox: `0 0 ${width} ${height}`, 'data-type': type, 'data-top': String(top),
    'data-keys': xs.join(' '), 'data-values': values.join(' '),
    'aria-label': `${type} ${per}: from 0 to ${fmt(top)}, ${fmt(values.reduce((a, b) => a + b, 0))} in all`,
  });
  chart.append(...nodes);
  const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
  swatch.style.background = colorOf(type); // The page's policy allows no inline style attributes.
  const figure = el('figure', { class: 'small-chart', 'data-type': type },
    el('figcaption', {}, swatch, `${type} `, el('span', { class: 'muted' }, per)), chart);
  const point = (index) => {
    for (const mark of [guide, dot, value]) mark.setAttribute('visibility', index === null ? 'hidden' : 'visible');
    if (index === null) return null;
    const x = xAt(index, xs.length, plot);
    guide.setAttribute('x1', x.toFixed(1));
    guide.setAttribute('x2', x.toFixed(1));
    dot.setAttribute('cx', x.toFixed(1));
    dot.setAttribute('cy', y(values[index]).toFixed(1));
    value.textContent = fmt(values[index]);
    const left = x > plot.left + plot.width / 2;
    value.setAttribute('x', (x + (left ? -6 : 6)).toFixed(1));
    value.setAttribute('text-anchor', left ? 'end' : 'start');
    return values[index];
  };
  const listen = (read) => {
    const at = (event) => {
      const bounds = chart.getBoundingClientRect();
      const px = ((event.clientX - bounds.left) / bounds.width) * width;
      const share = (px - plot.left) / plot.width;
      return Math.max(0, Math.min(xs.length - 1, Math.round(share * (xs.length - 1))));
    };
    hit.addEventListener('pointermove', (event) => read(at(event)));
    hit.addEventListener('pointerdown', (event) => read(at(event)));
    hit.addEventListener('pointerleave', () => read(null));
  };
  return { type, figure, point, listen };
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

/**
 * The totals per Tweet: one row per Tweet (with its engagement rate, when derived) and a
 * row of sums, sorted by any column and shown 50 rows at a time.
 */
function drawTotals(data, question, derived) {
  const pick = pickPerTweet(question.groupings);
  const tree = pick && data[pick.name];
  $('#totals-box').hidden = !tree || typeof tree !== 'object';
  if ($('#totals-box').hidden) return;

  const types = askedTypes(question);
  const sums = sumBy(tree, pick.groupBy, 'tweet.id', 'engagement.type');
  const rates = derived && derived.engagement_rate;
  const deleted = new Set((data.unavailable_tweet_ids || []).map(String));
  const columns = [...types, ...(rates ? ['rate'] : [])];
  const rows = [...sums.keys()].map((id) => {
    const values = {};
    for (const type of types) values[type] = sums.get(id).get(type) || 0;
    if (rates) {
      const rate = (rates.by_tweet || {})[id];
      values.rate = typeof rate === 'number' ? rate : null;
    }
    return { id, values, deleted: deleted.has(id) };
  });
  const sum = {};
  for (const type of types) sum[type] = rows.reduce((total, row) => total + row.values[type], 0);
  if (rates) sum.rate = rates.overall;
  table = { columns, rows, sum, sort: 'tweet', descending: false, page: 0, all: false };
  drawTable();

  const note = $('#unavailable');
  note.hidden = deleted.size === 0;
  const listed = [...deleted].sort(compareIds).join(', ');
  note.textContent = deleted.size ? `Deleted or unavailable, so not counted: ${listed}` : '';
  const notes = (Array.isArray(data.errors) ? data.errors : []).map((message) => el('li', {}, String(message)));
  $('#notes').replaceChildren(...notes);
}

/** The table as `table` says: its sort, its page, or all of it. */
function drawTable() {
  const { columns, sum, sort, descending, all } = table;
  const rows = sortRows(table.rows, sort, descending);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
  table.page = Math.min(table.page, pages - 1);
  const from = all ? 0 : table.page * PAGE_ROWS;
  const visible = all ? rows : rows.slice(from, from + PAGE_ROWS);
  const name = (column) => (column === 'rate' ? 'Engagement rate' : column);
  const header = (column, label) => {
    const sorted = sort === column ? (descending ? 'descending' : 'ascending') : null;
    const button = el('button', { type: 'button', class: 'sort', 'data-sort': column }, label,
      el('span', { class: 'arrow', 'aria-hidden': 'true' }, sorted ? (descending ? ' ▼' : ' ▲') : ''));
    return el('th', { scope: 'col', 'aria-sort': sorted, 'data-column': column }, button);
  };
  const cell = (column, value) => (column === 'rate'
    ? el('td', { class: 'rate', 'data-value': value == null ? '' : String(value) }, percent(value))
    : countCell(column, value));
  const head = el('tr', {}, header('tweet', 'Tweet'), ...columns.map((c) => header(c, name(c))));
  const body = visible.map((row) => el('tr', { 'data-tweet-id': row.id, class: row.deleted ? 'deleted' : null },
    el('th', { scope: 'row' }, row.id, row.deleted ? ' (deleted)' : null),
    ...columns.map((c) => cell(c, row.values[c]))));
  const total = el('tr', { class: 'sum' }, el('th', { scope: 'row' }, 'All Tweets'), ...columns.map((c) => cell(c, sum[c])));
  $('#totals').replaceChildren(el('thead', {}, head), el('tbody', {}, ...body), el('tfoot', {}, total));

  const paged = rows.length > PAGE_ROWS;
  $('#page-prev').hidden = !paged || all;
  $('#page-next').hidden = !paged || all;
  $('#page-prev').disabled = table.page === 0;
  $('#page-next').disabled = table.page >= pages - 1;
  $('#show-all').hidden = !paged;
  $('#show-all').textContent = all ? `Show ${PAGE_ROWS} at a time` : `Show all ${fmt(rows.length)}`;
  $('#page-info').textContent = paged && !all
    ? `Tweets ${fmt(from + 1)}–${fmt(from + visible.length)} of ${fmt(rows.length)}`
    : `${fmt(rows.length)} Tweet${rows.length === 1 ? '' : 's'}`;
}

/** A click on a column's name sorts by it (again: the other way). */
function onSort(event) {
  const button = event.target.closest('button[data-sort]');
  if (!button || !table) return;
  const column = button.dataset.sort;
  // Counts read best largest first; Tweets in order.
  table.descending = table.sort === column ? !table.descending : column !== 'tweet';
  table.sort = column;
  table.page = 0;
  drawTable();
  const again = $(`#totals button[data-sort="${column}"]`);
  if (again) again.focus();
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

/* ---- The cost before asking ---- */

let estimateTimer = 0;
let estimating = null; // The estimate being asked: its AbortController.

/** Asks for the form's estimate a moment after the last change to the form. */
function scheduleEstimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(showEstimate, 400);
}

/** What `secs` reads as: seconds, minutes or hours. */
function duration(secs) {
  if (secs < 90) return `${Math.max(1, Math.round(secs))} s`;
  if (secs < 5400) return `${Math.round(secs / 60)} min`;
  return `${(secs / 3600).toFixed(1)} h`;
}

/** An estimate (POST /v1/estimate) in words. */
function estimateText(estimate) {
  const calls = estimate.upstream_calls;
  const parts = [calls === 0
    ? 'No upstream call: everything is held'
    : `About ${fmt(calls)} upstream call${calls === 1 ? '' : 's'}, ${duration(estimate.eta_secs)}`];
  if (estimate.handle_newly_counted) {
    const cap = estimate.handle_cap == null ? '' : ` of ${fmt(estimate.handle_cap)}`;
    const counted = `${fmt(estimate.handles_this_month)}${cap} handle${estimate.handles_this_month === 1 ? '' : 's'} counted so far`;
    parts.push(`this adds @${estimate.handle} to this month's count (${counted})`);
  }
  return `${parts.join('; ')}.`;
}

/** Shows what the form's question would cost, once it is complete: no upstream call is made. */
async function showEstimate() {
  const out = $('#estimate');
  const question = buildQuestion();
  const complete = question.tweet_ids.length && question.engagement_types.length && $('#api-key').value.trim()
    && Object.keys(rangeProblems(question.start, question.end)).length === 0;
  if (estimating) estimating.abort();
  estimating = null;
  if (!complete) {
    out.textContent = '';
    return;
  }
  const controller = new AbortController();
  estimating = controller;
  try {
    const response = await request('POST', '/v1/estimate', { body: JSON.stringify(question), signal: controller.signal });
    const estimate = await response.json();
    out.textContent = estimateText(estimate);
    out.dataset.calls = String(estimate.upstream_calls);
  } catch (error) {
    if (controller.signal.aborted) return;
    out.textContent = `No estimate: ${(error.messages || [error.message]).join('; ')}`;
    delete out.dataset.calls;
  }
}

/** Marks the range's fields at fault, and clears the others; whether all are right. */
function checkRange() {
  const problems = rangeProblems($('#start').value, $('#end').value);
  for (const name of ['start', 'end']) {
    const field = $(`#${name}`);
    const message = $(`#${name}-error`);
    if (problems[name]) field.setAttribute('aria-invalid', 'true');
    else field.removeAttribute('aria-invalid');
    message.textContent = problems[name] || '';
    message.hidden = !problems[name];
  }
  return Object.keys(problems).length === 0;
}

function onSubmit(event) {
  event.preventDefault();
  const question = buildQuestion();
  const problems = [];
  if (!question.tweet_ids.length) problems.push('Enter at least one Tweet ID.');
  if (!question.engagement_types.length) problems.push('Pick at least one engagement type.');
  if (!checkRange()) problems.push('Check the dates marked above.');
  if (!$('#api-key').value.trim()) problems.push('Enter your API key.');
  if (problems.length) {
    showError(problems);
    setState('failed');
    const first = document.querySelector('[aria-invalid="true"]');
    if (first) first.focus();
    return;
  }
  storeKey($('#api-key').value.trim());
  run(question);
}

function init() {
  const now = Date.now();
  $('#end').value = isoDay(now);
  $('#start').value = isoDay(now - 90 * DAY_MS);
  $('#time-zone').value = browserZone();
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  $('#zones').replaceChildren(...['UTC', ...zones].map((zone) => el('option', { value: zone })));
  $('#utc').addEventListener('click', () => { $('#time-zone').value = 'UTC'; scheduleEstimate(); });
  $('#ask').addEventListener('input', scheduleEstimate);
  $('#ask').addEventListener('change', scheduleEstimate);
  $('#api-key').value = loadKey();
  $('#api-key').addEventListener('input', (event) => storeKey(event.target.value.trim()));
  $('#ask').addEventListener('submit', onSubmit);
  $('#cancel').addEventListener('click', cancel);
  $('#copy-link').addEventListener('click', copyLink);
  $('#download-csv').addEventListener('click', downloadCsv);
  $('#totals').addEventListener('click', onSort);
  $('#page-prev').addEventListener('click', () => { table.page -= 1; drawTable(); });
  $('#page-next').addEventListener('click', () => { table.page += 1; drawTable(); });
  $('#show-all').addEventListener('click', () => { table.all = !table.all; drawTable(); });
  for (const name of ['start', 'end']) {
    $(`#${name}`).addEventListener('change', () => { if ($(`#${name}`).hasAttribute('aria-invalid')) checkRange(); });
  }
  $('#download-json').addEventListener('click', () => {
    if (shown) save(new Blob([shown.text], { type: 'application/json' }), 'stitcher.json');
  });
  let frame = 0;
  window.addEventListener('resize', () => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => { if (shown) drawChart(); });
  });

  const linked = questionFromHash();
  if (!linked) {
    scheduleEstimate();
    return;
  }
  fillForm(linked.question);
  showEstimate();
  // Only a link that carries its key runs at once: a link without one (from anywhere)
  // must not spend the key this tab already holds without a click.
  if (linked.keyGiven) run(forThePage(linked.question));
  else if ($('#api-key').value.trim()) showStatus('Check the question, then Run.');
  else showStatus('Enter your API key, then Run.');
}

document.addEventListener('DOMContentLoaded', init);
