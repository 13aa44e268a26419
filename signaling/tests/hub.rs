//! The hub driven with a fake clock: every transition of presence, routing, ring-no-answer,
//! calls, reconnection, removal and entitlement. No test sleeps; time is a number we advance.

use frontdesk_domain::*;
use frontdesk_signaling::wire::*;
use frontdesk_signaling::*;
use std::collections::HashSet;

struct H {
    hub: Hub,
    now: Millis,
    out: Vec<Output>,
    alive: HashSet<ConnId>,
    next_beat: Millis,
    org: OrgId,
    facts: OrgFacts,
}

fn active(ring_timeout_ms: u64) -> OrgFacts {
    OrgFacts {
        status: OrgStatus::Active,
        ring_timeout_ms,
        queue_when_unavailable: true,
    }
}

impl H {
    fn new() -> H {
        H {
            hub: Hub::new(HubConfig::default()),
            now: 1_000_000,
            out: Vec::new(),
            alive: HashSet::new(),
            next_beat: 1_000_000 + 5_000,
            org: OrgId::new(),
            facts: active(15_000),
        }
    }

    fn step(&mut self, input: Input) {
        self.hub.handle(self.now, input);
        while let Some(o) = self.hub.poll_output() {
            if let Output::Close { conn, .. } = &o {
                self.alive.remove(conn);
            }
            self.out.push(o);
        }
    }

    /// Lets `ms` pass: live connections heartbeat every 5 s, timers fire when due.
    fn advance(&mut self, ms: Millis) {
        let target = self.now + ms;
        loop {
            let next = [self.hub.next_deadline(), Some(self.next_beat), Some(target)]
                .into_iter()
                .flatten()
                .min()
                .unwrap();
            self.now = next.max(self.now);
            if self.now >= self.next_beat {
                let alive: Vec<_> = self.alive.iter().copied().collect();
                for conn in alive {
                    self.step(Input::Heartbeat { conn });
                }
                self.next_beat = self.now + 5_000;
            }
            self.step(Input::Tick);
            if self.now >= target {
                break;
            }
        }
    }

    fn agent_in(&mut self, conn: ConnId, pools: &[(PoolId, u32)]) -> AgentId {
        let agent = AgentId::new();
        self.connect_agent(conn, agent, pools, Role::Agent);
        agent
    }

    fn connect_agent(&mut self, conn: ConnId, agent: AgentId, pools: &[(PoolId, u32)], role: Role) {
        self.alive.insert(conn);
        let facts = self.facts.clone();
        self.step(Input::AgentConnected {
            conn,
            re: Some(1),
            org: self.org,
            agent,
            role,
            display_name: format!("agent-{conn}"),
            pools: pools.to_vec(),
            facts,
        });
    }

    fn available(&mut self, conn: ConnId) {
        self.msg(
            conn,
            ClientMessage::SetPresence {
                presence: Presence::Available,
            },
        );
    }

    fn visitor(&mut self, conn: ConnId, pool: PoolId) -> VisitorSessionId {
        let s = VisitorSessionId::new();
        self.connect_visitor(conn, s, pool);
        s
    }

    fn connect_visitor(&mut self, conn: ConnId, session: VisitorSessionId, pool: PoolId) {
        self.alive.insert(conn);
        let facts = self.facts.clone();
        self.step(Input::VisitorConnected {
            conn,
            re: None,
            org: self.org,
            session,
            pool,
            visitor_token: None,
            facts,
        });
    }

    fn msg(&mut self, conn: ConnId, msg: ClientMessage) {
        self.step(Input::Message {
            conn,
            re: Some(9),
            msg,
        });
    }

    fn drop_conn(&mut self, conn: ConnId) {
        self.alive.remove(&conn);
        self.step(Input::Disconnected { conn });
    }

    /// Messages sent to `conn` since the last look.
    fn sent(&mut self, conn: ConnId) -> Vec<ServerMessage> {
        let mut keep = Vec::new();
        let mut got = Vec::new();
        for o in self.out.drain(..) {
            match o {
                Output::Send { conn: c, msg } if c == conn => got.push(msg),
                other => keep.push(other),
            }
        }
        self.out = keep;
        got
    }

