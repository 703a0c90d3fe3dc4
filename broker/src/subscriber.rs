//! In-process subscribers: deliveries addressed to `/_evmesh/subscribers/{namespace}/{name}`
//! are handed to a Rust [`Subscription`] stream by the one delivery engine (retries, backoff,
//! dead letters, replies and ordering as for an HTTP subscriber), with no HTTP and no encoding.
//!
//! Each [`Delivery`] is answered once: [`Delivery::ack`], [`Delivery::reply`] or
//! [`Delivery::nack`]. A delivery dropped unanswered counts as a retryable failure. While
//! nobody subscribes to an address, deliveries to it wait (the route reports not ready) instead
//! of using up retries. Several subscriptions to one address share its deliveries (a queue
//! group: each delivery goes to one of them).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cloudevents::Event;
use futures_util::Stream;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::delivery::{
    DEFAULT_TIMEOUT, Failure, LocalFuture, LocalRefusal, LocalRequest, LocalSink, Outcome, redact,
};
use crate::record::EventRecord;

/// Deliveries one subscription holds before it is read (the engine waits beyond that).
const BUFFER: usize = 32;

/// Why a subscriber did not take a delivery: retryable or not, with an optional HTTP-like
/// status for `knativeerrorcode` and a reason (sent as `knativeerrordata` to a dead-letter
/// sink).
///
/// ```
/// use evmesh_broker::subscriber::Nack;
/// let later = Nack::retry("database busy");
/// let never = Nack::reject("order has no items").with_status(422);
/// assert!(later.is_retryable() && !never.is_retryable());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    retryable: bool,
    status: Option<u16>,
    reason: String,
    retry_after: Option<Duration>,
}

impl Nack {
    /// A failure the delivery engine retries (with the trigger's backoff), then dead-letters.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # fn demo(delivery: Delivery) {
    /// delivery.nack(Nack::retry("inventory service unavailable"));
    /// # }
    /// ```
    pub fn retry(reason: impl Into<String>) -> Nack {
        Nack {
            retryable: true,
            status: None,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A failure that is not retried: the event goes to the dead-letter sink at once (or is
    /// dropped without one).
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # fn demo(delivery: Delivery) {
    /// delivery.nack(Nack::reject("order has no items"));
    /// # }
    /// ```
    pub fn reject(reason: impl Into<String>) -> Nack {
        Nack {
            retryable: false,
            ..Nack::retry(reason)
        }
    }

    /// The status the failure reports (`knativeerrorcode` on a dead-lettered event).
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// let nack = Nack::reject("order has no items").with_status(422);
    /// assert!(!nack.is_retryable());
    /// ```
    pub fn with_status(mut self, status: u16) -> Nack {
        self.status = Some(status);
        self
    }

    /// Asks for at least this wait before the next attempt, as `Retry-After` does; it applies
    /// as Knative applies it: with status 429 or 503 (set here to 429 unless one of them is set)
    /// and capped by the delivery's `retryAfterMax`, which must be set.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// let nack = Nack::retry("slow down").retry_after(std::time::Duration::from_secs(30));
    /// assert!(nack.is_retryable());
    /// ```
    pub fn retry_after(mut self, wait: Duration) -> Nack {
        if !matches!(self.status, Some(429) | Some(503)) {
            self.status = Some(429);
        }
        self.retryable = true;
        self.retry_after = Some(wait);
        self
    }

    /// Whether the delivery engine retries it.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// assert!(Nack::retry("busy").is_retryable());
    /// assert!(!Nack::reject("bad order").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The reason given.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// assert_eq!(Nack::retry("busy").reason(), "busy");
    /// ```
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for Nack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Nack {}

enum Answer {
    Ack(Option<Box<EventRecord>>),
    Nack(Nack),
    /// Dropped before it was handed out (its subscription went away): deliver it again.
    Returned,
}

/// One event handed to an in-process subscriber. Answer it with [`ack`](Self::ack),
/// [`reply`](Self::reply) or [`nack`](Self::nack); dropping it unanswered is a retryable
/// failure.
pub struct Delivery {
    event: Arc<EventRecord>,
    want_reply: bool,
    answer: Option<oneshot::Sender<Answer>>,
    /// Fired when the subscription hands the delivery out (its timeout starts then).
    taken: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &crate::delivery::describe(&self.event))
            .finish()
    }
}

impl Delivery {
    /// The event (its data as the bytes received, `Data::Binary`; see [`data`](Self::data) and
    /// [`json`](Self::json)).
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # use cloudevents::AttributesReader;
    /// # fn demo(delivery: Delivery) {
    /// println!("{} from {}", delivery.event().id(), delivery.event().source());
    /// delivery.ack();
    /// # }
    /// ```
    pub fn event(&self) -> &Event {
        self.event.event()
    }

    /// The event record: attributes as received, data bytes, passed-through headers.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # fn demo(delivery: Delivery) {
    /// for (name, value) in delivery.record().headers() {
    ///     println!("{name}: {value}");
    /// }
    /// # }
    /// ```
    pub fn record(&self) -> &EventRecord {
        &self.event
    }

    /// The data bytes exactly as published.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # fn demo(delivery: Delivery) {
    /// let bytes = delivery.data().unwrap_or_default().len();
    /// println!("{bytes} bytes");
    /// delivery.ack();
    /// # }
    /// ```
    pub fn data(&self) -> Option<&[u8]> {
        self.event.data().map(|(_, b)| b.as_ref())
    }

    /// The data parsed as JSON into `T`.
    ///
    /// # Errors
    /// When there is no data or it is not `T` in JSON.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// #[derive(serde::Deserialize)]
    /// struct Order { total: f64 }
    /// # fn demo(delivery: Delivery) {
    /// match delivery.json::<Order>() {
    ///     Ok(order) => { println!("{}", order.total); delivery.ack() }
    ///     Err(e) => delivery.nack(Nack::reject(e.to_string())),
    /// }
    /// # }
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.data().unwrap_or_default())
    }

