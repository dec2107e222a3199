//! A deterministic in-memory [`MediaBackend`] for tests (unit, integration, benches).
//!
//! Ports come from [`AddressPorts`] in allocation order (side A first, then side B), each
//! local address with the whole range (a side without one counts as on 0.0.0.0), so a test
//! can predict them: with range 30000-30999 the first stream on one address gets A=30000,
//! B=30002.
//! Nothing is bound and no packet moves: a test sets the counters a stream should report with
//! [`FakeBackend::set_stats`] and queues latching events with [`FakeBackend::push_event`].
//! Every call is counted so tests can assert "exactly one open".

use std::collections::{BTreeMap, VecDeque};

use crate::session::backend::{
    BackendError, EndpointSpec, MediaBackend, MediaEvent, OpenedStream, RestoredStream, Side,
    StreamId, StreamSpec, StreamStats,
};
use std::net::{IpAddr, Ipv4Addr};

use crate::session::ports::{AddressId, AddressPorts, AddressUsage, PortError, PortPair};
use crate::time::Nanos;

/// One open stream as the fake sees it.
#[derive(Clone, Debug)]
pub struct FakeStream {
    pub spec: StreamSpec,
    pub opened: OpenedStream,
    pub stats: StreamStats,
    /// Number of `update` calls per side (A, B).
    pub updates: (u32, u32),
    pub opened_at: Nanos,
    /// The address pools side A's and side B's ports came from.
    pub pools: [AddressId; 2],
    /// Whether side A's and side B's separate RTCP sockets would be bound (see
    /// [`MediaBackend::settle_rtcp`]).
    pub rtcp_open: [bool; 2],
}

#[derive(Debug)]
pub struct FakeBackend {
    ports: AddressPorts,
    next_id: StreamId,
    streams: BTreeMap<StreamId, FakeStream>,
    events: VecDeque<MediaEvent>,
    /// Successful `open` calls.
    pub opens: u64,
    /// `open` calls that failed.
    pub failed_opens: u64,
    /// `close` calls on known streams.
    pub closes: u64,
    /// `update` calls on known streams.
    pub updates: u64,
    /// When set, the next `open` fails with this error (once).
    pub fail_next_open: Option<BackendError>,
    /// `socket_counters` reads per stream (what the timeout sweep does once per visit), so
    /// a test can count visits; [`FakeBackend::take_counter_reads`] empties it.
    counter_reads: std::cell::RefCell<BTreeMap<StreamId, u32>>,
}

impl FakeBackend {
    /// Ports `min..=max` on each address a stream names (pairs as
    /// [`PortAllocator::new`](crate::session::ports::PortAllocator::new) forms them).
    pub fn new(min: u16, max: u16) -> Result<FakeBackend, PortError> {
        Ok(FakeBackend {
            ports: AddressPorts::new(&[], min, max)?,
            next_id: StreamId::FIRST,
            streams: BTreeMap::new(),
            events: VecDeque::new(),
            opens: 0,
            failed_opens: 0,
            closes: 0,
            updates: 0,
            fail_next_open: None,
            counter_reads: Default::default(),
        })
    }

    /// The `socket_counters` reads per stream since the last call (see `counter_reads`).
    pub fn take_counter_reads(&self) -> BTreeMap<StreamId, u32> {
        self.counter_reads.take()
    }

    pub fn stream(&self, id: StreamId) -> Option<&FakeStream> {
        self.streams.get(&id)
    }

    /// Open streams, by id.
    pub fn streams(&self) -> impl Iterator<Item = (&StreamId, &FakeStream)> {
        self.streams.iter()
    }

    pub fn open_count(&self) -> usize {
        self.streams.len()
    }

    /// The stream whose side A or B relay RTP port is `port`.
    pub fn stream_by_port(&self, port: u16) -> Option<(StreamId, &FakeStream)> {
        self.streams
            .iter()
            .find(|(_, s)| s.opened.a_ports.rtp == port || s.opened.b_ports.rtp == port)
            .map(|(id, s)| (*id, s))
    }