    fn records(&mut self) -> Vec<Record> {
        let mut keep = Vec::new();
        let mut got = Vec::new();
        for o in self.out.drain(..) {
            match o {
                Output::Record(r) => got.push(r),
                other => keep.push(other),
            }
        }
        self.out = keep;
        got
    }

    fn closed(&mut self, conn: ConnId) -> Option<CloseReason> {
        self.out.iter().find_map(|o| match o {
            Output::Close { conn: c, reason } if *c == conn => Some(*reason),
            _ => None,
        })
    }

    /// The call id of the last request from visitor `conn`.
    fn request(&mut self, conn: ConnId) -> CallId {
        self.msg(conn, ClientMessage::RequestCall {});
        let at = self
            .out
            .iter()
            .position(|o| {
                matches!(o, Output::Send { conn: c, msg: ServerMessage::CallRequested { .. } } if *c == conn)
            })
            .expect("call_requested");
        match self.out.remove(at) {
            Output::Send {
                msg: ServerMessage::CallRequested { call_id, .. },
                ..
            } => call_id,
            _ => unreachable!("matched above"),
        }
    }

    fn presence(&self, agent: AgentId) -> Presence {
        self.hub
            .agent(agent)
            .map(|a| a.presence)
            .unwrap_or(Presence::Offline)
    }

    fn set_org(&mut self, facts: OrgFacts) {
        self.facts = facts.clone();
        let org = self.org;
        self.step(Input::OrgUpdated { org, facts });
    }
}

fn rings(msgs: &[ServerMessage]) -> Vec<RingInfo> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMessage::Ring(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn error_code(msgs: &[ServerMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        ServerMessage::Error { code, .. } => Some(code.clone()),
        _ => None,
    })
}

// ---- presence ---------------------------------------------------------------------------

#[test]
fn a_new_agent_is_welcomed_away_and_chooses_available() {
    let mut h = H::new();
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    let welcome = h.sent(1);
    assert!(matches!(
        welcome[0],
        ServerMessage::Welcome {
            re: Some(1),
            presence: Some(Presence::Away),
            ..
        }
    ));
    h.available(1);
    assert_eq!(h.presence(a), Presence::Available);
    assert!(h.sent(1).iter().any(|m| matches!(
        m,
        ServerMessage::Presence {
            re: Some(9),
            presence: Presence::Available,
            ..
        }
    )));
    assert!(h.records().iter().any(|r| matches!(
        r,
        Record::Presence {
            presence: Presence::Available,
            ..
        }
    )));
}

#[test]
fn agents_may_choose_only_available_or_away() {
    let mut h = H::new();
    h.agent_in(1, &[]);
    h.sent(1);
    h.msg(
        1,
        ClientMessage::SetPresence {
            presence: Presence::InCall,
        },
    );
    assert_eq!(error_code(&h.sent(1)).as_deref(), Some("invalid_presence"));
}

#[test]
fn a_dropped_agent_keeps_its_state_for_the_grace_then_goes_offline() {
    let mut h = H::new();
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    h.available(1);
    h.drop_conn(1);
    h.advance(9_000);
    assert_eq!(h.presence(a), Presence::Available, "inside the 10 s grace");
    // Back inside the grace: same state, no call lost.
    h.connect_agent(2, a, &[(pool, 1)], Role::Agent);
    assert!(h.sent(2).iter().any(|m| matches!(
        m,
        ServerMessage::Welcome {
            presence: Some(Presence::Available),
            ..
        }
    )));
    h.drop_conn(2);
    h.advance(10_001);
    assert_eq!(h.presence(a), Presence::Offline);
    assert!(h.hub.agent(a).is_none());
}

#[test]
fn a_disconnected_agent_is_not_rung_during_its_grace() {
    let mut h = H::new();
    let pool = PoolId::new();
    h.agent_in(1, &[(pool, 1)]);
    h.available(1);
    h.drop_conn(1);
    h.visitor(10, pool);
    h.request(10);
    assert!(h
        .sent(10)
        .iter()
        .any(|m| matches!(m, ServerMessage::Queued { position: 1, .. })));
}

