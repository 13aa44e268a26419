//! The hub: a sans-IO state machine over connections, agents, visitors, pools and calls.
//!
//! The adapter calls [`Hub::handle`] with the current time and an [`Input`], then drains
//! [`Hub::poll_output`] and carries out each [`Output`]; it calls `handle(now, Input::Tick)` once
//! [`Hub::next_deadline`] has passed. The hub keeps every timer itself (liveness, grace, ring,
//! reconnection windows) in one heap, validated when it fires, so a stale timer is harmless.
//!
//! Routing rule: a call rings the best *available, connected* agent of the call's own pool —
//! lowest tier first, and within a tier the agent who has been available longest. Agents who
//! declined or missed this call are skipped while it is re-routed. Nobody free: the visitor waits
//! in the pool's queue (oldest request first) or, when the org does not queue, is told no one is
//! available. Nothing ever looks outside the call's pool, and a pool belongs to exactly one org.

use crate::wire::*;
use frontdesk_domain::{
    AgentId, CallId, CallState, EndReason, OrgId, OrgStatus, PoolId, Presence, Role,
    VisitorSessionId,
};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};

/// A connection, numbered by the adapter.
pub type ConnId = u64;
/// Milliseconds on the adapter's clock (unix milliseconds in production, anything in tests).
pub type Millis = u64;

/// Timeouts and bounds of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The adapter pings every this often; clients are told in `hello`.
    pub heartbeat_interval_ms: Millis,
    /// A connection silent this long is dead, whatever its agent's or visitor's state.
    pub heartbeat_timeout_ms: Millis,
    /// An agent whose connection dropped (not in a call) keeps its state this long.
    pub agent_grace_ms: Millis,
    /// A visitor who dropped mid-call may rejoin within this window.
    pub visitor_reconnect_ms: Millis,
    /// An agent who dropped mid-call may rejoin within this (shorter) window.
    pub agent_reconnect_ms: Millis,
    /// A visitor who dropped before the call connected keeps the request this long.
    pub visitor_pending_grace_ms: Millis,
    /// Longest queue of one pool; later requests are told the queue is full.
    pub max_queue_per_pool: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            heartbeat_interval_ms: 5_000,
            heartbeat_timeout_ms: 15_000,
            agent_grace_ms: 10_000,
            visitor_reconnect_ms: 60_000,
            agent_reconnect_ms: 30_000,
            visitor_pending_grace_ms: 10_000,
            max_queue_per_pool: 500,
        }
    }
}

/// What the hub needs of an org. The adapter sends it fresh from the database at every login,
/// every `available`, every call request, and whenever billing or an admin changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgFacts {
    pub status: OrgStatus,
    pub ring_timeout_ms: u64,
    pub queue_when_unavailable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An authenticated agent connection. `pools` are the agent's memberships `(pool, tier)`.
    AgentConnected {
        conn: ConnId,
        re: Option<RequestId>,
        org: OrgId,
        agent: AgentId,
        role: Role,
        display_name: String,
        pools: Vec<(PoolId, u32)>,
        facts: OrgFacts,
    },
    /// An authenticated visitor connection (first visit or rejoin with its token).
    VisitorConnected {
        conn: ConnId,
        re: Option<RequestId>,
        org: OrgId,
        session: VisitorSessionId,
        pool: PoolId,
        /// Handed back in `welcome` on a first visit, so the widget can rejoin later.
        visitor_token: Option<String>,
        facts: OrgFacts,
    },
    /// A message from an authenticated connection.
    Message {
        conn: ConnId,
        re: Option<RequestId>,
        msg: ClientMessage,
    },
    /// Any sign of life from a connection (a frame, a pong).
    Heartbeat { conn: ConnId },
    /// The connection is gone.
    Disconnected { conn: ConnId },
    /// The org's entitlement or settings changed.
    OrgUpdated { org: OrgId, facts: OrgFacts },
    /// An admin removed the agent.
    AgentRemoved { org: OrgId, agent: AgentId },
    /// An admin changed the agent's pools.
    AgentPoolsChanged {
        org: OrgId,
        agent: AgentId,
        pools: Vec<(PoolId, u32)>,
    },
    /// The server is stopping: refuse new call requests, let live calls go on.
    Drain,
    /// The server stops now: end every call with `server_shutdown` and close every connection.
    Shutdown,
    /// Time passed; fire what is due.
    Tick,
}

/// What the hub asks the adapter to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    CallRequested {
        call: CallId,
        org: OrgId,
        pool: PoolId,
        visitor: VisitorSessionId,
        at: Millis,
    },
    CallRinging {
        call: CallId,
        agent: AgentId,
        at: Millis,
    },
    CallConnected {
        call: CallId,
        agent: AgentId,
        at: Millis,
    },
    CallState {
        call: CallId,
        state: CallState,
    },
    CallEnded {
        call: CallId,
        reason: EndReason,
        at: Millis,
    },
    Presence {
        org: OrgId,
        agent: AgentId,
        presence: Presence,
        reason: PresenceReason,
        at: Millis,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send { conn: ConnId, msg: ServerMessage },
    Close { conn: ConnId, reason: CloseReason },
    Record(Record),
}

/// Counters for `/metrics`; they only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    pub calls_requested: u64,
    pub calls_connected: u64,
    pub calls_ended: u64,
    pub rings: u64,
    pub ring_no_answer: u64,
    pub heartbeat_timeouts: u64,
}

/// A snapshot of one agent, for tests and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub presence: Presence,
    pub connected: bool,
    pub call: Option<CallId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Liveness(ConnId),
    AgentGrace(AgentId),
    Ring(CallId),
    Reconnect(CallId),
    VisitorGrace(VisitorSessionId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Agent(AgentId),
    Visitor(VisitorSessionId),
}

struct Conn {
    who: Who,
    last_seen: Millis,
}

struct Org {
    facts: OrgFacts,
    agents: HashSet<AgentId>,
    pools: HashSet<PoolId>,
}

struct Agent {
    org: OrgId,
    role: Role,
    display_name: String,
    conn: Option<ConnId>,
    gone_since: Option<Millis>,
    presence: Presence,
    /// When the agent last became available: the longest-available order.
    available_since: Millis,
    pools: Vec<(PoolId, u32)>,
    call: Option<CallId>,
}

struct Visitor {
    org: OrgId,
    pool: PoolId,
    conn: Option<ConnId>,
    gone_since: Option<Millis>,
    call: Option<CallId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Agent,
    Visitor,
}

struct Call {
    org: OrgId,
    pool: PoolId,
    visitor: VisitorSessionId,
    agent: Option<AgentId>,
    state: CallState,
    requested_at: Millis,
    /// Order of requests, so that calls requested in the same millisecond keep their order.
    seq: u64,
    /// The org's ring timeout when the call was requested: every ring of this call uses it.
    ring_timeout_ms: u64,
    ring_deadline: Option<Millis>,
    reconnect: Option<(Side, Millis)>,
    /// Agents who declined or missed this call while it is being routed.
    tried: Vec<AgentId>,
    queued: bool,
}

