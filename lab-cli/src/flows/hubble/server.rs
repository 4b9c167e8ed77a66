//! `observe --serve`: Hubble's Observer gRPC service over the flows of one
//! `observe` run, for `hubble observe --server ADDR` and any client built
//! from Hubble's protos.
//!
//! The observe loop [`Hub::publish`]es every item; the hub keeps the last
//! [`RING`] flows (for `number`/`first` and a follower's backlog) and hands
//! each follower what its filters let through, on a queue of [`QUEUE`]
//! messages. A client that does not read fills only its own queue: what no
//! longer fits is counted, never waited for, and the client gets one
//! `lost_events` record (source `HUBBLE_RING_BUFFER`) with the count before
//! its next flow. Memory per client is bounded by the queue; nobody else
//! slows down.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use futures_util::{Stream, StreamExt as _};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

use super::{
    filter::Filters,
    pb::{
        flow::{LostEvent, LostEventSource},
        observer::{
            GetFlowsRequest, GetFlowsResponse, GetNodesRequest, GetNodesResponse, Node,
            ServerStatusRequest, ServerStatusResponse, Tls,
            get_flows_response::ResponseTypes,
            observer_server::{Observer, ObserverServer},
        },
        relay::NodeState,
    },
};

/// Flows kept for `number`, `first` and a follower's backlog (Hubble's
/// default ring buffer holds 4095).
pub const RING: usize = 4095;
/// Messages queued for one client that reads slower than flows come.
pub const QUEUE: usize = 1024;
/// How often a client's pending loss is offered when no flow comes.
pub const FLUSH: Duration = Duration::from_millis(100);
/// How long a stop waits for the clients' streams to end.
const GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr}: {source}; choose another address or port (port 0 picks a free one)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the gRPC server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Server(String),
}

/// One following client.
struct Client {
    tx: mpsc::Sender<GetFlowsResponse>,
    filters: Filters,
    /// Events that did not fit in its queue since its last lost record.
    lost: u64,
    node: String,
}