#[test]
fn silent_connections_die_after_15_seconds_whatever_the_state() {
    for state in ["away", "available", "ringing", "in_call"] {
        let mut h = H::new();
        let pool = PoolId::new();
        let a = h.agent_in(1, &[(pool, 1)]);
        if state != "away" {
            h.available(1);
        }
        if state == "ringing" || state == "in_call" {
            h.visitor(10, pool);
            let call = h.request(10);
            if state == "in_call" {
                h.msg(1, ClientMessage::Accept { call_id: call });
            }
        }
        // The agent's connection goes silent; the visitor's keeps beating.
        h.alive.remove(&1);
        h.advance(14_000);
        assert_eq!(h.closed(1), None, "{state}: alive at 14 s");
        h.advance(1_001 + 5_000);
        assert_eq!(h.closed(1), Some(CloseReason::HeartbeatTimeout), "{state}");
        assert!(!h.hub.agent(a).is_some_and(|a| a.connected), "{state}");
    }
}

// ---- routing ----------------------------------------------------------------------------

#[test]
fn a_call_rings_the_lowest_tier_then_the_longest_available_agent() {
    let mut h = H::new();
    let pool = PoolId::new();
    let tier2 = h.agent_in(1, &[(pool, 2)]);
    h.available(1);
    h.advance(1_000);
    let newer = h.agent_in(2, &[(pool, 1)]);
    let older = h.agent_in(3, &[(pool, 1)]);
    h.available(3);
    h.advance(1_000);
    h.available(2);
    h.visitor(10, pool);
    let call = h.request(10);
    assert_eq!(
        h.hub.agent(older).unwrap().call,
        Some(call),
        "tier 1, available longest"
    );
    assert_eq!(h.presence(older), Presence::Ringing);
    assert_eq!(h.presence(newer), Presence::Available);
    assert_eq!(h.presence(tier2), Presence::Available);
    assert!(h
        .sent(10)
        .iter()
        .any(|m| matches!(m, ServerMessage::Ringing { .. })));
}

#[test]
fn routing_never_leaves_the_pool_or_the_org() {
    let mut h = H::new();
    let (sales, support) = (PoolId::new(), PoolId::new());
    h.agent_in(1, &[(support, 1)]);
    h.available(1);
    h.visitor(10, sales);
    // An available agent of another org, claiming the same pool id.
    let other_org = OrgId::new();
    h.step(Input::AgentConnected {
        conn: 2,
        re: None,
        org: other_org,
        agent: AgentId::new(),
        role: Role::Agent,
        display_name: "intruder".into(),
        pools: vec![(sales, 1)],
        facts: active(15_000),
    });
    h.msg(
        2,
        ClientMessage::SetPresence {
            presence: Presence::Available,
        },
    );
    h.sent(1);
    h.sent(2);
    h.request(10);
    assert!(
        rings(&h.sent(1)).is_empty(),
        "support's agent is never rung for sales"
    );
    assert!(
        rings(&h.sent(2)).is_empty(),
        "another org's agent is never rung"
    );
    assert!(h
        .sent(10)
        .iter()
        .any(|m| matches!(m, ServerMessage::Queued { position: 1, .. })));
}

#[test]
fn every_ring_and_re_ring_carries_the_org_ring_timeout_of_the_call() {
    let mut h = H::new();
    h.facts = active(20_000);
    let pool = PoolId::new();
    h.agent_in(1, &[(pool, 1)]);
    h.agent_in(2, &[(pool, 1)]);
    h.available(1);
    h.advance(10);
    h.available(2);
    h.visitor(10, pool);
    let call = h.request(10);
    assert_eq!(rings(&h.sent(1))[0].ring_timeout_ms, 20_000);
    // A settings change applies from the next call, not to this one's re-rings.
    h.set_org(active(30_000));
    h.advance(20_000);
    let rering = rings(&h.sent(2));
    assert_eq!(rering.len(), 1, "re-rung after 20 s");
    assert_eq!(
        (rering[0].call_id, rering[0].ring_timeout_ms),
        (call, 20_000)
    );
    h.visitor(11, pool);
    h.request(11);
    h.msg(2, ClientMessage::Reject { call_id: call });
    h.available(1);
    let next: Vec<_> = rings(&h.sent(1))
        .into_iter()
        .chain(rings(&h.sent(2)))
        .collect();
    assert!(
        next.iter()
            .any(|r| r.call_id != call && r.ring_timeout_ms == 30_000),
        "{next:?}"
    );
}