    /// Whether a reply would be routed (false for a dead-letter delivery: its reply is dropped).
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # fn demo(delivery: Delivery, confirmation: cloudevents::Event) {
    /// if delivery.wants_reply() { delivery.reply(confirmation) } else { delivery.ack() }
    /// # }
    /// ```
    pub fn wants_reply(&self) -> bool {
        self.want_reply
    }

    /// The event was handled: the delivery is done.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # async fn demo(mut orders: Subscription) {
    /// while let Some(delivery) = orders.next().await {
    ///     delivery.ack();
    /// }
    /// # }
    /// ```
    pub fn ack(mut self) {
        self.answer(Answer::Ack(None));
    }

    /// The event was handled and answered with `reply`, which goes where the route sends
    /// replies (a trigger's: back into its broker; a subscription's: its `reply`). The delivery
    /// is done once the reply is stored; if storing it fails, the delivery is tried again. A
    /// reply that is not a valid CloudEvent fails the attempt (retryable), as a malformed HTTP
    /// reply does.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # use cloudevents::{EventBuilder, EventBuilderV10};
    /// # fn demo(delivery: Delivery) -> Result<(), cloudevents::event::EventBuilderError> {
    /// let confirmation = EventBuilderV10::new()
    ///     .id("c-1").source("/billing").ty("order.confirmed").build()?;
    /// delivery.reply(confirmation);
    /// # Ok(()) }
    /// ```
    pub fn reply(mut self, reply: Event) {
        let answer = match EventRecord::from_event(reply) {
            Ok(r) => Answer::Ack(Some(Box::new(r))),
            Err(e) => Answer::Nack(Nack::retry(format!("malformed reply: {e}")).with_status(502)),
        };
        self.answer(answer);
    }

    /// Like [`reply`](Self::reply) with an [`EventRecord`] (data bytes kept as they are).
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # fn demo(delivery: Delivery) {
    /// let echo = delivery.record().clone();
    /// delivery.reply_record(echo);
    /// # }
    /// ```
    pub fn reply_record(mut self, reply: EventRecord) {
        self.answer(Answer::Ack(Some(Box::new(reply))));
    }

    /// The event was not handled: retried or dead-lettered as `nack` says.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # fn demo(delivery: Delivery) {
    /// delivery.nack(Nack::retry("database busy"));
    /// # }
    /// ```
    pub fn nack(mut self, nack: Nack) {
        self.answer(Answer::Nack(nack));
    }

    fn answer(&mut self, answer: Answer) {
        if let Some(tx) = self.answer.take() {
            let _ = tx.send(answer);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.answer.is_some() {
            let answer = if self.taken.is_some() {
                Answer::Returned
            } else {
                Answer::Nack(Nack::retry("the delivery was dropped without an answer"))
            };
            self.answer(answer);
        }
    }
}

/// A stream of deliveries to one in-process subscriber address. It ends when the mesh shuts
/// down. Dropping it hands deliveries it holds but has not given out to another subscription of
/// the address, or keeps them waiting for one.
pub struct Subscription {
    rx: mpsc::Receiver<Delivery>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish()
    }
}