impl Client {
    /// Sends the pending lost record if there is room; false once the
    /// client is gone.
    fn flush(&mut self) -> bool {
        if self.lost == 0 {
            return !self.tx.is_closed();
        }
        match self.tx.try_send(lost_record(self.lost, &self.node)) {
            Ok(()) => {
                self.lost = 0;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Offers an item; false once the client is gone.
    fn offer(&mut self, item: &GetFlowsResponse) -> bool {
        let missed = match &item.response_types {
            Some(ResponseTypes::Flow(f)) if !self.filters.matches(f) => {
                return !self.tx.is_closed();
            }
            Some(ResponseTypes::LostEvents(l)) => l.num_events_lost.max(1),
            _ => 1,
        };
        if self.lost > 0 {
            let record = lost_record(self.lost, &self.node);
            match self.tx.try_send(record) {
                Ok(()) => self.lost = 0,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.lost += missed;
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        match self.tx.try_send(item.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost += missed;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

fn lost_record(count: u64, node: &str) -> GetFlowsResponse {
    let now = prost_types::Timestamp::from(SystemTime::now());
    GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(LostEvent {
            source: LostEventSource::HubbleRingBuffer.into(),
            num_events_lost: count,
            ..Default::default()
        })),
        node_name: node.to_owned(),
        time: Some(now),
    }
}

#[derive(Default)]
struct State {
    ring: VecDeque<GetFlowsResponse>,
    seen: u64,
    clients: Vec<Client>,
    closed: bool,
}

/// Where the observe loop hands its items to the server.
pub struct Hub {
    state: Mutex<State>,
    started: Instant,
    node: String,
    addr: String,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One item of the stream, for the ring and every follower.
    pub fn publish(&self, item: GetFlowsResponse) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.clients.retain_mut(|c| c.offer(&item));
        if matches!(item.response_types, Some(ResponseTypes::Flow(_))) {
            state.seen += 1;
            if state.ring.len() == RING {
                state.ring.pop_front();
            }
            state.ring.push_back(item);
        }
    }

    /// Offers every client its pending loss (a client that caught up after
    /// the last flow learns what it missed).
    pub fn flush_lost(&self) {
        self.lock().clients.retain_mut(Client::flush);
    }

    /// Ends every stream and refuses new ones.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.clients.clear();
    }

    /// The flows of the ring the request asks for, and for a follower the
    /// queue of what comes next (registered under the same lock: nothing
    /// falls between the two).
    fn subscribe(
        &self,
        req: &GetFlowsRequest,
        filters: Filters,
    ) -> Result<
        (
            Vec<GetFlowsResponse>,
            Option<mpsc::Receiver<GetFlowsResponse>>,
        ),
        Status,
    > {
        let mut state = self.lock();
        if state.closed {
            return Err(Status::unavailable("labctl observe is stopping"));
        }
        let matching = state.ring.iter().filter(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => filters.matches(f),
            _ => false,
        });
        let number = usize::try_from(req.number).unwrap_or(usize::MAX);
        let backlog: Vec<GetFlowsResponse> = match (req.number, req.first, req.follow) {
            // Following with no number: only what comes next.
            (0, _, true) => Vec::new(),
            (0, _, false) => matching.cloned().collect(),
            (_, true, _) => matching.take(number).cloned().collect(),
            (_, false, _) => {
                let all: Vec<_> = matching.collect();
                let skip = all.len().saturating_sub(number);
                all.into_iter().skip(skip).cloned().collect()
            }
        };
        let rx = req.follow.then(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            state.clients.push(Client {
                tx,
                filters,
                lost: 0,
                node: self.node.clone(),
            });
            rx
        });
        Ok((backlog, rx))
    }

    fn status(&self) -> (u64, u64, u64) {
        let state = self.lock();
        let uptime = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        (state.ring.len() as u64, state.seen, uptime)
    }
}

fn version() -> String {
    format!("labctl {}", env!("CARGO_PKG_VERSION"))
}

struct Service {
    hub: Arc<Hub>,
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Observer for Service {
    type GetFlowsStream = FlowStream;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        let filters =
            Filters::from_request(&req).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (backlog, rx) = self.hub.subscribe(&req, filters)?;
        let backlog = futures_util::stream::iter(backlog);
        let stream: FlowStream = match rx {
            Some(rx) => Box::pin(backlog.chain(ReceiverStream::new(rx)).map(Ok)),
            None => Box::pin(backlog.map(Ok)),
        };
        Ok(Response::new(stream))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let (num_flows, seen_flows, uptime_ns) = self.hub.status();
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: self.hub.node.clone(),
                version: version(),
                address: self.hub.addr.clone(),
                state: NodeState::NodeConnected.into(),
                tls: Some(Tls {
                    enabled: false,
                    server_name: String::new(),
                }),
                uptime_ns,
                num_flows,
                max_flows: RING as u64,
                seen_flows,
            }],
        }))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let (num_flows, seen_flows, uptime_ns) = self.hub.status();
        Ok(Response::new(ServerStatusResponse {
            num_flows,
            max_flows: RING as u64,
            seen_flows,
            uptime_ns,
            num_connected_nodes: Some(1),
            num_unavailable_nodes: Some(0),
            unavailable_nodes: Vec::new(),
            version: version(),
        }))
    }
}

