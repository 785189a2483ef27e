'use strict';
// Bare Node.js `ws` fan-out baseline: no auth, no storage.
// Speaks the minimal subset of the BosBase pub/sub envelopes that the benchmark uses:
//   server -> client: ready, subscribed, unsubscribed, published, message, pong, error
//   client -> server: subscribe, unsubscribe, publish, ping
// Each message is serialised once and the same Buffer is sent to every subscriber.
//
// Usage: node ws_server.js --port PORT [--host 127.0.0.1]
const http = require('http');
const { WebSocketServer } = require('ws');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '8091'));

const topics = new Map(); // topic -> Set<WebSocket>
let nextClient = 0;
let nextMsg = 0;

function created() {
  // Go layout "2006-01-02 15:04:05.000Z"
  return new Date().toISOString().replace('T', ' ');
}

function send(ws, obj) {
  ws.send(JSON.stringify(obj));
}

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/api/health' ? 200 : 404, { 'content-type': 'application/json' });
  res.end('{}');
});
const wss = new WebSocketServer({ server, path: '/api/pubsub', perMessageDeflate: false });

wss.on('connection', (ws) => {
  const subs = new Set();
  send(ws, { type: 'ready', clientId: 'c' + (++nextClient).toString(36) });
  ws.on('message', (raw, isBinary) => {
    let env;
    try {
      env = JSON.parse(raw.toString());
    } catch (e) {
      env = null;
    }
    if (env === null || typeof env !== 'object' || Array.isArray(env)) {
      send(ws, { type: 'error', message: 'invalid message format' });
      return;
    }
    const type = String(env.type || '').trim().toLowerCase();
    const topic = String(env.topic || '').trim();
    const requestId = env.requestId;
    switch (type) {
      case 'ping':
        send(ws, { type: 'pong', requestId });
        return;
      case 'subscribe': {
        if (!topic) return send(ws, { type: 'error', requestId, message: 'topic must be set' });
        let set = topics.get(topic);
        if (!set) topics.set(topic, (set = new Set()));
        set.add(ws);
        subs.add(topic);
        return send(ws, { type: 'subscribed', requestId });
      }
      case 'unsubscribe': {
        const which = topic ? [topic] : [...subs];
        for (const t of which) {
          const set = topics.get(t);
          if (set) set.delete(ws);
          subs.delete(t);
        }
        return send(ws, { type: 'unsubscribed', requestId });
      }
      case 'publish': {
        if (!topic) return send(ws, { type: 'error', requestId, message: 'topic must be set' });
        const id = 'm' + (++nextMsg).toString(36);
        const ts = created();
        const data = env.data === undefined ? null : env.data;
        send(ws, { type: 'published', requestId, id, topic, created: ts });
        const set = topics.get(topic);
        if (set && set.size) {
          const frame = Buffer.from(JSON.stringify({ type: 'message', id, topic, data, created: ts }));
          for (const sub of set) sub.send(frame, { binary: false });
        }
        return;
      }
      default:
        return send(ws, { type: 'error', requestId, message: 'unsupported pubsub message type' });
    }
  });
  ws.on('close', () => {
    for (const t of subs) {
      const set = topics.get(t);
      if (set) set.delete(ws);
    }
  });
  ws.on('error', () => {});
});

server.listen(port, host, () => {
  console.log(`ws baseline listening on ${host}:${port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