    /// Sets what `stats(id)` reports. Returns false for an unknown id.
    pub fn set_stats(&mut self, id: StreamId, stats: StreamStats) -> bool {
        match self.streams.get_mut(&id) {
            Some(s) => {
                s.stats = stats;
                true
            }
            None => false,
        }
    }

    /// Queues an event for `poll_event`.
    pub fn push_event(&mut self, event: MediaEvent) {
        self.events.push_back(event);
    }

    /// The current endpoint of one side of a stream.
    /// A pair on `addr`, its pool made on first use.
    fn allocate(&mut self, addr: IpAddr) -> Result<(AddressId, PortPair), PortError> {
        self.ports.add(addr)?;
        self.ports.allocate(addr)
    }

    /// The address of one of the fake's pools.
    pub fn pool_addr(&self, id: AddressId) -> Option<IpAddr> {
        self.ports.addr(id)
    }

    pub fn endpoint(&self, id: StreamId, side: Side) -> Option<&EndpointSpec> {
        self.streams.get(&id).map(|s| match side {
            Side::A => &s.spec.a,
            Side::B => &s.spec.b,
        })
    }
}

impl MediaBackend for FakeBackend {
    fn open(&mut self, spec: StreamSpec, now: Nanos) -> Result<OpenedStream, BackendError> {
        if let Some(err) = self.fail_next_open.take() {
            self.failed_opens += 1;
            return Err(err);
        }
        let [a_ip, b_ip] = spec.locals.map(side_addr);
        let (a_pool, a_ports) = match self.allocate(a_ip) {
            Ok(p) => p,
            Err(e) => {
                self.failed_opens += 1;
                return Err(e.into());
            }
        };
        let (b_pool, b_ports) = match self.allocate(b_ip) {
            Ok(p) => p,
            Err(e) => {
                self.ports.release(a_pool, a_ports);
                self.failed_opens += 1;
                return Err(e.into());
            }
        };
        let id = self.next_id;
        self.next_id = self.next_id.next();
        let opened = OpenedStream::new(id, a_ports, b_ports);
        self.streams.insert(
            id,
            FakeStream {
                spec,
                opened,
                stats: StreamStats::default(),
                updates: (0, 0),
                opened_at: now,
                pools: [a_pool, b_pool],
                rtcp_open: [true; 2],
            },
        );
        self.opens += 1;
        Ok(opened)
    }

    /// Takes exactly the stored ports; the stats start from the stored counters and
    /// latched sources.
    fn restore(
        &mut self,
        spec: StreamSpec,
        r: &RestoredStream,
        now: Nanos,
    ) -> Result<OpenedStream, BackendError> {
        let [a_ip, b_ip] = spec.locals.map(side_addr);
        self.ports.add(a_ip)?;
        self.ports.add(b_ip)?;
        let [a_pool, b_pool] = self
            .ports
            .claim_both([a_ip, b_ip], [r.a_ports, r.b_ports])?;
        let id = self.next_id;
        self.next_id = self.next_id.next();
        let opened = OpenedStream::new(id, r.a_ports, r.b_ports);
        let mut stats = StreamStats::default();
        [stats.a.rtp, stats.a.rtcp, stats.b.rtp, stats.b.rtcp] = r.base;
        stats.a.learned_rtp = r.learned[0];
        stats.b.learned_rtp = r.learned[1];
        stats.a.confirmed = r.confirmed[0];
        stats.b.confirmed = r.confirmed[1];
        self.streams.insert(
            id,
            FakeStream {
                spec,
                opened,
                stats,
                updates: (0, 0),
                opened_at: now,
                pools: [a_pool, b_pool],
                rtcp_open: [true; 2],
            },
        );
        self.opens += 1;
        Ok(opened)
    }

