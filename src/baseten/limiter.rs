//! The client-side rate limit: below Baseten's 100 requests/s per endpoint, and a pause of an
//! endpoint that Baseten throttled.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Requests per second Baseten allows per API key and per endpoint.
pub const BASETEN_RATE_LIMIT_PER_SECOND: u32 = 100;

/// The span in which this client sends at most [`BASETEN_RATE_LIMIT_PER_SECOND`] requests
/// per endpoint: Baseten's second plus a margin, so that network jitter can never put a
/// 101st request into one of Baseten's one-second windows. 100 requests per 1.025 s is
/// 97.6 % of Baseten's limit.
pub const RATE_WINDOW: Duration = Duration::from_millis(1025);

/// How long an endpoint pauses after a 429 that named no wait.
pub const THROTTLED_PAUSE: Duration = Duration::from_secs(1);

/// The longest a request waits here. Pacing never waits longer than [`RATE_WINDOW`]; a longer
/// wait (an endpoint paused after a 429) is handed back to the caller, so that a throttled key
/// never holds a reconcile slot that writes with other keys could use.
pub const LIMITER_PATIENCE: Duration = Duration::from_secs(2);

/// Sends at most `limit` requests per endpoint in any [`RATE_WINDOW`], and pauses an
/// endpoint that Baseten throttled. Requests wait for a slot; none is refused.
///
/// A request's slot is dated by when its answer arrived, not when it was sent: Baseten
/// counts it at some moment in between, so a request sent a window after that answer can
/// never share a window with it, however long the requests took.
#[derive(Debug)]
pub(super) struct RateLimiter {
    limit: usize,
    window: Duration,
    endpoints: std::sync::Mutex<HashMap<&'static str, Endpoint>>,
}

/// One endpoint's recent requests and pause.
#[derive(Debug, Default)]
struct Endpoint {
    /// Requests of the last window: their answer time, `None` while in flight.
    slots: VecDeque<(u64, Option<Instant>)>,
    /// Id of the next slot.
    next_id: u64,
    /// No request is sent before this instant (after a 429).
    paused_until: Option<Instant>,
}

/// How often a full endpoint whose oldest request is still in flight looks again.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(5);

/// A taken slot; dated when dropped (the answer arrived or the request failed).
pub(super) struct Slot<'a> {
    limiter: &'a RateLimiter,
    endpoint: &'static str,
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut endpoints = self.limiter.endpoints();
        if let Some(state) = endpoints.get_mut(self.endpoint)
            && let Some(slot) = state.slots.iter_mut().find(|(id, _)| *id == self.id)
        {
            slot.1 = Some(Instant::now());
        }
    }
}

impl RateLimiter {
    /// A limiter of `limit` requests per endpoint in any `window`.
    pub(super) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1) as usize,
            window,
            endpoints: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until this endpoint may send, and takes a slot for the request; says whether
    /// it had to wait. When that would take longer than `patience`, waits not at all and
    /// returns when the endpoint may send.
    pub(super) async fn acquire(
        &self,
        endpoint: &'static str,
        patience: Duration,
    ) -> Result<(Slot<'_>, bool), Instant> {
        let give_up = Instant::now() + patience;
        let mut waited = false;
        loop {
            let wait = {
                let mut endpoints = self.endpoints();
                let state = endpoints.entry(endpoint).or_default();
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => until,
                    _ => {
                        state.slots.retain(|(_, answered)| {
                            !answered.is_some_and(|at| now.duration_since(at) >= self.window)
                        });
                        if state.slots.len() < self.limit {
                            let id = state.next_id;
                            state.next_id += 1;
                            state.slots.push_back((id, None));
                            return Ok((
                                Slot {
                                    limiter: self,
                                    endpoint,
                                    id,
                                },
                                waited,
                            ));
                        }
                        // The first answered slot to leave the window frees a place.
                        state
                            .slots
                            .iter()
                            .filter_map(|(_, answered)| *answered)
                            .min()
                            .map_or(now + IN_FLIGHT_POLL, |at| at + self.window)
                    }
                }
            };
            if wait > give_up {
                return Err(wait);
            }
            waited = true;
            tokio::time::sleep_until(wait).await;
        }
    }

    /// Holds every request to this endpoint until `until`.
    pub(super) fn pause(&self, endpoint: &'static str, until: Instant) {
        let mut endpoints = self.endpoints();
        let state = endpoints.entry(endpoint).or_default();
        state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limiter_keeps_any_window_at_the_limit() {
        let limiter = RateLimiter::new(100, RATE_WINDOW);
        let start = Instant::now();
        for _ in 0..100 {
            drop(limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await);
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full budget goes at once"
        );
        drop(limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await);
        assert_eq!(
            start.elapsed(),
            RATE_WINDOW,
            "the 101st waits for the window"
        );
        for _ in 0..99 {
            drop(limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await);
        }
        assert_eq!(start.elapsed(), RATE_WINDOW);
        drop(limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await);
        assert_eq!(start.elapsed(), RATE_WINDOW * 2);
        let other = Instant::now();
        drop(limiter.acquire("GET /v1/secrets", LIMITER_PATIENCE).await);
        assert_eq!(
            other.elapsed(),
            Duration::ZERO,
            "endpoints have their own budget"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_counts_from_the_answer_of_a_slow_request() {
        let limiter = RateLimiter::new(2, RATE_WINDOW);
        let start = Instant::now();
        let slow = limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await;
        drop(limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(slow);
        // The slow request was answered at 300 ms: its slot frees a window after that.
        drop(limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await);
        assert_eq!(start.elapsed(), RATE_WINDOW);
        drop(limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await);
        assert_eq!(start.elapsed(), RATE_WINDOW + Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_pause_is_waited_out_and_a_long_one_handed_back() {
        let limiter = RateLimiter::new(100, RATE_WINDOW);
        let start = Instant::now();
        limiter.pause("POST /v1/secrets", start + THROTTLED_PAUSE);
        drop(limiter.acquire("GET /v1/secrets", LIMITER_PATIENCE).await);
        assert_eq!(start.elapsed(), Duration::ZERO, "other endpoints go on");
        drop(limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await);
        assert_eq!(
            start.elapsed(),
            THROTTLED_PAUSE,
            "a short pause is waited out"
        );

        let paused = Instant::now();
        let until = paused + Duration::from_secs(37);
        limiter.pause("POST /v1/secrets", until);
        let refused = limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await;
        assert_eq!(
            refused.err(),
            Some(until),
            "when the endpoint may send again"
        );
        assert_eq!(paused.elapsed(), Duration::ZERO, "without waiting");
        tokio::time::advance(Duration::from_secs(36)).await;
        let waited = limiter.acquire("POST /v1/secrets", LIMITER_PATIENCE).await;
        assert!(
            waited.is_ok_and(|(_, waited)| waited),
            "within patience it waits"
        );
        assert_eq!(paused.elapsed(), Duration::from_secs(37));
    }
}
