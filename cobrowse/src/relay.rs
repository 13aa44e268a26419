//! The relay: one per call, sans IO. It keeps its own copy of the visitor's node tree with each
//! node's mask state, sanitizes every snapshot and change batch, and returns what may be sent to
//! the agent(s). Formats: `PROTOCOL.md`.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::render::{
    child_ctx, decide, infer_ns, own_sensitive, AttrPrefix, AttrView, Ctx, Decision, ElemView,
    Kind, Live, NodeView, Renderer, Source,
};
use crate::rules::{self, Ns};
use crate::{
    Error, Policy, SanitizedHtml, Stats, MASK, MAX_ATTRIBUTES, MAX_CHANGE_BATCH_BYTES, MAX_DEPTH,
    MAX_NODES, MAX_SNAPSHOT_BYTES,
};

// ---------------------------------------------------------------------------------------------
// Input (from the widget)

#[derive(Deserialize)]
struct SnapshotIn {
    #[serde(default, rename = "baseUrl")]
    base_url: Option<String>,
    nodes: Vec<NodeIn>,
}

#[derive(Deserialize)]
struct NodeIn {
    id: u64,
    #[serde(default)]
    parent: Option<u64>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    attrs: AttrsIn,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    checked: Option<bool>,
}

/// Attributes as a JSON object, in order; the first of duplicate names wins.
#[derive(Default)]
struct AttrsIn(Vec<(String, String)>);