#[test]
fn ring_no_answer_sets_the_agent_away_and_rings_the_next_agent_of_the_pool() {
    let mut h = H::new();
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    let b = h.agent_in(2, &[(pool, 1)]);
    h.available(1);
    h.advance(10);
    h.available(2);
    h.visitor(10, pool);
    let call = h.request(10);
    h.sent(1);
    h.advance(14_999);
    assert_eq!(h.presence(a), Presence::Ringing);
    h.advance(1);
    assert_eq!(h.presence(a), Presence::Away);
    let told = h.sent(1);
    assert!(told.iter().any(|m| matches!(
        m,
        ServerMessage::RingCancelled {
            reason: RingCancelReason::NoAnswer,
            ..
        }
    )));
    assert!(told.iter().any(|m| matches!(
        m,
        ServerMessage::Presence {
            presence: Presence::Away,
            reason: PresenceReason::NoAnswer,
            ..
        }
    )));
    assert_eq!(h.hub.agent(b).unwrap().call, Some(call));
    assert!(h.records().iter().any(|r| matches!(
        r,
        Record::Presence {
            presence: Presence::Away,
            reason: PresenceReason::NoAnswer,
            ..
        }
    )));
}

#[test]
fn ring_no_answer_re_routes_the_away_agents_waiting_visitors() {
    let mut h = H::new();
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    h.available(1);
    h.visitor(10, pool);
    h.visitor(11, pool);
    let first = h.request(10);
    let second = h.request(11);
    assert_eq!(h.hub.agent(a).unwrap().call, Some(first));
    assert_eq!(rings(&h.sent(1)).len(), 1);
    assert!(h
        .sent(11)
        .iter()
        .any(|m| matches!(m, ServerMessage::Queued { position: 1, .. })));
    let b = h.agent_in(2, &[(pool, 1)]);
    h.advance(15_000);
    assert_eq!(h.presence(a), Presence::Away, "missed the ring");
    // Nobody else free yet: both visitors wait, oldest first.
    assert!(h
        .sent(10)
        .iter()
        .any(|m| matches!(m, ServerMessage::Queued { position: 1, .. })));
    assert!(h
        .sent(11)
        .iter()
        .any(|m| matches!(m, ServerMessage::Queued { position: 2, .. })));
    h.available(2);
    assert_eq!(h.hub.agent(b).unwrap().call, Some(first));
    h.msg(2, ClientMessage::Accept { call_id: first });
    h.msg(2, ClientMessage::EndCall { call_id: first });
    assert_eq!(
        h.hub.agent(b).unwrap().call,
        Some(second),
        "the away agent's other visitor is served"
    );
    assert!(rings(&h.sent(1)).is_empty(), "never rung again while away");
}

#[test]
fn reject_rings_the_next_agent_and_keeps_the_rejecting_agent_available() {
    let mut h = H::new();
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    let b = h.agent_in(2, &[(pool, 1)]);
    h.available(1);
    h.advance(10);
    h.available(2);
    h.visitor(10, pool);
    let call = h.request(10);
    h.msg(1, ClientMessage::Reject { call_id: call });
    assert!(h
        .sent(1)
        .iter()
        .any(|m| matches!(m, ServerMessage::Rejected { .. })));
    assert_eq!(h.presence(a), Presence::Available);
    assert_eq!(h.hub.agent(b).unwrap().call, Some(call));
    // b rejects too: a is not rung again for this call; the visitor waits in the queue...
    h.sent(1);
    h.advance(10);
    h.msg(2, ClientMessage::Reject { call_id: call });
    assert!(rings(&h.sent(1)).is_empty());
    assert!(h
        .sent(10)
        .iter()
        .any(|m| matches!(m, ServerMessage::Queued { .. })));
    // ...without holding up a later visitor whom the free agents have not declined.
    h.visitor(11, pool);
    let later = h.request(11);
    assert_eq!(h.hub.agent(a).unwrap().call, Some(later));
    h.msg(1, ClientMessage::Reject { call_id: later });
    // Choosing available again makes a eligible for the first call once more.
    h.msg(
        1,
        ClientMessage::SetPresence {
            presence: Presence::Away,
        },
    );
    h.available(1);
    let again = rings(&h.sent(1));
    assert!(
        again
            .iter()
            .any(|r| r.call_id == call || r.call_id == later),
        "{again:?}"
    );
}

