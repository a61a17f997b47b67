'use strict';
// The VNET web front (docs/web.md). Plain JS, no library: the server pushes a snapshot of the
// overlay every second (server-sent events, /api/events) and the page redraws from it; every
// change is a POST to /api that runs the same control command as the CLI. Data from the server is
// only ever put in the page as text (textContent), never as markup.

const SVG = 'http://www.w3.org/2000/svg';
const W = 900, H = 640, CX = W / 2, CY = H / 2;
let state = null;
let sites = null;
let traceHops = null;
const vmHome = new Map();

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function rate(bps) {
  if (bps === null || bps === undefined) return '';
  const units = ['B/s', 'kB/s', 'MB/s', 'GB/s'];
  let i = 0;
  while (bps >= 1000 && i < units.length - 1) { bps /= 1000; i++; }
  return (bps < 10 && i > 0 ? bps.toFixed(1) : Math.round(bps)) + ' ' + units[i];
}

function showError(text) {
  $('error-text').textContent = text;
  $('error').hidden = false;
}

$('error-close').addEventListener('click', () => { $('error').hidden = true; });

// A change: POST with the header the server requires of every change (a page of another origin
// cannot add it). The daemon's refusal comes back as {error} and is shown.
async function post(path, body) {
  try {
    const r = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Vnet': '1' },
      body: JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      showError(data.error || ('refused: ' + r.status));
      return null;
    }
    $('error').hidden = true;
    return data;
  } catch (x) {
    showError('no answer: ' + x);
    return null;
  }
}

// ------------------------------------------------------------------ tabs

function showTab(name) {
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === name);
  for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== 'tab-' + name;
  if (name === 'vms') loadSites();
}

for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));

// ------------------------------------------------------------------ overlay graph

// The Proxy in the middle, hosts on a circle around it (by name, so a host keeps its place), each
// host's VMs on a small arc beyond it, away from the middle.
function layout(s) {
  const pos = new Map();
  const hosts = s.daemons.map(d => d.name).filter(n => n !== s.self).sort();
  pos.set(s.self, { x: CX, y: CY, kind: 'proxy' });
  // An ellipse, as the picture is wider than tall; turned so that two hosts sit left and right.
  const rx = W * 0.34, ry = H * 0.3, n = Math.max(hosts.length, 1);
  hosts.forEach((h, i) => {
    const a = -Math.PI / 2 + (n > 1 ? Math.PI / n : 0) + (2 * Math.PI * i) / n;
    pos.set(h, { x: CX + rx * Math.cos(a), y: CY + ry * Math.sin(a), kind: 'host', angle: a });
  });
  for (const d of s.daemons) {
    const home = pos.get(d.name);
    if (!home) continue;
    const a = home.angle === undefined ? Math.PI / 2 : home.angle;
    const n = d.vms.length;
    d.vms.forEach((mac, i) => {
      const spread = n > 1 ? (i / (n - 1) - 0.5) * Math.min(1.6, 0.45 * n) : 0;
      const rr = home.kind === 'proxy' ? 140 : 80;
      pos.set('vm:' + mac, { x: home.x + rr * Math.cos(a + spread), y: home.y + rr * Math.sin(a + spread), kind: 'vm', host: d.name, mac });
    });
  }
  return pos;
}

function keyed(group, key, attr, make) {
  let e = group.querySelector(`[${attr}="${CSS.escape(key)}"]`);
  if (!e) {
    e = make();
    e.setAttribute(attr, key);
    group.appendChild(e);
    e.dataset.fresh = '1';
  }
  e.dataset.seen = '1';
  return e;
}

function sweep(group) {
  for (const e of [...group.children]) {
    if (e.dataset.seen) delete e.dataset.seen;
    else e.remove();
  }
}

function place(g, p) {
  g.style.transform = `translate(${p.x}px, ${p.y}px)`;
}

function flash(e, cls) {
  e.classList.remove(cls);
  void e.getBoundingClientRect();
  e.classList.add(cls);
}

function vmNames(s) {
  const names = new Map();
  for (const v of s.vms || []) if (v.name) names.set(v.mac, v.name);
  return names;
}

