// The bosbase-pubsub operator console: plain JavaScript, no framework, no build step.
//
// Everything it shows comes from the admin API (/api/admin/..., superuser only),
// called with the token from signing in to _superusers (kept in sessionStorage,
// so it lasts as long as the tab). The overview arrives as server-sent events
// read with fetch (EventSource cannot send an Authorization header); following
// a topic uses the pub/sub WebSocket itself, as any subscriber would.
// The page holds no inline script or style: the server's CSP forbids both.
"use strict";

const TOKEN_KEY = "bosbase-pubsub.console.token";
const PAGE = 50;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  email: "",
  stream: null,       // AbortController of the overview stream
  follow: null,       // WebSocket following a topic
  next: null,         // "before" of the next page of messages
  query: { topic: "", until: "" },
};

const $ = (selector) => document.querySelector(selector);

// h("td", {class: "x"}, "text", child): an element, text set safely (never as HTML).
function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) element.setAttribute(name, value);
  }
  for (const child of children) {
    element.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return element;
}

function number(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US");
}

// --- the API -------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.data = (body && body.data) || {};
  }
}

async function api(method, path, body) {
  const headers = { Authorization: state.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  if (!response.ok) {
    if (response.status === 401 || response.status === 403) signOut(parsed && parsed.message);
    throw new ApiError(response.status, parsed);
  }
  return parsed;
}

function fieldErrors(error) {
  const fields = Object.entries(error.data || {}).map(([field, item]) => `${field}: ${item.message}`);
  return fields.length ? `${error.message} (${fields.join("; ")})` : error.message;
}

// --- signing in and out ----------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const error = $("#signin-error");
  error.textContent = "";
  const response = await fetch("/api/collections/_superusers/auth-with-password", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ identity: $("#signin-email").value, password: $("#signin-password").value }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    error.textContent = body.message || `Sign-in failed (HTTP ${response.status}).`;
    return;
  }
  state.token = body.token;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("#signin-password").value = "";
  await start();
}

function signOut(reason) {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.stream) state.stream.abort();
  state.stream = null;
  stopFollowing();
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = reason || "";
}

async function start() {
  try {
    await api("GET", "/api/admin/overview").then(renderOverview);
  } catch (error) {
    if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403)) {
      $("#signin-error").textContent = error.message;
    }
    $("#signin").hidden = false;
    return;
  }
  $("#signin").hidden = true;
  $("#app").hidden = false;
  route();
  streamOverview();
}

// --- views ---------------------------------------------------------------------------

function route() {
  const view = (location.hash || "#overview").slice(1);
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== `view-${view}`;
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === view);
  }
  if (view === "messages" && !$("#messages tbody").children.length) searchMessages();
  if (view === "users") loadUsers();
}

// --- the live overview ------------------------------------------------------------------

async function streamOverview() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  while (state.stream === controller) {
    try {
      const response = await fetch("/api/admin/stream", {
        headers: { Authorization: state.token },
        signal: controller.signal,
      });
      if (response.status === 401 || response.status === 403) {
        const body = await response.json().catch(() => ({}));
        signOut(body.message);
        return;
      }
      $("#live").classList.add("on");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          handleEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    $("#live").classList.remove("on");
    await new Promise((resolve) => setTimeout(resolve, 1000)); // the node restarts: retry
  }
}

function handleEvent(text) {
  let name = "message";
  const data = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (name === "overview") renderOverview(JSON.parse(data.join("\n")));
  else if (name === "signed-out") signOut("Your session ended: sign in again.");
}