struct Pool {
    org: OrgId,
    /// Available, connected agents: (tier, available_since, agent).
    available: BTreeSet<(u32, Millis, AgentId)>,
    /// Waiting calls, oldest request first.
    queue: VecDeque<CallId>,
}

pub struct Hub {
    cfg: HubConfig,
    conns: HashMap<ConnId, Conn>,
    orgs: HashMap<OrgId, Org>,
    agents: HashMap<AgentId, Agent>,
    visitors: HashMap<VisitorSessionId, Visitor>,
    calls: HashMap<CallId, Call>,
    pools: HashMap<PoolId, Pool>,
    timers: BinaryHeap<Reverse<(Millis, Timer)>>,
    out: VecDeque<Output>,
    stats: HubStats,
    next_seq: u64,
    draining: bool,
}

fn err(re: Option<RequestId>, code: &str, message: &str) -> ServerMessage {
    ServerMessage::Error {
        re,
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

/// What the visitor reads when a call ends.
fn visitor_message(reason: EndReason) -> &'static str {
    match reason {
        EndReason::AgentEnded => "The agent ended the call. Thank you!",
        EndReason::VisitorEnded => "You ended the call.",
        EndReason::NoAnswer | EndReason::NoAgents => {
            "No one is available right now. Please try again later."
        }
        EndReason::AgentRemoved => {
            "Your agent had to leave. Please start a new call and someone else will help you."
        }
        EndReason::OrgBlocked => "The service is temporarily unavailable.",
        EndReason::ReconnectExpired => "The connection was lost and the call has ended.",
        EndReason::MaxDuration => "The call reached its maximum length.",
        EndReason::ServerRestart | EndReason::ServerShutdown => {
            "The service restarted. Please start a new call."
        }
    }
}

fn agent_message(reason: EndReason) -> &'static str {
    match reason {
        EndReason::AgentEnded => "You ended the call.",
        EndReason::VisitorEnded => "The visitor ended the call.",
        EndReason::AgentRemoved => "You were removed from the organization.",
        EndReason::OrgBlocked => "Calls are blocked for your organization.",
        EndReason::ReconnectExpired => "The connection was lost and the call has ended.",
        _ => "The call ended.",
    }
}

/// What agents are told when their org stops being entitled; `None` while it may take calls.
fn blocked_message(status: OrgStatus, role: Role) -> Option<&'static str> {
    match (status, role) {
        (OrgStatus::Active, _) => None,
        (OrgStatus::PastDue, Role::Admin) => {
            Some("Payment failed: update the payment method in billing to take calls again.")
        }
        (OrgStatus::PastDue, Role::Agent) => Some("Payment issue — contact your admin."),
        (OrgStatus::Paused, _) => Some("Your organization's subscription is paused."),
        (OrgStatus::Cancelled, _) => Some("Your organization's subscription has ended."),
    }
}