function drawGraph(s) {
  const pos = layout(s);
  const linksG = $('graph-links'), nodesG = $('graph-nodes'), attachG = $('graph-attach');
  const names = vmNames(s);

  for (const l of s.links) {
    const a = pos.get(l.a), b = pos.get(l.b);
    if (!a || !b) continue;
    const g = keyed(linksG, l.id, 'data-link', () => {
      const g = svg('g');
      g.appendChild(svg('path'));
      g.appendChild(svg('text', { 'text-anchor': 'middle' }));
      return g;
    });
    const line = g.firstChild, label = g.lastChild;
    const geo = geometry(l, a, b);
    linkGeo.set(l.id, geo);
    line.setAttribute('d', `M ${a.x} ${a.y} Q ${geo.c.x} ${geo.c.y} ${b.x} ${b.y}`);
    // A bowed link's label sits outside its curve, clear of the Proxy.
    const side = l.star ? 0 : Math.sign(geo.c.x - (a.x + b.x) / 2);
    label.setAttribute('x', geo.m.x + 8 * side); label.setAttribute('y', geo.m.y - 6);
    label.setAttribute('text-anchor', side > 0 ? 'start' : side < 0 ? 'end' : 'middle');
    const role = l.star ? 'star' : 'added by ' + (l.addedBy || 'user');
    const rtt = l.rttMs !== undefined && l.rttMs !== null ? l.rttMs.toFixed(2) + ' ms' : '';
    label.textContent = [String(l.transport || '').toUpperCase(), role, rate(l.bytesPerSecond), rtt].filter(x => x).join(' · ');
    g.setAttribute('class', ['link', l.star ? 'star' : 'added', l.transport, l.up ? 'up' : 'down',
      traceHops && onTrace(l) ? 'on-trace' : ''].join(' '));
    g.dataset.transport = l.transport;
    g.dataset.role = l.star ? 'star' : 'added';
    g.dataset.addedBy = l.addedBy || '';
    if (g.dataset.fresh) {
      delete g.dataset.fresh;
      // A link that appears after the first picture (adaptation added it) is highlighted.
      if (state !== null) flash(g, 'appeared');
    }
  }
  sweep(linksG);

  for (const [key, p] of pos) {
    const g = keyed(nodesG, p.kind === 'vm' ? p.mac : key, 'data-node', () => {
      const g = svg('g');
      g.appendChild(p.kind === 'vm' ? svg('rect', { x: -7, y: -7, width: 14, height: 14, rx: 3 }) : svg('circle', { r: p.kind === 'proxy' ? 30 : 22 }));
      g.appendChild(svg('text', { 'text-anchor': 'middle', y: p.kind === 'vm' ? 22 : 5 }));
      return g;
    });
    g.setAttribute('class', 'node ' + p.kind);
    g.lastChild.textContent = p.kind === 'vm' ? (names.get(p.mac) || p.mac.slice(-8)) : key;
    if (p.kind === 'vm') {
      g.dataset.host = p.host;
      const before = vmHome.get(p.mac);
      if (before && before !== p.host) flash(g, 'moved');
      vmHome.set(p.mac, p.host);
      const at = pos.get(p.host);
      const line = keyed(attachG, p.mac, 'data-attach', () => svg('line'));
      line.setAttribute('x1', at.x); line.setAttribute('y1', at.y);
      line.setAttribute('x2', p.x); line.setAttribute('y2', p.y);
    }
    delete g.dataset.fresh;
    place(g, p);
  }
  sweep(nodesG);
  sweep(attachG);
  drawTrace(pos);
}

// Star links are straight; a link between two hosts bows away from the middle, so it never runs
// over the Proxy (with two hosts it would cross it straight). m: the curve's middle, for the label.
const linkGeo = new Map();
function geometry(l, a, b) {
  const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
  let c = { x: mx, y: my };
  if (!l.star) {
    let dx = mx - CX, dy = my - CY;
    let len = Math.hypot(dx, dy);
    if (len < 1) { dx = -(b.y - a.y); dy = b.x - a.x; len = Math.hypot(dx, dy) || 1; }
    const bow = Math.max(120, 0.45 * Math.hypot(b.x - a.x, b.y - a.y));
    c = { x: mx + (dx / len) * bow, y: my + (dy / len) * bow };
  }
  return { a, b, c, m: { x: 0.25 * a.x + 0.5 * c.x + 0.25 * b.x, y: 0.25 * a.y + 0.5 * c.y + 0.25 * b.y } };
}

