// The official SDKs' pub/sub request/response pattern, against the server.
//
// Usage: node sdk_pubsub.mjs BASE_URL EMAIL PASSWORD BURST
//
// bosbase@0.26.3 signs in (its authWithPassword); bosbase@0.26.3 predates the
// pub/sub service, so this script drives /api/pubsub the way the official
// SDKs' PubSubService does: the token as the `token` query parameter, nothing
// sent before `ready`, one pending promise per requestId, rejected by an
// `error` reply (with the server's message) or after 10 s.
//
// It publishes 300 KiB of data (expected: rejected, "payload too large"),
// then a small message on the same connection, then BURST publishes at once
// (Promise.all), and prints one JSON object:
//   {"oversized": {rejected, message}, "after": ack, "burst": {acked, errors,
//    inOrder, firstError}, "received": n}
import BosBase from "bosbase";
import WebSocket from "ws";

const [baseUrl, email, password, burstText] = process.argv.slice(2);
const burst = Number(burstText);
if (!baseUrl || !email || !password || !burst) {
    console.error("usage: node sdk_pubsub.mjs BASE_URL EMAIL PASSWORD BURST");
    process.exit(2);
}
const ACK_TIMEOUT_MS = 10000; // the official SDKs' reply timeout

const pb = new BosBase(baseUrl);
pb.autoCancellation(false);
await pb.collection("users").authWithPassword(email, password);

class PubSubSession {
    constructor(url) {
        this.pending = new Map();
        this.nextId = 1;
        this.received = [];
        this.socket = new WebSocket(url);
        this.ready = new Promise((resolve, reject) => {
            this.socket.on("error", reject);
            this.socket.on("message", (raw) => {
                const frame = JSON.parse(raw.toString());
                if (frame.type === "ready") {
                    resolve(frame);
                } else if (frame.type === "message") {
                    this.received.push(frame);
                } else {
                    this.settle(frame);
                }
            });
        });
        this.socket.on("close", () => {
            for (const entry of this.pending.values()) {
                clearTimeout(entry.timer);
                entry.reject(new Error("connection closed"));
            }
            this.pending.clear();
        });
    }

    settle(frame) {
        const entry = this.pending.get(frame.requestId);
        if (!entry) {
            return;
        }
        this.pending.delete(frame.requestId);
        clearTimeout(entry.timer);
        if (frame.type === "error") {
            entry.reject(new Error(frame.message));
        } else {
            entry.resolve(frame);
        }
    }

    request(envelope) {
        const requestId = `js${this.nextId++}`;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(requestId);
                reject(new Error("timeout"));
            }, ACK_TIMEOUT_MS);
            this.pending.set(requestId, { resolve, reject, timer });
            this.socket.send(JSON.stringify({ ...envelope, requestId }));
        });
    }

    publish(topic, data) {
        return this.request({ type: "publish", topic, data });
    }
}

const url = `${baseUrl.replace(/^http/, "ws")}/api/pubsub?token=${encodeURIComponent(pb.authStore.token)}`;
const session = new PubSubSession(url);
await session.ready;
await session.request({ type: "subscribe", topic: "js-burst" });

const oversized = await session.publish("js-burst", "x".repeat(300 * 1024)).then(
    () => ({ rejected: false, message: null }),
    (error) => ({ rejected: true, message: error.message }),
);
const after = await session.publish("js-burst", { after: "oversized" });

const outcomes = await Promise.all(
    Array.from({ length: burst }, (_, n) =>
        session.publish("js-burst", n).then(
            (ack) => ({ ok: true, position: ack.position }),
            (error) => ({ ok: false, message: error.message }),
        ),
    ),
);
const acked = outcomes.filter((outcome) => outcome.ok);
const seqs = acked.map((outcome) => Number(outcome.position.split(":").pop()));
const inOrder = seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]);

// Every delivery of the burst to this subscribed session, bounded in time.
const deadline = Date.now() + ACK_TIMEOUT_MS;
while (session.received.length < burst + 1 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
}
session.socket.close(1000);

console.log(
    JSON.stringify({
        oversized,
        after: { id: after.id, topic: after.topic },
        burst: {
            acked: acked.length,
            errors: outcomes.length - acked.length,
            inOrder,
            firstError: outcomes.find((outcome) => !outcome.ok)?.message ?? null,
        },
        received: session.received.map((frame) => frame.data),
    }),
);
