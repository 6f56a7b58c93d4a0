//! The delivery worker: takes due deliveries from the outbox, sends them, and records each attempt.
//!
//! One dispatcher thread (`gavel-webhooks`) is the only writer of existing outbox records: it
//! finds due deliveries per endpoint (at most `max_in_flight_per_endpoint` in flight each), hands
//! them to a few sender threads (`gavel-webhook-N`, blocking HTTP with a hard timeout), and writes
//! the outcome: delivered, a retry at the next step of the schedule (or later, as `Retry-After`
//! asks), exhausted, or disabled when the receiver answered 410. None of this runs on a core's
//! event loop, so a slow or dead receiver never delays a ping or a post.
//!
//! A delivery is only sent once the commit that created it is durable: a core puts its writes into
//! sled only after its write-ahead log has synced them (see [`crate::store::wal`]), so whatever the
//! dispatcher reads from the outbox is on disk already, and a crash can never leave a receiver
//! holding an event the store forgot. Attempt outcomes are written
//! without waiting for the disk: one lost in a crash only means the delivery is sent again, which
//! at-least-once allows and the unchanged `webhook-id` lets receivers detect.
//!
//! A config reload hands the dispatcher a new endpoint table ([`Command::Reload`]). Jobs carry
//! their endpoint itself and in-flight attempts are kept by endpoint id, so an attempt under way
//! when its endpoint changed or went away finishes and is recorded as usual; deliveries of an
//! endpoint no longer configured then wait in the outbox, untouched, until one with its id is
//! configured again.
//!
//! Owns threads and scheduling; not the wire format ([`super`]) nor the endpoint table
//! ([`super::outbox`]).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::outbox::{Command, Disabled, Endpoint, ReplayError, SendOutcome, Webhooks};
use crate::store::{Batch, DeliveryRecord, DeliveryState, Store, StoreError, WebhookAttemptRecord};
use crate::types::clock::Clock;

/// Longest the dispatcher sleeps with nothing to do; bounds how late it notices a due retry whose
/// wake-up it missed.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Shortest time between two passes over the outbox. Under load, work that arrives meanwhile is
/// taken in one pass and its outcomes written in one transaction, which keeps the dispatcher's
/// share of the CPU and of sled's write lock small; it adds at most this much to a delivery's lag.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(2);
/// Deliveries of a disabled endpoint marked `disabled` per pass.
const SWEEP_BATCH: usize = 1000;
/// Most of a receiver's answer read (and discarded), so the connection can be reused.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// One delivery handed to a sender thread.
struct Job {
    /// The endpoint as the dispatcher's table had it: its URL and secrets.
    endpoint: Arc<Endpoint>,
    record: DeliveryRecord,
}

/// What a sender thread reports back.
struct Done {
    endpoint: Arc<Endpoint>,
    record: DeliveryRecord,
    attempt: WebhookAttemptRecord,
    /// How the attempt ended; `attempt.result` holds its word.
    outcome: SendOutcome,
    retry_after_ms: Option<u64>,
}

/// The running worker; [`WorkerHandle::stop`] ends it.
pub struct WorkerHandle {
    webhooks: Arc<Webhooks>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Stops the dispatcher and waits for it. Sender threads finish their current request on
    /// their own; an outcome they report after this is dropped, so that delivery is sent again
    /// after the next start.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.webhooks.stop_worker();
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the dispatcher and its sender threads. `clock` stamps attempts and schedules retries:
/// a test on a manual clock makes the next retry due by advancing it. How long the dispatcher
/// waits between passes stays on the monotonic clock (at most [`IDLE_WAIT`]), so an advance is
/// noticed within that.
pub fn start(
    store: Arc<Store>,
    webhooks: Arc<Webhooks>,
    clock: Clock,
) -> Result<WorkerHandle, super::WebhookError> {
    let d = &webhooks.delivery;
    let mut agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(d.timeout_ms))
        .redirects(0)
        .user_agent(concat!("gavel-webhooks/", env!("CARGO_PKG_VERSION")));
    // `webhook_delivery.ca_file`, read here at start (check-config has already read it once).
    if let Some(tls) = super::tls_config(d).map_err(super::WebhookError::DeliveryTls)? {
        agent = agent.tls_config(tls);
    }
    let agent = agent.build();
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(d.threads * 2);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    for n in 0..d.threads {
        let (agent, jobs, done) = (agent.clone(), job_rx.clone(), done_tx.clone());
        let clock = clock.clone();
        std::thread::Builder::new()
            .name(format!("gavel-webhook-{n}"))
            .spawn(move || {
                for job in jobs {
                    let report = send(&agent, job, &clock);
                    if done.send(report).is_err() {
                        return;
                    }
                }
            })
            .map_err(super::WebhookError::SenderThread)?;
    }
    let mut dispatcher = Dispatcher {
        in_flight: HashMap::new(),
        next_first: 0,
        store,
        webhooks: webhooks.clone(),
        jobs: job_tx,
        clock,
    };
    let thread = std::thread::Builder::new()
        .name("gavel-webhooks".into())
        .spawn(move || dispatcher.run(done_rx))
        .map_err(super::WebhookError::WorkerThread)?;
    Ok(WorkerHandle {
        webhooks,
        thread: Some(thread),
    })
}