function onTrace(l) {
  for (let i = 1; i < traceHops.length; i++) {
    const a = traceHops[i - 1], b = traceHops[i];
    if ((l.a === a && l.b === b) || (l.a === b && l.b === a)) return true;
  }
  return false;
}

function drawTrace(pos) {
  const g = $('graph-trace');
  g.replaceChildren();
  if (!traceHops || traceHops.length === 0) return;
  // The path follows the links between consecutive hops (curved ones too).
  let d = '';
  for (let i = 0; i < traceHops.length; i++) {
    const p = pos.get(traceHops[i]);
    if (!p) continue;
    if (d === '') { d = `M ${p.x} ${p.y}`; continue; }
    const prev = traceHops[i - 1], id = [prev, traceHops[i]].sort().join('-');
    const geo = linkGeo.get(id);
    d += geo ? ` Q ${geo.c.x} ${geo.c.y} ${p.x} ${p.y}` : ` L ${p.x} ${p.y}`;
  }
  if (d === '') return;
  const path = svg('path', { d });
  path.setAttribute('data-trace', traceHops.join('>'));
  g.appendChild(path);
  traceHops.forEach((h, i) => {
    const p = pos.get(h);
    if (!p) return;
    const c = svg('circle', { cx: p.x, cy: p.y, r: 36, 'data-trace-hop': h });
    g.appendChild(c);
    const t = svg('text', { x: p.x + 26, y: p.y - 26 });
    t.textContent = String(i + 1);
    g.appendChild(t);
  });
}

// ------------------------------------------------------------------ traffic

function heatColour(f) {
  // White to deep orange by the share of the strongest cell (square root: weak flows stay visible).
  const t = Math.sqrt(Math.max(0, Math.min(1, f)));
  const r = 255, gg = Math.round(255 - 170 * t), b = Math.round(255 - 235 * t);
  return `rgb(${r}, ${gg}, ${b})`;
}

function drawTraffic(s) {
  const names = vmNames(s);
  const cells = (s.matrix && s.matrix.cells) || [];
  const macs = new Set((s.vms || []).map(v => v.mac));
  for (const c of cells) { macs.add(c.src); macs.add(c.dst); }
  const order = [...macs].sort();
  const max = cells.reduce((m, c) => Math.max(m, c.bytesPerSecond), 0);
  const by = new Map(cells.map(c => [c.src + '|' + c.dst, c]));
  const table = $('heatmap');
  const label = (m) => names.get(m) || m;
  const head = el('tr');
  head.appendChild(el('th', {}, 'src \\ dst'));
  for (const m of order) head.appendChild(el('th', { title: m }, label(m)));
  const rows = [head];
  for (const src of order) {
    const tr = el('tr');
    tr.appendChild(el('th', { title: src }, label(src)));
    for (const dst of order) {
      const c = by.get(src + '|' + dst);
      const td = el('td', { 'data-cell': src + '|' + dst, title: `${label(src)} → ${label(dst)}: ${c ? rate(c.bytesPerSecond) : 'none'}` });
      if (c && c.bytesPerSecond > 0) {
        td.style.backgroundColor = heatColour(max > 0 ? c.bytesPerSecond / max : 0);
        td.dataset.rate = String(c.bytesPerSecond);
        td.textContent = rate(c.bytesPerSecond);
      }
      tr.appendChild(td);
    }
    rows.push(tr);
  }
  table.replaceChildren(...rows);
  $('matrix-note').textContent = s.matrix ? `${cells.length} flows; period ${s.matrix.periodSeconds} s, smoothing ${s.matrix.timeConstantSeconds} s` : (s.errors['vttif.matrix'] || '');

  const topo = $('topology').tBodies[0];
  topo.replaceChildren(...((s.topology && s.topology.edges) || []).map(e => {
    const tr = el('tr', { 'data-edge': e.a + '|' + e.b });
    tr.append(el('td', {}, label(e.a)), el('td', {}, label(e.b)), el('td', {}, rate(e.bytesPerSecond)), el('td', {}, e.normalized.toFixed(2)));
    return tr;
  }));

  const a = s.adaptation;
  if (a) {
    if (document.activeElement !== $('policy')) $('policy').value = a.policy;
    $('policy').dataset.current = a.policy;
    $('adapt-summary').textContent = `budget ${a.budget} links per daemon; added: ${a.links.join(', ') || 'none'}`;
    const log = $('adapt-log').tBodies[0];
    log.replaceChildren(...a.log.slice().reverse().slice(0, 50).map(x => {
      const tr = el('tr', { class: x.applied ? 'applied' : 'advised' });
      tr.append(el('td', {}, new Date(x.at).toLocaleTimeString()), el('td', {}, x.daemon), el('td', {}, x.change),
        el('td', {}, x.reason), el('td', {}, x.applied ? 'yes' : 'advice'));
      return tr;
    }));
  }
  $('topology-events').replaceChildren(...(s.topologyEvents || []).slice().reverse().map(e =>
    el('li', {}, `${new Date(e.at).toLocaleTimeString()}: +${e.added.join(', ') || '—'} −${e.removed.join(', ') || '—'}`)));
}