impl<'de> Deserialize<'de> for AttrsIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AttrsIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string attribute values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AttrsIn, A::Error> {
                let mut v: Vec<(String, String)> = Vec::new();
                while let Some((k, val)) = map.next_entry::<String, String>()? {
                    if !v.iter().any(|(n, _)| n.eq_ignore_ascii_case(&k)) {
                        v.push((k, val));
                    }
                }
                Ok(AttrsIn(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct BatchIn {
    changes: Vec<ChangeIn>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ChangeIn {
    Add {
        parent: u64,
        #[serde(default)]
        prev: Option<u64>,
        nodes: Vec<NodeIn>,
    },
    Remove {
        id: u64,
    },
    Attr {
        id: u64,
        name: String,
        #[serde(default)]
        value: Option<String>,
    },
    Text {
        id: u64,
        text: String,
    },
    Value {
        id: u64,
        #[serde(default)]
        value: Option<String>,
        #[serde(default)]
        checked: Option<bool>,
    },
    Scroll {
        #[serde(default)]
        id: Option<u64>,
        x: f64,
        y: f64,
    },
    Pointer {
        x: f64,
        y: f64,
        #[serde(default)]
        kind: PointerKind,
    },
    Viewport {
        width: u32,
        height: u32,
    },
    Selection {
        #[serde(default)]
        anchor: Option<u64>,
        #[serde(default, rename = "anchorOffset")]
        anchor_offset: u32,
        #[serde(default)]
        focus: Option<u64>,
        #[serde(default, rename = "focusOffset")]
        focus_offset: u32,
    },
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------------------------------------
// Output (to the agent)

/// What a pointer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PointerKind {
    /// Moved (the default).
    #[default]
    Move,
    /// Button pressed.
    Down,
    /// Button released.
    Up,
    /// Clicked.
    Click,
    /// Anything else the widget sends.
    #[serde(other)]
    Other,
}

/// Text that went through the relay: masked when its node is masked. Only this crate makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanitizedText(String);

impl SanitizedText {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for SanitizedText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An element's complete sanitized attribute set (name, value — not HTML-escaped: to be set
/// with `setAttribute`). Serialized as a JSON object. Only this crate makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanitizedAttrs(Vec<(String, String)>);

impl SanitizedAttrs {
    /// The attributes, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The value of attribute `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Serialize for SanitizedAttrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// One sanitized change for the agent's viewer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentOp {
    /// Parse `html` in the context of element `parent` and insert it after the node `prev`
    /// (first child when `null`).
    Insert {
        /// Parent element id.
        parent: u64,
        /// Previous sibling id (element or text), or `None` for the first child.
        prev: Option<u64>,
        /// The node (with its subtree, or a text node preceded by its `<!--id-->` marker).
        html: SanitizedHtml,
    },
    /// Replace element `id` (with its subtree) by `html`.
    Replace {
        /// Element id.
        id: u64,
        /// The element again, sanitized and masked as it now is.
        html: SanitizedHtml,
    },
    /// Remove node `id` (element or text) and its subtree.
    Remove {
        /// Node id.
        id: u64,
    },
    /// Set exactly these attributes on element `id` (remove the others).
    Attrs {
        /// Element id.
        id: u64,
        /// The complete attribute set.
        attrs: SanitizedAttrs,
    },
    /// Set the data of text node `id`.
    Text {
        /// Text node id.
        id: u64,
        /// The text (the mask when the node is masked).
        text: SanitizedText,
    },
    /// Set the live value / checkedness of form control `id` (never sent for masked controls).
    Value {
        /// Element id.
        id: u64,
        /// The new `.value`.
        value: Option<SanitizedText>,
        /// The new `.checked`.
        checked: Option<bool>,
    },
    /// Scroll element `id` (the window when `None`) to `x`, `y`.
    Scroll {
        /// Element id or `None` for the window.
        id: Option<u64>,
        /// Horizontal offset, CSS pixels.
        x: f64,
        /// Vertical offset, CSS pixels.
        y: f64,
    },
    /// The visitor's pointer.
    Pointer {
        /// X, CSS pixels in the viewport.
        x: f64,
        /// Y, CSS pixels in the viewport.
        y: f64,
        /// What it did.
        kind: PointerKind,
    },
    /// The visitor's viewport size.
    Viewport {
        /// Width, CSS pixels.
        width: u32,
        /// Height, CSS pixels.
        height: u32,
    },
    /// The visitor's selection (`None` anchor and focus: no selection). Never inside a masked
    /// node.
    Selection {
        /// Anchor node id.
        anchor: Option<u64>,
        /// Offset in the anchor node.
        #[serde(rename = "anchorOffset")]
        anchor_offset: u32,
        /// Focus node id.
        focus: Option<u64>,
        /// Offset in the focus node.
        #[serde(rename = "focusOffset")]
        focus_offset: u32,
    },
}

/// The body of an [`AgentFrame`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FrameBody {
    /// A whole page: replace the viewer's document.
    Snapshot {
        /// The sanitized document, starting with `<!DOCTYPE html>`.
        html: SanitizedHtml,
    },
    /// Changes to apply in order.
    Changes {
        /// The sanitized operations.
        ops: Vec<AgentOp>,
    },
}

/// What the relay sends to the agent(s) for one input. Serializes (serde) to the JSON of
/// `PROTOCOL.md`: `{"seq": 3, "type": "changes", "ops": [...]}`. The [`stats`](Self::stats)
/// are not serialized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentFrame {
    seq: u64,
    #[serde(flatten)]
    body: FrameBody,
    #[serde(skip)]
    stats: Stats,
}

impl AgentFrame {
    /// Sequence number, from 1, incremented per frame of the relay.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The content.
    pub fn body(&self) -> &FrameBody {
        &self.body
    }

    /// What this frame masked and dropped (for metrics).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A change frame with no operation (nothing needs sending).
    pub fn is_empty(&self) -> bool {
        matches!(&self.body, FrameBody::Changes { ops } if ops.is_empty())
    }

    /// The snapshot HTML, if this is a snapshot frame.
    pub fn html(&self) -> Option<&SanitizedHtml> {
        match &self.body {
            FrameBody::Snapshot { html } => Some(html),
            FrameBody::Changes { .. } => None,
        }
    }

    /// The operations, if this is a change frame.
    pub fn ops(&self) -> &[AgentOp] {
        match &self.body {
            FrameBody::Changes { ops } => ops,
            FrameBody::Snapshot { .. } => &[],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The relay's tree

struct RAttr {
    prefix: AttrPrefix,
    local: String,
    value: String,
}

struct RElem {
    /// Lowercase tag name.
    tag: String,
    ns: Ns,
    attrs: Vec<RAttr>,
    value: Option<String>,
    checked: Option<bool>,
}

enum RData {
    Element(RElem),
    Text(String),
    /// A node the widget sent without tag or text (a comment): addressable, never written.
    Placeholder,
}

/// Whether and how a node reaches the agent.
#[derive(Clone, Copy)]
enum State {
    Hidden,
    /// A written element; the context of its children (its `masked` is stale: use `sticky`).
    Element(Ctx),
    /// A written text node; `inline` is false inside `style`/`title`/`textarea`, whose text is
    /// written as part of the parent.
    Text {
        inline: bool,
    },
}

struct RNode {
    parent: Option<u64>,
    children: Vec<u64>,
    data: RData,
    state: State,
    depth: usize,
}

struct View<'a> {
    nodes: &'a HashMap<u64, RNode>,
    sticky: &'a HashSet<u64>,
}

pub(crate) struct RAttrs<'a> {
    it: std::slice::Iter<'a, RAttr>,
}

impl Clone for RAttrs<'_> {
    fn clone(&self) -> Self {
        RAttrs {
            it: self.it.clone(),
        }
    }
}

impl<'a> Iterator for RAttrs<'a> {
    type Item = AttrView<'a>;
    fn next(&mut self) -> Option<AttrView<'a>> {
        self.it.next().map(|a| AttrView {
            prefix: a.prefix,
            local: &a.local,
            value: &a.value,
        })
    }
}

impl Source for View<'_> {
    type Id = u64;
    type Children<'b>
        = std::iter::Copied<std::slice::Iter<'b, u64>>
    where
        Self: 'b;
    type Attrs<'b>
        = RAttrs<'b>
    where
        Self: 'b;

    fn node(&self, id: u64) -> NodeView<'_> {
        match self.nodes.get(&id).map(|n| &n.data) {
            Some(RData::Element(e)) => NodeView::Element(ElemView {
                ns: e.ns,
                local: &e.tag,
                annotation_html: false,
            }),
            Some(RData::Text(t)) => NodeView::Text(t),
            _ => NodeView::Other,
        }
    }