struct Dispatcher {
    store: Arc<Store>,
    webhooks: Arc<Webhooks>,
    jobs: Sender<Job>,
    /// Event ids with an attempt under way, by endpoint id (also of endpoints a reload removed,
    /// until their attempts end). An endpoint with none has no entry.
    in_flight: HashMap<String, HashSet<String>>,
    /// The endpoint the next pass serves first.
    next_first: usize,
    /// Wall-clock time: which deliveries are due, when the next retry is.
    clock: Clock,
}

impl Dispatcher {
    fn run(&mut self, done: Receiver<Done>) {
        // Every table of one server shares these channels, so the first one's serve throughout.
        let webhooks = self.webhooks.clone();
        let (doorbell, commands) = (webhooks.doorbell(), webhooks.command_rx());
        let mut last_pass: Option<Instant> = None;
        loop {
            if let Some(rest) = last_pass.and_then(|t| MIN_PASS_INTERVAL.checked_sub(t.elapsed())) {
                // This is the dispatcher's own thread, not an event loop.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(rest);
            }
            last_pass = Some(Instant::now());
            let wait = match self.pass() {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!(error = %e, "webhook outbox pass failed");
                    IDLE_WAIT
                }
            };
            // Outcomes are written together: one store transaction per wake-up, not per attempt.
            let mut outcomes = Batch::new();
            select! {
                recv(done) -> d => if let Ok(d) = d { self.finish(d, &mut outcomes) },
                recv(doorbell) -> _ => {},
                recv(commands) -> c => match c {
                    Ok(Command::Stop) | Err(_) => return,
                    Ok(c) => self.command(c),
                },
                default(wait) => {},
            }
            // Take every other outcome already reported before the next pass.
            while let Ok(d) = done.try_recv() {
                self.finish(d, &mut outcomes);
            }
            if let Err(e) = self.store.apply(&outcomes) {
                tracing::error!(error = %e, "cannot record webhook attempts");
            }
        }
    }

    /// Hands every due delivery that has a free slot to the senders; returns how long to sleep
    /// before the next pass is needed.
    fn pass(&mut self) -> Result<Duration, StoreError> {
        let now = self.clock.now_ms();
        let mut jobs = Vec::new();
        let webhooks = self.webhooks.clone();
        let n = webhooks.endpoints.len();
        // Only as many jobs as there are idle senders, so handing one over never blocks and a
        // slow endpoint holds at most its own share of them.
        let mut idle = self
            .webhooks
            .delivery
            .threads
            .saturating_sub(self.in_flight_total());
        // Each pass starts at the next endpoint, so none is always served last.
        self.next_first = (self.next_first + 1) % n.max(1);
        let none = HashSet::new();
        for i in (0..n).map(|k| (self.next_first + k) % n) {
            let ep = &webhooks.endpoints[i];
            if !ep.config.enabled {
                continue;
            }
            if ep.is_disabled() {
                self.sweep_disabled(ep)?;
                continue;
            }
            let busy = self.in_flight.get(ep.id()).unwrap_or(&none);
            let free = self
                .webhooks
                .delivery
                .max_in_flight_per_endpoint
                .saturating_sub(busy.len())
                .min(idle);
            let due = self
                .store
                .due_deliveries(ep.id(), now, free, &|id| busy.contains(id))?;
            for d in due {
                match self.queued_delivery(&d.event_id, ep.id())? {
                    Some(r) if r.is_pending() && r.next_attempt_ms == Some(d.due_ms) => {
                        idle -= 1;
                        jobs.push(Job {
                            endpoint: ep.clone(),
                            record: r,
                        });
                    }
                    // An entry left behind by expiry, or whose record cannot be read.
                    other => {
                        let mut b = Batch::new();
                        b.delete_due(ep.id(), d.due_ms, &d.event_id);
                        self.store.apply(&b)?;
                        if other.is_none() {
                            ep.add_pending(-1);
                        }
                    }
                }
            }
        }
        for job in jobs {
            self.in_flight
                .entry(job.endpoint.id().to_string())
                .or_default()
                .insert(job.record.event_id.clone());
            if let Err(e) = self.jobs.send(job) {
                // The senders are gone (shutdown): the delivery stays due for the next start.
                let job = e.into_inner();
                self.end_in_flight(job.endpoint.id(), &job.record.event_id);
            }
        }
        debug_assert!(
            self.in_flight_total() <= self.webhooks.delivery.threads
                && self
                    .in_flight
                    .values()
                    .all(|f| f.len() <= self.webhooks.delivery.max_in_flight_per_endpoint),
            "more webhook deliveries in flight than webhooks.delivery allows"
        );
        self.next_wait(now)
    }

    /// The delivery a due-index entry points at; `None` when it is gone or unreadable. One
    /// unreadable record must not stop every delivery: it leaves the queue (it stays in the
    /// outbox, where reading it by event id reports the error).
    fn queued_delivery(
        &self,
        event_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        match self.store.get_delivery(event_id, endpoint_id) {
            Err(e @ (StoreError::Corrupt { .. } | StoreError::UnknownVersion { .. })) => {
                tracing::error!(error = %e, endpoint = endpoint_id, "skipping an unreadable webhook delivery");
                Ok(None)
            }
            other => other,
        }
    }

    fn in_flight_total(&self) -> usize {
        self.in_flight.values().map(HashSet::len).sum()
    }

    /// Whether an attempt to deliver `event_id` to the endpoint `endpoint_id` is under way.
    fn is_in_flight(&self, endpoint_id: &str, event_id: &str) -> bool {
        self.in_flight
            .get(endpoint_id)
            .is_some_and(|f| f.contains(event_id))
    }

    /// Forgets the attempt to deliver `event_id` to `endpoint_id`; an endpoint left with none
    /// loses its entry, so one a reload removed leaves nothing behind.
    fn end_in_flight(&mut self, endpoint_id: &str, event_id: &str) {
        if let Some(f) = self.in_flight.get_mut(endpoint_id) {
            f.remove(event_id);
            if f.is_empty() {
                self.in_flight.remove(endpoint_id);
            }
        }
    }

    /// Time until the earliest delivery that could start, at most [`IDLE_WAIT`].
    fn next_wait(&self, now: u64) -> Result<Duration, StoreError> {
        // With every sender busy, the next finished attempt wakes the dispatcher.
        if self.in_flight_total() >= self.webhooks.delivery.threads {
            return Ok(IDLE_WAIT);
        }
        let mut next: Option<u64> = None;
        let max = self.webhooks.delivery.max_in_flight_per_endpoint;
        let none = HashSet::new();
        for ep in &self.webhooks.endpoints {
            let busy = self.in_flight.get(ep.id()).unwrap_or(&none);
            if !ep.is_active() || busy.len() >= max {
                continue;
            }
            if let Some(due) = self.store.next_due(ep.id(), &|id| busy.contains(id))? {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        Ok(next.map_or(IDLE_WAIT, |due| {
            Duration::from_millis(due.saturating_sub(now)).min(IDLE_WAIT)
        }))
    }

    /// Marks pending deliveries of an endpoint a 410 disabled as `disabled`.
    fn sweep_disabled(&self, ep: &Endpoint) -> Result<(), StoreError> {
        let none = HashSet::new();
        let busy = self.in_flight.get(ep.id()).unwrap_or(&none);
        let due = self
            .store
            .due_deliveries(ep.id(), u64::MAX, SWEEP_BATCH, &|id| busy.contains(id))?;
        if due.is_empty() {
            return Ok(());
        }
        let mut b = Batch::new();
        for d in &due {
            b.delete_due(ep.id(), d.due_ms, &d.event_id);
            if let Some(mut r) = self.queued_delivery(&d.event_id, ep.id())? {
                r.set_state(DeliveryState::Disabled);
                r.next_attempt_ms = None;
                b.put_delivery(&r)?;
            }
        }
        self.store.apply(&b)?;
        ep.add_pending(-(due.len() as i64));
        Ok(())
    }

    /// Records one attempt's outcome into `b` and decides what comes next.
    fn finish(&mut self, d: Done, b: &mut Batch) {
        // `ep` is the endpoint as it was sent to: its state is the current table's when its id
        // is still configured, and is counted on as usual when a reload removed it meanwhile.
        let Done {
            endpoint: ep,
            mut record,
            attempt,
            outcome,
            retry_after_ms,
        } = d;
        self.end_in_flight(ep.id(), &record.event_id);
        ep.count_attempt(outcome);
        let old_due = record.next_attempt_ms;
        let now = self.clock.now_ms();
        let failures = record.attempts.len() as u32 + 1 - record.schedule_base;
        let schedule = &self.webhooks.delivery.retry_schedule_ms;
        match outcome {
            SendOutcome::Delivered => {
                record.set_state(DeliveryState::Delivered);
                record.next_attempt_ms = None;
            }
            SendOutcome::Gone => {
                record.set_state(DeliveryState::Disabled);
                record.next_attempt_ms = None;
                self.disable(&ep, &record.event_id, now);
            }
            // Named one by one so that a new outcome must be placed here; each is one
            // `SendOutcome::retryable` says is worth another try.
            SendOutcome::Failed | SendOutcome::Timeout | SendOutcome::ConnectError => {
                debug_assert!(outcome.retryable());
                match schedule.get(failures as usize - 1) {
                    Some(&delay) => {
                        let asked = retry_after_ms
                            .map_or(0, |ms| ms.min(self.webhooks.delivery.max_retry_after_ms));
                        record.next_attempt_ms = Some(now + delay.max(asked));
                    }
                    None => {
                        record.set_state(DeliveryState::Exhausted);
                        record.next_attempt_ms = None;
                        ep.count_exhausted();
                        tracing::warn!(
                            endpoint = ep.id(),
                            event_id = %record.event_id,
                            "webhook delivery failed every retry"
                        );
                    }
                }
            }
        }
        record.attempts.push(attempt);
        if !record.is_pending() {
            ep.add_pending(-1);
        }
        if let Some(due) = old_due {
            b.delete_due(ep.id(), due, &record.event_id);
        }
        if let Err(e) = b.put_delivery(&record) {
            tracing::error!(error = %e, event_id = %record.event_id, "cannot record a webhook attempt");
        }
    }

    /// Disables an endpoint after a 410, durably, so a restart does not resume sending to it.
    fn disable(&self, ep: &Endpoint, event_id: &str, now: u64) {
        let info = Disabled {
            at_ms: now,
            reason: "gone".into(),
            event_id: event_id.to_string(),
        };
        let mut b = Batch::new();
        b.put_meta(
            &ep.disabled_key(),
            serde_json::to_vec(&info).unwrap_or_default(),
        );
        if let Err(e) = self.store.write_durable(&b) {
            tracing::error!(error = %e, endpoint = ep.id(), "cannot record that an endpoint is disabled");
        }
        tracing::warn!(
            endpoint = ep.id(),
            "webhook endpoint answered 410 Gone: disabled"
        );
        ep.set_disabled(true);
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Replay {
                tenant,
                event_id,
                endpoint,
                audit,
                reply,
            } => {
                let _ = reply.send(self.replay(tenant, &event_id, endpoint.as_deref(), *audit));
            }
            Command::Enable {
                endpoint: ep,
                audit,
                reply,
            } => {
                let mut b = Batch::new();
                b.delete_meta(&ep.disabled_key());
                let state = |disabled: bool| serde_json::json!({ "disabled_by_410": disabled });
                let res = (*audit)
                    .before(Some(&state(ep.is_disabled())))
                    .after(Some(&state(false)))
                    .put(&mut b, self.clock.now_ms())
                    .and_then(|()| self.store.write_durable(&b));
                if res.is_ok() {
                    ep.set_disabled(false);
                    tracing::info!(endpoint = ep.id(), "webhook endpoint enabled again");
                }
                let _ = reply.send(res);
            }
            Command::Reload { webhooks, reply } => {
                tracing::info!(
                    endpoints = webhooks.endpoints.len(),
                    "webhook endpoints reloaded"
                );
                self.webhooks = webhooks;
                let _ = reply.send(());
            }
            Command::Stop => {}
        }
    }

    /// Makes an event's deliveries pending again, due now, with a fresh retry schedule, and
    /// records `audit` (with each delivery's state before and after) in the same batch.
    fn replay(
        &mut self,
        tenant: crate::config::Tenant,
        event_id: &str,
        endpoint: Option<&str>,
        audit: crate::audit::Entry,
    ) -> Result<Vec<DeliveryRecord>, ReplayError> {
        let store_err = |e: StoreError| ReplayError::Store(e.to_string());
        let records: Vec<DeliveryRecord> = self
            .store
            .get_deliveries(event_id)
            .map_err(store_err)?
            .into_iter()
            .filter(|r| r.tenant == tenant.as_str() && endpoint.is_none_or(|e| e == r.endpoint_id))
            .collect();
        if records.is_empty() {
            return Err(ReplayError::NotFound);
        }
        let mut targets = Vec::with_capacity(records.len());
        for r in &records {
            let Some(ep) = self.webhooks.endpoint(&r.endpoint_id) else {
                return Err(ReplayError::EndpointInactive(r.endpoint_id.clone()));
            };
            if !ep.is_active() {
                return Err(ReplayError::EndpointInactive(r.endpoint_id.clone()));
            }
            if self.is_in_flight(&r.endpoint_id, &r.event_id) {
                return Err(ReplayError::InFlight(r.endpoint_id.clone()));
            }
            targets.push(ep);
        }
        let now = self.clock.now_ms();
        let mut b = Batch::new();
        let states = |rs: &[DeliveryRecord]| -> Vec<serde_json::Value> {
            rs.iter()
                .map(|r| serde_json::json!({ "endpoint_id": r.endpoint_id, "state": r.state }))
                .collect()
        };
        let audit = audit.before(Some(&states(&records)));
        let mut out = Vec::with_capacity(records.len());
        let mut newly_pending = Vec::new();
        for (mut r, ep) in records.into_iter().zip(targets) {
            if let Some(due) = r.next_attempt_ms {
                b.delete_due(&r.endpoint_id, due, &r.event_id);
            }
            if !r.is_pending() {
                newly_pending.push(ep);
            }
            r.set_state(DeliveryState::Pending);
            r.next_attempt_ms = Some(now);
            r.schedule_base = r.attempts.len() as u32;
            b.put_delivery(&r).map_err(store_err)?;
            out.push(r);
        }
        audit
            .after(Some(&states(&out)))
            .put(&mut b, now)
            .map_err(store_err)?;
        self.store.write_durable(&b).map_err(store_err)?;
        for ep in newly_pending {
            ep.add_pending(1);
        }
        Ok(out)
    }
}

