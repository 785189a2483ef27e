// Sign up, sign in and refresh with the official BosBase JavaScript SDK.
//
// Usage: node sdk_auth.mjs BASE_URL EMAIL PASSWORD
//
// Then, with the token the SDK holds, it opens a raw WebSocket (the `ws`
// package: bosbase@0.26.3 predates the pub/sub service) to /api/pubsub,
// subscribes, publishes, and reports the frames it got under "pubsub".
//
// Prints one JSON object on stdout:
//   {"signup": record, "auth": {token, record}, "refresh": {token, record},
//    "authStore": {token, isValid, isSuperuser, recordId},
//    "errors": {"wrongPassword": {status, message, data}, "duplicate": {...}}}
// and exits non-zero (with the error on stderr) if any expected success fails.
import BosBase from "bosbase";
import WebSocket from "ws";

const [baseUrl, email, password] = process.argv.slice(2);
if (!baseUrl || !email || !password) {
    console.error("usage: node sdk_auth.mjs BASE_URL EMAIL PASSWORD");
    process.exit(2);
}

// What a failed call carries: the SDK's ClientResponseError fields.
async function failure(promise) {
    try {
        await promise;
    } catch (error) {
        return { status: error.status, message: error.message, data: error.response };
    }
    throw new Error("the call was expected to fail");
}

const pb = new BosBase(baseUrl);
pb.autoCancellation(false);
const users = pb.collection("users");

const signup = await users.create({
    email,
    password,
    passwordConfirm: password,
    name: "Interop",
});
const auth = await users.authWithPassword(email, password);
const afterSignIn = pb.authStore.token;
const refresh = await users.authRefresh();

const errors = {
    wrongPassword: await failure(new BosBase(baseUrl).collection("users").authWithPassword(email, "wrong-password")),
    duplicate: await failure(
        new BosBase(baseUrl).collection("users").create({ email, password, passwordConfirm: password }),
    ),
};

// A raw pub/sub session with the SDK's token; resolves with the frames seen.
function pubsubSession(token) {
    const url = baseUrl.replace(/^http/, "ws") + "/api/pubsub";
    const socket = new WebSocket(url, { headers: { Authorization: token } });
    const frames = [];
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            socket.terminate();
            reject(new Error("pub/sub session timed out: " + JSON.stringify(frames)));
        }, 10000);
        socket.on("error", reject);
        socket.on("message", (raw) => {
            const frame = JSON.parse(raw.toString());
            frames.push(frame);
            if (frame.type === "ready") {
                socket.send(JSON.stringify({ type: "subscribe", topic: "interop", requestId: "s1" }));
            } else if (frame.type === "subscribed") {
                socket.send(
                    JSON.stringify({ type: "publish", topic: "interop", data: { from: "node" }, requestId: "p1" }),
                );
            } else if (frame.type === "message" || frame.type === "error") {
                clearTimeout(timer);
                socket.close(1000);
                resolve(frames);
            }
        });
    });
}
const pubsub = await pubsubSession(pb.authStore.token);

console.log(
    JSON.stringify({
        pubsub,
        signup,
        auth: { token: auth.token, record: auth.record },
        refresh: { token: refresh.token, record: refresh.record },
        authStore: {
            token: pb.authStore.token,
            afterSignIn,
            isValid: pb.authStore.isValid,
            isSuperuser: pb.authStore.isSuperuser,
            recordId: pb.authStore.record?.id ?? null,
        },
        errors,
    }),
);