fn unavailable_message(status: OrgStatus) -> &'static str {
    match status {
        OrgStatus::Paused | OrgStatus::Cancelled => "The service is temporarily unavailable.",
        _ => "No one is available right now. Please try again later.",
    }
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Hub {
        Hub {
            cfg,
            conns: HashMap::new(),
            orgs: HashMap::new(),
            agents: HashMap::new(),
            visitors: HashMap::new(),
            calls: HashMap::new(),
            pools: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            stats: HubStats::default(),
            next_seq: 0,
            draining: false,
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    /// The next output to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the hub next needs `Input::Tick`.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    pub fn agent(&self, agent: AgentId) -> Option<AgentView> {
        self.agents.get(&agent).map(|a| AgentView {
            presence: a.presence,
            connected: a.conn.is_some(),
            call: a.call,
        })
    }

    pub fn call_state(&self, call: CallId) -> Option<CallState> {
        self.calls.get(&call).map(|c| c.state)
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Agents by presence, for `/metrics`.
    pub fn presence_counts(&self) -> Vec<(Presence, usize)> {
        let mut counts: Vec<(Presence, usize)> = Presence::ALL.iter().map(|p| (*p, 0)).collect();
        for a in self.agents.values() {
            if let Some(c) = counts.iter_mut().find(|(p, _)| *p == a.presence) {
                c.1 += 1;
            }
        }
        counts
    }

    pub fn open_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn handle(&mut self, now: Millis, input: Input) {
        match input {
            Input::AgentConnected {
                conn,
                re,
                org,
                agent,
                role,
                display_name,
                pools,
                facts,
            } => self.agent_connected(now, conn, re, org, agent, role, display_name, pools, facts),
            Input::VisitorConnected {
                conn,
                re,
                org,
                session,
                pool,
                visitor_token,
                facts,
            } => self.visitor_connected(now, conn, re, org, session, pool, visitor_token, facts),
            Input::Message { conn, re, msg } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_seen = now;
                    let who = c.who;
                    self.message(now, conn, who, re, msg);
                }
            }
            Input::Heartbeat { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_seen = now;
                }
            }
            Input::Disconnected { conn } => self.disconnected(now, conn),
            Input::OrgUpdated { org, facts } => self.org_updated(now, org, facts),
            Input::AgentRemoved { org, agent } => self.agent_removed(now, org, agent),
            Input::AgentPoolsChanged { org, agent, pools } => {
                self.pools_changed(now, org, agent, pools)
            }
            Input::Drain => self.draining = true,
            Input::Shutdown => self.shutdown(now),
            Input::Tick => self.tick(now),
        }
    }

    // ---- helpers -------------------------------------------------------------------------

    fn send(&mut self, conn: Option<ConnId>, msg: ServerMessage) {
        if let Some(conn) = conn {
            self.out.push_back(Output::Send { conn, msg });
        }
    }

    fn record(&mut self, r: Record) {
        self.out.push_back(Output::Record(r));
    }

    fn arm(&mut self, at: Millis, t: Timer) {
        self.timers.push(Reverse((at, t)));
    }

    fn org_facts(&self, org: OrgId) -> Option<&OrgFacts> {
        self.orgs.get(&org).map(|o| &o.facts)
    }

    fn org_entry(&mut self, org: OrgId, facts: OrgFacts) -> &mut Org {
        let o = self.orgs.entry(org).or_insert_with(|| Org {
            facts: facts.clone(),
            agents: HashSet::new(),
            pools: HashSet::new(),
        });
        o.facts = facts;
        o
    }

    /// The pool, created on first sight. `None` if it is known to belong to another org:
    /// a pool is never shared, whatever an input claims.
    fn pool_of_org(&mut self, pool: PoolId, org: OrgId) -> Option<&mut Pool> {
        let p = self.pools.entry(pool).or_insert_with(|| Pool {
            org,
            available: BTreeSet::new(),
            queue: VecDeque::new(),
        });
        if p.org != org {
            return None;
        }
        if let Some(o) = self.orgs.get_mut(&org) {
            o.pools.insert(pool);
        }
        self.pools.get_mut(&pool)
    }

    /// Sets an agent's presence, keeps the pools' available sets in step, tells the agent and
    /// records the change.
    fn set_presence(
        &mut self,
        now: Millis,
        agent_id: AgentId,
        presence: Presence,
        reason: PresenceReason,
        re: Option<RequestId>,
        message: Option<String>,
    ) {
        let Some(a) = self.agents.get_mut(&agent_id) else {
            return;
        };
        let was_listed = a.presence == Presence::Available && a.conn.is_some();
        let since = a.available_since;
        let changed = a.presence != presence;
        a.presence = presence;
        if presence == Presence::Available && changed {
            a.available_since = now;
        }
        let listed = presence == Presence::Available && a.conn.is_some();
        let (org, conn, pools, new_since) = (a.org, a.conn, a.pools.clone(), a.available_since);
        for (pool, tier) in pools {
            if let Some(p) = self.pools.get_mut(&pool) {
                if was_listed {
                    p.available.remove(&(tier, since, agent_id));
                }
                if listed {
                    p.available.insert((tier, new_since, agent_id));
                }
            }
        }
        if changed || re.is_some() || message.is_some() {
            self.send(
                conn,
                ServerMessage::Presence {
                    re,
                    presence,
                    reason,
                    message,
                },
            );
        }
        if changed {
            self.record(Record::Presence {
                org,
                agent: agent_id,
                presence,
                reason,
                at: now,
            });
        }
    }

    /// Unlists or relists a connected/disconnected agent without changing its presence.
    fn relist(&mut self, agent_id: AgentId, listed: bool) {
        let Some(a) = self.agents.get(&agent_id) else {
            return;
        };
        if a.presence != Presence::Available {
            return;
        }
        let key = a.available_since;
        for (pool, tier) in a.pools.clone() {
            if let Some(p) = self.pools.get_mut(&pool) {
                if listed {
                    p.available.insert((tier, key, agent_id));
                } else {
                    p.available.remove(&(tier, key, agent_id));
                }
            }
        }
    }

    // ---- connections ---------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn agent_connected(
        &mut self,
        now: Millis,
        conn: ConnId,
        re: Option<RequestId>,
        org: OrgId,
        agent_id: AgentId,
        role: Role,
        display_name: String,
        pools: Vec<(PoolId, u32)>,
        facts: OrgFacts,
    ) {
        let status = facts.status;
        let previous_facts = self.org_facts(org).cloned();
        self.org_entry(org, facts.clone()).agents.insert(agent_id);
        if let Some(a) = self.agents.get(&agent_id) {
            if a.org != org {
                // An agent id is never shared between orgs; refuse rather than merge.
                self.out.push_back(Output::Close {
                    conn,
                    reason: CloseReason::AuthFailed,
                });
                return;
            }
        }
        self.conns.insert(
            conn,
            Conn {
                who: Who::Agent(agent_id),
                last_seen: now,
            },
        );
        self.arm(now + self.cfg.heartbeat_timeout_ms, Timer::Liveness(conn));
        let returning = self.agents.contains_key(&agent_id);
        if returning {
            let old = self.agents.get(&agent_id).and_then(|a| a.conn);
            if let Some(old) = old {
                self.conns.remove(&old);
                self.out.push_back(Output::Close {
                    conn: old,
                    reason: CloseReason::Replaced,
                });
            } else {
                self.relist(agent_id, true);
            }
            if let Some(a) = self.agents.get_mut(&agent_id) {
                a.conn = Some(conn);
                a.gone_since = None;
                a.role = role;
                a.display_name = display_name;
            }
            self.pools_changed(now, org, agent_id, pools);
        } else {
            self.agents.insert(
                agent_id,
                Agent {
                    org,
                    role,
                    display_name,
                    conn: Some(conn),
                    gone_since: None,
                    presence: Presence::Away,
                    available_since: now,
                    pools: Vec::new(),
                    call: None,
                },
            );
            self.pools_changed(now, org, agent_id, pools);
            self.record(Record::Presence {
                org,
                agent: agent_id,
                presence: Presence::Away,
                reason: PresenceReason::Chosen,
                at: now,
            });
        }
        // Entitlement is checked at login: a blocked org's agent cannot stay available.
        if previous_facts.as_ref().map(|f| f.status) != Some(status) && !status.may_take_calls() {
            self.enforce(now, org);
        }
        let a = self.agents.get(&agent_id).expect("agent inserted above");
        let call = a.call.and_then(|c| {
            self.calls.get(&c).map(|call| CallSummary {
                call_id: c,
                state: call.state,
            })
        });
        let presence = a.presence;
        self.send(
            Some(conn),
            ServerMessage::Welcome {
                re,
                role: WelcomeRole::Agent,
                agent_id: Some(agent_id),
                presence: Some(presence),
                session_id: None,
                visitor_token: None,
                org_status: status,
                call: call.clone(),
            },
        );
        if let Some(msg) = blocked_message(status, role) {
            self.send(
                Some(conn),
                ServerMessage::OrgStatus {
                    status,
                    message: msg.to_owned(),
                },
            );
        }
        // Back inside the reconnection window of a call: resume it.
        if let Some(summary) = call {
            let c = self
                .calls
                .get_mut(&summary.call_id)
                .expect("summary of a live call");
            match (c.state, c.reconnect) {
                (CallState::Reconnecting, Some((Side::Agent, _))) => {
                    c.state = CallState::Connected;
                    c.reconnect = None;
                    let (visitor, call_id) = (c.visitor, summary.call_id);
                    let vconn = self.visitors.get(&visitor).and_then(|v| v.conn);
                    self.send(vconn, ServerMessage::AgentReconnected { call_id });
                    self.send(
                        Some(conn),
                        ServerMessage::CallResumed {
                            call_id,
                            state: CallState::Connected,
                        },
                    );
                    self.record(Record::CallState {
                        call: call_id,
                        state: CallState::Connected,
                    });
                }
                (state, _) => self.send(
                    Some(conn),
                    ServerMessage::CallResumed {
                        call_id: summary.call_id,
                        state,
                    },
                ),
            }
        } else if presence == Presence::Available {
            self.dispatch_agent_pools(now, agent_id);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn visitor_connected(
        &mut self,
        now: Millis,
        conn: ConnId,
        re: Option<RequestId>,
        org: OrgId,
        session: VisitorSessionId,
        pool: PoolId,
        visitor_token: Option<String>,
        facts: OrgFacts,
    ) {
        let status = facts.status;
        self.org_entry(org, facts);
        if self.pool_of_org(pool, org).is_none() {
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::AuthFailed,
            });
            return;
        }
        if let Some(v) = self.visitors.get(&session) {
            if v.org != org {
                self.out.push_back(Output::Close {
                    conn,
                    reason: CloseReason::AuthFailed,
                });
                return;
            }
        }
        self.conns.insert(
            conn,
            Conn {
                who: Who::Visitor(session),
                last_seen: now,
            },
        );
        self.arm(now + self.cfg.heartbeat_timeout_ms, Timer::Liveness(conn));
        let v = self.visitors.entry(session).or_insert(Visitor {
            org,
            pool,
            conn: None,
            gone_since: None,
            call: None,
        });
        let old = v.conn.replace(conn);
        v.gone_since = None;
        let call_id = v.call;
        if let Some(old) = old {
            self.conns.remove(&old);
            self.out.push_back(Output::Close {
                conn: old,
                reason: CloseReason::Replaced,
            });
        }
        let call = call_id.and_then(|c| {
            self.calls.get(&c).map(|call| CallSummary {
                call_id: c,
                state: call.state,
            })
        });
        self.send(
            Some(conn),
            ServerMessage::Welcome {
                re,
                role: WelcomeRole::Visitor,
                agent_id: None,
                presence: None,
                session_id: Some(session),
                visitor_token,
                org_status: status,
                call: call.clone(),
            },
        );
        let Some(summary) = call else { return };
        let call_id = summary.call_id;
        let c = self
            .calls
            .get_mut(&call_id)
            .expect("summary of a live call");
        if c.state == CallState::Reconnecting && matches!(c.reconnect, Some((Side::Visitor, _))) {
            c.state = CallState::Connected;
            c.reconnect = None;
            let aconn = c
                .agent
                .and_then(|a| self.agents.get(&a))
                .and_then(|a| a.conn);
            self.send(aconn, ServerMessage::VisitorReconnected { call_id });
            self.record(Record::CallState {
                call: call_id,
                state: CallState::Connected,
            });
        }
        let state = self.calls[&call_id].state;
        self.send(Some(conn), ServerMessage::CallResumed { call_id, state });
        if self.calls[&call_id].queued {
            let at = self
                .pools
                .get(&pool)
                .and_then(|p| p.queue.iter().position(|q| *q == call_id));
            if let Some(at) = at {
                self.send_queue_positions(pool, at);
            }
        }
    }

    fn disconnected(&mut self, now: Millis, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        match c.who {
            Who::Agent(agent_id) => {
                let Some(a) = self.agents.get(&agent_id) else {
                    return;
                };
                if a.conn != Some(conn) {
                    return;
                }
                self.relist(agent_id, false);
                let a = self.agents.get_mut(&agent_id).expect("checked above");
                a.conn = None;
                a.gone_since = Some(now);
                let call = a.call;
                let presence = a.presence;
                match (presence, call) {
                    (Presence::Ringing, Some(call_id)) => {
                        // Cannot answer from nowhere: withdraw the ring and move on at once.
                        self.withdraw_ring(now, call_id, agent_id, RingCancelReason::Disconnected);
                        self.set_presence(
                            now,
                            agent_id,
                            Presence::Away,
                            PresenceReason::Disconnected,
                            None,
                            None,
                        );
                        self.route(now, call_id);
                        self.arm(now + self.cfg.agent_grace_ms, Timer::AgentGrace(agent_id));
                    }
                    (Presence::InCall, Some(call_id)) => {
                        let deadline = now + self.cfg.agent_reconnect_ms;
                        if let Some(c) = self.calls.get_mut(&call_id) {
                            if c.state == CallState::Connected {
                                c.state = CallState::Reconnecting;
                                c.reconnect = Some((Side::Agent, deadline));
                                let vconn = self.visitors.get(&c.visitor).and_then(|v| v.conn);
                                self.send(
                                    vconn,
                                    ServerMessage::AgentReconnecting {
                                        call_id,
                                        remaining_ms: self.cfg.agent_reconnect_ms,
                                    },
                                );
                                self.record(Record::CallState {
                                    call: call_id,
                                    state: CallState::Reconnecting,
                                });
                                self.arm(deadline, Timer::Reconnect(call_id));
                            } else {
                                // Both sides gone: the visitor's window already runs.
                                self.arm(
                                    now + self.cfg.agent_grace_ms,
                                    Timer::AgentGrace(agent_id),
                                );
                            }
                        }
                    }
                    _ => self.arm(now + self.cfg.agent_grace_ms, Timer::AgentGrace(agent_id)),
                }
            }
            Who::Visitor(session) => {
                let Some(v) = self.visitors.get_mut(&session) else {
                    return;
                };
                if v.conn != Some(conn) {
                    return;
                }
                v.conn = None;
                v.gone_since = Some(now);
                let Some(call_id) = v.call else {
                    self.visitors.remove(&session);
                    return;
                };
                let c = self
                    .calls
                    .get_mut(&call_id)
                    .expect("a visitor's call is live");
                match c.state {
                    CallState::Connected => {
                        let deadline = now + self.cfg.visitor_reconnect_ms;
                        c.state = CallState::Reconnecting;
                        c.reconnect = Some((Side::Visitor, deadline));
                        let aconn = c
                            .agent
                            .and_then(|a| self.agents.get(&a))
                            .and_then(|a| a.conn);
                        self.send(
                            aconn,
                            ServerMessage::VisitorReconnecting {
                                call_id,
                                remaining_ms: self.cfg.visitor_reconnect_ms,
                            },
                        );
                        self.record(Record::CallState {
                            call: call_id,
                            state: CallState::Reconnecting,
                        });
                        self.arm(deadline, Timer::Reconnect(call_id));
                    }
                    CallState::Reconnecting => {
                        // The agent side is already reconnecting; end when its window ends or
                        // when the visitor's own grace ends, whichever is first.
                        self.arm(
                            now + self.cfg.visitor_pending_grace_ms,
                            Timer::VisitorGrace(session),
                        );
                    }
                    _ => self.arm(
                        now + self.cfg.visitor_pending_grace_ms,
                        Timer::VisitorGrace(session),
                    ),
                }
            }
        }
    }

    // ---- messages ------------------------------------------------------------------------

    fn message(
        &mut self,
        now: Millis,
        conn: ConnId,
        who: Who,
        re: Option<RequestId>,
        msg: ClientMessage,
    ) {
        match (who, msg) {
            (_, ClientMessage::Ping {}) => self.send(Some(conn), ServerMessage::Pong { re }),
            // The server's adapter answers media messages with the SFU; they never reach here.
            (_, ClientMessage::Media(_)) => {}
            (_, ClientMessage::Auth { .. }) => self.send(
                Some(conn),
                err(
                    re,
                    "already_authenticated",
                    "this connection is already authenticated",
                ),
            ),
            (Who::Agent(a), ClientMessage::SetPresence { presence }) => {
                self.agent_sets_presence(now, conn, a, re, presence)
            }
            (Who::Agent(a), ClientMessage::Accept { call_id }) => {
                self.accept(now, conn, a, re, call_id)
            }
            (Who::Agent(a), ClientMessage::Reject { call_id }) => {
                self.reject(now, conn, a, re, call_id)
            }
            (Who::Agent(a), ClientMessage::EndCall { call_id }) => {
                let ok = self.agents.get(&a).and_then(|x| x.call) == Some(call_id)
                    && self.calls.get(&call_id).is_some_and(|c| {
                        c.agent == Some(a)
                            && matches!(c.state, CallState::Connected | CallState::Reconnecting)
                    });
                if ok {
                    self.end_call(now, call_id, EndReason::AgentEnded, re, None);
                } else {
                    self.send(
                        Some(conn),
                        err(re, "not_in_call", "you are not in that call"),
                    );
                }
            }
            (Who::Visitor(s), ClientMessage::RequestCall {}) => self.request_call(now, conn, s, re),
            (Who::Visitor(s), ClientMessage::EndCall { call_id }) => {
                if self.visitors.get(&s).and_then(|v| v.call) == Some(call_id) {
                    self.end_call(now, call_id, EndReason::VisitorEnded, None, re);
                } else {
                    self.send(
                        Some(conn),
                        err(re, "not_in_call", "you are not in that call"),
                    );
                }
            }
            (Who::Visitor(_), _) => self.send(
                Some(conn),
                err(re, "not_allowed", "visitors cannot send this message"),
            ),
            (Who::Agent(_), ClientMessage::RequestCall {}) => self.send(
                Some(conn),
                err(re, "not_allowed", "agents cannot request calls"),
            ),
        }
    }

    fn agent_sets_presence(
        &mut self,
        now: Millis,
        conn: ConnId,
        agent_id: AgentId,
        re: Option<RequestId>,
        presence: Presence,
    ) {
        let Some(a) = self.agents.get(&agent_id) else {
            return;
        };
        let (org, role, current) = (a.org, a.role, a.presence);
        if !matches!(presence, Presence::Available | Presence::Away) {
            return self.send(
                Some(conn),
                err(
                    re,
                    "invalid_presence",
                    "agents choose only available or away",
                ),
            );
        }
        if matches!(current, Presence::Ringing | Presence::InCall) {
            return self.send(
                Some(conn),
                err(
                    re,
                    "invalid_state",
                    "answer or reject the ring, or end the call, before changing presence",
                ),
            );
        }
        if presence == Presence::Available {
            let status = self
                .org_facts(org)
                .map(|f| f.status)
                .unwrap_or(OrgStatus::Cancelled);
            if let Some(msg) = blocked_message(status, role) {
                return self.send(Some(conn), err(re, "org_blocked", msg));
            }
        }
        if presence == Presence::Available && current != Presence::Available {
            self.forgive(agent_id);
        }
        self.set_presence(now, agent_id, presence, PresenceReason::Chosen, re, None);
        if presence == Presence::Available {
            self.dispatch_agent_pools(now, agent_id);
        }
    }

    fn ringing_call_of(&self, agent_id: AgentId, call_id: CallId) -> bool {
        self.agents.get(&agent_id).is_some_and(|a| {
            a.presence == Presence::Ringing && a.call == Some(call_id) && a.conn.is_some()
        }) && self
            .calls
            .get(&call_id)
            .is_some_and(|c| c.state == CallState::Ringing && c.agent == Some(agent_id))
    }

    fn accept(
        &mut self,
        now: Millis,
        conn: ConnId,
        agent_id: AgentId,
        re: Option<RequestId>,
        call_id: CallId,
    ) {
        // Only the rung agent's own live connection can take the call.
        if !self.ringing_call_of(agent_id, call_id)
            || self.agents.get(&agent_id).and_then(|a| a.conn) != Some(conn)
        {
            return self.send(
                Some(conn),
                err(
                    re,
                    "not_rung",
                    "this connection is not being rung for that call",
                ),
            );
        }
        let c = self.calls.get_mut(&call_id).expect("checked above");
        c.state = CallState::Connected;
        c.ring_deadline = None;
        c.tried.clear();
        let visitor = c.visitor;
        self.stats.calls_connected += 1;
        self.set_presence(
            now,
            agent_id,
            Presence::InCall,
            PresenceReason::Call,
            None,
            None,
        );
        let name = self.agents.get(&agent_id).map(|a| a.display_name.clone());
        let vconn = self.visitors.get(&visitor).and_then(|v| v.conn);
        self.send(
            vconn,
            ServerMessage::CallConnected {
                re: None,
                call_id,
                agent_name: name,
            },
        );
        self.send(
            Some(conn),
            ServerMessage::CallConnected {
                re,
                call_id,
                agent_name: None,
            },
        );
        self.record(Record::CallConnected {
            call: call_id,
            agent: agent_id,
            at: now,
        });
    }

    fn reject(
        &mut self,
        now: Millis,
        conn: ConnId,
        agent_id: AgentId,
        re: Option<RequestId>,
        call_id: CallId,
    ) {
        if !self.ringing_call_of(agent_id, call_id) {
            return self.send(
                Some(conn),
                err(
                    re,
                    "not_rung",
                    "this connection is not being rung for that call",
                ),
            );
        }
        self.withdraw_ring(now, call_id, agent_id, RingCancelReason::NoAnswer);
        // Declining is a choice: the agent stays available, at the back of the line.
        self.set_presence(
            now,
            agent_id,
            Presence::Available,
            PresenceReason::Chosen,
            None,
            None,
        );
        self.send(Some(conn), ServerMessage::Rejected { re, call_id });
        self.route(now, call_id);
        self.dispatch_agent_pools(now, agent_id);
    }

    fn request_call(
        &mut self,
        now: Millis,
        conn: ConnId,
        session: VisitorSessionId,
        re: Option<RequestId>,
    ) {
        let Some(v) = self.visitors.get(&session) else {
            return;
        };
        if let Some(call_id) = v.call {
            let msg = format!("a call is already in progress: {call_id}");
            return self.send(Some(conn), err(re, "call_in_progress", &msg));
        }
        let (org, pool) = (v.org, v.pool);
        let Some(facts) = self.org_facts(org).cloned() else {
            return;
        };
        if self.draining {
            return self.send(
                Some(conn),
                ServerMessage::Unavailable {
                    re,
                    reason: UnavailableReason::ServerRestarting,
                    message: "The service is restarting. Please try again in a minute.".to_owned(),
                },
            );
        }
        let call_id = CallId::new();
        self.stats.calls_requested += 1;
        self.record(Record::CallRequested {
            call: call_id,
            org,
            pool,
            visitor: session,
            at: now,
        });
        if !facts.status.may_take_calls() {
            self.record(Record::CallEnded {
                call: call_id,
                reason: EndReason::OrgBlocked,
                at: now,
            });
            self.stats.calls_ended += 1;
            return self.send(
                Some(conn),
                ServerMessage::Unavailable {
                    re,
                    reason: UnavailableReason::OrgBlocked,
                    message: unavailable_message(facts.status).to_owned(),
                },
            );
        }
        self.next_seq += 1;
        self.calls.insert(
            call_id,
            Call {
                org,
                pool,
                visitor: session,
                agent: None,
                state: CallState::Requested,
                requested_at: now,
                seq: self.next_seq,
                ring_timeout_ms: facts.ring_timeout_ms,
                ring_deadline: None,
                reconnect: None,
                tried: Vec::new(),
                queued: false,
            },
        );
        self.visitors.get_mut(&session).expect("checked above").call = Some(call_id);
        self.send(Some(conn), ServerMessage::CallRequested { re, call_id });
        self.route(now, call_id);
    }

    // ---- routing -------------------------------------------------------------------------

    /// Rings the best agent of the call's pool, else queues the call or tells the visitor.
    fn route(&mut self, now: Millis, call_id: CallId) {
        let Some(c) = self.calls.get(&call_id) else {
            return;
        };
        if !matches!(c.state, CallState::Requested | CallState::Ringing) || c.agent.is_some() {
            return;
        }
        let org = c.org;
        let facts = self.org_facts(org).cloned();
        let best = self.best_agent(call_id);
        match (best, facts) {
            (Some(agent), Some(f)) if f.status.may_take_calls() => self.ring(now, call_id, agent),
            (_, Some(f)) if f.status.may_take_calls() && f.queue_when_unavailable => {
                self.enqueue(now, call_id)
            }
            (_, f) => {
                let blocked = f.as_ref().is_none_or(|f| !f.status.may_take_calls());
                let (reason, end) = if blocked {
                    (UnavailableReason::OrgBlocked, EndReason::OrgBlocked)
                } else {
                    (UnavailableReason::NoAgents, EndReason::NoAgents)
                };
                let message = unavailable_message(f.map(|f| f.status).unwrap_or(OrgStatus::Paused));
                let vconn = self
                    .visitors
                    .get(&self.calls[&call_id].visitor)
                    .and_then(|v| v.conn);
                self.send(
                    vconn,
                    ServerMessage::Unavailable {
                        re: None,
                        reason,
                        message: message.to_owned(),
                    },
                );
                self.end_call(now, call_id, end, None, None);
            }
        }
    }

    /// The first agent in the pool's order (tier, then longest available) who has not declined
    /// or missed this call. Only the call's own pool is consulted.
    fn best_agent(&self, call_id: CallId) -> Option<AgentId> {
        let c = self.calls.get(&call_id)?;
        let p = self.pools.get(&c.pool)?;
        debug_assert_eq!(p.org, c.org, "a call's pool belongs to the call's org");
        p.available
            .iter()
            .map(|(_, _, a)| *a)
            .find(|a| !c.tried.contains(a))
    }

    fn ring(&mut self, now: Millis, call_id: CallId, agent_id: AgentId) {
        let c = self.calls.get_mut(&call_id).expect("routing a live call");
        c.state = CallState::Ringing;
        c.agent = Some(agent_id);
        let deadline = now + c.ring_timeout_ms;
        c.ring_deadline = Some(deadline);
        let info = RingInfo {
            call_id,
            pool_id: c.pool,
            visitor_session_id: c.visitor,
            ring_timeout_ms: c.ring_timeout_ms,
        };
        let visitor = c.visitor;
        self.arm(deadline, Timer::Ring(call_id));
        if let Some(a) = self.agents.get_mut(&agent_id) {
            a.call = Some(call_id);
        }
        self.set_presence(
            now,
            agent_id,
            Presence::Ringing,
            PresenceReason::Call,
            None,
            None,
        );
        let aconn = self.agents.get(&agent_id).and_then(|a| a.conn);
        self.send(aconn, ServerMessage::Ring(info));
        let vconn = self.visitors.get(&visitor).and_then(|v| v.conn);
        self.send(vconn, ServerMessage::Ringing { call_id });
        self.stats.rings += 1;
        self.record(Record::CallRinging {
            call: call_id,
            agent: agent_id,
            at: now,
        });
    }

    /// Takes the ring away from `agent_id` (whose presence the caller then decides) and leaves
    /// the call ready to be routed again.
    fn withdraw_ring(
        &mut self,
        _now: Millis,
        call_id: CallId,
        agent_id: AgentId,
        why: RingCancelReason,
    ) {
        if let Some(c) = self.calls.get_mut(&call_id) {
            if c.agent == Some(agent_id) && c.state == CallState::Ringing {
                c.agent = None;
                c.ring_deadline = None;
                c.state = CallState::Requested;
                c.tried.push(agent_id);
            }
        }
        if let Some(a) = self.agents.get_mut(&agent_id) {
            if a.call == Some(call_id) {
                a.call = None;
            }
        }
        let aconn = self.agents.get(&agent_id).and_then(|a| a.conn);
        self.send(
            aconn,
            ServerMessage::RingCancelled {
                call_id,
                reason: why,
            },
        );
    }

    fn enqueue(&mut self, _now: Millis, call_id: CallId) {
        let c = self.calls.get_mut(&call_id).expect("queueing a live call");
        let (pool_id, order, visitor) = (c.pool, (c.requested_at, c.seq), c.visitor);
        let max = self.cfg.max_queue_per_pool;
        let full = self
            .pools
            .get(&pool_id)
            .is_none_or(|p| p.queue.len() >= max);
        if full {
            let vconn = self.visitors.get(&visitor).and_then(|v| v.conn);
            self.send(
                vconn,
                ServerMessage::Unavailable {
                    re: None,
                    reason: UnavailableReason::QueueFull,
                    message: "Everyone is busy and the queue is full. Please try again later."
                        .to_owned(),
                },
            );
            return self.end_call(_now, call_id, EndReason::NoAgents, None, None);
        }
        let c = self.calls.get_mut(&call_id).expect("checked above");
        c.queued = true;
        c.state = CallState::Requested;
        let calls = &self.calls;
        let p = self.pools.get_mut(&pool_id).expect("checked above");
        let at = p
            .queue
            .iter()
            .position(|q| {
                calls
                    .get(q)
                    .is_some_and(|o| (o.requested_at, o.seq) > order)
            })
            .unwrap_or(p.queue.len());
        p.queue.insert(at, call_id);
        self.send_queue_positions(pool_id, at);
    }

    /// Tells waiting visitors from queue index `from` on their (new) position; those ahead of
    /// `from` did not move.
    fn send_queue_positions(&mut self, pool_id: PoolId, from: usize) {
        let Some(p) = self.pools.get(&pool_id) else {
            return;
        };
        let mut msgs = Vec::with_capacity(p.queue.len().saturating_sub(from));
        for (i, call_id) in p.queue.iter().enumerate().skip(from) {
            let vconn = self
                .calls
                .get(call_id)
                .and_then(|c| self.visitors.get(&c.visitor))
                .and_then(|v| v.conn);
            msgs.push((
                vconn,
                ServerMessage::Queued {
                    call_id: *call_id,
                    position: u32::try_from(i + 1).unwrap_or(u32::MAX),
                },
            ));
        }
        for (conn, msg) in msgs {
            self.send(conn, msg);
        }
    }

    /// Takes the call out of its pool's queue; returns the index it had.
    fn unqueue(&mut self, call_id: CallId) -> Option<usize> {
        let c = self.calls.get_mut(&call_id)?;
        if !c.queued {
            return None;
        }
        c.queued = false;
        let pool_id = c.pool;
        let p = self.pools.get_mut(&pool_id)?;
        let at = p.queue.iter().position(|q| *q == call_id)?;
        p.queue.remove(at);
        Some(at)
    }

    /// Rings waiting calls of the agent's pools while anyone there is free.
    fn dispatch_agent_pools(&mut self, now: Millis, agent_id: AgentId) {
        let pools: Vec<PoolId> = self
            .agents
            .get(&agent_id)
            .map(|a| a.pools.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        for pool in pools {
            self.dispatch_pool(now, pool);
        }
    }

    /// Oldest waiting call first; a call that no free agent may take (all declined it) waits
    /// without holding up the calls behind it.
    fn dispatch_pool(&mut self, now: Millis, pool_id: PoolId) {
        let Some(p) = self.pools.get(&pool_id) else {
            return;
        };
        if p.queue.is_empty()
            || p.available.is_empty()
            || !self
                .org_facts(p.org)
                .is_some_and(|f| f.status.may_take_calls())
        {
            return;
        }
        let waiting: Vec<CallId> = p.queue.iter().copied().collect();
        let mut first_moved: Option<usize> = None;
        for call_id in waiting {
            if self
                .pools
                .get(&pool_id)
                .is_none_or(|p| p.available.is_empty())
            {
                break;
            }
            if let Some(agent) = self.best_agent(call_id) {
                if let Some(at) = self.unqueue(call_id) {
                    first_moved = Some(first_moved.map_or(at, |f| f.min(at)));
                }
                self.ring(now, call_id, agent);
            }
        }
        if let Some(from) = first_moved {
            self.send_queue_positions(pool_id, from);
        }
    }

    /// An agent who chooses `available` may be rung again for waiting calls it declined or missed.
    fn forgive(&mut self, agent_id: AgentId) {
        let pools: Vec<PoolId> = self
            .agents
            .get(&agent_id)
            .map(|a| a.pools.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        for pool in pools {
            let waiting: Vec<CallId> = self
                .pools
                .get(&pool)
                .map(|p| p.queue.iter().copied().collect())
                .unwrap_or_default();
            for call_id in waiting {
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.tried.retain(|a| *a != agent_id);
                }
            }
        }
    }

    // ---- ending --------------------------------------------------------------------------

    /// Ends a call in any state, tells both sides, frees the agent and serves the queue.
    fn end_call(
        &mut self,
        now: Millis,
        call_id: CallId,
        reason: EndReason,
        agent_re: Option<RequestId>,
        visitor_re: Option<RequestId>,
    ) {
        let queue_index = self.unqueue(call_id);
        let Some(c) = self.calls.remove(&call_id) else {
            return;
        };
        self.stats.calls_ended += 1;
        let was_ringing = c.state == CallState::Ringing;
        if let Some(v) = self.visitors.get_mut(&c.visitor) {
            v.call = None;
            let vconn = v.conn;
            if vconn.is_none() {
                self.visitors.remove(&c.visitor);
            }
            self.send(
                vconn,
                ServerMessage::CallEnded {
                    re: visitor_re,
                    call_id,
                    reason,
                    message: visitor_message(reason).to_owned(),
                },
            );
        }
        if let Some(agent_id) = c.agent {
            if let Some(a) = self.agents.get_mut(&agent_id) {
                if a.call == Some(call_id) {
                    a.call = None;
                }
                let aconn = a.conn;
                let (org, role) = (a.org, a.role);
                if was_ringing {
                    let why = match reason {
                        EndReason::OrgBlocked => RingCancelReason::OrgBlocked,
                        EndReason::AgentRemoved => RingCancelReason::Removed,
                        _ => RingCancelReason::VisitorLeft,
                    };
                    self.send(
                        aconn,
                        ServerMessage::RingCancelled {
                            call_id,
                            reason: why,
                        },
                    );
                } else {
                    self.send(
                        aconn,
                        ServerMessage::CallEnded {
                            re: agent_re,
                            call_id,
                            reason,
                            message: agent_message(reason).to_owned(),
                        },
                    );
                }
                if reason != EndReason::AgentRemoved {
                    let status = self.org_facts(org).map(|f| f.status);
                    let next = match status {
                        Some(s) if s.may_take_calls() => Presence::Available,
                        Some(OrgStatus::PastDue) => Presence::Away,
                        _ => Presence::Offline,
                    };
                    let why = match status {
                        Some(s) if s.may_take_calls() => PresenceReason::Call,
                        Some(OrgStatus::PastDue) => PresenceReason::PaymentFailed,
                        _ => PresenceReason::OrgBlocked,
                    };
                    let msg = status
                        .and_then(|s| blocked_message(s, role))
                        .map(str::to_owned);
                    if aconn.is_some() {
                        self.set_presence(now, agent_id, next, why, None, msg);
                        self.dispatch_agent_pools(now, agent_id);
                    } else {
                        // Gone agent whose call ended: offline once its grace runs out.
                        self.set_presence(
                            now,
                            agent_id,
                            Presence::Away,
                            PresenceReason::Disconnected,
                            None,
                            None,
                        );
                        self.arm(now, Timer::AgentGrace(agent_id));
                    }
                }
            }
        }
        self.record(Record::CallEnded {
            call: call_id,
            reason,
            at: now,
        });
        if let Some(from) = queue_index {
            self.send_queue_positions(c.pool, from);
        }
    }

    // ---- timers --------------------------------------------------------------------------

    fn tick(&mut self, now: Millis) {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.fire(now, at, timer);
        }
    }

    fn fire(&mut self, now: Millis, at: Millis, timer: Timer) {
        match timer {
            Timer::Liveness(conn) => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                let due = c.last_seen + self.cfg.heartbeat_timeout_ms;
                if due > now {
                    self.arm(due, Timer::Liveness(conn));
                    return;
                }
                self.stats.heartbeat_timeouts += 1;
                self.out.push_back(Output::Close {
                    conn,
                    reason: CloseReason::HeartbeatTimeout,
                });
                self.disconnected(now, conn);
            }
            Timer::AgentGrace(agent_id) => {
                let Some(a) = self.agents.get(&agent_id) else {
                    return;
                };
                let Some(gone) = a.gone_since else { return };
                if a.conn.is_some() || a.call.is_some() {
                    return;
                }
                if gone + self.cfg.agent_grace_ms > now {
                    self.arm(gone + self.cfg.agent_grace_ms, Timer::AgentGrace(agent_id));
                    return;
                }
                self.set_presence(
                    now,
                    agent_id,
                    Presence::Offline,
                    PresenceReason::Disconnected,
                    None,
                    None,
                );
                self.forget_agent(agent_id);
            }
            Timer::Ring(call_id) => {
                let Some(c) = self.calls.get(&call_id) else {
                    return;
                };
                if c.state != CallState::Ringing || c.ring_deadline != Some(at) {
                    return;
                }
                let Some(agent_id) = c.agent else { return };
                self.stats.ring_no_answer += 1;
                self.withdraw_ring(now, call_id, agent_id, RingCancelReason::NoAnswer);
                let connected = self.agents.get(&agent_id).is_some_and(|a| a.conn.is_some());
                self.set_presence(
                    now,
                    agent_id,
                    Presence::Away,
                    if connected {
                        PresenceReason::NoAnswer
                    } else {
                        PresenceReason::Disconnected
                    },
                    None,
                    Some("You missed a call, so you were set to away.".to_owned()),
                );
                self.route(now, call_id);
            }
            Timer::Reconnect(call_id) => {
                let Some(c) = self.calls.get(&call_id) else {
                    return;
                };
                if c.state != CallState::Reconnecting || c.reconnect.map(|r| r.1) != Some(at) {
                    return;
                }
                self.end_call(now, call_id, EndReason::ReconnectExpired, None, None);
            }
            Timer::VisitorGrace(session) => {
                let Some(v) = self.visitors.get(&session) else {
                    return;
                };
                let Some(gone) = v.gone_since else { return };
                if v.conn.is_some() || gone + self.cfg.visitor_pending_grace_ms > now {
                    return;
                }
                match v.call {
                    Some(call_id)
                        if self
                            .calls
                            .get(&call_id)
                            .is_some_and(|c| c.state != CallState::Connected) =>
                    {
                        let reason = if self.calls[&call_id].state == CallState::Reconnecting {
                            EndReason::ReconnectExpired
                        } else {
                            EndReason::VisitorEnded
                        };
                        self.end_call(now, call_id, reason, None, None)
                    }
                    Some(_) => {}
                    None => {
                        self.visitors.remove(&session);
                    }
                }
            }
        }
    }

    fn shutdown(&mut self, now: Millis) {
        self.draining = true;
        let calls: Vec<CallId> = self.calls.keys().copied().collect();
        for call_id in calls {
            self.end_call(now, call_id, EndReason::ServerShutdown, None, None);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::ServerShutdown,
            });
        }
        self.conns.clear();
    }

    fn forget_agent(&mut self, agent_id: AgentId) {
        self.relist(agent_id, false);
        if let Some(a) = self.agents.remove(&agent_id) {
            if let Some(o) = self.orgs.get_mut(&a.org) {
                o.agents.remove(&agent_id);
            }
        }
    }

    // ---- admin and billing ---------------------------------------------------------------

    fn pools_changed(
        &mut self,
        now: Millis,
        org: OrgId,
        agent_id: AgentId,
        pools: Vec<(PoolId, u32)>,
    ) {
        if self.agents.get(&agent_id).is_none_or(|a| a.org != org) {
            return;
        }
        // Pools of another org are dropped: memberships never cross orgs.
        let pools: Vec<(PoolId, u32)> = pools
            .into_iter()
            .filter(|(p, _)| self.pool_of_org(*p, org).is_some())
            .collect();
        self.relist(agent_id, false);
        self.agents.get_mut(&agent_id).expect("checked above").pools = pools;
        let connected = self.agents[&agent_id].conn.is_some();
        if connected {
            self.relist(agent_id, true);
            if self.agents[&agent_id].presence == Presence::Available {
                self.dispatch_agent_pools(now, agent_id);
            }
        }
    }

    fn agent_removed(&mut self, now: Millis, org: OrgId, agent_id: AgentId) {
        let Some(a) = self.agents.get(&agent_id) else {
            return;
        };
        if a.org != org {
            return;
        }
        let (conn, call, presence) = (a.conn, a.call, a.presence);
        if let Some(call_id) = call {
            if presence == Presence::Ringing {
                self.withdraw_ring(now, call_id, agent_id, RingCancelReason::Removed);
                self.relist(agent_id, false);
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.pools.clear();
                }
                self.route(now, call_id);
            } else {
                self.end_call(now, call_id, EndReason::AgentRemoved, None, None);
            }
        }
        self.set_presence(
            now,
            agent_id,
            Presence::Offline,
            PresenceReason::Chosen,
            None,
            None,
        );
        if let Some(conn) = conn {
            self.conns.remove(&conn);
            self.out.push_back(Output::Close {
                conn,
                reason: CloseReason::AgentRemoved,
            });
        }
        self.forget_agent(agent_id);
    }

    fn org_updated(&mut self, now: Millis, org: OrgId, facts: OrgFacts) {
        let before = self.org_facts(org).map(|f| f.status);
        let status = facts.status;
        self.org_entry(org, facts);
        if before == Some(status) {
            return;
        }
        if status.may_take_calls() {
            let agents: Vec<AgentId> = self.orgs[&org].agents.iter().copied().collect();
            for a in agents {
                let conn = self.agents.get(&a).and_then(|a| a.conn);
                self.send(
                    conn,
                    ServerMessage::OrgStatus {
                        status,
                        message: "Your organization can take calls again.".to_owned(),
                    },
                );
            }
        } else {
            self.enforce(now, org);
        }
    }

    /// Applies a blocked status to every agent, call and waiting visitor of the org.
    /// `past_due`: agents away, connected calls finish, nothing new routes.
    /// `paused`/`cancelled`: agents offline, connected calls end too.
    fn enforce(&mut self, now: Millis, org: OrgId) {
        let Some(o) = self.orgs.get(&org) else {
            return;
        };
        let status = o.facts.status;
        let end_connected = matches!(status, OrgStatus::Paused | OrgStatus::Cancelled);
        let calls: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| c.org == org)
            .filter(|(_, c)| {
                end_connected || !matches!(c.state, CallState::Connected | CallState::Reconnecting)
            })
            .map(|(id, _)| *id)
            .collect();
        for call_id in calls {
            let vconn = self
                .calls
                .get(&call_id)
                .and_then(|c| self.visitors.get(&c.visitor))
                .and_then(|v| v.conn);
            self.send(
                vconn,
                ServerMessage::Unavailable {
                    re: None,
                    reason: UnavailableReason::OrgBlocked,
                    message: unavailable_message(status).to_owned(),
                },
            );
            self.end_call(now, call_id, EndReason::OrgBlocked, None, None);
        }
        let agents: Vec<AgentId> = self.orgs[&org].agents.iter().copied().collect();
        for agent_id in agents {
            let Some(a) = self.agents.get(&agent_id) else {
                continue;
            };
            let (role, conn, presence) = (a.role, a.conn, a.presence);
            let msg = blocked_message(status, role).unwrap_or_default().to_owned();
            self.send(
                conn,
                ServerMessage::OrgStatus {
                    status,
                    message: msg.clone(),
                },
            );
            if presence == Presence::InCall {
                continue; // past_due: the call finishes, then the agent goes away.
            }
            let (target, reason) = if status == OrgStatus::PastDue {
                (Presence::Away, PresenceReason::PaymentFailed)
            } else {
                (Presence::Offline, PresenceReason::OrgBlocked)
            };
            if presence != target {
                self.set_presence(now, agent_id, target, reason, None, Some(msg));
            }
        }
    }
}
