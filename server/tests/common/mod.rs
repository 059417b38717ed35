//! A real server on a loopback socket, with its own data directory (or on
//! a store of the test's choosing, such as a real Redis: [`redis`]).

#![allow(dead_code)]

pub mod redis;

use std::time::Duration;

use durable_session_server::Server;
use durable_session_server::config::ServerConfig;
use durable_session_server::storage::redis::RedisOptions;

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    /// The server's metrics (what `/metrics` serves).
    pub metrics: durable_session_server::metrics::Metrics,
    /// The data directory, when the server owns it (`None` with [`TestServer::start_in`]).
    _dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServerConfig {
            long_poll_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        })
        .await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Self::start_in(dir.path(), config).await;
        s._dir = Some(dir);
        s
    }

    /// A server on an existing data directory, which outlives it: start
    /// another one on the same directory to test a restart.
    pub async fn start_in(data_dir: &std::path::Path, config: ServerConfig) -> Self {
        Self::serve(Server::open(data_dir, config).expect("open storage")).await
    }

    /// A node on the Redis at `url` (a store shared with other nodes), with
    /// the short long-poll timeout of [`TestServer::start`].
    pub async fn start_on_redis(url: &str) -> Self {
        Self::start_on_redis_with(RedisOptions::new(url)).await
    }

    /// [`TestServer::start_on_redis`] with options.
    pub async fn start_on_redis_with(options: RedisOptions) -> Self {
        let config = ServerConfig {
            long_poll_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        };
        let server = Server::open_redis(options, config).await.expect("connect to Redis");
        Self::serve(server).await
    }

    async fn serve(server: Server) -> Self {
        let metrics = server.metrics();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            metrics,
            _dir: None,
            stop: Some(stop),
        }
    }

    /// Appends JSON `body` to `path` over HTTP; the `Stream-Next-Offset`.
    /// Creates a JSON stream at `path` with `body` (`""` or `[]` for none);
    /// fails the test unless it is `201 Created`.
    pub async fn create_json(&self, path: &str, body: &str) {
        let res = self
            .client
            .put(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::CREATED, "create {path}");
    }

    pub async fn append_json(&self, path: &str, body: &str) -> String {
        let res = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "append {path}: {}", res.status());
        res.headers()["stream-next-offset"].to_str().unwrap().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v1/stream/{path}", self.base)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A raw WebSocket client speaking the `/v1/ws` frames.
pub mod ws {
    use std::time::Duration;

    use durable_session_protocol::ws::{ClientMsg, ServerMsg};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    pub struct Client {
        pub socket: Socket,
    }

    impl Client {
        /// Connects and consumes the `hello` frame.
        pub async fn connect(base: &str) -> Self {
            let url = format!("{}/v1/ws", base.replacen("http://", "ws://", 1));
            let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
            let mut c = Self { socket };
            match c.next().await {
                ServerMsg::Hello { .. } => c,
                other => panic!("expected hello, got {other:?}"),
            }
        }

        pub async fn send(&mut self, msg: ClientMsg) {
            self.send_raw(&msg.to_json()).await;
        }

        pub async fn send_raw(&mut self, text: &str) {
            self.socket.send(Message::text(text.to_owned())).await.expect("send");
        }

        /// The next protocol frame, skipping heartbeats; panics after 10 s.
        pub async fn next(&mut self) -> ServerMsg {
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                    .await
                    .expect("a frame within 10 s")
                    .expect("socket open")
                    .expect("frame");
                if let Message::Text(t) = frame {
                    let msg = ServerMsg::parse(t.as_str()).expect("valid server frame");
                    if !matches!(msg, ServerMsg::Ping { .. }) {
                        return msg;
                    }
                }
            }
        }

        /// Waits for the connection to close; returns the close code.
        pub async fn closed(&mut self) -> Option<u16> {
            loop {
                match tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                    .await
                    .expect("close within 10 s")
                {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        }
    }
}

/// The real server binary, on a loopback port of its choosing.
pub mod binary {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    pub struct Running {
        pub child: Child,
        /// `http://127.0.0.1:PORT`.
        pub base: String,
    }

    impl Running {
        /// Starts the server (`--auth none`) on `data_dir` with `extra`
        /// flags, once it prints its address.
        pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
            let mut child = Command::new(env!("CARGO_BIN_EXE_durable-session-server"))
                .args(["--listen", "127.0.0.1:0", "--auth", "none", "--data-dir"])
                .arg(data_dir)
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .spawn()
                .expect("start server");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .expect("read address");
            let base = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .unwrap_or_else(|| panic!("no address in {line:?}"))
                .to_owned();
            Self { child, base }
        }
    }

    /// A test that fails never leaves a server behind.
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