function renderOverview(overview) {
  $("#who").textContent = `node ${overview.node}`;
  $("#conn-total").textContent = number(overview.connections.total);
  $("#conn-auth").textContent = number(overview.connections.authenticated);
  $("#conn-anon").textContent = number(overview.connections.anonymous);
  const published = overview.rates.published;
  const delivered = overview.rates.delivered;
  $("#rate-published").textContent = number(published[published.length - 1]);
  $("#rate-delivered").textContent = number(delivered[delivered.length - 1]);
  drawChart($("#chart-published"), published);
  drawChart($("#chart-delivered"), delivered);
  $("#commit-queue").textContent = number(overview.commitQueue);
  $("#slow-consumers").textContent = number(overview.slowConsumersClosed);

  $("#nodes tbody").replaceChildren(...overview.nodes.map((node) => h("tr", { "data-node": node.id },
    h("td", {}, node.id, node.id === overview.node ? h("span", { class: "muted" }, " (this node)") : ""),
    h("td", {}, node.address || "–"),
    h("td", {}, node.started),
    h("td", { class: "connections" }, number(node.connections)),
    h("td", {}, `${number(node.authenticated)} / ${number(node.anonymous)}`),
    h("td", {}, node.feedLag === null ? "– (no feed)" : number(node.feedLag)),
    h("td", {}, number(node.publishedPerSecond)),
    h("td", {}, number(node.commitQueue)),
  )));

  $("#topic-count").textContent = overview.topicCount > overview.topics.length
    ? `(${overview.topics.length} of ${overview.topicCount})` : `(${overview.topicCount})`;
  $("#topics tbody").replaceChildren(...overview.topics.map((topic) => h("tr", {},
    h("td", {}, topic.topic),
    h("td", {}, number(topic.subscribers)),
    h("td", {}, number(topic.perSecond)),
    h("td", {}, number(topic.total)),
    h("td", {}, topic.last || "–"),
  )));
}

// A small area chart of the last minute, scaled to its own maximum.
function drawChart(svg, values) {
  const width = 240, height = 48;
  const top = Math.max(1, ...values);
  const step = width / Math.max(1, values.length - 1);
  const points = values.map((value, i) => `${(i * step).toFixed(1)},${(height - 2 - (value / top) * (height - 6)).toFixed(1)}`);
  const ns = "http://www.w3.org/2000/svg";
  const area = document.createElementNS(ns, "polygon");
  area.setAttribute("points", `0,${height} ${points.join(" ")} ${width},${height}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  const title = document.createElementNS(ns, "title");
  title.textContent = `last ${values.length} s, peak ${top}/s`;
  svg.replaceChildren(title, area, line);
}

// --- the message inspector ----------------------------------------------------------------

function untilParameter(local) {
  if (!local) return "";
  const moment = new Date(local); // the browser's time zone, as the field shows it
  return Number.isNaN(moment.getTime()) ? "" : moment.toISOString().replace("T", " ");
}

async function searchMessages(event) {
  if (event) event.preventDefault();
  state.query = { topic: $("#search-topic").value.trim(), until: untilParameter($("#search-until").value) };
  $("#messages tbody").replaceChildren();
  $("#message-json").textContent = "Select a message to see its JSON.";
  state.next = null;
  state.searches = (state.searches || 0) + 1; // an answer to an earlier search is dropped
  await loadMessages();
  if ($("#follow").checked) startFollowing();
}

async function loadMessages() {
  const parameters = new URLSearchParams({ limit: String(PAGE) });
  if (state.query.topic) parameters.set("topic", state.query.topic);
  if (state.next !== null) parameters.set("before", String(state.next));
  else if (state.query.until) parameters.set("until", state.query.until);
  const search = state.searches;
  const page = await api("GET", `/api/admin/messages?${parameters}`);
  if (search !== state.searches) return; // a newer search replaced the list meanwhile
  const body = $("#messages tbody");
  for (const message of page.items) body.append(messageRow(message, false));
  state.next = page.next;
  $("#older").hidden = page.next === null;
  $("#messages-empty").hidden = body.children.length > 0;
}

function messageRow(message, fresh) {
  const data = JSON.stringify(message.data);
  const row = h("tr", { class: fresh ? "fresh" : null, "data-seq": message.seq },
    h("td", {}, message.seq ?? "–"),
    h("td", {}, message.topic),
    h("td", {}, message.created),
    h("td", {}, message.size ?? data.length),
    h("td", { class: "data" }, data),
  );
  row.addEventListener("click", () => showMessage(row, message));
  return row;
}

async function showMessage(row, message) {
  for (const other of document.querySelectorAll("#messages tr.selected")) other.classList.remove("selected");
  row.classList.add("selected");
  let shown = message;
  if (message.seq !== undefined && message.seq !== null) {
    shown = await api("GET", `/api/admin/messages/${message.seq}`).catch(() => message);
  }
  $("#message-json").textContent = JSON.stringify(shown, null, 2);
}

// Following: a WebSocket to /api/pubsub subscribed to the topic (anyone may subscribe).
function startFollowing() {
  stopFollowing();
  const topic = state.query.topic;
  if (!topic) {
    $("#follow-state").textContent = "name a topic to follow";
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/pubsub`);
  state.follow = socket;
  socket.addEventListener("message", (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "ready") {
      socket.send(JSON.stringify({ type: "subscribe", topic, requestId: "console-follow" }));
    } else if (frame.type === "subscribed") {
      $("#follow-state").textContent = `following ${topic}`;
    } else if (frame.type === "message") {
      const seq = frame.position ? Number(frame.position.split(":")[1]) : null;
      const message = { ...frame, seq, size: JSON.stringify(frame.data).length };
      $("#messages tbody").prepend(messageRow(message, true));
      $("#messages-empty").hidden = true;
    }
  });
  socket.addEventListener("close", () => {
    if (state.follow === socket) $("#follow-state").textContent = "not following (connection closed)";
  });
}

