//! `/metrics`: Prometheus text exposition (prometheus-client) of requests by endpoint and status,
//! prompt and generated tokens, the queue, the running sequences, the KV blocks they hold (and
//! the pool's size), prompt tokens read from shared blocks, and histograms of time to first
//! token, inter-token latency and request duration — what a Grafana board for vLLM or
//! llama-server plots.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use herd_infer::engine::EngineStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The endpoint (`chat`, `completions`, `tokenize`, …).
    pub endpoint: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// The server's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests answered, by endpoint and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Prompt tokens of finished requests.
    pub prompt_tokens: Counter,
    /// Tokens generated for finished requests.
    pub generated_tokens: Counter,
    waiting: Gauge,
    running: Gauge,
    kv_blocks_used: Gauge,
    kv_blocks_total: Gauge,
    prefix_cached_tokens: Gauge,
    /// Seconds from a request's arrival to its first generated token.
    pub time_to_first_token: Histogram,
    /// Seconds between consecutive generated tokens of a sequence.
    pub inter_token_latency: Histogram,
    /// Seconds from a request's arrival to its end.
    pub request_duration: Histogram,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("herd");
        let requests = Family::<RequestLabels, Counter>::default();
        let prompt_tokens = Counter::default();
        let generated_tokens = Counter::default();
        let (waiting, running) = (Gauge::default(), Gauge::default());
        let (kv_blocks_used, kv_blocks_total) = (Gauge::default(), Gauge::default());
        let prefix_cached_tokens = Gauge::default();
        // 1 ms to about 65 s.
        let time_to_first_token = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let inter_token_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 15));
        let request_duration = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "requests",
            "Requests answered, by endpoint and HTTP status",
            requests.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens of finished requests",
            prompt_tokens.clone(),
        );
        registry.register(
            "generation_tokens",
            "Tokens generated for finished requests",
            generated_tokens.clone(),
        );
        registry.register(
            "requests_waiting",
            "Requests queued for a place in the batch",
            waiting.clone(),
        );
        registry.register(
            "requests_running",
            "Sequences in the batch (reading their prompt or decoding)",
            running.clone(),
        );
        registry.register(
            "kv_cache_blocks_used",
            "Paged KV-cache blocks held by running sequences",
            kv_blocks_used.clone(),
        );
        registry.register(
            "kv_cache_blocks_total",
            "Paged KV-cache blocks in the pool",
            kv_blocks_total.clone(),
        );
        registry.register(
            "prefix_cached_tokens",
            "Prompt tokens taken from shared KV blocks instead of computed, since the start",
            prefix_cached_tokens.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Seconds from a request's arrival to its first generated token",
            time_to_first_token.clone(),
        );
        registry.register(
            "inter_token_latency_seconds",
            "Seconds between consecutive generated tokens of a sequence",
            inter_token_latency.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Seconds from a request's arrival to its end",
            request_duration.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            prompt_tokens,
            generated_tokens,
            waiting,
            running,
            kv_blocks_used,
            kv_blocks_total,
            prefix_cached_tokens,
            time_to_first_token,
            inter_token_latency,
            request_duration,
        }
    }

    /// Counts one answered request.
    pub fn answered(&self, endpoint: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status,
            })
            .inc();
    }

    /// Records the duration of a request that arrived at `arrived` and has just ended.
    pub fn request_ended(&self, arrived: std::time::Instant) {
        self.request_duration
            .observe(arrived.elapsed().as_secs_f64());
    }

    /// The exposition text, with the engine's gauges read now.
    pub fn render(&self, engine: &EngineStats) -> String {
        let load = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::SeqCst) as i64;
        self.waiting.set(load(&engine.waiting));
        self.running.set(load(&engine.running));
        self.kv_blocks_used.set(load(&engine.kv_blocks_used));
        self.kv_blocks_total.set(load(&engine.kv_blocks_total));
        self.prefix_cached_tokens
            .set(load(&engine.prefix_cached_tokens));
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