impl Subscription {
    /// The next delivery; `None` once the mesh has shut down.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # async fn demo(mut orders: Subscription) {
    /// while let Some(delivery) = orders.next().await {
    ///     delivery.ack();
    /// }
    /// println!("the mesh shut down");
    /// # }
    /// ```
    pub async fn next(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The namespace of the address.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # fn demo(orders: Subscription) {
    /// println!("listening on {}/{}", orders.namespace(), orders.name());
    /// # }
    /// ```
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name of the address.
    /// ```
    /// # use evmesh_broker::subscriber::{Delivery, Nack, Subscription};
    /// # fn demo(orders: Subscription) {
    /// assert_eq!(orders.name(), "orders");
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(mut d)) => {
                if let Some(taken) = d.taken.take() {
                    let _ = taken.send(());
                }
                Poll::Ready(Some(d))
            }
            other => other,
        }
    }
}

impl Stream for Subscription {
    type Item = Delivery;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.get_mut().poll_recv(cx)
    }
}

/// One address: the subscriptions listening on it.
struct Address {
    namespace: String,
    name: String,
    senders: Mutex<Vec<mpsc::Sender<Delivery>>>,
    next: AtomicUsize,
    /// Woken when a subscription arrives.
    arrived: Notify,
}

impl Address {
    /// A live subscription's sender, round robin; `None` when nobody listens.
    fn live(&self) -> Vec<mpsc::Sender<Delivery>> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.retain(|s| !s.is_closed());
        if senders.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % senders.len();
        senders[start..]
            .iter()
            .chain(&senders[..start])
            .cloned()
            .collect()
    }

    /// Hands `delivery` to a subscription, waiting for one (and for room) as long as it takes.
    async fn hand_over(&self, mut delivery: Delivery) {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let live = self.live();
            let Some(first) = live.first().cloned() else {
                arrived.await;
                continue;
            };
            // Any subscription with room now, else wait for room at the first.
            for s in &live {
                match s.try_send(delivery) {
                    Ok(()) => return,
                    Err(mpsc::error::TrySendError::Full(d))
                    | Err(mpsc::error::TrySendError::Closed(d)) => delivery = d,
                }
            }
            match first.send(delivery).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(d)) => delivery = d,
            }
        }
    }
}

impl LocalSink for Address {
    fn accept(&self, event: EventRecord) -> LocalFuture<'_, Result<(), LocalRefusal>> {
        Box::pin(async move {
            let url = format!(
                "{}/{}/{}",
                evmesh_config::SUBSCRIBERS_PATH,
                self.namespace,
                self.name
            );
            let request = LocalRequest {
                url: url::Url::parse("http://in-process")
                    .and_then(|u| u.join(&url))
                    .map_err(|e| LocalRefusal {
                        status: 500,
                        reason: e.to_string(),
                    })?,
                event,
                want_reply: false,
                timeout: None,
            };
            match self.deliver(request).await {
                Outcome::Delivered { .. } => Ok(()),
                Outcome::Failed(f) => Err(LocalRefusal {
                    status: f.status.unwrap_or(500),
                    reason: f.reason,
                }),
            }
        })
    }

    fn deliver(&self, request: LocalRequest) -> LocalFuture<'_, Outcome> {
        Box::pin(async move {
            let event = Arc::new(request.event);
            loop {
                let (answer_tx, mut answer_rx) = oneshot::channel();
                let (taken_tx, taken_rx) = oneshot::channel();
                self.hand_over(Delivery {
                    event: event.clone(),
                    want_reply: request.want_reply,
                    answer: Some(answer_tx),
                    taken: Some(taken_tx),
                })
                .await;
                // Until it is handed out, it may come back (its subscription went away).
                let answer = tokio::select! {
                    a = &mut answer_rx => a.ok(),
                    t = taken_rx => match t {
                        Ok(()) => {
                            let timeout = request.timeout.unwrap_or(DEFAULT_TIMEOUT);
                            match tokio::time::timeout(timeout, &mut answer_rx).await {
                                Ok(a) => a.ok(),
                                Err(_) => {
                                    return failure(&request.url, &Nack::retry(format!(
                                        "the in-process subscriber did not answer within {timeout:?}"
                                    )));
                                }
                            }
                        }
                        Err(_) => answer_rx.await.ok(),
                    },
                };
                return match answer {
                    Some(Answer::Returned) => continue,
                    Some(Answer::Ack(reply)) => Outcome::Delivered {
                        reply: reply.filter(|_| request.want_reply),
                    },
                    Some(Answer::Nack(n)) => failure(&request.url, &n),
                    None => failure(
                        &request.url,
                        &Nack::retry("the delivery was dropped without an answer"),
                    ),
                };
            }
        })
    }

    fn not_ready(&self) -> Option<String> {
        self.live().is_empty().then(|| {
            format!(
                "no in-process subscriber listens on {}/{}: deliveries wait for one",
                self.namespace, self.name
            )
        })
    }
}