/// Sends one delivery to its endpoint and classifies the answer.
fn send(agent: &ureq::Agent, job: Job, clock: &Clock) -> Done {
    let ep = &job.endpoint;
    let at_ms = clock.now_ms();
    let started = Instant::now();
    let r = &job.record;
    let mut outcome = SendOutcome::Failed;
    let mut attempt = WebhookAttemptRecord {
        at_ms,
        result: String::new(),
        http_status: None,
        error: None,
        latency_us: 0,
    };
    let mut retry_after_ms = None;
    match super::headers(&r.event_id, at_ms / 1000, &r.body, &ep.secrets) {
        Err(e) => attempt.error = Some(e.to_string()),
        Ok(headers) => {
            let mut req = agent
                .post(&ep.config.url)
                .set("content-type", "application/json");
            for (name, value) in &headers {
                req = req.set(name.as_str(), value.to_str().unwrap_or_default());
            }
            #[allow(
                clippy::disallowed_methods,
                reason = "a webhook sender thread: blocking HTTP is its job, never a core's"
            )]
            let response = match req.send_bytes(&r.body) {
                Ok(resp) => Some(resp),
                Err(ureq::Error::Status(_, resp)) => Some(resp),
                Err(ureq::Error::Transport(t)) => {
                    outcome = transport_outcome(&t);
                    attempt.error = Some(t.to_string());
                    None
                }
            };
            if let Some(resp) = response {
                let status = resp.status();
                attempt.http_status = Some(status);
                outcome = match status {
                    200..=299 => SendOutcome::Delivered,
                    410 => SendOutcome::Gone,
                    _ => SendOutcome::Failed,
                };
                retry_after_ms = resp
                    .header("retry-after")
                    .and_then(|v| parse_retry_after_ms(v, clock.now_ms()));
                // Drain a little of the answer so the connection can serve the next delivery.
                let _ = std::io::copy(
                    &mut resp.into_reader().take(MAX_RESPONSE_BYTES),
                    &mut std::io::sink(),
                );
            }
        }
    }
    attempt.latency_us = started.elapsed().as_micros() as u64;
    attempt.result = outcome.as_str().to_string();
    Done {
        endpoint: job.endpoint,
        record: job.record,
        attempt,
        outcome,
        retry_after_ms,
    }
}