    fn attrs(&self, id: u64) -> RAttrs<'_> {
        match self.nodes.get(&id).map(|n| &n.data) {
            Some(RData::Element(e)) => RAttrs { it: e.attrs.iter() },
            _ => RAttrs { it: [].iter() },
        }
    }

    fn children(&self, id: u64) -> Self::Children<'_> {
        match self.nodes.get(&id) {
            Some(n) => n.children.iter().copied(),
            None => [].iter().copied(),
        }
    }

    fn live(&self, id: u64) -> Live<'_> {
        match self.nodes.get(&id).map(|n| &n.data) {
            Some(RData::Element(e)) => Live {
                value: e.value.as_deref(),
                checked: e.checked,
            },
            _ => Live::default(),
        }
    }

    fn wire_id(&self, id: u64) -> Option<u64> {
        Some(id)
    }

    fn sticky(&self, id: u64) -> bool {
        self.sticky.contains(&id)
    }
}

/// Split and normalize an attribute name for an element of namespace `ns`.
fn attr_name(name: &str, ns: Ns) -> (AttrPrefix, String) {
    let lower = name.to_ascii_lowercase();
    let (prefix, local) = if let Some(l) = lower.strip_prefix("xlink:") {
        (AttrPrefix::XLink, l.to_owned())
    } else if let Some(l) = lower.strip_prefix("xml:") {
        (AttrPrefix::Xml, l.to_owned())
    } else if lower == "xmlns" || lower.starts_with("xmlns:") {
        (AttrPrefix::XmlNs, lower)
    } else {
        (AttrPrefix::None, lower)
    };
    let local = match (ns, prefix) {
        (Ns::Svg, AttrPrefix::None) => rules::svg_attr_case(&local)
            .map(str::to_owned)
            .unwrap_or(local),
        (Ns::MathMl, AttrPrefix::None) if local == "definitionurl" => "definitionURL".to_owned(),
        _ => local,
    };
    (prefix, local)
}

fn mask_text(t: &str) -> &'static str {
    if t.is_empty() {
        ""
    } else if t
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'))
    {
        " "
    } else {
        MASK
    }
}

/// The co-browse relay of one call: sans IO, no clock, no thread.
///
/// ```
/// use frontdesk_cobrowse::{Policy, Relay, MASK};
///
/// let mut relay = Relay::new(Policy::default());
/// let snap = relay.snapshot(br#"{"nodes":[
///     {"id":1,"tag":"html"},
///     {"id":2,"parent":1,"tag":"body"},
///     {"id":3,"parent":2,"tag":"input","attrs":{"type":"password"},"value":"hunter2"}
/// ]}"#).unwrap();
/// let html = snap.html().unwrap().as_str();
/// assert!(html.contains(MASK) && !html.contains("hunter2"));
///
/// // The visitor clicks "show password": the field stays masked (sticky), the value is not sent.
/// let frame = relay.changes(br#"{"changes":[
///     {"type":"attr","id":3,"name":"type","value":"text"},
///     {"type":"value","id":3,"value":"hunter2"}
/// ]}"#).unwrap();
/// let json = serde_json::to_string(&frame).unwrap();
/// assert!(!json.contains("hunter2"));
/// ```
pub struct Relay {
    policy: Policy,
    /// `policy` with the current snapshot's base URL.
    page: Policy,
    nodes: HashMap<u64, RNode>,
    root: Option<u64>,
    sticky: HashSet<u64>,
    seq: u64,
    totals: Stats,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("nodes", &self.nodes.len())
            .field("sticky", &self.sticky.len())
            .field("seq", &self.seq)
            .field("totals", &self.totals)
            .finish()
    }
}

