//! A compact arena DOM and its html5ever `TreeSink`: nodes live in one `Vec`, linked by index, so
//! parsing allocates per node only what html5ever hands over (names, attributes, text).

use std::borrow::Cow;
use std::cell::{Cell, Ref, RefCell};

use html5ever::interface::{ElementFlags, NodeOrText, QuirksMode, TreeSink};
use html5ever::tendril::{StrTendril, TendrilSink};
use html5ever::tree_builder::TreeBuilderOpts;
use html5ever::{ns, Attribute, LocalName, ParseOpts, QualName};

use crate::render::{AttrPrefix, AttrView, ElemView, NodeView, Source};
use crate::rules::Ns;

/// "No node".
const NIL: u32 = u32::MAX;

pub(crate) struct Element {
    ns: Ns,
    pub(crate) attrs: Vec<Attribute>,
    /// The template contents fragment (a `Fragment` node), or `NIL`.
    template: u32,
    annotation_html: bool,
}

pub(crate) enum Data {
    Document,
    /// Template contents.
    Fragment,
    /// Index into the element table.
    Element(u32),
    Text(StrTendril),
    /// Comments, processing instructions and doctypes: never serialized.
    Ignored,
}

pub(crate) struct Node {
    parent: u32,
    first_child: u32,
    last_child: u32,
    prev: u32,
    next: u32,
    pub(crate) data: Data,
}

impl Node {
    fn new(data: Data) -> Node {
        Node {
            parent: NIL,
            first_child: NIL,
            last_child: NIL,
            prev: NIL,
            next: NIL,
            data,
        }
    }
}

/// A parsed document.
pub(crate) struct Dom {
    nodes: Vec<Node>,
    elems: Vec<Element>,
    /// Element names: element `i`'s is `names[i + 1]` (`names[0]` is an inert placeholder).
    names: Vec<QualName>,
    /// The parser switched to quirks or limited-quirks mode (odd or missing doctype), or had to
    /// restructure the tree (foster parenting, adoption agency): serializing such a tree may not
    /// parse back to the same tree.
    pub(crate) irregular: bool,
}

impl Dom {
    pub(crate) const ROOT: u32 = 0;

    /// Number of nodes (comments and doctypes included).
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// Parse a whole document, with the scripting flag off (as the agent's sandboxed viewer parses).
pub(crate) fn parse_document(html: &str) -> Dom {
    // Realistic markup has a node every 16–30 bytes and an element every 30–60: room for
    // about twice that, so that the arena seldom grows (a growth copies it all).
    let mut names = Names {
        of_node: Vec::with_capacity(html.len() / 12 + 16),
        names: Vec::with_capacity(html.len() / 24 + 16),
    };
    names
        .names
        .push(QualName::new(None, ns!(html), LocalName::from("")));
    let sink = Sink {
        arena: RefCell::new(Arena {
            nodes: Vec::with_capacity(html.len() / 12 + 16),
            elems: Vec::with_capacity(html.len() / 24 + 16),
        }),
        names: RefCell::new(names),
        quirks: Cell::new(false),
    };
    sink.arena
        .borrow_mut()
        .nodes
        .push(Node::new(Data::Document));
    let opts = ParseOpts {
        tree_builder: TreeBuilderOpts {
            scripting_enabled: false,
            ..TreeBuilderOpts::default()
        },
        ..ParseOpts::default()
    };
    html5ever::parse_document(sink, opts).one(StrTendril::from_slice(html))
}

/// Element names, and where to find a node's without looking at the node.
struct Names {
    /// Index into `names` by node id (0, the placeholder, for a node that is not an element;
    /// ids past the end are not elements either).
    of_node: Vec<u32>,
    names: Vec<QualName>,
}

struct Arena {
    nodes: Vec<Node>,
    elems: Vec<Element>,
}

struct Sink {
    arena: RefCell<Arena>,
    /// [`Dom::names`], in a cell of their own: the tree builder holds a name (a [`Ref`]) only
    /// briefly, and only `create_element` borrows this cell mutably, which the tree builder never
    /// calls while it looks at a name.
    names: RefCell<Names>,
    /// See [`Dom::irregular`].
    quirks: Cell<bool>,
}

impl Sink {
    fn push(&self, data: Data) -> u32 {
        let nodes = &mut self.arena.borrow_mut().nodes;
        let id =
            u32::try_from(nodes.len()).expect("arena index fits in u32: input is at most 5 MiB");
        nodes.push(Node::new(data));
        id
    }

    fn elem<R>(&self, id: u32, f: impl FnOnce(&Element) -> R) -> Option<R> {
        let a = self.arena.borrow();
        match a.nodes[id as usize].data {
            Data::Element(e) => Some(f(&a.elems[e as usize])),
            _ => None,
        }
    }

