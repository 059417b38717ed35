// An HTTP proxy in front of a server that can be told to fail, the way a
// load balancer in front of a restarting server does. Browser tests reach it
// with fetch (its answers carry CORS headers, failures included).
//   node tests/support/fault-proxy.mjs <port> <target-url>
// Prints "fault-proxy listening on http://127.0.0.1:<port>".
// Control endpoints (any origin):
//   POST /__fault/503?ms=10000[&retry_after=1]  for `ms` milliseconds every
//       request (CORS preflights aside) is answered 503, with `Retry-After`
//       when given; requests already forwarded finish normally
//   POST /__fault/down?ms=30000                 the node dies: every open
//       connection (WebSockets included) is cut at once, and for `ms`
//       milliseconds every new request or WebSocket upgrade is cut unanswered
//   POST /__fault/clear                         ends either fault at once
//   GET  /__fault                               {"failing":bool,"down":bool,
//       "refused":n,"forwarded":n} (forwarded: requests and upgrades passed on)
// WebSocket upgrades are passed through to the target as raw TCP.
import http from "node:http";
import net from "node:net";

const port = Number(process.argv[2] ?? 0);
const target = new URL(process.argv[3] ?? "http://127.0.0.1:4437");
let failUntil = 0;
let retryAfter = null;
let refused = 0;
let downUntil = 0;
let forwarded = 0;
const sockets = new Set();

function cors(req) {
  return {
    "access-control-allow-origin": req.headers.origin ?? "*",
    "access-control-expose-headers": "retry-after",
    vary: "origin",
  };
}

function control(req, res, url) {
  const headers = { ...cors(req), "content-type": "application/json", "cache-control": "no-store" };
  if (req.method === "OPTIONS") {
    res.writeHead(204, { ...headers, "access-control-allow-methods": "GET, POST" });
    return res.end();
  }
  if (req.method === "POST" && url.pathname === "/__fault/503") {
    failUntil = Date.now() + Number(url.searchParams.get("ms") ?? 10_000);
    retryAfter = url.searchParams.get("retry_after");
  } else if (req.method === "POST" && url.pathname === "/__fault/down") {
    downUntil = Date.now() + Number(url.searchParams.get("ms") ?? 30_000);
    for (const socket of sockets) if (socket !== req.socket) socket.destroy();
  } else if (req.method === "POST" && url.pathname === "/__fault/clear") {
    failUntil = 0;
    downUntil = 0;
  } else if (!(req.method === "GET" && url.pathname === "/__fault")) {
    res.writeHead(404, headers);
    return res.end("{}");
  }
  res.writeHead(200, headers);
  res.end(JSON.stringify({ failing: Date.now() < failUntil, down: Date.now() < downUntil, refused, forwarded }));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://proxy");
  if (url.pathname === "/__fault" || url.pathname.startsWith("/__fault/")) {
    return control(req, res, url);
  }
  if (Date.now() < downUntil) return req.socket.destroy();
  if (Date.now() < failUntil && req.method !== "OPTIONS") {
    refused += 1;
    req.resume();
    res.writeHead(503, {
      ...cors(req),
      "content-type": "text/html",
      ...(retryAfter !== null ? { "retry-after": retryAfter } : {}),
    });
    return res.end("<html><body><h1>503 Service Unavailable</h1></body></html>");
  }
  forwarded += 1;
  const upstream = http.request(
    {
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: { ...req.headers, host: target.host },
    },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    },
  );
  upstream.on("error", () => {
    if (!res.headersSent) res.writeHead(502, cors(req));
    res.end();
  });
  // The browser gave up (an aborted long-poll): so does the upstream request.
  res.on("close", () => upstream.destroy());
  req.pipe(upstream);
});

server.on("connection", (socket) => {
  sockets.add(socket);
  socket.on("close", () => sockets.delete(socket));
});

server.on("upgrade", (req, socket, head) => {
  if (Date.now() < downUntil) return socket.destroy();
  forwarded += 1;
  const upstream = net.connect(Number(target.port), target.hostname, () => {
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i];
      lines.push(`${name}: ${name.toLowerCase() === "host" ? target.host : req.rawHeaders[i + 1]}`);
    }
    upstream.write(lines.join("\r\n") + "\r\n\r\n");
    upstream.write(head);
    socket.pipe(upstream).pipe(socket);
  });
  const end = () => {
    socket.destroy();
    upstream.destroy();
  };
  upstream.on("error", end).on("close", end);
  socket.on("error", end).on("close", end);
});

server.listen(port, "127.0.0.1", () => {
  console.log(`fault-proxy listening on http://127.0.0.1:${server.address().port} (to ${target.origin})`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