#[test]
fn only_the_rung_agents_own_connection_can_accept() {
    let mut h = H::new();
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    h.agent_in(2, &[(pool, 1)]);
    h.available(1);
    h.visitor(10, pool);
    let call = h.request(10);
    h.sent(2);
    h.msg(2, ClientMessage::Accept { call_id: call });
    assert_eq!(error_code(&h.sent(2)).as_deref(), Some("not_rung"));
    h.msg(
        1,
        ClientMessage::Accept {
            call_id: CallId::new(),
        },
    );
    assert_eq!(error_code(&h.sent(1)).as_deref(), Some("not_rung"));
    h.msg(10, ClientMessage::Accept { call_id: call });
    assert_eq!(error_code(&h.sent(10)).as_deref(), Some("not_allowed"));
    // The same agent on a second connection replaces the first; the old one cannot accept.
    h.connect_agent(3, a, &[(pool, 1)], Role::Agent);
    assert_eq!(h.closed(1), Some(CloseReason::Replaced));
    h.msg(1, ClientMessage::Accept { call_id: call });
    assert!(h.sent(1).is_empty(), "a closed connection is ignored");
    assert_eq!(h.hub.call_state(call), Some(CallState::Ringing));
    h.msg(3, ClientMessage::Accept { call_id: call });
    assert_eq!(h.hub.call_state(call), Some(CallState::Connected));
    assert_eq!(h.presence(a), Presence::InCall);
    assert!(h
        .sent(10)
        .iter()
        .any(|m| matches!(m, ServerMessage::CallConnected { .. })));
}

#[test]
fn queue_positions_are_reported_and_advance() {
    let mut h = H::new();
    let pool = PoolId::new();
    for v in 10..13 {
        h.visitor(v, pool);
        h.request(v);
    }
    assert!(h
        .sent(12)
        .iter()
        .any(|m| matches!(m, ServerMessage::Queued { position: 3, .. })));
    h.agent_in(1, &[(pool, 1)]);
    h.available(1);
    assert_eq!(rings(&h.sent(1)).len(), 1);
    assert!(h
        .sent(11)
        .iter()
        .any(|m| matches!(m, ServerMessage::Queued { position: 1, .. })));
    assert!(h
        .sent(12)
        .iter()
        .any(|m| matches!(m, ServerMessage::Queued { position: 2, .. })));
}

#[test]
fn an_org_that_does_not_queue_tells_the_visitor_no_one_is_available() {
    let mut h = H::new();
    h.facts.queue_when_unavailable = false;
    let pool = PoolId::new();
    h.visitor(10, pool);
    let call = h.request(10);
    let msgs = h.sent(10);
    assert!(msgs.iter().any(|m| matches!(
        m,
        ServerMessage::Unavailable {
            reason: UnavailableReason::NoAgents,
            ..
        }
    )));
    assert!(msgs.iter().any(|m| matches!(
        m,
        ServerMessage::CallEnded {
            reason: EndReason::NoAgents,
            ..
        }
    )));
    assert_eq!(h.hub.call_state(call), None);
}

#[test]
fn a_visitor_cannot_hold_two_calls() {
    let mut h = H::new();
    let pool = PoolId::new();
    h.visitor(10, pool);
    h.request(10);
    h.msg(10, ClientMessage::RequestCall {});
    assert_eq!(error_code(&h.sent(10)).as_deref(), Some("call_in_progress"));
}

// ---- calls and reconnection ---------------------------------------------------------------