    fn detach(nodes: &mut [Node], id: u32) {
        let (parent, prev, next) = {
            let n = &nodes[id as usize];
            (n.parent, n.prev, n.next)
        };
        if parent == NIL {
            return;
        }
        if prev != NIL {
            nodes[prev as usize].next = next;
        } else {
            nodes[parent as usize].first_child = next;
        }
        if next != NIL {
            nodes[next as usize].prev = prev;
        } else {
            nodes[parent as usize].last_child = prev;
        }
        let n = &mut nodes[id as usize];
        n.parent = NIL;
        n.prev = NIL;
        n.next = NIL;
    }

    fn append_child(nodes: &mut [Node], parent: u32, child: u32) {
        Self::detach(nodes, child);
        let last = nodes[parent as usize].last_child;
        {
            let c = &mut nodes[child as usize];
            c.parent = parent;
            c.prev = last;
            c.next = NIL;
        }
        if last != NIL {
            nodes[last as usize].next = child;
        } else {
            nodes[parent as usize].first_child = child;
        }
        nodes[parent as usize].last_child = child;
    }

    fn insert_before(nodes: &mut [Node], sibling: u32, child: u32) {
        Self::detach(nodes, child);
        let (parent, prev) = {
            let s = &nodes[sibling as usize];
            (s.parent, s.prev)
        };
        {
            let c = &mut nodes[child as usize];
            c.parent = parent;
            c.prev = prev;
            c.next = sibling;
        }
        nodes[sibling as usize].prev = child;
        if prev != NIL {
            nodes[prev as usize].next = child;
        } else if parent != NIL {
            nodes[parent as usize].first_child = child;
        }
    }

    fn append_text_to(nodes: &mut [Node], id: u32, text: &StrTendril) -> bool {
        if id == NIL {
            return false;
        }
        if let Data::Text(t) = &mut nodes[id as usize].data {
            t.push_tendril(text);
            true
        } else {
            false
        }
    }
}

impl TreeSink for Sink {
    type Handle = u32;
    type Output = Dom;
    type ElemName<'a> = Ref<'a, QualName>;

    fn finish(self) -> Dom {
        let a = self.arena.into_inner();
        Dom {
            nodes: a.nodes,
            elems: a.elems,
            names: self.names.into_inner().names,
            irregular: self.quirks.get(),
        }
    }

