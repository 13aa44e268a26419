//! Generated mutation batches (deterministic): whatever the visitor's page does to a node once
//! masked — type and attribute changes, text and value events, moves, removal and re-adding,
//! new children — a secret written to it never reaches the agent.

mod common;

use common::Rng;
use frontdesk_cobrowse::{Policy, Relay};

struct Gen {
    rng: Rng,
    next_id: u64,
    /// Ids the generator has created (some removed since: the relay drops those changes).
    ids: Vec<u64>,
    texts: Vec<u64>,
    n: u64,
    secrets: usize,
}

impl Gen {
    fn pick(&mut self, from: &[u64]) -> u64 {
        from[self.rng.below(from.len())]
    }

    fn content(&mut self, masked: bool) -> String {
        self.n += 1;
        self.secrets += usize::from(masked);
        if masked {
            format!("FDMARK{}", self.n)
        } else {
            format!("plain{}", self.n)
        }
    }

    /// A new subtree under a parent (`masked`: the parent is masked).
    fn subtree(&mut self, masked: bool) -> String {
        let id = self.next_id;
        self.next_id += 3;
        self.ids.push(id);
        self.texts.push(id + 2);
        match self.rng.below(4) {
            0 => {
                let v = self.content(true);
                format!(
                    r#"{{"id":{id},"tag":"input","attrs":{{"type":"password"}},"value":"{v}"}}"#
                )
            }
            1 => {
                let t = self.content(true);
                self.ids.push(id + 1);
                format!(
                    r#"{{"id":{id},"tag":"div","attrs":{{"data-sensitive":""}}}},{{"id":{},"parent":{id},"tag":"span"}},{{"id":{},"parent":{},"text":"{t}"}}"#,
                    id + 1,
                    id + 2,
                    id + 1
                )
            }
            _ => {
                let t = self.content(masked);
                self.ids.push(id + 1);
                format!(
                    r#"{{"id":{id},"tag":"p","attrs":{{"class":"c"}}}},{{"id":{},"parent":{id},"tag":"b"}},{{"id":{},"parent":{},"text":"{t}"}}"#,
                    id + 1,
                    id + 2,
                    id + 1
                )
            }
        }
    }

    fn change(&mut self, relay: &Relay) -> String {
        match self.rng.below(9) {
            0 | 1 => {
                let parent = self.pick(&self.ids.clone());
                let masked = relay.is_masked(parent);
                let nodes = self.subtree(masked);
                format!(r#"{{"type":"add","parent":{parent},"nodes":[{nodes}]}}"#)
            }
            2 => {
                // Move an existing node (maybe masked) under another parent, with new content.
                let id = self.pick(&self.texts.clone());
                let parent = self.pick(&self.ids.clone());
                let t = self.content(relay.is_masked(id) || relay.is_masked(parent));
                format!(
                    r#"{{"type":"add","parent":{parent},"nodes":[{{"id":{id},"text":"{t}"}}]}}"#
                )
            }
            3 => {
                let id = self.pick(&self.texts.clone());
                let t = self.content(relay.is_masked(id));
                format!(r#"{{"type":"text","id":{id},"text":"{t}"}}"#)
            }
            4 => {
                let id = self.pick(&self.ids.clone());
                let v = self.content(relay.is_masked(id));
                format!(r#"{{"type":"value","id":{id},"value":"{v}"}}"#)
            }
            5 => {
                let id = self.pick(&self.ids.clone());
                let masked = relay.is_masked(id);
                let name = [
                    "value",
                    "title",
                    "placeholder",
                    "data-x",
                    "aria-label",
                    "alt",
                    "label",
                ][self.rng.below(7)];
                let v = self.content(masked);
                format!(r#"{{"type":"attr","id":{id},"name":"{name}","value":"{v}"}}"#)
            }
            6 => {
                // Try to unmask: type, data-sensitive, autocomplete, name.
                let id = self.pick(&self.ids.clone());
                let (name, value) = [
                    ("type", r#""text""#),
                    ("type", "null"),
                    ("data-sensitive", "null"),
                    ("data-sensitive", r#""false""#),
                    ("autocomplete", r#""off""#),
                    ("name", r#""comment""#),
                ][self.rng.below(6)];
                format!(r#"{{"type":"attr","id":{id},"name":"{name}","value":{value}}}"#)
            }
            7 => {
                let id = self.pick(&self.ids.clone());
                let (name, value) = [
                    ("data-sensitive", r#""""#),
                    ("type", r#""password""#),
                    ("class", r#""x""#),
                ][self.rng.below(3)];
                format!(r#"{{"type":"attr","id":{id},"name":"{name}","value":{value}}}"#)
            }
            _ => {
                let id = self.pick(&self.ids.clone());
                format!(r#"{{"type":"remove","id":{id}}}"#)
            }
        }
    }
}

#[test]
fn generated_mutations_never_reveal_a_masked_secret() {
    let cases: usize = std::env::var("SOUP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng(0xfeed_beef_1234_5678);
    let mut batches = 0;
    let (mut secrets, mut plain_seen) = (0, 0);
    for case in 0..cases {
        let mut g = Gen {
            rng: Rng(rng.next() | 1),
            next_id: 100,
            ids: vec![2],
            texts: vec![],
            n: 0,
            secrets: 0,
        };
        let mut relay = Relay::new(Policy::default());
        let mut nodes = vec![
            r#"{"id":1,"tag":"html"}"#.to_string(),
            r#"{"id":2,"parent":1,"tag":"body"}"#.to_string(),
        ];
        for _ in 0..6 {
            let sub = g.subtree(false);
            let sub = sub.replacen(r#"{"id":"#, r#"{"parent":2,"id":"#, 1);
            nodes.push(sub);
        }
        let snap = format!(r#"{{"nodes":[{}]}}"#, nodes.join(","));
        let frame = relay.snapshot(snap.as_bytes()).expect("snapshot");
        let html = frame.html().expect("html").as_str().to_owned();
        assert!(
            !html.contains("FDMARK"),
            "case {case}: snapshot leaked\n{snap}\n{html}"
        );
        for b in 0..20 {
            let changes: Vec<String> = (0..1 + g.rng.below(5)).map(|_| g.change(&relay)).collect();
            let input = format!(r#"{{"changes":[{}]}}"#, changes.join(","));
            let frame = relay.changes(input.as_bytes()).expect("batch");
            let out = serde_json::to_string(&frame).expect("json");
            assert!(
                !out.contains("FDMARK"),
                "case {case} batch {b}: leaked\ninput: {input}\noutput: {out}"
            );
            plain_seen += usize::from(out.contains("plain"));
            batches += 1;
        }
        secrets += g.secrets;
    }
    assert!(batches >= cases * 20);
    // The generator really wrote secrets into masked nodes, and ordinary content got through.
    assert!(secrets > cases * 10, "{secrets} secrets");
    assert!(
        plain_seen > batches / 10,
        "{plain_seen} batches with content"
    );
}
