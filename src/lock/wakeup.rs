//! Waking the waiters of a lock when it is released.
//!
//! One subscriber connection per lock handle (clones share it), whatever
//! the number of locks waited on: it subscribes once, by pattern, to the
//! channels of every lock under the store's prefix (a lock's channel is
//! its key's name), and hands each message to the tasks of this process
//! waiting on that lock. No `SUBSCRIBE` per wait, so a wait costs no
//! command but the lock attempt itself; and releases publish only when a
//! waiter marked the lock (see `scripts.rs`), so an uncontended lock sends
//! nobody anything.
//!
//! A waiter registers its [`Interest`] *before* its attempt on the lock,
//! so a release that comes after the attempt is never missed by this
//! process's bookkeeping. What can be missed is the message itself: while
//! the subscriber is disconnected or reconnecting, and on the way. So no
//! waiter depends on it: each wait is also bounded by the lock's remaining
//! lease, after which the waiter tries again (the fallback wake-up), and
//! when the subscription is lost or comes back every waiter is woken to
//! look again. A lost message delays a waiter by at most the lease; it
//! never strands one. There is no fixed-interval polling.
//!
//! The first subscription of a handle is awaited (up to the timeout)
//! before a first wait, so that the first waiters of a process hear the
//! first release; later losses are not: the fallback covers them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{PubSubSink, PubSubStream};
use redis::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::stats::{incr, Counters};
use super::Backend;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often an idle subscriber checks its connection: a frozen server
/// (or a silent network) leaves the socket open, and without a `PING`
/// the subscriber would not notice.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Added to a waiter's bound (the holder's remaining lease): the lock has
/// surely expired on the server by then.
const WAKE_MARGIN: Duration = Duration::from_millis(2);

/// Why a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The lock's release message arrived.
    Message,
    /// The subscription was lost or came back: messages may have been
    /// missed, look again.
    Resubscribed,
    /// The bound passed (the lease the holder had left).
    Timer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// The first connection is being made.
    Starting,
    Up,
    Down,
}

/// The subscriber of one lock handle and the waiters it serves.
pub(crate) struct Wakeups {
    backend: Arc<dyn Backend>,
    pattern: String,
    /// The bound of connecting, subscribing and each `PING`.
    timeout: Duration,
    counters: Arc<Counters>,
    /// The locks this process waits on, by channel.
    channels: Mutex<HashMap<String, Channel>>,
    status: watch::Sender<Status>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The waiters of one lock: each holds a receiver; a message bumps the
/// value (with why), which wakes them all.
struct Channel {
    wake: watch::Sender<(u64, Woken)>,
    waiters: usize,
}

impl Wakeups {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        pattern: String,
        timeout: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Wakeups {
            backend,
            pattern,
            timeout,
            counters,
            channels: Mutex::default(),
            status: watch::Sender::new(Status::Starting),
            task: Mutex::new(None),
        }
    }