    fn parse_error(&self, _msg: Cow<'static, str>) {}

    fn get_document(&self) -> u32 {
        Dom::ROOT
    }

    fn elem_name<'a>(&'a self, target: &'a u32) -> Ref<'a, QualName> {
        // The tree builder only asks for element names; answer the inert placeholder otherwise.
        Ref::map(self.names.borrow(), |n| {
            let i = n.of_node.get(*target as usize).copied().unwrap_or(0);
            &n.names[i as usize]
        })
    }

    fn create_element(&self, name: QualName, attrs: Vec<Attribute>, flags: ElementFlags) -> u32 {
        let template = if flags.template {
            self.push(Data::Fragment)
        } else {
            NIL
        };
        let n = &name.ns;
        let ns = if *n == ns!(html) {
            Ns::Html
        } else if *n == ns!(svg) {
            Ns::Svg
        } else if *n == ns!(mathml) {
            Ns::MathMl
        } else {
            Ns::Other
        };
        let mut a = self.arena.borrow_mut();
        let e =
            u32::try_from(a.elems.len()).expect("arena index fits in u32: input is at most 5 MiB");
        a.elems.push(Element {
            ns,
            attrs,
            template,
            annotation_html: flags.mathml_annotation_xml_integration_point,
        });
        let id =
            u32::try_from(a.nodes.len()).expect("arena index fits in u32: input is at most 5 MiB");
        a.nodes.push(Node::new(Data::Element(e)));
        let mut n = self.names.borrow_mut();
        n.of_node.resize(id as usize, 0);
        n.of_node.push(e + 1);
        n.names.push(name);
        id
    }

    fn create_comment(&self, _text: StrTendril) -> u32 {
        self.push(Data::Ignored)
    }

    fn create_pi(&self, _target: StrTendril, _data: StrTendril) -> u32 {
        self.push(Data::Ignored)
    }

    fn append(&self, parent: &u32, child: NodeOrText<u32>) {
        let id = match child {
            NodeOrText::AppendText(text) => {
                {
                    let nodes = &mut self.arena.borrow_mut().nodes;
                    let last = nodes[*parent as usize].last_child;
                    if Self::append_text_to(nodes, last, &text) {
                        return;
                    }
                }
                self.push(Data::Text(text))
            }
            NodeOrText::AppendNode(n) => n,
        };
        Self::append_child(&mut self.arena.borrow_mut().nodes, *parent, id);
    }

    fn append_based_on_parent_node(
        &self,
        element: &u32,
        prev_element: &u32,
        child: NodeOrText<u32>,
    ) {
        self.quirks.set(true);
        let has_parent = self.arena.borrow().nodes[*element as usize].parent != NIL;
        if has_parent {
            self.append_before_sibling(element, child);
        } else {
            self.append(prev_element, child);
        }
    }

    fn append_doctype_to_document(
        &self,
        _name: StrTendril,
        _public_id: StrTendril,
        _system_id: StrTendril,
    ) {
        let id = self.push(Data::Ignored);
        Self::append_child(&mut self.arena.borrow_mut().nodes, Dom::ROOT, id);
    }

    fn get_template_contents(&self, target: &u32) -> u32 {
        match self.elem(*target, |e| e.template) {
            Some(t) if t != NIL => t,
            // Not a template: hand back the element itself (the tree builder never does this).
            _ => *target,
        }
    }

    fn same_node(&self, x: &u32, y: &u32) -> bool {
        x == y
    }

    fn set_quirks_mode(&self, mode: QuirksMode) {
        if mode != QuirksMode::NoQuirks {
            self.quirks.set(true);
        }
    }

    fn append_before_sibling(&self, sibling: &u32, new_node: NodeOrText<u32>) {
        self.quirks.set(true);
        let id = match new_node {
            NodeOrText::AppendText(text) => {
                {
                    let nodes = &mut self.arena.borrow_mut().nodes;
                    let prev = nodes[*sibling as usize].prev;
                    if Self::append_text_to(nodes, prev, &text) {
                        return;
                    }
                }
                self.push(Data::Text(text))
            }
            NodeOrText::AppendNode(n) => n,
        };
        Self::insert_before(&mut self.arena.borrow_mut().nodes, *sibling, id);
    }

    fn add_attrs_if_missing(&self, target: &u32, attrs: Vec<Attribute>) {
        let mut arena = self.arena.borrow_mut();
        let Arena { nodes, elems } = &mut *arena;
        if let Data::Element(i) = nodes[*target as usize].data {
            let e = &mut elems[i as usize];
            for a in attrs {
                if !e.attrs.iter().any(|x| x.name == a.name) {
                    e.attrs.push(a);
                }
            }
        }
    }

    fn remove_from_parent(&self, target: &u32) {
        self.quirks.set(true);
        Self::detach(&mut self.arena.borrow_mut().nodes, *target);
    }

    fn reparent_children(&self, node: &u32, new_parent: &u32) {
        self.quirks.set(true);
        let nodes = &mut self.arena.borrow_mut().nodes;
        let mut c = nodes[*node as usize].first_child;
        while c != NIL {
            let next = nodes[c as usize].next;
            Self::append_child(nodes, *new_parent, c);
            c = next;
        }
    }

    fn is_mathml_annotation_xml_integration_point(&self, handle: &u32) -> bool {
        self.elem(*handle, |e| e.annotation_html).unwrap_or(false)
    }
}

/// Children of an arena node.
pub(crate) struct Children<'a> {
    nodes: &'a [Node],
    next: u32,
}

impl Iterator for Children<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.next == NIL {
            return None;
        }
        let id = self.next;
        self.next = self.nodes[id as usize].next;
        Some(id)
    }
}

/// Attributes of an arena element.
#[derive(Clone)]
pub(crate) struct Attrs<'a> {
    it: std::slice::Iter<'a, Attribute>,
}

impl<'a> Iterator for Attrs<'a> {
    type Item = AttrView<'a>;
    fn next(&mut self) -> Option<AttrView<'a>> {
        self.it.next().map(|a| AttrView {
            prefix: if a.name.ns == ns!() {
                AttrPrefix::None
            } else if a.name.ns == ns!(xlink) {
                AttrPrefix::XLink
            } else if a.name.ns == ns!(xml) {
                AttrPrefix::Xml
            } else {
                AttrPrefix::XmlNs
            },
            local: &a.name.local,
            value: &a.value,
        })
    }
}

impl Source for Dom {
    type Id = u32;
    type Children<'a> = Children<'a>;
    type Attrs<'a> = Attrs<'a>;

    fn node(&self, id: u32) -> NodeView<'_> {
        match &self.nodes[id as usize].data {
            Data::Element(i) => {
                let e = &self.elems[*i as usize];
                NodeView::Element(ElemView {
                    ns: e.ns,
                    local: &self.names[*i as usize + 1].local,
                    annotation_html: e.annotation_html,
                })
            }
            Data::Text(t) => NodeView::Text(t),
            _ => NodeView::Other,
        }
    }

    fn attrs(&self, id: u32) -> Attrs<'_> {
        match &self.nodes[id as usize].data {
            Data::Element(i) => Attrs {
                it: self.elems[*i as usize].attrs.iter(),
            },
            _ => Attrs { it: [].iter() },
        }
    }

    fn children(&self, id: u32) -> Children<'_> {
        Children {
            nodes: &self.nodes,
            next: self.nodes[id as usize].first_child,
        }
    }

    fn content_root(&self, id: u32) -> u32 {
        match &self.nodes[id as usize].data {
            Data::Element(i) if self.elems[*i as usize].template != NIL => {
                self.elems[*i as usize].template
            }
            _ => id,
        }
    }
}
