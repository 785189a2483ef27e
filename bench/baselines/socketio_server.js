'use strict';
// Socket.IO 4 fan-out baseline (websocket transport only, no auth, no storage).
// Workload: a client emits "subscribe" (topic) with an ack and joins the room;
// a publisher emits "publish" ({topic, data}) with an ack; the server broadcasts
// the same envelope as the other servers ({type:"message", id, topic, data, created})
// to the room with io.to(topic).emit("message", env), which encodes the packet once.
//
// Usage: node socketio_server.js --port PORT [--host 127.0.0.1]
const http = require('http');
const { Server } = require('socket.io');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '8092'));

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
    const id = 'm' + (++nextMsg).toString(36);
    const ts = created();
    const data = msg && msg.data !== undefined ? msg.data : null;
    if (typeof ack === 'function') ack({ id, topic, created: ts });
    io.to(topic).emit('message', { type: 'message', id, topic, data, created: ts });
  });
});

server.listen(port, host, () => {
  console.log(`socket.io baseline listening on ${host}:${port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
