// A chat app and its WebChat client on a real framework, for the sidecar's
// end-to-end tests (e2e/frameworks_test.go). The app speaks the seed
// platform's conversation in the framework's own way: the client links its
// session ({sessionId, botId}), sends messages, and the server answers, and
// pushes the bot's frames (a hand-over: {isTransfer: true}) when the test
// says so.
//
//   node peer.js server socketio|sockjs
//   node peer.js client socketio|sockjs|centrifuge URL SESSION BOT
//
// Control is JSON lines: commands on stdin, events on stdout. (Centrifuge's
// server is a Go program, centrifuge-server/, speaking the same lines.)
"use strict";

const http = require("http");
const readline = require("readline");

const [role, framework, url, sessionId, botId] = process.argv.slice(2);
// Heartbeats far faster than the tests' presence interval, so that a
// silent client is seen to be silent while its library is not.
const heartbeatMs = 300;

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + "\n");
}

function commands(handle) {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (line.trim()) handle(JSON.parse(line));
  });
  rl.on("close", () => process.exit(0)); // the test ended
}

// ---------------------------------------------------------------------------
// Servers: reply to link and message, push on command.

function socketIOServer() {
  const { Server } = require("socket.io");
  const srv = http.createServer();
  const io = new Server(srv, { transports: ["websocket"], pingInterval: heartbeatMs, pingTimeout: 5000 });
  io.on("connection", (socket) => {
    socket.on("link", (data) => {
      socket.join(data.sessionId);
      socket.emit("link", { socketId: socket.id });
      emit({ ev: "link", sessionId: data.sessionId, botId: data.botId });
    });
    socket.on("message", (data) => {
      socket.emit("message", { text: "echo: " + data.text });
      emit({ ev: "message", text: data.text });
    });
  });
  commands((c) => {
    if (c.cmd === "push") io.to(c.sessionId).emit(c.action, c.data);
  });
  srv.listen(0, "127.0.0.1", () => emit({ ev: "listening", port: srv.address().port }));
}

function sockJSServer() {
  const sockjs = require("sockjs");
  const sessions = new Map(); // session id -> Set of connections
  const app = sockjs.createServer({ heartbeat_delay: heartbeatMs, log: () => {} });
  app.on("connection", (conn) => {
    let sid = null;
    conn.on("data", (raw) => {
      const m = JSON.parse(raw);
      if (m.action === "link") {
        sid = m.data.sessionId;
        if (!sessions.has(sid)) sessions.set(sid, new Set());
        sessions.get(sid).add(conn);
        conn.write(JSON.stringify({ action: "link", data: { socketId: conn.id } }));
        emit({ ev: "link", sessionId: sid, botId: m.data.botId });
      } else if (m.action === "message") {
        conn.write(JSON.stringify({ action: "message", data: { text: "echo: " + m.data.text } }));
        emit({ ev: "message", text: m.data.text });
      }
    });
    conn.on("close", () => sid && sessions.get(sid).delete(conn));
  });
  commands((c) => {
    if (c.cmd !== "push") return;
    for (const conn of sessions.get(c.sessionId) || []) conn.write(JSON.stringify({ action: c.action, data: c.data }));
  });
  const srv = http.createServer();
  app.installHandlers(srv, { prefix: "/chat" });
  srv.listen(0, "127.0.0.1", () => emit({ ev: "listening", port: srv.address().port }));
}

// ---------------------------------------------------------------------------
// Clients: link at once, then send on command; every server event printed.

function socketIOClient() {
  const { io } = require("socket.io-client");
  const socket = io(url, { transports: ["websocket"], reconnection: false, forceNew: true });
  socket.on("connect", () => {
    emit({ ev: "open" });
    socket.emit("link", { sessionId, botId });
  });
  socket.onAny((action, data) => emit({ ev: action === "link" ? "linked" : "event", action, data }));
  socket.on("disconnect", (reason) => {
    emit({ ev: "closed", reason });
    process.exit(0);
  });
  socket.on("connect_error", (err) => {
    emit({ ev: "error", error: String(err) });
    process.exit(1);
  });
  commands((c) => {
    if (c.cmd === "send") socket.emit(c.action, c.data);
    if (c.cmd === "close") socket.disconnect();
  });
}

function sockJSClient() {
  const SockJS = require("sockjs-client");
  const sock = new SockJS(url, null, { transports: ["websocket"] });
  sock.onopen = () => {
    emit({ ev: "open" });
    sock.send(JSON.stringify({ action: "link", data: { sessionId, botId } }));
  };
  sock.onmessage = (e) => {
    const m = JSON.parse(e.data);
    emit({ ev: m.action === "link" ? "linked" : "event", action: m.action, data: m.data });
  };
  sock.onclose = (e) => {
    emit({ ev: "closed", reason: e.reason });
    process.exit(0);
  };
  commands((c) => {
    if (c.cmd === "send") sock.send(JSON.stringify({ action: c.action, data: c.data }));
    if (c.cmd === "close") sock.close();
  });
}

function centrifugeClient() {
  const { Centrifuge } = require("centrifuge");
  const WebSocket = require("ws");
  // The session is linked by the connect command's data; the server
  // subscribes the connection to the session's channel.
  const client = new Centrifuge(url, { websocket: WebSocket, data: { sessionId, botId }, minReconnectDelay: 60000 });
  client.on("connected", (ctx) => {
    emit({ ev: "open" });
    emit({ ev: "linked", data: ctx.data });
  });
  client.on("publication", (ctx) => emit({ ev: "event", action: ctx.data.action, data: ctx.data }));
  client.on("disconnected", (ctx) => {
    emit({ ev: "closed", reason: ctx.reason });
    process.exit(0);
  });
  client.on("error", (ctx) => emit({ ev: "error", error: String(ctx.error && ctx.error.message) }));
  commands((c) => {
    if (c.cmd === "send") {
      client.rpc(c.action, c.data).then(
        (r) => emit({ ev: "event", action: c.action, data: r.data }),
        (err) => emit({ ev: "error", error: String(err.message) }),
      );
    }
    if (c.cmd === "close") client.disconnect();
  });
  client.connect();
}

const peers = {
  server: { socketio: socketIOServer, sockjs: sockJSServer },
  client: { socketio: socketIOClient, sockjs: sockJSClient, centrifuge: centrifugeClient },
};
const run = (peers[role] || {})[framework];
if (!run) {
  process.stderr.write("usage: node peer.js server socketio|sockjs | client socketio|sockjs|centrifuge URL SESSION BOT\n");
  process.exit(2);
}
run();
