// An HTTP proxy in front of a server that can be told to fail, the way a
// load balancer in front of a restarting server does. Browser tests reach it
// with fetch (its answers carry CORS headers, failures included).
//   node tests/support/fault-proxy.mjs <port> <target-url>
// Prints "fault-proxy listening on http://127.0.0.1:<port>".
// Control endpoints (any origin):
//   POST /__fault/503?ms=10000[&retry_after=1]  for `ms` milliseconds every
//       request (CORS preflights aside) is answered 503, with `Retry-After`
//       when given; requests already forwarded finish normally
//   POST /__fault/clear                         ends the fault at once
//   GET  /__fault                               {"failing":bool,"refused":n}
import http from "node:http";

const port = Number(process.argv[2] ?? 0);
const target = new URL(process.argv[3] ?? "http://127.0.0.1:4437");
let failUntil = 0;
let retryAfter = null;
let refused = 0;

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
  } else if (req.method === "POST" && url.pathname === "/__fault/clear") {
    failUntil = 0;
  } else if (!(req.method === "GET" && url.pathname === "/__fault")) {
    res.writeHead(404, headers);
    return res.end("{}");
  }
  res.writeHead(200, headers);
  res.end(JSON.stringify({ failing: Date.now() < failUntil, refused }));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://proxy");
  if (url.pathname === "/__fault" || url.pathname.startsWith("/__fault/")) {
    return control(req, res, url);
  }
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

server.listen(port, "127.0.0.1", () => {
  console.log(`fault-proxy listening on http://127.0.0.1:${server.address().port} (to ${target.origin})`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