$('policy').addEventListener('change', async () => {
  const p = $('policy');
  const done = await post('/api/policy', { policy: p.value });
  if (!done) p.value = p.dataset.current || 'off';
  else p.dataset.current = done.policy;
});

// ------------------------------------------------------------------ rules and trace

function drawRules(s) {
  const box = $('rules');
  const parts = [];
  for (const d of s.daemons) {
    const section = el('div', { 'data-rules': d.name });
    section.appendChild(el('h2', {}, `${d.name} (${d.role})`));
    const table = el('table');
    const head = el('tr');
    for (const h of ['id', 'src', 'dst', 'in', 'to', 'origin', 'priority', 'frames', 'bytes']) head.appendChild(el('th', {}, h));
    table.appendChild(head);
    for (const r of d.rules || []) {
      const tr = el('tr', { 'data-rule': `${d.name}/${r.id}`, class: r.origin });
      for (const v of [r.id, r.source, r.destination, r.ingress || '', r.action, r.origin, r.priority, r.frames, r.bytes]) tr.appendChild(el('td', {}, String(v)));
      table.appendChild(tr);
    }
    section.appendChild(table);
    parts.push(section);
  }
  box.replaceChildren(...parts);

  const from = $('trace-from');
  const daemons = s.daemons.map(d => d.name);
  if (from.options.length !== daemons.length || [...from.options].some((o, i) => o.value !== daemons[i])) {
    const keep = from.value;
    from.replaceChildren(...daemons.map(n => el('option', { value: n }, n)));
    if (daemons.includes(keep)) from.value = keep;
  }
  const names = vmNames(s);
  $('macs').replaceChildren(...(s.vms || []).map(v => el('option', { value: v.mac }, names.get(v.mac) || v.daemon)));
}

$('trace-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const r = await post('/api/trace', { from: $('trace-from').value, src: $('trace-src').value.trim(), dst: $('trace-dst').value.trim() });
  if (!r) return;
  traceHops = (r.hops || []).map(h => h.daemon);
  const lines = (r.hops || []).map((h, i) => `${i + 1}. ${h.daemon}${h.ingress ? ' (in ' + h.ingress + ')' : ''}: ${h.rules.join('; ') || 'no rule'} → ${h.outputs.join(', ') || 'nothing'}`);
  const text = lines.concat((r.endings || []).map(x => '   ' + x)).join('\n');
  $('trace-result').textContent = text;
  $('trace-summary').textContent = `trace ${r.source} → ${r.destination}: ${traceHops.join(' → ')}; ${(r.endings || []).join('; ')}`;
  if (state) drawGraph(state);
  showTab('overlay');
});

// ------------------------------------------------------------------ VMs

async function loadSites() {
  try {
    const r = await fetch('/api/vms/sites');
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      sites = null;
      $('sites').textContent = 'sites: ' + (data.error || r.status);
      $('sites').classList.add('error');
      return;
    }
    sites = data;
    $('sites').classList.remove('error');
    $('sites').textContent = 'sites: ' + data.map(x => `${x.site} (${x.provider}, ${x.vms} VMs)`).join(', ');
    const keep = $('order-site').value;
    $('order-site').replaceChildren(...data.map(x => el('option', { value: x.site }, x.site)));
    if (data.some(x => x.site === keep)) $('order-site').value = keep;
    if (state) drawVms(state);
  } catch (x) {
    $('sites').textContent = 'sites: no answer: ' + x;
  }
}

