//! Admission: how much work the service takes on. A bounded queue in front of a fixed
//! number of executors (a request that finds the queue full gets 503 at once, so memory
//! stays bounded under any load), and per key a concurrency cap and a token bucket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::RateLimit;
use crate::error::{ApiError, RateLimitInfo};

/// The executors and the queue in front of them.
#[derive(Debug)]
pub(crate) struct Executors {
    /// Permits for requests admitted at all: executors plus queue places.
    admitted: Arc<Semaphore>,
    /// Permits to execute.
    running: Arc<Semaphore>,
    workers: usize,
    capacity: usize,
}

/// The right to execute one request; dropped when it is done.
#[derive(Debug)]
pub(crate) struct Ticket {
    _admitted: OwnedSemaphorePermit,
    _running: OwnedSemaphorePermit,
}

/// An admitted request waiting for an executor (it counts as queued until it has one).
#[derive(Debug)]
pub(crate) struct Place {
    admitted: OwnedSemaphorePermit,
    running: Arc<Semaphore>,
}

impl Place {
    /// Blocks this thread (one that is not the runtime's) until an executor is free, or
    /// returns `None` as soon as `cancelled` completes (the request went away).
    pub(crate) fn wait_blocking(
        self,
        runtime: &tokio::runtime::Handle,
        cancelled: impl std::future::Future<Output = ()>,
    ) -> Option<Ticket> {
        let Place { admitted, running } = self;
        let running = runtime.block_on(async move {
            tokio::select! {
                biased;
                () = cancelled => None,
                permit = running.acquire_owned() => permit.ok(),
            }
        })?;
        Some(Ticket {
            _admitted: admitted,
            _running: running,
        })
    }
}

impl Executors {
    pub(crate) fn new(workers: usize, queue: usize) -> Executors {
        let capacity = workers.saturating_add(queue);
        Executors {
            admitted: Arc::new(Semaphore::new(capacity)),
            running: Arc::new(Semaphore::new(workers)),
            workers,
            capacity,
        }
    }

    /// Waits for an executor, or refuses at once when the queue is full.
    pub(crate) async fn admit(&self) -> Result<Ticket, ApiError> {
        let place = self.place()?;
        let running = place.running.clone().acquire_owned().await.map_err(|_| {
            ApiError::unavailable(
                "shutting_down",
                "the service is stopping",
                Duration::from_secs(1),
            )
        })?;
        Ok(Ticket {
            _admitted: place.admitted,
            _running: running,
        })
    }

    /// A place among the requests admitted, or a refusal at once when the queue is full;
    /// the executor is waited for later, with [`Place::wait_blocking`].
    pub(crate) fn place(&self) -> Result<Place, ApiError> {
        let admitted = self.admitted.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable(
                "overloaded",
                format!(
                    "every executor is busy and the queue is full ({} running, {} waiting); \
                     retry shortly",
                    self.workers,
                    self.capacity - self.workers
                ),
                Duration::from_secs(1),
            )
        })?;
        Ok(Place {
            admitted,
            running: self.running.clone(),
        })
    }

    /// Requests executing now.
    pub(crate) fn running(&self) -> usize {
        self.workers - self.running.available_permits()
    }

    /// Requests waiting for an executor now.
    pub(crate) fn queued(&self) -> usize {
        (self.capacity - self.admitted.available_permits()).saturating_sub(self.running())
    }

    /// Executors in all.
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }
}

/// One key's token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per-key limits: requests in flight and request rate.
#[derive(Debug)]
pub(crate) struct KeyLimits {
    concurrency: usize,
    rate: Option<RateLimit>,
    in_flight: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

impl KeyLimits {
    pub(crate) fn new(concurrency: usize, rate: Option<RateLimit>) -> KeyLimits {
        KeyLimits {
            concurrency,
            rate,
            in_flight: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `key`'s bucket: the bucket's state after it (for the answer's
    /// `RateLimit-*` headers), `None` without a rate limit, or 429.
    pub(crate) fn take_token(&self, key: &Arc<str>) -> Result<Option<RateLimitInfo>, ApiError> {
        let Some(rate) = self.rate else {
            return Ok(None);
        };
        let now = Instant::now();
        let burst = f64::from(rate.burst);
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| ApiError::internal("the rate limiter's lock is poisoned"))?;
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * rate.per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            // Whole seconds until the bucket is full again.
            let full = ((burst - bucket.tokens) / rate.per_second).ceil().max(0.0) as u64;
            return Ok(Some(RateLimitInfo {
                limit: rate.burst,
                remaining: bucket.tokens.floor() as u32,
                reset_secs: full,
            }));
        }
        let wait = ((1.0 - bucket.tokens) / rate.per_second).ceil().max(1.0) as u64;
        Err(ApiError::rate_limited(
            key,
            RateLimitInfo {
                limit: rate.burst,
                remaining: 0,
                reset_secs: wait,
            },
        ))
    }

    /// A place among `key`'s requests in flight, or 429.
    pub(crate) fn enter(&self, key: &Arc<str>) -> Result<OwnedSemaphorePermit, ApiError> {
        let semaphore = {
            let mut map = self
                .in_flight
                .lock()
                .map_err(|_| ApiError::internal("the concurrency limiter's lock is poisoned"))?;
            map.entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency)))
                .clone()
        };
        semaphore.try_acquire_owned().map_err(|_| {
            ApiError::too_many(
                "too_many_requests",
                format!(
                    "the key {key:?} already has {} requests in flight",
                    self.concurrency
                ),
                Duration::from_secs(1),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_burst_then_refuses_with_a_reset() {
        let limits = KeyLimits::new(
            1,
            Some(RateLimit {
                per_second: 0.001,
                burst: 2,
            }),
        );
        let key: Arc<str> = Arc::from("k");
        let first = limits.take_token(&key).unwrap().unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert!(limits.take_token(&key).is_ok());
        let refused = limits.take_token(&key).unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        // Another key has its own bucket.
        assert!(limits.take_token(&Arc::from("other")).is_ok());
        let held = limits.enter(&key).unwrap();
        assert!(limits.enter(&key).is_err());
        drop(held);
        assert!(limits.enter(&key).is_ok());
    }

    #[test]
    fn a_queued_place_waits_for_an_executor_unless_cancelled() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let executors = Executors::new(1, 2);
        let busy = runtime.block_on(executors.admit()).unwrap();
        let place = executors.place().unwrap();
        assert_eq!((executors.running(), executors.queued()), (1, 1));
        // The request went away while it waited: no executor is taken.
        assert!(place
            .wait_blocking(runtime.handle(), std::future::ready(()))
            .is_none());
        assert_eq!((executors.running(), executors.queued()), (1, 0));
        drop(busy);
        let ticket = executors
            .place()
            .unwrap()
            .wait_blocking(runtime.handle(), std::future::pending())
            .unwrap();
        assert_eq!((executors.running(), executors.queued()), (1, 0));
        drop(ticket);
        assert_eq!(executors.running(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let executors = Executors::new(1, 1);
        let first = executors.admit().await.unwrap();
        // A second request waits in the queue; a third finds it full.
        let _queued = executors.admitted.clone().try_acquire_owned().unwrap();
        assert_eq!((executors.running(), executors.queued()), (1, 1));
        let refused = executors.admit().await.unwrap_err();
        assert_eq!(
            refused.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        drop(first);
        assert_eq!(executors.running(), 0);
    }
}
