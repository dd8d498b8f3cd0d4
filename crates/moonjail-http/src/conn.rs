//! How long a client may keep a connection without asking for anything: the defence
//! against slow clients (slowloris). Each connection has a [`Clock`] that follows its
//! request cycle, and [`guard`] closes the connection when the phase it is in lasts too
//! long:
//!
//! - **idle** (just accepted, or an answer given): no byte of a request has arrived.
//!   Bounded by the idle timeout, so a client that connects and says nothing, or that
//!   keeps an unused keep-alive connection, lets go of it in the end. It also covers
//!   writing the answer out, so a client that never reads its response is bounded too.
//! - **head**: the first byte of a request has arrived, its head (request line and
//!   headers) is not complete. Bounded by the header timeout, counted from that first
//!   byte: a client that trickles its headers one byte at a time is cut off however
//!   often it sends, and an idle keep-alive client is not punished for its pause.
//! - **busy**: the head is complete and the service is answering. Not bounded here:
//!   reading the body and running the script are under the request timeout (a layer of
//!   the router), and the run under its own deadline.
//!
//! A connection's reads, its service calls and this guard are all polled by the one task
//! that serves the connection, so the clock needs no lock: atomics with relaxed ordering
//! only make it `Sync`.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How long each bounded phase may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// From a request's first byte to the end of its head.
    pub(crate) header: Duration,
    /// Without any byte of a request, from the accept or the last answer.
    pub(crate) idle: Duration,
}

/// The phase a connection was closed in, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// No request began within the idle timeout.
    Idle,
    /// A request's head was not complete within the header timeout.
    Header,
}

impl Expired {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Expired::Idle => "idle",
            Expired::Header => "header",
        }
    }
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// Where one connection is in its request cycle, and since when.
#[derive(Debug)]
pub(crate) struct Clock {
    opened: Instant,
    phase: AtomicU8,
    /// When the phase began, in nanoseconds after `opened`.
    since: AtomicU64,
}

impl Clock {
    /// A connection accepted now: idle.
    pub(crate) fn new() -> Clock {
        Clock {
            opened: Instant::now(),
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Bytes came in: when idle, a request's head begins now.
    pub(crate) fn received(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.since.store(self.now(), Ordering::Relaxed);
            self.phase.store(HEAD, Ordering::Relaxed);
        }
    }

    /// A request's head is complete: the service has it.
    pub(crate) fn request(&self) {
        self.phase.store(BUSY, Ordering::Relaxed);
    }

    /// The service answered: idle from now (the answer is being written out).
    pub(crate) fn answered(&self) {
        self.since.store(self.now(), Ordering::Relaxed);
        self.phase.store(IDLE, Ordering::Relaxed);
    }

    /// When the current phase runs out, and which phase it is; `None` while busy.
    fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, Expired)> {
        let (limit, phase) = match self.phase.load(Ordering::Relaxed) {
            IDLE => (timeouts.idle, Expired::Idle),
            HEAD => (timeouts.header, Expired::Header),
            _ => return None,
        };
        let since = self.opened + Duration::from_nanos(self.since.load(Ordering::Relaxed));
        Some((since + limit, phase))
    }
}

/// Drives `conn` (a connection being served) until it ends, or until its [`Clock`]'s
/// current phase outlasts its timeout: then the connection is dropped, which closes it,
/// and the phase is returned.
pub(crate) async fn guard<C: Future>(
    conn: C,
    clock: &Clock,
    timeouts: Timeouts,
) -> Result<C::Output, Expired> {
    let mut conn = pin!(conn);
    let mut armed = Instant::now() + timeouts.idle;
    let mut sleep = pin!(tokio::time::sleep_until(armed));
    poll_fn(|cx| {
        if let Poll::Ready(output) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        // Phases change only while `conn` is polled (its reads and its service calls
        // run inside it), so the deadline read now holds until the next poll.
        let Some((deadline, phase)) = clock.deadline(timeouts) else {
            return Poll::Pending;
        };
        if deadline != armed {
            sleep.as_mut().reset(deadline);
            armed = deadline;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(phase)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A connection's socket that tells its [`Clock`] when bytes arrive.
#[derive(Debug)]
pub(crate) struct Watched<T> {
    inner: T,
    clock: std::sync::Arc<Clock>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, clock: std::sync::Arc<Clock>) -> Watched<T> {
        Watched { inner, clock }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.received();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_millis(100),
        idle: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn a_head_that_began_is_bounded_by_the_header_timeout() {
        let clock = Clock::new();
        let conn = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            clock.received();
            std::future::pending::<()>().await;
        };
        assert_eq!(guard(conn, &clock, TIMEOUTS).await, Err(Expired::Header));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_is_bounded_by_the_idle_timeout_and_busy_is_not_bounded() {
        let clock = Clock::new();
        assert_eq!(
            guard(std::future::pending::<()>(), &clock, TIMEOUTS).await,
            Err(Expired::Idle)
        );
        let clock = Clock::new();
        let conn = async {
            clock.received();
            clock.request();
            // Busy for longer than both timeouts, then answered, then a new head.
            tokio::time::sleep(Duration::from_secs(60)).await;
            clock.answered();
            tokio::time::sleep(Duration::from_secs(5)).await;
            clock.received();
            clock.request();
            clock.answered();
            "served"
        };
        assert_eq!(guard(conn, &clock, TIMEOUTS).await, Ok("served"));
    }
}