function drawVms(s) {
  const traffic = new Map();
  for (const c of (s.matrix && s.matrix.cells) || []) {
    traffic.set(c.src, (traffic.get(c.src) || 0) + c.bytesPerSecond);
    traffic.set(c.dst, (traffic.get(c.dst) || 0) + c.bytesPerSecond);
  }
  // The Proxy's vm.list says where a VM is, not on which interface: the host's state says that.
  const iface = new Map();
  for (const d of s.daemons) for (const i of d.interfaces || []) for (const mac of i.vms || []) iface.set(mac, i.name);
  const body = $('vms').tBodies[0];
  // Where a VM may move: the provider's sites, or the hosts until the sites are known.
  const siteNames = sites ? sites.map(x => x.site) : s.daemons.filter(d => d.name !== s.self).map(d => d.name);
  for (const v of s.vms || []) {
    const id = v.name || v.mac;
    const tr = keyed(body, id, 'data-vm', () => {
      const tr = el('tr');
      for (let i = 0; i < 6; i++) tr.appendChild(el('td'));
      const actions = el('td');
      const to = el('select', { class: 'move-to' });
      const move = el('button', { class: 'move', type: 'button' }, 'Move');
      const remove = el('button', { class: 'remove', type: 'button' }, 'Remove');
      move.addEventListener('click', async () => {
        if (!tr.dataset.name) { showError('this VM has no name: only ordered VMs can be moved'); return; }
        if (await post('/api/vms/move', { name: tr.dataset.name, to: to.value })) loadSites();
      });
      remove.addEventListener('click', async () => {
        if (!tr.dataset.name) { showError('this VM has no name: only ordered VMs can be removed'); return; }
        if (await post('/api/vms/remove', { name: tr.dataset.name })) loadSites();
      });
      actions.append(to, move, remove);
      tr.appendChild(actions);
      return tr;
    });
    delete tr.dataset.fresh;
    tr.dataset.mac = v.mac;
    tr.dataset.host = v.daemon;
    if (v.name) tr.dataset.name = v.name;
    const cells = tr.children;
    const values = [v.name || '', v.mac, v.daemon, v.interface || iface.get(v.mac) || '', v.address || '', rate(traffic.get(v.mac) || 0)];
    values.forEach((x, i) => { if (cells[i].textContent !== x) cells[i].textContent = x; });
    cells[4].dataset.address = v.address || '';
    const to = tr.querySelector('.move-to');
    const wanted = siteNames.filter(n => n !== v.daemon);
    if ([...to.options].map(o => o.value).join() !== wanted.join()) to.replaceChildren(...wanted.map(n => el('option', { value: n }, n)));
  }
  sweep(body);
}

$('order-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = { site: $('order-site').value, size: $('order-size').value };
  if ($('order-name').value.trim()) body.name = $('order-name').value.trim();
  const r = await post('/api/vms/order', body);
  if (r) {
    $('order-name').value = '';
    loadSites();
  }
});

// ------------------------------------------------------------------ updates

function render(s) {
  const warnings = Object.entries(s.errors || {}).filter(([k]) => !k.startsWith('vttif') && k !== 'adapt.status')
    .map(([k, v]) => `${k}: ${v}`).concat((s.unreachable || []).map(u => 'unreachable: ' + u));
  $('warnings').textContent = warnings.join(' · ');
  drawGraph(s);
  drawTraffic(s);
  drawRules(s);
  drawVms(s);
  state = s;
  $('live').textContent = 'live · ' + new Date(s.at).toLocaleTimeString();
  document.body.dataset.updated = s.at;
}

function listen() {
  const events = new EventSource('/api/events');
  events.addEventListener('state', (e) => {
    try {
      render(JSON.parse(e.data));
    } catch (x) {
      showError('bad update: ' + x);
    }
  });
  events.onerror = () => { $('live').textContent = 'reconnecting…'; };
}

fetch('/api/state').then(r => r.json()).then(s => { if (s.daemons) render(s); else showError(s.error || 'no state'); })
  .catch(x => showError('no answer: ' + x));
listen();
