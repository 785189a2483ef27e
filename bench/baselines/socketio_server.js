'use strict';
// Socket.IO 4 fan-out baseline (websocket transport only, no auth, no storage).
// Workload: a client emits "subscribe" (topic) with an ack and joins the room;
// a publisher emits "publish" ({topic, data}) with an ack; the server broadcasts
// the same envelope as the other servers ({type:"message", id, topic, data, created})
// to the room with io.to(topic).emit("message", env), which encodes the packet once.
//
//
// With --pg URL, several of these form one cluster through PostgreSQL with the
// official @socket.io/postgres-adapter (LISTEN/NOTIFY, payloads over its
// threshold through its attachments table): what bench.cluster compares
// bosbase's cross-node latency with. Nothing is stored; publishes are acked at once.
//
// Usage: node socketio_server.js --port PORT [--host 127.0.0.1] [--pg POSTGRES_URL]
const crypto = require('crypto');
const http = require('http');
const { Server } = require('socket.io');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '8092'));
const pgUrl = arg('--pg', '');

// Message ids unique across the nodes of a cluster.
const node = crypto.randomBytes(4).toString('hex');
let nextMsg = 0;
function created() {
  return new Date().toISOString().replace('T', ' ');
}

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/api/health' ? 200 : 404, { 'content-type': 'application/json' });
  res.end('{}');
});
const io = new Server(server, {
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: 1e6,
});

io.on('connection', (socket) => {
  socket.on('subscribe', (topic, ack) => {
    socket.join(String(topic));
    if (typeof ack === 'function') ack('ok');
  });
  socket.on('unsubscribe', (topic, ack) => {
    socket.leave(String(topic));
    if (typeof ack === 'function') ack('ok');
  });
  socket.on('publish', (msg, ack) => {
    const topic = String((msg && msg.topic) || '');
    const id = node + (++nextMsg).toString(36);
    const ts = created();
    const data = msg && msg.data !== undefined ? msg.data : null;
    if (typeof ack === 'function') ack({ id, topic, created: ts });
    io.to(topic).emit('message', { type: 'message', id, topic, data, created: ts });
  });
});

async function clusterThroughPostgres(url) {
  const { createAdapter } = require('@socket.io/postgres-adapter');
  const { Pool } = require('pg');
  const pool = new Pool({ connectionString: url, max: 4 });
  // The adapter's table for payloads too large for a notification (as its README creates it).
  await pool.query(`CREATE TABLE IF NOT EXISTS socket_io_attachments (
    id bigserial UNIQUE, created_at timestamptz DEFAULT NOW(), payload bytea)`);
  io.adapter(createAdapter(pool));
}

(pgUrl ? clusterThroughPostgres(pgUrl) : Promise.resolve()).then(
  () => {
    server.listen(port, host, () => {
      console.log(`socket.io baseline listening on ${host}:${port}${pgUrl ? ' (postgres adapter)' : ''}`);
    });
  },
  (err) => {
    console.error(`postgres adapter: ${err.message}`);
    process.exit(1);
  },
);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