fn connected_call(h: &mut H) -> (AgentId, VisitorSessionId, CallId) {
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    h.available(1);
    let s = h.visitor(10, pool);
    let call = h.request(10);
    h.msg(1, ClientMessage::Accept { call_id: call });
    h.sent(1);
    h.sent(10);
    h.records();
    (a, s, call)
}

#[test]
fn either_side_ends_a_call_and_the_agent_is_available_again() {
    let mut h = H::new();
    let (a, _, call) = connected_call(&mut h);
    h.msg(1, ClientMessage::EndCall { call_id: call });
    assert!(h.sent(10).iter().any(|m| matches!(
        m,
        ServerMessage::CallEnded {
            reason: EndReason::AgentEnded,
            ..
        }
    )));
    assert_eq!(h.presence(a), Presence::Available);
    assert!(h.records().iter().any(|r| matches!(
        r,
        Record::CallEnded {
            reason: EndReason::AgentEnded,
            ..
        }
    )));
    let mut h = H::new();
    let (_, _, call) = connected_call(&mut h);
    h.msg(10, ClientMessage::EndCall { call_id: call });
    assert!(h.sent(1).iter().any(|m| matches!(
        m,
        ServerMessage::CallEnded {
            reason: EndReason::VisitorEnded,
            ..
        }
    )));
}

#[test]
fn a_visitor_who_reloads_inside_60_seconds_rejoins_the_same_call() {
    let mut h = H::new();
    let (_, s, call) = connected_call(&mut h);
    let pool = PoolId::new();
    h.drop_conn(10);
    assert_eq!(h.hub.call_state(call), Some(CallState::Reconnecting));
    assert!(h.sent(1).iter().any(|m| matches!(
        m,
        ServerMessage::VisitorReconnecting {
            remaining_ms: 60_000,
            ..
        }
    )));
    h.advance(59_000);
    h.connect_visitor(11, s, pool);
    assert_eq!(h.hub.call_state(call), Some(CallState::Connected));
    let msgs = h.sent(11);
    assert!(msgs.iter().any(|m| matches!(
        m,
        ServerMessage::CallResumed { state: CallState::Connected, call_id } if *call_id == call
    )));
    assert!(h
        .sent(1)
        .iter()
        .any(|m| matches!(m, ServerMessage::VisitorReconnected { .. })));
    h.advance(5_000);
    assert_eq!(
        h.hub.call_state(call),
        Some(CallState::Connected),
        "the old window is void"
    );
}

#[test]
fn a_visitor_gone_past_60_seconds_ends_the_call_with_reconnect_expired() {
    let mut h = H::new();
    let (a, _, call) = connected_call(&mut h);
    h.drop_conn(10);
    h.advance(59_999);
    assert_eq!(h.hub.call_state(call), Some(CallState::Reconnecting));
    h.advance(1);
    assert_eq!(h.hub.call_state(call), None);
    assert!(h.sent(1).iter().any(|m| matches!(
        m,
        ServerMessage::CallEnded {
            reason: EndReason::ReconnectExpired,
            ..
        }
    )));
    assert_eq!(h.presence(a), Presence::Available);
}

#[test]
fn an_agent_who_drops_mid_call_has_30_seconds_and_the_visitor_is_told() {
    let mut h = H::new();
    let (a, _, call) = connected_call(&mut h);
    let pool = PoolId::new();
    h.drop_conn(1);
    assert!(h.sent(10).iter().any(|m| matches!(
        m,
        ServerMessage::AgentReconnecting {
            remaining_ms: 30_000,
            ..
        }
    )));
    h.advance(20_000);
    h.connect_agent(2, a, &[(pool, 1)], Role::Agent);
    assert_eq!(h.hub.call_state(call), Some(CallState::Connected));
    assert!(h
        .sent(10)
        .iter()
        .any(|m| matches!(m, ServerMessage::AgentReconnected { .. })));
    assert!(h
        .sent(2)
        .iter()
        .any(|m| matches!(m, ServerMessage::CallResumed { .. })));
    h.drop_conn(2);
    h.advance(30_000);
    assert_eq!(h.hub.call_state(call), None);
    assert!(h.sent(10).iter().any(|m| matches!(
        m,
        ServerMessage::CallEnded {
            reason: EndReason::ReconnectExpired,
            ..
        }
    )));
    h.advance(10_000);
    assert_eq!(h.presence(a), Presence::Offline);
}

