//! Webhook delivery (PROTOCOL.md §7.1): one signed `POST` per wake; a
//! failure schedules the next wake after a backoff.

use std::time::Duration;

use super::Subscriptions;

/// Most bytes of a webhook response read (the `{"done":true}` answer).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// One webhook to send.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub id: String,
    pub generation: u64,
    pub wake_id: String,
    pub url: String,
    pub body: Vec<u8>,
}

/// The delay before retry `attempt` (1, 2, …): 1 s doubling up to 60 s,
/// with ±20 % jitter.
pub(super) fn backoff(attempt: u32) -> Duration {
    let base = 1_000u64
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(6))
        .min(60_000) as f64;
    let jitter = 1.0 + (rand::random::<f64>() * 0.4 - 0.2);
    Duration::from_millis((base * jitter) as u64)
}

/// Sends `job`, signed with the server's key, and reports the outcome.
pub(super) async fn deliver(subs: Subscriptions, job: Job) {
    let t = crate::auth::now_s();
    let signature = subs.inner.config.keys.signature_header(t, &job.body);
    tracing::debug!(subscription = %job.id, generation = job.generation, "sending webhook");
    let sent = subs
        .inner
        .http
        .post(&job.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-signature", signature)
        .body(job.body.clone())
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => return subs.delivery_failed(&job, &without_url(e).to_string()),
    };
    if !response.status().is_success() {
        return subs.delivery_failed(&job, &format!("the webhook answered {}", response.status()));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_RESPONSE_BYTES => body.extend_from_slice(&chunk),
            // A long answer is not a `{"done":true}`.
            Ok(Some(_)) => {
                body.clear();
                break;
            }
            Ok(None) => break,
            Err(e) => return subs.delivery_failed(&job, &without_url(e).to_string()),
        }
    }
    let done = serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["done"] == true);
    subs.delivered(&job, done);
}

/// The error without the URL (it may carry a secret path).
fn without_url(e: reqwest::Error) -> reqwest::Error {
    e.without_url()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_with_jitter() {
        for (attempt, base) in [(1, 1_000.0), (2, 2_000.0), (3, 4_000.0), (7, 60_000.0), (30, 60_000.0)] {
            let ms = backoff(attempt).as_millis() as f64;
            assert!(
                ms >= base * 0.8 - 1.0 && ms <= base * 1.2 + 1.0,
                "attempt {attempt}: {ms}"
            );
        }
    }
}