    fn update(&mut self, id: StreamId, side: Side, endpoint: EndpointSpec, _now: Nanos) {
        if let Some(s) = self.streams.get_mut(&id) {
            self.updates += 1;
            match side {
                Side::A => {
                    s.spec.a = endpoint;
                    s.updates.0 += 1;
                }
                Side::B => {
                    s.spec.b = endpoint;
                    s.updates.1 += 1;
                }
            }
        }
    }

    fn settle_rtcp(&mut self, id: StreamId, side: Side, _: &EndpointSpec, muxed: bool) {
        if let Some(s) = self.streams.get_mut(&id) {
            let i = match side {
                Side::A => 0,
                Side::B => 1,
            };
            s.rtcp_open[i] = !muxed;
        }
    }

    fn close(&mut self, id: StreamId) {
        if let Some(s) = self.streams.remove(&id) {
            self.ports.release(s.pools[0], s.opened.a_ports);
            self.ports.release(s.pools[1], s.opened.b_ports);
            self.closes += 1;
        }
    }

    fn stats(&self, id: StreamId) -> Option<StreamStats> {
        self.streams.get(&id).map(|s| s.stats)
    }

    fn socket_counters(
        &self,
        id: StreamId,
    ) -> Option<[crate::session::backend::SocketCounters; 4]> {
        let s = self.streams.get(&id)?.stats;
        *self.counter_reads.borrow_mut().entry(id).or_default() += 1;
        Some([s.a.rtp, s.a.rtcp, s.b.rtp, s.b.rtcp])
    }

    fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    fn call_of(&self, id: StreamId) -> Option<std::sync::Arc<str>> {
        self.streams.get(&id).map(|s| s.spec.call_id.clone())
    }

    fn port_usage(&self) -> (usize, usize) {
        (self.ports.used_pairs(), self.ports.total_pairs())
    }

    fn address_usage(&self) -> Vec<AddressUsage> {
        self.ports.usage()
    }
}

/// The address a side's ports are counted on: its local address, or 0.0.0.0 without one.
fn side_addr(local: Option<IpAddr>) -> IpAddr {
    local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spec() -> StreamSpec {
        StreamSpec {
            call_id: Arc::from("c"),
            a: EndpointSpec::default(),
            b: EndpointSpec::default(),
            locals: [None; 2],
        }
    }

    #[test]
    fn deterministic_ports_and_release_on_exhaustion() {
        let mut f = FakeBackend::new(30000, 30005).unwrap();
        let s = f.open(spec(), 1).unwrap();
        assert_eq!((s.a_ports.rtp, s.b_ports.rtp), (30000, 30002));
        // One pair left: the second open needs two, fails and leaves nothing allocated.
        assert!(matches!(
            f.open(spec(), 2),
            Err(BackendError::Ports(PortError::Exhausted))
        ));
        assert_eq!(f.port_usage(), (2, 3));
        f.close(s.id);
        f.close(s.id);
        assert_eq!((f.closes, f.port_usage()), (1, (0, 3)));
    }

    #[test]
    fn stats_events_and_updates_are_observable() {
        let mut f = FakeBackend::new(40000, 40099).unwrap();
        let s = f.open(spec(), 1).unwrap();
        let mut st = StreamStats::default();
        st.a.rtp.packets = 7;
        assert!(f.set_stats(s.id, st));
        assert!(!f.set_stats(StreamId::from_raw(999), st));
        assert_eq!(f.stats(s.id).unwrap().a.rtp.packets, 7);
        let ep = EndpointSpec::new(Some("10.0.0.1:4000".parse().unwrap()), None);
        f.update(s.id, Side::B, ep.clone(), 2);
        assert_eq!(f.endpoint(s.id, Side::B), Some(&ep));
        assert_eq!(f.stream(s.id).unwrap().updates, (0, 1));
        assert!(f.poll_event().is_none());
    }
}