impl Relay {
    /// A relay for one call, with `policy` (usually [`Policy::default()`]).
    pub fn new(policy: Policy) -> Relay {
        Relay {
            page: policy.clone(),
            policy,
            nodes: HashMap::new(),
            root: None,
            sticky: HashSet::new(),
            seq: 0,
            totals: Stats::default(),
        }
    }

    /// Everything masked and dropped since the relay was made.
    pub fn stats(&self) -> &Stats {
        &self.totals
    }

    /// Number of nodes in the relay's tree.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Is node `id` masked (now, and so for the rest of the call)?
    pub fn is_masked(&self, id: u64) -> bool {
        self.sticky.contains(&id)
    }

    /// A full snapshot (JSON, see `PROTOCOL.md`): replaces the relay's tree, keeps the
    /// stickiness of every id seen before, and returns the sanitized document.
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotTooLarge`] over [`MAX_SNAPSHOT_BYTES`] (the caller tells the visitor; the
    /// call and the previous tree go on), [`Error::Malformed`], [`Error::NoRoot`],
    /// [`Error::TooManyNodes`], [`Error::TooDeep`]. On error the relay is unchanged.
    pub fn snapshot(&mut self, input: &[u8]) -> Result<AgentFrame, Error> {
        if input.len() > MAX_SNAPSHOT_BYTES {
            return Err(Error::SnapshotTooLarge {
                len: input.len(),
                max: MAX_SNAPSHOT_BYTES,
            });
        }
        let snap: SnapshotIn =
            serde_json::from_slice(input).map_err(|e| Error::malformed("snapshot", &e))?;
        if snap.nodes.len() > MAX_NODES {
            return Err(Error::TooManyNodes { max: MAX_NODES });
        }
        let base = snap
            .base_url
            .as_deref()
            .and_then(|b| url::Url::parse(b).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        let mut stats = Stats::default();
        let mut nodes: HashMap<u64, RNode> = HashMap::with_capacity(snap.nodes.len());
        let mut sticky_new: HashSet<u64> = HashSet::new();
        let mut root = None;
        let page = self.policy.with_base_url(base);
        for n in snap.nodes {
            let (parent, pstate, depth) = match root {
                None => {
                    if n.parent.is_some() || n.tag.is_none() {
                        return Err(Error::NoRoot);
                    }
                    root = Some(n.id);
                    (None, State::Element(Ctx::document()), 0)
                }
                Some(_) => {
                    let Some(p) = n
                        .parent
                        .and_then(|p| nodes.get(&p).map(|pn| (p, pn.state, pn.depth)))
                    else {
                        stats.dropped_changes += 1;
                        continue;
                    };
                    if nodes.contains_key(&n.id) {
                        stats.dropped_changes += 1;
                        continue;
                    }
                    if p.2 + 1 > MAX_DEPTH {
                        return Err(Error::TooDeep { max: MAX_DEPTH });
                    }
                    (Some(p.0), p.1, p.2 + 1)
                }
            };
            let parent_masked =
                parent.is_some_and(|p| self.sticky.contains(&p) || sticky_new.contains(&p));
            let id = n.id;
            let (node, masked) = self.make_node(n, parent, pstate, depth, parent_masked);
            if masked {
                sticky_new.insert(id);
            }
            if let Some(p) = parent {
                if let Some(pn) = nodes.get_mut(&p) {
                    pn.children.push(id);
                }
            }
            nodes.insert(id, node);
        }
        // Commit.
        self.sticky.extend(sticky_new);
        self.nodes = nodes;
        self.root = root;
        self.page = page;
        let root = root.ok_or(Error::NoRoot)?;
        let view = View {
            nodes: &self.nodes,
            sticky: &self.sticky,
        };
        let mut r = Renderer::<View<'_>>::new(&self.page, input.len(), true, 0);
        r.push_raw("<!DOCTYPE html>");
        r.node(&view, root, Ctx::document())?;
        let done = r.finish();
        self.sticky.extend(done.masked);
        stats.add(&done.stats);
        Ok(self.frame(
            FrameBody::Snapshot {
                html: SanitizedHtml::new(done.html),
            },
            stats,
        ))
    }

    /// A batch of changes (JSON, see `PROTOCOL.md`), applied in order to the relay's tree;
    /// returns the sanitized operations for the agent. Changes that reference unknown ids are
    /// dropped (fail closed) and counted.
    ///
    /// # Errors
    ///
    /// [`Error::ChangeBatchTooLarge`] over [`MAX_CHANGE_BATCH_BYTES`], [`Error::Malformed`],
    /// [`Error::NoSnapshot`], [`Error::TooManyNodes`] if the tree would grow past
    /// [`MAX_NODES`]. On error nothing is applied.
    pub fn changes(&mut self, input: &[u8]) -> Result<AgentFrame, Error> {
        if input.len() > MAX_CHANGE_BATCH_BYTES {
            return Err(Error::ChangeBatchTooLarge {
                len: input.len(),
                max: MAX_CHANGE_BATCH_BYTES,
            });
        }
        let batch: BatchIn =
            serde_json::from_slice(input).map_err(|e| Error::malformed("change batch", &e))?;
        if self.root.is_none() && self.nodes.is_empty() {
            return Err(Error::NoSnapshot);
        }
        let added: usize = batch
            .changes
            .iter()
            .map(|c| match c {
                ChangeIn::Add { nodes, .. } => nodes.len(),
                _ => 0,
            })
            .sum();
        if self.nodes.len() + added > MAX_NODES {
            return Err(Error::TooManyNodes { max: MAX_NODES });
        }
        let mut stats = Stats::default();
        let mut ops = Vec::new();
        for c in batch.changes {
            self.apply(c, &mut ops, &mut stats);
        }
        Ok(self.frame(FrameBody::Changes { ops }, stats))
    }

    fn frame(&mut self, body: FrameBody, stats: Stats) -> AgentFrame {
        // An empty frame need not be sent, so it takes no `seq`: the viewer sees no gap.
        let empty = matches!(&body, FrameBody::Changes { ops } if ops.is_empty());
        if !empty {
            self.seq += 1;
        }
        self.totals.add(&stats);
        AgentFrame {
            seq: self.seq,
            body,
            stats,
        }
    }

    /// Build a relay node from the widget's, under a parent in state `pstate`.
    /// Returns the node and whether it is masked.
    fn make_node(
        &self,
        n: NodeIn,
        parent: Option<u64>,
        pstate: State,
        depth: usize,
        parent_masked: bool,
    ) -> (RNode, bool) {
        let pctx = match pstate {
            State::Element(mut c) => {
                c.masked = parent_masked;
                Some(c)
            }
            _ => None,
        };
        let sticky = self.sticky.contains(&n.id);
        let (data, state, masked) = if let Some(tag) = n.tag {
            let lower = tag.to_ascii_lowercase();
            let ns = pctx.as_ref().map_or(Ns::Html, |c| infer_ns(c, &lower));
            let mut attrs = Vec::with_capacity(n.attrs.0.len().min(MAX_ATTRIBUTES));
            for (name, value) in n.attrs.0.into_iter().take(MAX_ATTRIBUTES) {
                let (prefix, local) = attr_name(&name, ns);
                attrs.push(RAttr {
                    prefix,
                    local,
                    value,
                });
            }
            let e = RElem {
                tag: lower,
                ns,
                attrs,
                value: n.value,
                checked: n.checked,
            };
            let own = own_sensitive(ns, &e.tag, RAttrs { it: e.attrs.iter() }, &self.policy);
            let masked = parent_masked || sticky || own;
            let state = match pctx {
                Some(c) => match decide(&c, ns, &e.tag, false) {
                    Decision::Remove => State::Hidden,
                    Decision::Keep { kind, role, .. } => {
                        State::Element(child_ctx(&c, ns, &e.tag, kind, role, masked))
                    }
                },
                None => State::Hidden,
            };
            (RData::Element(e), state, masked)
        } else if let Some(t) = n.text {
            let state = match pctx {
                Some(c) if c.text_inline() => State::Text { inline: true },
                Some(c) if matches!(c.kind, Kind::Style | Kind::Rcdata) => {
                    State::Text { inline: false }
                }
                _ => State::Hidden,
            };
            (RData::Text(t), state, parent_masked || sticky)
        } else {
            (RData::Placeholder, State::Hidden, parent_masked || sticky)
        };
        (
            RNode {
                parent,
                children: Vec::new(),
                data,
                state,
                depth,
            },
            masked,
        )
    }

    /// The context `id`'s element is written in (its parent's), with current mask state.
    fn parent_ctx(&self, id: u64) -> Option<Ctx> {
        match self.nodes.get(&id)?.parent {
            None => Some(Ctx::document()),
            Some(p) => match self.nodes.get(&p)?.state {
                State::Element(mut c) => {
                    c.masked = self.sticky.contains(&p);
                    Some(c)
                }
                _ => None,
            },
        }
    }

    fn view(&self) -> View<'_> {
        View {
            nodes: &self.nodes,
            sticky: &self.sticky,
        }
    }

    /// Render `id` (element or text) as HTML in its parent's context.
    fn render(&mut self, id: u64, stats: &mut Stats) -> Option<SanitizedHtml> {
        let pctx = self.parent_ctx(id)?;
        let view = self.view();
        let mut r = Renderer::<View<'_>>::new(&self.page, 256, true, 0);
        let ok = r.node(&view, id, pctx);
        let done = r.finish();
        if ok.is_err() {
            stats.dropped_changes += 1;
            return None;
        }
        self.sticky.extend(done.masked);
        stats.add(&done.stats);
        Some(SanitizedHtml::new(done.html))
    }

    fn replace_op(&mut self, id: u64, stats: &mut Stats) -> Option<AgentOp> {
        let html = self.render(id, stats)?;
        Some(AgentOp::Replace { id, html })
    }

    /// Detach `id` from its parent and forget its subtree (stickiness stays).
    fn remove_subtree(&mut self, id: u64) {
        if let Some(p) = self.nodes.get(&id).and_then(|n| n.parent) {
            if let Some(pn) = self.nodes.get_mut(&p) {
                pn.children.retain(|c| *c != id);
            }
        }
        if self.root == Some(id) {
            self.root = None;
        }
        let mut stack = vec![id];
        while let Some(x) = stack.pop() {
            if let Some(n) = self.nodes.remove(&x) {
                stack.extend(n.children);
            }
        }
    }

    /// Remove `id`, returning what the agent must do.
    fn remove_op(&mut self, id: u64, stats: &mut Stats) -> Option<AgentOp> {
        let n = self.nodes.get(&id)?;
        let state = n.state;
        let parent = n.parent;
        self.remove_subtree(id);
        match state {
            State::Hidden => None,
            State::Text { inline: false } => self.replace_op(parent?, stats),
            _ => Some(AgentOp::Remove { id }),
        }
    }

    /// Mark `id` and its whole subtree masked.
    fn mark_subtree(&mut self, id: u64) {
        let mut stack = vec![id];
        while let Some(x) = stack.pop() {
            self.sticky.insert(x);
            if let Some(n) = self.nodes.get(&x) {
                stack.extend(n.children.iter().copied());
            }
        }
    }

    fn apply(&mut self, c: ChangeIn, ops: &mut Vec<AgentOp>, stats: &mut Stats) {
        match c {
            ChangeIn::Add {
                parent,
                prev,
                nodes,
            } => self.apply_add(parent, prev, nodes, ops, stats),
            ChangeIn::Remove { id } => {
                if !self.nodes.contains_key(&id) {
                    stats.dropped_changes += 1;
                    stats.unknown_ids += 1;
                    return;
                }
                ops.extend(self.remove_op(id, stats));
            }
            ChangeIn::Attr { id, name, value } => self.apply_attr(id, name, value, ops, stats),
            ChangeIn::Text { id, text } => {
                let Some(n) = self.nodes.get_mut(&id) else {
                    stats.dropped_changes += 1;
                    stats.unknown_ids += 1;
                    return;
                };
                let RData::Text(t) = &mut n.data else {
                    stats.dropped_changes += 1;
                    return;
                };
                *t = text;
                let (state, parent) = (n.state, n.parent);
                match state {
                    State::Hidden | State::Element(_) => {}
                    State::Text { inline: true } => {
                        let masked = self.sticky.contains(&id)
                            || parent.is_some_and(|p| self.sticky.contains(&p));
                        let text = match self.nodes.get(&id).map(|n| &n.data) {
                            Some(RData::Text(t)) if masked => {
                                stats.masked_texts += 1;
                                self.sticky.insert(id);
                                mask_text(t).to_owned()
                            }
                            Some(RData::Text(t)) => t.clone(),
                            _ => String::new(),
                        };
                        ops.push(AgentOp::Text {
                            id,
                            text: SanitizedText(text),
                        });
                    }
                    State::Text { inline: false } => {
                        if let Some(p) = parent {
                            ops.extend(self.replace_op(p, stats));
                        }
                    }
                }
            }
            ChangeIn::Value { id, value, checked } => {
                let Some(n) = self.nodes.get_mut(&id) else {
                    stats.dropped_changes += 1;
                    stats.unknown_ids += 1;
                    return;
                };
                let RData::Element(e) = &mut n.data else {
                    stats.dropped_changes += 1;
                    return;
                };
                if e.ns != Ns::Html || !matches!(e.tag.as_str(), "input" | "textarea" | "select") {
                    stats.dropped_changes += 1;
                    return;
                }
                if value.is_some() {
                    e.value.clone_from(&value);
                }
                if checked.is_some() {
                    e.checked = checked;
                }
                if matches!(n.state, State::Hidden) {
                    return;
                }
                if self.sticky.contains(&id) {
                    // Not even the timing of a masked field's input is forwarded.
                    stats.dropped_changes += 1;
                    return;
                }
                ops.push(AgentOp::Value {
                    id,
                    value: value.map(SanitizedText),
                    checked,
                });
            }
            ChangeIn::Scroll { id, x, y } => {
                if let Some(i) = id {
                    if !self
                        .nodes
                        .get(&i)
                        .is_some_and(|n| matches!(n.state, State::Element(_)))
                    {
                        stats.dropped_changes += 1;
                        stats.unknown_ids += u64::from(!self.nodes.contains_key(&i));
                        return;
                    }
                }
                ops.push(AgentOp::Scroll { id, x, y });
            }
            ChangeIn::Pointer { x, y, kind } => ops.push(AgentOp::Pointer { x, y, kind }),
            ChangeIn::Viewport { width, height } => ops.push(AgentOp::Viewport { width, height }),
            ChangeIn::Selection {
                anchor,
                anchor_offset,
                focus,
                focus_offset,
            } => {
                let visible = |id: Option<u64>| match id {
                    Some(i) => {
                        !self.sticky.contains(&i)
                            && self.nodes.get(&i).is_some_and(|n| {
                                matches!(n.state, State::Element(_) | State::Text { inline: true })
                            })
                    }
                    None => true,
                };
                if anchor.is_some() != focus.is_some() || !visible(anchor) || !visible(focus) {
                    stats.dropped_changes += 1;
                    return;
                }
                ops.push(AgentOp::Selection {
                    anchor,
                    anchor_offset,
                    focus,
                    focus_offset,
                });
            }
            ChangeIn::Unknown => stats.dropped_changes += 1,
        }
    }

    fn apply_attr(
        &mut self,
        id: u64,
        name: String,
        value: Option<String>,
        ops: &mut Vec<AgentOp>,
        stats: &mut Stats,
    ) {
        let Some(n) = self.nodes.get_mut(&id) else {
            stats.dropped_changes += 1;
            stats.unknown_ids += 1;
            return;
        };
        let RData::Element(e) = &mut n.data else {
            stats.dropped_changes += 1;
            return;
        };
        let (prefix, local) = attr_name(&name, e.ns);
        let pos = e
            .attrs
            .iter()
            .position(|a| a.prefix == prefix && a.local == local);
        match (pos, value) {
            (Some(i), Some(v)) => e.attrs[i].value = v,
            (Some(i), None) => {
                e.attrs.remove(i);
            }
            (None, Some(v)) if e.attrs.len() < MAX_ATTRIBUTES => e.attrs.push(RAttr {
                prefix,
                local,
                value: v,
            }),
            (None, Some(_)) => {
                stats.removed_attributes += 1;
                return;
            }
            (None, None) => return,
        }
        let own = own_sensitive(e.ns, &e.tag, RAttrs { it: e.attrs.iter() }, &self.page);
        let state = n.state;
        let newly = own && !self.sticky.contains(&id);
        if newly {
            self.mark_subtree(id);
        }
        if !matches!(state, State::Element(_)) {
            return;
        }
        if newly {
            ops.extend(self.replace_op(id, stats));
            return;
        }
        let Some(pctx) = self.parent_ctx(id) else {
            return;
        };
        let view = self.view();
        let mut r = Renderer::<View<'_>>::new(&self.page, 0, true, 0);
        let list = r.attrs_only(&view, id, &pctx);
        let done = r.finish();
        match list {
            Ok(Some(attrs)) => {
                stats.add(&done.stats);
                ops.push(AgentOp::Attrs {
                    id,
                    attrs: SanitizedAttrs(attrs),
                });
            }
            _ => stats.dropped_changes += 1,
        }
    }

    fn apply_add(
        &mut self,
        parent: u64,
        prev: Option<u64>,
        nodes: Vec<NodeIn>,
        ops: &mut Vec<AgentOp>,
        stats: &mut Stats,
    ) {
        let drop_all = |stats: &mut Stats, n: usize| stats.dropped_changes += n.max(1) as u64;
        let parent_ok = self
            .nodes
            .get(&parent)
            .is_some_and(|p| matches!(p.data, RData::Element(_)));
        let prev_ok =
            prev.is_none_or(|s| self.nodes.get(&s).is_some_and(|n| n.parent == Some(parent)));
        let Some(first) = nodes.first() else {
            drop_all(stats, 0);
            return;
        };
        if !parent_ok || !prev_ok || first.parent.is_some_and(|p| p != parent) {
            let unknown = !self.nodes.contains_key(&parent)
                || prev.is_some_and(|s| !self.nodes.contains_key(&s));
            stats.unknown_ids += u64::from(unknown);
            drop_all(stats, nodes.len());
            return;
        }
        // The subtree: each later node must hang under an earlier one; ids unique.
        let mut ids: Vec<u64> = Vec::with_capacity(nodes.len());
        let mut keep: Vec<NodeIn> = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.into_iter().enumerate() {
            let ok = !ids.contains(&n.id) && (i == 0 || n.parent.is_some_and(|p| ids.contains(&p)));
            if ok {
                ids.push(n.id);
                keep.push(n);
            } else {
                stats.dropped_changes += 1;
            }
        }
        if ids.contains(&parent) || prev.is_some_and(|p| ids.contains(&p)) {
            drop_all(stats, keep.len());
            return;
        }
        // Ids already in the tree are moved: remove them where they are first.
        for id in &ids {
            if self.nodes.contains_key(id) {
                ops.extend(self.remove_op(*id, stats));
            }
        }
        let parent_alive = self.nodes.contains_key(&parent);
        let prev_alive =
            prev.is_none_or(|s| self.nodes.get(&s).is_some_and(|n| n.parent == Some(parent)));
        if !parent_alive || !prev_alive {
            drop_all(stats, keep.len());
            return;
        }
        let root_id = keep[0].id;
        for (i, n) in keep.into_iter().enumerate() {
            let p = if i == 0 {
                parent
            } else {
                n.parent.unwrap_or(parent)
            };
            let Some((pstate, pdepth)) = self.nodes.get(&p).map(|pn| (pn.state, pn.depth)) else {
                // Its parent was dropped (too deep): drop it too.
                stats.dropped_changes += 1;
                continue;
            };
            if pdepth + 1 > MAX_DEPTH {
                stats.dropped_changes += 1;
                continue;
            }
            let parent_masked = self.sticky.contains(&p);
            let id = n.id;
            let (node, masked) = self.make_node(n, Some(p), pstate, pdepth + 1, parent_masked);
            if masked {
                self.sticky.insert(id);
            }
            self.nodes.insert(id, node);
            let Some(pn) = self.nodes.get_mut(&p) else {
                continue;
            };
            if i == 0 {
                let at = prev
                    .and_then(|s| pn.children.iter().position(|c| *c == s))
                    .map_or(0, |k| k + 1);
                pn.children.insert(at, id);
            } else {
                pn.children.push(id);
            }
        }
        let Some(root) = self.nodes.get(&root_id) else {
            return;
        };
        match root.state {
            State::Hidden => {}
            State::Text { inline: false } => {
                ops.extend(self.replace_op(parent, stats));
            }
            State::Element(_) | State::Text { inline: true } => {
                // The nearest earlier sibling the viewer has.
                let siblings: &[u64] = self.nodes.get(&parent).map_or(&[], |p| &p.children);
                let pos = siblings.iter().position(|c| *c == root_id).unwrap_or(0);
                let prev_out = siblings[..pos]
                    .iter()
                    .rev()
                    .find(|s| {
                        self.nodes.get(s).is_some_and(|n| {
                            matches!(n.state, State::Element(_) | State::Text { inline: true })
                        })
                    })
                    .copied();
                if let Some(html) = self.render(root_id, stats) {
                    ops.push(AgentOp::Insert {
                        parent,
                        prev: prev_out,
                        html,
                    });
                }
            }
        }
    }
}