#[test]
fn a_visitor_who_leaves_before_an_answer_cancels_the_ring_after_a_grace() {
    let mut h = H::new();
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    h.available(1);
    h.visitor(10, pool);
    let call = h.request(10);
    h.drop_conn(10);
    h.advance(9_000);
    assert_eq!(h.hub.call_state(call), Some(CallState::Ringing));
    h.advance(1_000);
    assert_eq!(h.hub.call_state(call), None);
    assert!(h.sent(1).iter().any(|m| matches!(
        m,
        ServerMessage::RingCancelled {
            reason: RingCancelReason::VisitorLeft,
            ..
        }
    )));
    assert_eq!(h.presence(a), Presence::Available);
}

#[test]
fn an_agent_who_drops_while_ringing_is_skipped_at_once() {
    let mut h = H::new();
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    let b = h.agent_in(2, &[(pool, 1)]);
    h.available(1);
    h.advance(10);
    h.available(2);
    h.visitor(10, pool);
    let call = h.request(10);
    h.drop_conn(1);
    assert_eq!(h.hub.agent(b).unwrap().call, Some(call));
    assert_eq!(h.presence(a), Presence::Away);
}

#[test]
fn a_visitor_claiming_another_orgs_pool_is_refused() {
    let mut h = H::new();
    let pool = PoolId::new();
    h.agent_in(1, &[(pool, 1)]);
    h.org = OrgId::new();
    h.visitor(10, pool);
    assert_eq!(h.closed(10), Some(CloseReason::AuthFailed));
}

// ---- removal and settings -----------------------------------------------------------------

#[test]
fn removing_an_agent_mid_call_ends_it_gracefully_and_closes_the_connection() {
    let mut h = H::new();
    let (a, _, call) = connected_call(&mut h);
    let org = h.org;
    h.step(Input::AgentRemoved { org, agent: a });
    let msgs = h.sent(10);
    let ended = msgs.iter().find_map(|m| match m {
        ServerMessage::CallEnded {
            reason, message, ..
        } => Some((*reason, message.clone())),
        _ => None,
    });
    let (reason, message) = ended.expect("visitor told");
    assert_eq!(reason, EndReason::AgentRemoved);
    assert!(message.contains("start a new call"));
    assert_eq!(h.closed(1), Some(CloseReason::AgentRemoved));
    assert_eq!(h.hub.call_state(call), None);
    assert!(h.hub.agent(a).is_none());
    assert!(h.records().iter().any(|r| matches!(
        r,
        Record::CallEnded {
            reason: EndReason::AgentRemoved,
            ..
        }
    )));
}

#[test]
fn removing_a_ringing_agent_re_routes_the_call() {
    let mut h = H::new();
    let pool = PoolId::new();
    let a = h.agent_in(1, &[(pool, 1)]);
    let b = h.agent_in(2, &[(pool, 1)]);
    h.available(1);
    h.advance(10);
    h.available(2);
    h.visitor(10, pool);
    let call = h.request(10);
    let org = h.org;
    h.step(Input::AgentRemoved { org, agent: a });
    assert_eq!(h.hub.agent(b).unwrap().call, Some(call));
}

#[test]
fn removing_an_agent_of_another_org_does_nothing() {
    let mut h = H::new();
    let (a, _, call) = connected_call(&mut h);
    h.step(Input::AgentRemoved {
        org: OrgId::new(),
        agent: a,
    });
    assert_eq!(h.hub.call_state(call), Some(CallState::Connected));
}

#[test]
fn changing_an_agents_pools_changes_where_it_is_rung() {
    let mut h = H::new();
    let (p1, p2) = (PoolId::new(), PoolId::new());
    let a = h.agent_in(1, &[(p1, 1)]);
    h.available(1);
    h.visitor(10, p2);
    let call = h.request(10);
    assert!(rings(&h.sent(1)).is_empty());
    let org = h.org;
    h.step(Input::AgentPoolsChanged {
        org,
        agent: a,
        pools: vec![(p2, 1)],
    });
    assert_eq!(h.hub.agent(a).unwrap().call, Some(call));
}