function stopFollowing() {
  if (state.follow) {
    const socket = state.follow;
    state.follow = null;
    socket.close();
  }
  const label = $("#follow-state");
  if (label) label.textContent = "";
}

// --- publishing ----------------------------------------------------------------------

async function publish(event) {
  event.preventDefault();
  const error = $("#publish-error");
  const result = $("#publish-result");
  error.textContent = "";
  result.hidden = true;
  let data;
  try {
    data = JSON.parse($("#publish-data").value);
  } catch (problem) {
    error.textContent = `The data is not valid JSON: ${problem.message}`;
    return;
  }
  try {
    const ack = await api("POST", "/api/admin/publish", { topic: $("#publish-topic").value.trim(), data });
    result.textContent = JSON.stringify(ack, null, 2);
    result.hidden = false;
  } catch (problem) {
    error.textContent = problem.message;
  }
}

// --- users ---------------------------------------------------------------------------

async function loadUsers() {
  const page = await api("GET", "/api/admin/users?perPage=200");
  $("#users tbody").replaceChildren(...page.items.map((user) => h("tr", { "data-user": user.id },
    h("td", {}, user.email),
    h("td", {}, user.id),
    h("td", {}, user.created),
    h("td", {}, user.verified ? "yes" : "no"),
    h("td", {},
      h("button", { type: "button", class: "secondary small", onclick: () => resetPassword(user) }, "Reset password"),
      " ",
      h("button", { type: "button", class: "danger small", onclick: () => deleteUser(user) }, "Delete"),
    ),
  )));
  $("#users-total").textContent = `${page.totalItems} user(s)`;
}

async function createUser(event) {
  event.preventDefault();
  const error = $("#user-error");
  error.textContent = "";
  try {
    await api("POST", "/api/admin/users", { email: $("#user-email").value, password: $("#user-password").value });
    $("#user-email").value = "";
    $("#user-password").value = "";
    await loadUsers();
  } catch (problem) {
    error.textContent = fieldErrors(problem);
  }
}

async function deleteUser(user) {
  if (!confirm(`Delete ${user.email}? Their tokens stop working at once.`)) return;
  await api("DELETE", `/api/admin/users/${encodeURIComponent(user.id)}`);
  await loadUsers();
}

async function resetPassword(user) {
  const password = prompt(`New password for ${user.email} (at least 8 characters):`);
  if (!password) return;
  try {
    await api("POST", `/api/admin/users/${encodeURIComponent(user.id)}/password`, { password });
    $("#user-error").textContent = "";
  } catch (problem) {
    $("#user-error").textContent = fieldErrors(problem);
  }
}

// --- wiring --------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#signin-form").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", () => signOut(""));
  $("#search-form").addEventListener("submit", searchMessages);
  $("#older").addEventListener("click", () => loadMessages());
  $("#follow").addEventListener("change", () => ($("#follow").checked ? startFollowing() : stopFollowing()));
  $("#publish-form").addEventListener("submit", publish);
  $("#user-form").addEventListener("submit", createUser);
  window.addEventListener("hashchange", route);
  if (state.token) start();
  else $("#signin").hidden = false;
});