    /// Starts the subscriber if it is not running and a tokio runtime is
    /// at hand (else the next call tries again).
    pub(crate) fn start(self: &Arc<Self>) {
        let mut task = self.task.lock();
        if task.is_some() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            *task = Some(runtime.spawn(run(Arc::clone(self))));
        }
    }

    /// Stops the subscriber (when the last lock handle goes).
    pub(crate) fn stop(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }

    /// Whether the subscription is up.
    pub(crate) fn is_subscribed(&self) -> bool {
        *self.status.borrow() == Status::Up
    }

    /// Registers interest in the release of the lock whose channel is
    /// `channel`. Made before the attempt on the lock: a release after
    /// the attempt then wakes it. Waits for the handle's first
    /// subscription (up to the timeout) if it is still being made.
    pub(crate) async fn interest(self: &Arc<Self>, channel: &str) -> Interest {
        self.start();
        if *self.status.borrow() == Status::Starting {
            let mut status = self.status.subscribe();
            let first = status.wait_for(|status| *status != Status::Starting);
            let _ = tokio::time::timeout(self.timeout, first).await;
        }
        let mut channels = self.channels.lock();
        let entry = channels
            .entry(channel.to_owned())
            .or_insert_with(|| Channel {
                wake: watch::Sender::new((0, Woken::Message)),
                waiters: 0,
            });
        entry.waiters += 1;
        Interest {
            wake: entry.wake.subscribe(),
            wakeups: Arc::clone(self),
            channel: channel.into(),
        }
    }

    /// A release message on `channel`.
    fn deliver(&self, channel: &str) {
        incr(&self.counters.messages);
        if let Some(entry) = self.channels.lock().get(channel) {
            entry.wake.send_modify(|(seq, why)| {
                *seq += 1;
                *why = Woken::Message;
            });
        }
    }

    /// Wakes every waiter: messages may have been missed.
    fn wake_all(&self) {
        for entry in self.channels.lock().values() {
            entry.wake.send_modify(|(seq, why)| {
                *seq += 1;
                *why = Woken::Resubscribed;
            });
        }
    }
}

/// One task's interest in one lock's release. Dropping it withdraws it.
pub(crate) struct Interest {
    wakeups: Arc<Wakeups>,
    channel: Box<str>,
    wake: watch::Receiver<(u64, Woken)>,
}

impl Interest {
    /// Waits for the release (or a resubscription), or `bound` (the
    /// holder's remaining lease, or less) and a hair more at most.
    pub(crate) async fn wait(&mut self, bound: Duration) -> Woken {
        let woken = tokio::select! {
            changed = self.wake.changed() => match changed {
                Ok(()) => self.wake.borrow_and_update().1,
                // Cannot happen while registered; look again if it does.
                Err(_) => Woken::Resubscribed,
            },
            () = tokio::time::sleep(bound + WAKE_MARGIN) => Woken::Timer,
        };
        let counters = &self.wakeups.counters;
        incr(match woken {
            Woken::Message => &counters.woken_by_message,
            Woken::Resubscribed => &counters.woken_by_resubscription,
            Woken::Timer => &counters.woken_by_timer,
        });
        woken
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut channels = self.wakeups.channels.lock();
        if let Some(entry) = channels.get_mut(&*self.channel) {
            entry.waiters -= 1;
            if entry.waiters == 0 {
                channels.remove(&*self.channel);
            }
        }
    }
}

/// The subscriber task: subscribes, listens, and on a lost connection
/// wakes everyone and subscribes again, until stopped.
async fn run(wakeups: Arc<Wakeups>) {
    let timeout = wakeups.timeout;
    let mut attempt = 0usize;
    let mut backoff = BACKOFF_MIN;
    loop {
        match tokio::time::timeout(timeout, subscribe(&wakeups, attempt)).await {
            Ok(Ok((sink, stream))) => {
                wakeups.status.send_replace(Status::Up);
                // Releases published while unsubscribed were missed.
                wakeups.wake_all();
                backoff = BACKOFF_MIN;
                listen(&wakeups, sink, stream, timeout).await;
                wakeups.status.send_replace(Status::Down);
                incr(&wakeups.counters.subscription_losses);
                wakeups.wake_all();
            }
            _ => {
                wakeups.status.send_replace(Status::Down);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        attempt = attempt.wrapping_add(1);
    }
}

async fn subscribe(
    wakeups: &Wakeups,
    attempt: usize,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let (mut sink, stream) = wakeups.backend.subscriber(attempt).await?.split();
    sink.psubscribe(&wakeups.pattern).await?;
    Ok((sink, stream))
}

/// Hands messages to their waiters until the connection is lost.
async fn listen(
    wakeups: &Wakeups,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    timeout: Duration,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => wakeups.deliver(message.get_channel_name()),
                None => return,
            },
            _ = ping.tick() => {
                let pong = tokio::time::timeout(timeout, sink.ping::<Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