fn transport_outcome(t: &ureq::Transport) -> SendOutcome {
    use std::error::Error;
    let timed_out = t
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            )
        });
    match t.kind() {
        _ if timed_out => SendOutcome::Timeout,
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => SendOutcome::ConnectError,
        _ => SendOutcome::Failed,
    }
}

/// `Retry-After` as milliseconds from `now_ms` (unix milliseconds): delay-seconds or an HTTP date
/// (RFC 9110 §10.2.3).
pub fn parse_retry_after_ms(v: &str, now_ms: u64) -> Option<u64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(s.saturating_mul(1000));
    }
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, &f).ok()?.assume_utc();
    let at_ms = u64::try_from(at.unix_timestamp())
        .ok()?
        .saturating_mul(1000);
    Some(at_ms.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::Secret;

    /// A receiver that answers 204 to every request and reports each webhook-id.
    /// Queues one `lead.posted` event for the sandbox seller at `at_ms`, durable in `store`.
    fn queue_one(hooks: &Webhooks, store: &Store, at_ms: u64) -> crate::webhooks::Queued {
        let mut b = Batch::new();
        let queued = hooks
            .enqueue(
                &mut b,
                crate::config::Tenant::Sandbox,
                "seller",
                "lead.posted",
                &serde_json::json!({"lead_uuid": "ld_1"}),
                at_ms,
            )
            .unwrap();
        store.write_durable(&b).unwrap();
        queued
    }

    fn counting_receiver() -> (gavel_testkit::receiver::Server, Receiver<String>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let server = gavel_testkit::receiver::Server::start(Arc::new(move |req| {
            let _ = tx.send(req.header("webhook-id").unwrap_or_default().to_string());
            gavel_testkit::receiver::Answer::status(204)
        }))
        .unwrap();
        (server, rx)
    }

    #[test]
    fn an_unreadable_delivery_does_not_hold_back_the_others() {
        let (server, received) = counting_receiver();
        let url = server.url("/hook");
        let text = format!(
            "[[webhooks]]\nid = \"crm\"\ntenant = \"sandbox\"\nurl = \"{url}\"\n\
             secrets = [\"{}\"]\nevents = [\"lead.posted\"]\n",
            Secret::generate()
        );
        let config = crate::config::Config::parse("t.toml", &text).unwrap();
        let hooks = Arc::new(Webhooks::from_config(&config).unwrap());
        let store = Arc::new(Store::temporary().unwrap());
        // A damaged record, due first, ahead of a good one.
        store.raw_insert(
            crate::store::TreeId::Outbox,
            &crate::store::delivery_key("evt_0bad", "crm"),
            b"\x01garbage",
        );
        store.raw_insert(
            crate::store::TreeId::OutboxDue,
            &crate::store::due_key("crm", 1, "evt_0bad"),
            b"",
        );
        // As at start: the outbox is counted, then events come in.
        hooks.load_state(&store).unwrap();
        let queued = queue_one(&hooks, &store, Clock::system().now_ms());
        let mut worker = start(store.clone(), hooks.clone(), Clock::system()).unwrap();
        hooks.committed(queued);
        let id = received
            .recv_timeout(Duration::from_secs(10))
            .expect("the good one arrives");
        assert!(id.starts_with("evt_") && id != "evt_0bad");
        let t0 = Instant::now();
        while store.get_deliveries(&id).unwrap()[0].state != "delivered" {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the delivery is recorded"
            );
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(10));
        }
        worker.stop();
        assert_eq!(store.count_due("crm"), 0, "both left the queue");
        assert_eq!(hooks.endpoints[0].pending(), 0);
    }

    /// Waits (polling, on the test's thread) until `done` holds for the deliveries of `id`.
    fn wait_for_record(
        store: &Store,
        id: &str,
        done: impl Fn(&DeliveryRecord) -> bool,
    ) -> DeliveryRecord {
        let t0 = Instant::now();
        loop {
            if let Some(r) = store.get_deliveries(id).unwrap().into_iter().next() {
                if done(&r) {
                    return r;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "the record of {id}");
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn attempts_and_retries_follow_the_injected_clock() {
        // The receiver fails the first request and takes the second; it reports each one's
        // webhook-id and webhook-timestamp.
        let (tx, received) = crossbeam_channel::unbounded();
        let answered = std::sync::atomic::AtomicUsize::new(0);
        let server = gavel_testkit::receiver::Server::start(Arc::new(move |req| {
            let header = |n: &str| req.header(n).unwrap_or_default().to_string();
            let _ = tx.send((header("webhook-id"), header("webhook-timestamp")));
            let n = answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            gavel_testkit::receiver::Answer::status(if n == 0 { 500 } else { 204 })
        }))
        .unwrap();
        // The default schedule: the first retry comes 240 s after a failure.
        let text = format!(
            "[[webhooks]]\nid = \"crm\"\ntenant = \"sandbox\"\nurl = \"{}\"\n\
             secrets = [\"{}\"]\nevents = [\"lead.posted\"]\n",
            server.url("/hook"),
            Secret::generate()
        );
        let config = crate::config::Config::parse("t.toml", &text).unwrap();
        assert_eq!(config.webhook_delivery.retry_schedule_ms[0], 240_000);
        let hooks = Arc::new(Webhooks::from_config(&config).unwrap());
        let store = Arc::new(Store::temporary().unwrap());
        hooks.load_state(&store).unwrap();
        // A day ahead of the system clock: a worker that read the system clock would find
        // nothing due, so the first attempt arriving shows it reads this one.
        let clock = Clock::manual(Clock::system().now_ms() + 86_400_000);
        let t0 = clock.now_ms();
        let queued = queue_one(&hooks, &store, t0);
        let mut worker = start(store.clone(), hooks.clone(), clock.clone()).unwrap();
        hooks.committed(queued);

        let (id, ts) = received
            .recv_timeout(Duration::from_secs(10))
            .expect("the first attempt");
        assert_eq!(ts, (t0 / 1000).to_string(), "stamped by the injected clock");
        let r = wait_for_record(&store, &id, |r| r.attempts.len() == 1);
        assert_eq!(r.attempts[0].at_ms, t0);
        assert_eq!(
            r.next_attempt_ms,
            Some(t0 + 240_000),
            "the first retry, 240 s on"
        );
        // Four minutes pass at once; the dispatcher notices within its idle wait.
        clock.advance(240_000);
        let (again, ts) = received
            .recv_timeout(Duration::from_secs(10))
            .expect("the retry");
        assert_eq!(again, id, "the same event");
        assert_eq!(ts, ((t0 + 240_000) / 1000).to_string());
        let r = wait_for_record(&store, &id, |r| r.state == "delivered");
        assert_eq!(r.attempts.len(), 2);
        assert_eq!(r.attempts[1].at_ms, t0 + 240_000);
        worker.stop();
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = Clock::system().now_ms();
        assert_eq!(parse_retry_after_ms("120", now), Some(120_000));
        assert_eq!(parse_retry_after_ms(" 0 ", now), Some(0));
        assert_eq!(parse_retry_after_ms("soon", now), None);
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(0)
        );
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let f = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let ms = parse_retry_after_ms(&later.format(&f).unwrap(), now).unwrap();
        assert!((85_000..=90_000).contains(&ms), "{ms}");
    }
}