/// A running server: [`Serving::hub`] takes the items; [`Serving::stop`]
/// (or dropping it) ends every stream and the server within [`GRACE`].
pub struct Serving {
    addr: SocketAddr,
    hub: Arc<Hub>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Serving {
    /// Listens on `addr` (bound before this returns, so a busy port is an
    /// error here) and serves in a thread of its own. `node` is the name
    /// GetNodes gives this machine.
    pub fn start(addr: SocketAddr, node: &str) -> Result<Self, ServeError> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| ServeError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .and_then(|a| listener.set_nonblocking(true).map(|()| a))
            .map_err(|source| ServeError::Bind { addr, source })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let hub = Arc::new(Hub {
            state: Mutex::new(State::default()),
            started: Instant::now(),
            node: node.to_owned(),
            addr: bound.to_string(),
        });
        let (shutdown, mut stop_serving) = watch::channel(false);
        let mut stop_waiting = shutdown.subscribe();
        let service = ObserverServer::new(Service { hub: hub.clone() });
        let flushed = hub.clone();
        let thread =
            std::thread::Builder::new()
                .name("hubble-server".into())
                .spawn(move || {
                    let served = runtime.block_on(async move {
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(FLUSH);
                        loop {
                            tick.tick().await;
                            flushed.flush_lost();
                        }
                    });
                    let listener =
                        tokio::net::TcpListener::from_std(listener).map_err(ServeError::Runtime)?;
                    let server = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                            // Either a stop or the Serving gone.
                            let _stopped = stop_serving.changed().await;
                        });
                    // A client that stopped reading cannot hold the stop
                    // longer than GRACE.
                    let deadline = async move {
                        let _stopped = stop_waiting.changed().await;
                        tokio::time::sleep(GRACE).await;
                    };
                    tokio::select! {
                        served = server => served.map_err(|e| ServeError::Server(e.to_string())),
                        () = deadline => Ok(()),
                    }
                });
                    runtime.shutdown_timeout(Duration::from_millis(200));
                    served
                })
                .map_err(ServeError::Runtime)?;
        Ok(Serving {
            addr: bound,
            hub,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port chosen when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Ends every stream, then the server; waits at most about [`GRACE`].
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), ServeError> {
        self.hub.close();
        self.shutdown.send_replace(true);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServeError::Server("its thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::debug!("stopping the Hubble server: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::hubble::pb::flow::{Flow, Verdict};

    fn flow(n: u32) -> GetFlowsResponse {
        GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(Flow {
                verdict: Verdict::Dropped.into(),
                policy_match_type: n,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn hub() -> Hub {
        Hub {
            state: Mutex::new(State::default()),
            started: Instant::now(),
            node: "test".into(),
            addr: String::new(),
        }
    }

    #[test]
    fn a_client_that_does_not_read_loses_only_its_own_and_is_told() {
        let hub = hub();
        let follow = GetFlowsRequest {
            follow: true,
            ..Default::default()
        };
        let (_, slow) = hub.subscribe(&follow, Filters::default()).unwrap();
        let (_, fast) = hub.subscribe(&follow, Filters::default()).unwrap();
        let (mut slow, mut fast) = (slow.unwrap(), fast.unwrap());
        let total = QUEUE as u32 + 100;
        let mut fast_got = 0;
        for n in 0..total {
            hub.publish(flow(n));
            while fast.try_recv().is_ok() {
                fast_got += 1;
            }
        }
        assert_eq!(fast_got, total, "the reading client got everything");
        // The slow one: a full queue, then the loss and the next flow.
        let mut got = 0;
        while slow.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, QUEUE);
        // Told as soon as there is room, without waiting for a flow.
        hub.flush_lost();
        let lost = slow.try_recv().unwrap();
        let Some(ResponseTypes::LostEvents(l)) = lost.response_types else {
            panic!("{lost:?}");
        };
        assert_eq!(l.source(), LostEventSource::HubbleRingBuffer);
        assert_eq!(l.num_events_lost, u64::from(total) - QUEUE as u64);
        hub.publish(flow(total));
        assert!(matches!(
            slow.try_recv().unwrap().response_types,
            Some(ResponseTypes::Flow(_))
        ));
        // number / first over the ring.
        let last = |first| {
            let req = GetFlowsRequest {
                number: 3,
                first,
                ..Default::default()
            };
            let (backlog, rx) = hub.subscribe(&req, Filters::default()).unwrap();
            assert!(rx.is_none());
            backlog
                .into_iter()
                .map(|r| match r.response_types {
                    Some(ResponseTypes::Flow(f)) => f.policy_match_type,
                    _ => u32::MAX,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(last(false), [total - 2, total - 1, total]);
        assert_eq!(last(true), [0, 1, 2]);
        hub.close();
        assert!(hub.subscribe(&follow, Filters::default()).is_err());
    }
}
