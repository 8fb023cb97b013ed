//! A herd server on a loopback port for the tests, over SmolLM2-135M-Instruct Q4_1 (the fetched
//! asset), and a small HTTP/1.1 client that can also send bytes no real client would.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device};
use herd_infer::engine::{Engine, EngineConfig};
use herd_infer::LoadedModel;
use herd_serve::{AppState, ServeSettings};
use serde_json::Value;

/// The model file, or a skip.
pub fn model_path() -> Option<PathBuf> {
    herd_util::testing::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The model with its tokenizer.
pub fn load() -> Option<LoadedModel> {
    let path = model_path()?;
    Some(
        herd_infer::load(
            &path,
            None,
            DType::F32,
            herd_infer::Quantized::Keep,
            &Device::Cpu,
        )
        .expect("the model loads"),
    )
}

/// A running server; dropping it stops the server.
pub struct Server {
    pub address: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts a server on `loaded` with `parallel` sequences at a time.
    pub fn start(
        loaded: LoadedModel,
        parallel: usize,
        context: usize,
        settings: ServeSettings,
    ) -> Server {
        let engine = Engine::start(
            Arc::new(loaded.model),
            EngineConfig {
                max_running: parallel,
                context,
                max_waiting: 1024,
                prefill_tokens_per_step: 512,
            },
        );
        let state = Arc::new(AppState::new(engine, loaded.tokenizer, settings).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready.send(listener.local_addr().unwrap()).unwrap();
                let shutdown = async move {
                    let _ = stopped.await;
                };
                herd_serve::serve(listener, served, shutdown, Duration::from_secs(1))
                    .await
                    .unwrap();
            });
        });
        Server {
            address: address.recv().unwrap(),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Sends `body` to `path` (POST) or GETs it (`body` None); returns status and body text.
    pub fn request(&self, path: &str, body: Option<&str>) -> (u16, String) {
        let response = self.raw(path, body.map(str::as_bytes), &[]);
        (response.status, response.body)
    }

    /// POSTs JSON and parses the reply.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.request(path, Some(&body.to_string()));
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON ({e}): {text}"));
        (status, value)
    }

    /// Sends raw bytes as a request body with extra headers.
    pub fn raw(&self, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Response {
        send(self.address, path, body, headers)
    }

    /// The `data:` payloads of a streamed request, in order.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let (status, text) = self.request(path, Some(&body.to_string()));
        assert_eq!(status, 200, "{text}");
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }

    /// The server's counter or gauge `name` from /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.request("/metrics", None);
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A response: status, headers (lower-cased names) and body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 exchange with `Connection: close`.
pub fn send(
    address: SocketAddr,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Response {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let method = if body.is_some() { "POST" } else { "GET" };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    if let Some(body) = body {
        stream.write_all(body).unwrap();
    }
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read the response");
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> Response {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("a UTF-8 body"),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
