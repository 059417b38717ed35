// A chaos TCP proxy on loopback, written for the chaos test.
//
// One ChaosProxy forwards any number of listening ports (one per browser page,
// so every connection is attributed to a page) to one upstream port. While
// chaos is on, every accepted connection gets a fate 1–4 s after it was
// accepted: usually a cut (both sockets destroyed, with a FIN or an RST), and
// sometimes a black hole (bytes stop in both directions, nothing is closed)
// for several seconds, after which the proxy destroys it if the client has
// not closed it first. While the upstream refuses connections (the server is
// down) a connection is either closed or, like a load balancer would, answered
// `502 Bad Gateway`. The randomness comes from a seeded generator; counts
// and times are bounded; everything is recorded in `events` for the report.
import net from "node:net";

/** mulberry32: a small seeded PRNG returning floats in [0, 1). */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class ChaosProxy {
  /**
   * @param {{ upstreamPort: number, rng: () => number, cutMs?: [number, number],
   *   blackHoleMs?: [number, number], blackHoleChance?: number, maxFates?: number,
   *   now?: () => number }} options
   */
  constructor({ upstreamPort, rng, cutMs = [1000, 4000], blackHoleMs = [5000, 8000], blackHoleChance = 0.2, badGatewayChance = 0.5, maxFates = 1000 }) {
    this.upstreamPort = upstreamPort;
    this.rng = rng;
    this.cutMs = cutMs;
    this.blackHoleMs = blackHoleMs;
    this.blackHoleChance = blackHoleChance;
    this.badGatewayChance = badGatewayChance;
    this.maxFates = maxFates;
    this.chaos = false;
    this.offline = new Set();
    this.fates = 0;
    this.servers = [];
    this.conns = new Set();
    this.nextId = 1;
    /** Everything that happened: { t, kind, label, conn, ... }. */
    this.events = [];
  }

  #log(kind, conn, extra = {}) {
    this.events.push({ t: Date.now(), kind, label: conn?.label, conn: conn?.id, ...extra });
  }

  #between([lo, hi]) {
    return lo + Math.floor(this.rng() * (hi - lo + 1));
  }

  /** Listens on a free loopback port for page `label`; resolves to the port. */
  listen(label) {
    const server = net.createServer((client) => this.#accept(label, client));
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve(server.address().port));
    });
  }

  #accept(label, client) {
    const conn = {
      id: this.nextId++,
      label,
      client,
      upstream: null,
      acceptedAt: Date.now(),
      blackHoled: false,
      blackHoleStart: 0,
      bytesUp: 0,
      bytesDown: 0,
      closed: false,
      gateway: null,
      timers: [],
      pending: [],
    };
    this.conns.add(conn);
    client.setNoDelay(true);
    const upstream = net.connect({ host: "127.0.0.1", port: this.upstreamPort });
    conn.upstream = upstream;
    upstream.setNoDelay(true);
    upstream.on("connect", () => {
      for (const chunk of conn.pending) upstream.write(chunk);
      conn.pending = [];
    });
    client.on("data", (chunk) => {
      if (conn.gateway) return conn.gateway(chunk);
      if (conn.blackHoled || conn.closed) return; // swallowed: a half-dead link
      conn.bytesUp += chunk.length;
      if (upstream.connecting) conn.pending.push(chunk);
      else upstream.write(chunk);
    });
    upstream.on("data", (chunk) => {
      if (conn.blackHoled || conn.closed) return;
      conn.bytesDown += chunk.length;
      client.write(chunk);
    });
    // The side that ends first ends the other (outside a black hole).
    const end = (who) => () => {
      if (conn.closed) return;
      if (conn.blackHoled && who === "upstream") return; // the client must not hear of it
      if (conn.gateway && who === "upstream") return; // the client gets a 502 instead
      if (conn.blackHoled && who === "client") {
        this.#log("blackhole_closed_by_client", conn, { afterMs: Date.now() - conn.blackHoleStart });
      }
      this.#close(conn, who === "upstream" ? "upstream_closed" : "client_closed");
    };
    client.on("close", end("client"));
    upstream.on("close", end("upstream"));
    client.on("error", () => {});
    upstream.on("error", (e) => {
      if (e.code !== "ECONNREFUSED") return;
      const badGateway = this.chaos && !conn.blackHoled && this.rng() < this.badGatewayChance;
      this.#log("upstream_refused", conn, { badGateway });
      if (badGateway) this.#badGateway(conn);
    });
    this.#log("accept", conn);
    if (this.offline.has(label)) this.#blackHole(conn, "offline");
    else if (this.chaos) this.#scheduleFate(conn);
  }

  #scheduleFate(conn) {
    if (this.fates >= this.maxFates) return;
    this.fates++;
    const after = this.#between(this.cutMs);
    conn.timers.push(
      setTimeout(() => {
        if (conn.closed || !this.chaos) return;
        if (this.rng() < this.blackHoleChance) this.#blackHole(conn, "fate");
        else this.#cut(conn, this.rng() < 0.5 ? "fin" : "rst");
      }, after),
    );
  }

  /** Answers the request on `conn` (once it has arrived) with 502, as a load balancer whose backend is down. */
  #badGateway(conn) {
    let seen = Buffer.concat(conn.pending);
    const respond = () => {
      if (conn.closed) return;
      conn.gateway = () => {};
      const body = "Bad Gateway";
      conn.client.end(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\naccess-control-allow-origin: *\r\n" +
          `content-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
      );
      this.#log("bad_gateway", conn);
      conn.timers.push(setTimeout(() => this.#close(conn, "bad_gateway"), 1000));
    };
    conn.gateway = (chunk) => {
      seen = Buffer.concat([seen, chunk]);
      if (seen.includes("\r\n\r\n")) respond();
    };
    if (seen.includes("\r\n\r\n")) respond();
    conn.timers.push(setTimeout(() => conn.gateway && this.#close(conn, "bad_gateway_no_request"), 3000));
  }

  #cut(conn, how) {
    this.#log("cut", conn, { how, ageMs: Date.now() - conn.acceptedAt, bytesUp: conn.bytesUp, bytesDown: conn.bytesDown });
    if (how === "rst" && typeof conn.client.resetAndDestroy === "function") {
      conn.client.resetAndDestroy();
      conn.upstream.resetAndDestroy();
    }
    this.#close(conn, `cut_${how}`);
  }

  #blackHole(conn, cause) {
    const holdMs = this.#between(this.blackHoleMs);
    conn.blackHoled = true;
    conn.blackHoleStart = Date.now();
    this.#log("blackhole", conn, { cause, holdMs, bytesUp: conn.bytesUp, bytesDown: conn.bytesDown });
    conn.timers.push(
      setTimeout(() => {
        if (conn.closed) return;
        this.#log("blackhole_ended_by_proxy", conn, { afterMs: Date.now() - conn.blackHoleStart });
        this.#close(conn, "blackhole_end");
      }, holdMs),
    );
  }

  #close(conn, why) {
    if (conn.closed) return;
    conn.closed = true;
    for (const t of conn.timers) clearTimeout(t);
    conn.client.destroy();
    conn.upstream?.destroy();
    this.conns.delete(conn);
    this.#log("closed", conn, { why });
  }

  /**
   * Takes page `label` offline (`true`): every open connection of it and
   * every new one is black-holed (each for the usual hold, then destroyed),
   * so nothing it sends arrives. `false` brings it back for new connections.
   */
  setOffline(label, offline) {
    this.#log(offline ? "offline" : "online", { label });
    if (!offline) {
      this.offline.delete(label);
      return;
    }
    this.offline.add(label);
    for (const conn of this.conns) {
      if (conn.label !== label || conn.blackHoled) continue;
      for (const t of conn.timers) clearTimeout(t);
      conn.timers = [];
      this.#blackHole(conn, "offline");
    }
  }

  /** Starts giving fates to connections (the open ones and every new one). */
  startChaos() {
    this.chaos = true;
    this.#log("chaos_on");
    for (const conn of this.conns) this.#scheduleFate(conn);
  }

  /**
   * Stops the chaos: no new fate; black holes in progress end at once (their
   * connections are destroyed, as they would be at the end of their hold).
   */
  stopChaos() {
    this.chaos = false;
    this.offline.clear();
    this.#log("chaos_off");
    for (const conn of [...this.conns]) {
      for (const t of conn.timers) clearTimeout(t);
      conn.timers = [];
      if (conn.blackHoled) this.#close(conn, "blackhole_end_chaos_off");
    }
  }

  /** Counts of what happened, for the report. */
  summary() {
    const count = (kind) => this.events.filter((e) => e.kind === kind).length;
    return {
      accepted: count("accept"),
      cuts: count("cut"),
      blackHoles: this.events.filter((e) => e.kind === "blackhole" && e.cause === "fate").length,
      offlineBlackHoles: this.events.filter((e) => e.kind === "blackhole" && e.cause === "offline").length,
      blackHolesClosedByClient: count("blackhole_closed_by_client"),
      upstreamRefused: count("upstream_refused"),
      badGateways: count("bad_gateway"),
    };
  }

  /** Closes the listeners and every connection. */
  async close() {
    this.chaos = false;
    for (const conn of [...this.conns]) this.#close(conn, "proxy_closed");
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(() => r()))));
  }
}