// ---- entitlement ----------------------------------------------------------------------------

fn blocked(status: OrgStatus) -> OrgFacts {
    OrgFacts {
        status,
        ..active(15_000)
    }
}

#[test]
fn a_blocked_org_cannot_go_available_at_login_or_later() {
    let mut h = H::new();
    h.facts = blocked(OrgStatus::PastDue);
    let a = h.agent_in(1, &[]);
    let msgs = h.sent(1);
    assert!(msgs.iter().any(|m| matches!(
        m,
        ServerMessage::OrgStatus { status: OrgStatus::PastDue, message } if message.contains("contact your admin")
    )));
    h.available(1);
    assert_eq!(error_code(&h.sent(1)).as_deref(), Some("org_blocked"));
    assert_eq!(h.presence(a), Presence::Away);
    // Admins read what they can do about it.
    h.connect_agent(2, AgentId::new(), &[], Role::Admin);
    h.available(2);
    let msgs = h.sent(2);
    assert!(msgs.iter().any(|m| matches!(
        m,
        ServerMessage::Error { code, message, .. } if code == "org_blocked" && message.contains("payment method")
    )));
}

#[test]
fn past_due_forces_agents_away_lets_connected_calls_finish_and_routes_nothing_new() {
    let mut h = H::new();
    let (a, _, call) = connected_call(&mut h);
    let pool = PoolId::new();
    let b = h.agent_in(2, &[(pool, 1)]);
    h.available(2);
    h.visitor(11, pool);
    h.visitor(12, pool);
    let ringing = h.request(11);
    h.sent(11);
    h.set_org(blocked(OrgStatus::PastDue));
    assert_eq!(h.presence(b), Presence::Away);
    assert!(h.sent(2).iter().any(|m| matches!(
        m,
        ServerMessage::Presence {
            presence: Presence::Away,
            reason: PresenceReason::PaymentFailed,
            ..
        }
    )));
    assert_eq!(
        h.hub.call_state(ringing),
        None,
        "not yet connected: no new call routes"
    );
    assert!(h.sent(11).iter().any(|m| matches!(
        m,
        ServerMessage::Unavailable {
            reason: UnavailableReason::OrgBlocked,
            ..
        }
    )));
    assert_eq!(
        h.hub.call_state(call),
        Some(CallState::Connected),
        "connected calls finish"
    );
    h.msg(12, ClientMessage::RequestCall {});
    assert!(h
        .sent(12)
        .iter()
        .any(|m| matches!(m, ServerMessage::Unavailable { .. })));
    h.msg(1, ClientMessage::EndCall { call_id: call });
    assert_eq!(h.presence(a), Presence::Away, "back to away, not available");
    // Paid again: agents may choose available.
    h.set_org(active(15_000));
    assert!(h.sent(2).iter().any(|m| matches!(
        m,
        ServerMessage::OrgStatus {
            status: OrgStatus::Active,
            ..
        }
    )));
    h.available(2);
    assert_eq!(h.presence(b), Presence::Available);
}

#[test]
fn paused_forces_agents_offline_and_ends_connected_calls_with_a_message() {
    let mut h = H::new();
    let (a, _, call) = connected_call(&mut h);
    let pool = PoolId::new();
    h.visitor(11, pool);
    let waiting = h.request(11);
    h.sent(11);
    h.set_org(blocked(OrgStatus::Paused));
    assert_eq!(h.hub.call_state(call), None);
    let msgs = h.sent(10);
    assert!(msgs.iter().any(|m| matches!(
        m,
        ServerMessage::CallEnded { reason: EndReason::OrgBlocked, message, .. } if message.contains("temporarily unavailable")
    )));
    assert_eq!(h.hub.call_state(waiting), None);
    assert!(h.sent(11).iter().any(|m| matches!(
        m,
        ServerMessage::Unavailable { message, .. } if message.contains("temporarily unavailable")
    )));
    assert_eq!(h.presence(a), Presence::Offline);
}
