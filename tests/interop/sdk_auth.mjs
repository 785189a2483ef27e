// Sign up, sign in and refresh with the official BosBase JavaScript SDK.
//
// Usage: node sdk_auth.mjs BASE_URL EMAIL PASSWORD
//
// Prints one JSON object on stdout:
//   {"signup": record, "auth": {token, record}, "refresh": {token, record},
//    "authStore": {token, isValid, isSuperuser, recordId},
//    "errors": {"wrongPassword": {status, message, data}, "duplicate": {...}}}
// and exits non-zero (with the error on stderr) if any expected success fails.
import BosBase from "bosbase";

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

console.log(
    JSON.stringify({
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