fn failure(url: &url::Url, nack: &Nack) -> Outcome {
    let mut body = nack.reason.clone().into_bytes();
    body.truncate(crate::delivery::MAX_FAILURE_BODY);
    Outcome::Failed(Failure {
        dest: redact(url),
        status: nack.status,
        body,
        retryable: nack.retryable,
        retry_after: nack.retry_after,
        reason: format!("the in-process subscriber nacked: {}", nack.reason),
        local: false,
    })
}

/// The in-process subscriber addresses of one mesh. Cheap to clone.
#[derive(Clone, Default)]
pub struct Subscribers {
    inner: Arc<SubscribersInner>,
}

#[derive(Default)]
struct SubscribersInner {
    addresses: Mutex<HashMap<(String, String), Arc<Address>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribers").finish_non_exhaustive()
    }
}

impl Subscribers {
    fn address(&self, namespace: &str, name: &str) -> Arc<Address> {
        let mut map = self
            .inner
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry((namespace.to_string(), name.to_string()))
            .or_insert_with(|| {
                Arc::new(Address {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    senders: Mutex::new(Vec::new()),
                    next: AtomicUsize::new(0),
                    arrived: Notify::new(),
                })
            })
            .clone()
    }

    /// Subscribes to address `namespace/name` (what a Destination `ref: {apiVersion:
    /// evmesh.dev/v1alpha1, kind: Subscriber, name}` in `namespace` resolves to). After
    /// [`close`](Self::close) the stream ends at once.
    ///
    /// ```
    /// let subscribers = evmesh_broker::subscriber::Subscribers::default();
    /// let orders = subscribers.subscribe("shop", "orders");
    /// assert_eq!((orders.namespace(), orders.name()), ("shop", "orders"));
    /// assert!(subscribers.is_listening("shop", "orders"));
    /// ```
    pub fn subscribe(&self, namespace: &str, name: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(BUFFER);
        let address = self.address(namespace, name);
        if !self.inner.closed.load(Ordering::Acquire) {
            address
                .senders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(tx);
            address.arrived.notify_waiters();
        }
        Subscription {
            rx,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Whether some subscription listens on `namespace/name` (dropped subscriptions do not).
    ///
    /// ```
    /// let subscribers = evmesh_broker::subscriber::Subscribers::default();
    /// assert!(!subscribers.is_listening("default", "orders"));
    /// let orders = subscribers.subscribe("default", "orders");
    /// assert!(subscribers.is_listening("default", "orders"));
    /// drop(orders);
    /// assert!(!subscribers.is_listening("default", "orders"));
    /// ```
    pub fn is_listening(&self, namespace: &str, name: &str) -> bool {
        !self.address(namespace, name).live().is_empty()
    }

    /// The sink of the address at `rest` (`{namespace}/{name}`), for
    /// [`LocalSinks::insert_prefix`](crate::delivery::LocalSinks::insert_prefix); `None` when
    /// `rest` is not two non-empty segments.
    ///
    /// ```
    /// let subscribers = evmesh_broker::subscriber::Subscribers::default();
    /// assert!(subscribers.sink("shop/orders").is_some());
    /// assert!(subscribers.sink("orders").is_none());
    /// assert!(subscribers.sink("shop/orders/extra").is_none());
    /// ```
    pub fn sink(&self, rest: &str) -> Option<Arc<dyn LocalSink>> {
        let (namespace, name) = rest.split_once('/')?;
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(self.address(namespace, name) as Arc<dyn LocalSink>)
    }

    /// Ends every subscription stream (the mesh shut down); later subscriptions end at once.
    ///
    /// ```
    /// let subscribers = evmesh_broker::subscriber::Subscribers::default();
    /// let _orders = subscribers.subscribe("default", "orders");
    /// subscribers.close();
    /// assert!(!subscribers.is_listening("default", "orders"));
    /// ```
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let map = self
            .inner
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for a in map.values() {
            a.senders.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}
