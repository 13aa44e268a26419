//! The relay: sticky sensitivity through every kind of mutation, fail-closed handling of
//! unknown ids, limits, and the frame format.

use frontdesk_cobrowse::{
    AgentOp, Error, Policy, Relay, MASK, MAX_CHANGE_BATCH_BYTES, MAX_DEPTH, MAX_SNAPSHOT_BYTES,
};

/// html(1) > body(2) > form(3) > [ input#4 password, div#5 data-sensitive > (text#6, input#7),
/// p#8 > text#9, input#10 plain, select#11 cc-exp-month > option#12 > text#13, p#14 > text#15 ]
const PAGE: &str = r#"{"baseUrl":"https://shop.example/checkout/","nodes":[
  {"id":1,"tag":"html"},
  {"id":2,"parent":1,"tag":"body"},
  {"id":3,"parent":2,"tag":"form"},
  {"id":4,"parent":3,"tag":"input","attrs":{"type":"password","name":"pw"},"value":"S3CR3T-A"},
  {"id":5,"parent":3,"tag":"div","attrs":{"data-sensitive":"","class":"card"}},
  {"id":6,"parent":5,"text":"S3CR3T-B"},
  {"id":7,"parent":5,"tag":"input","value":"S3CR3T-C"},
  {"id":8,"parent":3,"tag":"p"},
  {"id":9,"parent":8,"text":"hello there"},
  {"id":10,"parent":3,"tag":"input","attrs":{"name":"q"},"value":"visible value"},
  {"id":11,"parent":3,"tag":"select","attrs":{"autocomplete":"cc-exp-month"}},
  {"id":12,"parent":11,"tag":"option","attrs":{"selected":""}},
  {"id":13,"parent":12,"text":"S3CR3T-D"},
  {"id":14,"parent":2,"tag":"p","attrs":{"style":"color:red"}},
  {"id":15,"parent":14,"text":"plain text"}
]}"#;

fn relay() -> Relay {
    let mut r = Relay::new(Policy::default());
    let frame = r.snapshot(PAGE.as_bytes()).expect("snapshot");
    let html = frame.html().expect("snapshot html").as_str().to_owned();
    for s in ["S3CR3T-A", "S3CR3T-B", "S3CR3T-C", "S3CR3T-D"] {
        assert!(!html.contains(s), "{s} in {html}");
    }
    r
}

/// Apply a batch; return the JSON the agent would receive.
fn batch(r: &mut Relay, changes: &str) -> String {
    let input = format!(r#"{{"changes":[{changes}]}}"#);
    let frame = r.changes(input.as_bytes()).expect("batch");
    serde_json::to_string(&frame).expect("json")
}

fn assert_clean(json: &str, secret: &str) {
    assert!(!json.contains(secret), "{secret} leaked: {json}");
}

#[test]
fn snapshot_masks_sensitive_nodes_and_keeps_the_rest() {
    let mut r = Relay::new(Policy::default());
    let frame = r.snapshot(PAGE.as_bytes()).unwrap();
    let html = frame.html().unwrap().as_str();
    assert!(
        html.starts_with("<!DOCTYPE html><html data-fd-id=\"1\">"),
        "{html}"
    );
    assert!(html.contains("<!--9-->hello there"), "{html}");
    assert!(html.contains(r#"value="visible value""#), "{html}");
    assert!(
        html.contains(r#"<p style="color:red" data-fd-id="14">"#),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            r#"<input type="password" name="pw" value="{MASK}" data-fd-masked="" data-fd-id="4">"#
        )),
        "{html}"
    );
    assert!(
        !html.contains("selected"),
        "which option was chosen leaks: {html}"
    );
    for id in [4, 5, 6, 7, 11, 12, 13] {
        assert!(r.is_masked(id), "{id} should be masked");
    }
    for id in [1, 2, 3, 8, 9, 10, 14, 15] {
        assert!(!r.is_masked(id), "{id} should not be masked");
    }
    assert!(frame.stats().masked_elements >= 5);
    let json = serde_json::to_value(&frame).unwrap();
    assert_eq!(json["type"], "snapshot");
    assert_eq!(json["seq"], 1);
    assert!(
        json.get("stats").is_none(),
        "stats are not sent to the agent"
    );
}

#[test]
fn removing_type_password_does_not_unmask() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"attr","id":4,"name":"type","value":null},{"type":"value","id":4,"value":"S3CR3T-E"}"#,
    );
    assert_clean(&json, "S3CR3T-A");
    assert_clean(&json, "S3CR3T-E");
    assert!(json.contains(MASK), "{json}");
    assert!(r.is_masked(4));
}

#[test]
fn show_password_toggle_keeps_the_field_masked() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"attr","id":4,"name":"type","value":"text"},{"type":"value","id":4,"value":"S3CR3T-E"}"#,
    );
    assert_clean(&json, "S3CR3T-E");
    let frame: serde_json::Value = serde_json::from_str(&json).unwrap();
    let attrs = &frame["ops"][0]["attrs"];
    assert_eq!(attrs["type"], "text");
    assert_eq!(attrs["value"], MASK);
    assert_eq!(
        frame["ops"].as_array().unwrap().len(),
        1,
        "the value event is not forwarded: {json}"
    );
}

#[test]
fn removing_data_sensitive_keeps_the_subtree_masked() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"attr","id":5,"name":"data-sensitive","value":null},
           {"type":"text","id":6,"text":"S3CR3T-F"},
           {"type":"value","id":7,"value":"S3CR3T-G"}"#,
    );
    assert_clean(&json, "S3CR3T-F");
    assert_clean(&json, "S3CR3T-G");
    assert!(json.contains(MASK));
}

#[test]
fn changing_autocomplete_keeps_the_select_masked() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"attr","id":11,"name":"autocomplete","value":"off"},
           {"type":"text","id":13,"text":"S3CR3T-H"},
           {"type":"attr","id":12,"name":"value","value":"S3CR3T-I"}"#,
    );
    assert_clean(&json, "S3CR3T-H");
    assert_clean(&json, "S3CR3T-I");
}

#[test]
fn text_changes_in_masked_nodes_are_masked() {
    let mut r = relay();
    let json = batch(&mut r, r#"{"type":"text","id":6,"text":"S3CR3T-J"}"#);
    assert_clean(&json, "S3CR3T-J");
    assert!(
        json.contains(&format!(r#"{{"op":"text","id":6,"text":"{MASK}"}}"#)),
        "{json}"
    );
}

#[test]
fn input_events_on_masked_fields_are_not_forwarded() {
    let mut r = relay();
    let frame = r
        .changes(br#"{"changes":[{"type":"value","id":7,"value":"S3CR3T-K"},{"type":"value","id":4,"value":"S3CR3T-L"}]}"#)
        .unwrap();
    assert!(frame.is_empty(), "{frame:?}");
    assert_eq!(frame.stats().dropped_changes, 2);
    // A plain field's input is forwarded.
    let json = batch(&mut r, r#"{"type":"value","id":10,"value":"typed"}"#);
    assert!(json.contains(r#""value":"typed""#), "{json}");
}

#[test]
fn moving_a_masked_node_to_a_plain_parent_keeps_it_masked() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"remove","id":7},
           {"type":"add","parent":14,"prev":15,"nodes":[{"id":7,"tag":"input","attrs":{"type":"text"},"value":"S3CR3T-M"}]}"#,
    );
    assert_clean(&json, "S3CR3T-M");
    assert!(json.contains(MASK), "{json}");
    // Moved without a remove first (an add of a known id is a move).
    let json = batch(
        &mut r,
        r#"{"type":"add","parent":8,"nodes":[{"id":6,"text":"S3CR3T-N"}]}"#,
    );
    assert_clean(&json, "S3CR3T-N");
    assert!(json.contains(r#"{"op":"remove","id":6}"#), "{json}");
}

#[test]
fn removing_and_re_adding_the_same_id_keeps_it_masked() {
    let mut r = relay();
    batch(&mut r, r#"{"type":"remove","id":4}"#);
    assert_eq!(r.node_count(), 14);
    let json = batch(
        &mut r,
        r#"{"type":"add","parent":3,"nodes":[{"id":4,"tag":"input","attrs":{"type":"text","placeholder":"S3CR3T-O"},"value":"S3CR3T-P"}]}"#,
    );
    assert_clean(&json, "S3CR3T-O");
    assert_clean(&json, "S3CR3T-P");
}

#[test]
fn nodes_added_under_a_masked_ancestor_are_masked() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"add","parent":5,"prev":6,"nodes":[
            {"id":20,"tag":"span","attrs":{"title":"S3CR3T-Q"}},
            {"id":21,"parent":20,"text":"S3CR3T-R"},
            {"id":22,"parent":20,"tag":"textarea"},
            {"id":23,"parent":22,"text":"S3CR3T-S"}]}"#,
    );
    for s in ["S3CR3T-Q", "S3CR3T-R", "S3CR3T-S"] {
        assert_clean(&json, s);
    }
    for id in [20, 21, 22, 23] {
        assert!(r.is_masked(id));
    }
    let frame: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(frame["ops"][0]["op"], "insert");
    assert_eq!(frame["ops"][0]["parent"], 5);
    assert_eq!(frame["ops"][0]["prev"], 6);
}

#[test]
fn marking_a_visible_node_sensitive_replaces_it_masked_from_then_on() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"attr","id":14,"name":"data-sensitive","value":"true"}"#,
    );
    let frame: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(frame["ops"][0]["op"], "replace");
    assert!(!json.contains("plain text"), "{json}");
    let json = batch(
        &mut r,
        r#"{"type":"attr","id":14,"name":"data-sensitive","value":"false"},{"type":"text","id":15,"text":"S3CR3T-T"}"#,
    );
    assert_clean(&json, "S3CR3T-T");
}

#[test]
fn a_plain_field_turned_into_a_password_is_masked_and_stays_so() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"attr","id":10,"name":"type","value":"password"}"#,
    );
    assert!(json.contains(r#""op":"replace""#), "{json}");
    assert!(!json.contains("visible value"), "{json}");
    let json = batch(
        &mut r,
        r#"{"type":"attr","id":10,"name":"type","value":"text"},{"type":"value","id":10,"value":"S3CR3T-U"}"#,
    );
    assert_clean(&json, "S3CR3T-U");
}

#[test]
fn unknown_ids_are_dropped() {
    let mut r = relay();
    let frame = r
        .changes(
            br#"{"changes":[
            {"type":"attr","id":999,"name":"class","value":"x"},
            {"type":"text","id":998,"text":"x"},
            {"type":"add","parent":997,"nodes":[{"id":50,"text":"x"}]},
            {"type":"add","parent":2,"prev":996,"nodes":[{"id":51,"text":"x"}]},
            {"type":"remove","id":995},
            {"type":"value","id":994,"value":"x"},
            {"type":"scroll","id":993,"x":0,"y":10},
            {"type":"selection","anchor":992,"anchorOffset":0,"focus":9,"focusOffset":1},
            {"type":"teleport","id":9}
        ]}"#,
        )
        .unwrap();
    assert!(frame.is_empty(), "{frame:?}");
    assert_eq!(frame.stats().dropped_changes, 9);
    assert!(!r.is_masked(50));
    assert_eq!(r.node_count(), 15);
}

#[test]
fn selections_inside_masked_nodes_are_dropped() {
    let mut r = relay();
    let frame = r
        .changes(br#"{"changes":[{"type":"selection","anchor":6,"anchorOffset":0,"focus":6,"focusOffset":3},
                                 {"type":"selection","anchor":9,"anchorOffset":0,"focus":6,"focusOffset":3}]}"#)
        .unwrap();
    assert!(frame.is_empty());
    let json = batch(
        &mut r,
        r#"{"type":"selection","anchor":9,"anchorOffset":0,"focus":9,"focusOffset":5}"#,
    );
    assert!(
        json.contains(r#""op":"selection","anchor":9,"anchorOffset":0,"focus":9,"focusOffset":5"#),
        "{json}"
    );
    let json = batch(&mut r, r#"{"type":"selection"}"#);
    assert!(json.contains(r#""anchor":null"#), "{json}");
}

#[test]
fn scroll_pointer_and_viewport_are_forwarded() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"scroll","x":0,"y":120.5},{"type":"scroll","id":14,"x":3,"y":4},
           {"type":"pointer","x":10,"y":20,"kind":"click"},{"type":"viewport","width":1280,"height":800}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ops = v["ops"].as_array().unwrap();
    assert_eq!(ops.len(), 4, "{json}");
    assert_eq!(ops[0]["op"], "scroll");
    assert_eq!(ops[0]["id"], serde_json::Value::Null);
    assert_eq!(ops[2]["kind"], "click");
    assert_eq!(ops[3]["width"], 1280);
}

#[test]
fn added_content_is_sanitized() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"add","parent":2,"nodes":[{"id":30,"tag":"script"},{"id":31,"parent":30,"text":"alert(1)"}]},
           {"type":"add","parent":2,"prev":14,"nodes":[{"id":32,"tag":"img","attrs":{"src":"x.png","onerror":"alert(1)","srcset":"javascript:alert(1) 2x"}}]},
           {"type":"add","parent":2,"nodes":[{"id":33,"tag":"a","attrs":{"href":"jav\tascript:alert(1)","onclick":"x"}},{"id":34,"parent":33,"text":"<b>bold?</b>"}]},
           {"type":"attr","id":14,"name":"onclick","value":"alert(1)"},
           {"type":"attr","id":14,"name":"style","value":"background:url(javascript:alert(1));color:blue"},
           {"type":"text","id":31,"text":"alert(2)"}"#,
    );
    assert!(!json.contains("alert"), "{json}");
    assert!(!json.contains("javascript"), "{json}");
    assert!(
        json.contains(r#"src=\"https://shop.example/checkout/x.png\""#),
        "{json}"
    );
    assert!(
        json.contains("<!--34-->&lt;b&gt;bold?&lt;/b&gt;"),
        "text is never markup: {json}"
    );
    assert!(json.contains(r#""style":"color:blue""#), "{json}");
}

#[test]
fn style_text_changes_replace_the_sanitized_sheet() {
    let mut r = relay();
    let json = batch(
        &mut r,
        r#"{"type":"add","parent":2,"nodes":[{"id":40,"tag":"style"},{"id":41,"parent":40,"text":"p{color:red}"}]},
           {"type":"text","id":41,"text":"p{background:url(javascript:alert(1))} </style><script>alert(1)</script>"}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ops"][1]["op"], "replace", "{json}");
    assert!(!json.contains("javascript"), "{json}");
    assert!(!json.contains("<script"), "{json}");
}

#[test]
fn a_new_snapshot_keeps_the_stickiness_of_ids_seen_before() {
    let mut r = relay();
    let frame = r
        .snapshot(
            br#"{"nodes":[{"id":1,"tag":"html"},{"id":2,"parent":1,"tag":"body"},
                {"id":4,"parent":2,"tag":"input","attrs":{"type":"text"},"value":"S3CR3T-V"},
                {"id":6,"parent":2,"text":"S3CR3T-W"},{"id":60,"parent":2,"text":"fresh"}]}"#,
        )
        .unwrap();
    let html = frame.html().unwrap().as_str();
    assert!(
        !html.contains("S3CR3T-V") && !html.contains("S3CR3T-W"),
        "{html}"
    );
    assert!(html.contains("fresh"), "{html}");
    assert_eq!(frame.seq(), 2);
}

#[test]
fn over_limit_inputs_are_typed_errors_and_the_call_continues() {
    let mut r = relay();
    let big = vec![b' '; MAX_CHANGE_BATCH_BYTES + 1];
    assert!(matches!(
        r.changes(&big),
        Err(Error::ChangeBatchTooLarge { .. })
    ));
    let big = vec![b' '; MAX_SNAPSHOT_BYTES + 1];
    assert!(matches!(
        r.snapshot(&big),
        Err(Error::SnapshotTooLarge { .. })
    ));
    // The relay still works, with its tree intact.
    let json = batch(&mut r, r#"{"type":"text","id":9,"text":"still here"}"#);
    assert!(json.contains("still here"), "{json}");
}

#[test]
fn malformed_input_errors_never_echo_content() {
    let mut r = relay();
    let err = r
        .changes(br#"{"changes":[{"type":"text","id":"S3CR3T-X"}]}"#)
        .unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }));
    assert!(!err.to_string().contains("S3CR3T"), "{err}");
    let mut fresh = Relay::new(Policy::default());
    assert_eq!(
        fresh.changes(br#"{"changes":[]}"#).unwrap_err(),
        Error::NoSnapshot
    );
    assert_eq!(
        fresh.snapshot(br#"{"nodes":[]}"#).unwrap_err(),
        Error::NoRoot
    );
    assert_eq!(
        fresh
            .snapshot(br#"{"nodes":[{"id":1,"parent":3,"tag":"html"}]}"#)
            .unwrap_err(),
        Error::NoRoot
    );
}

#[test]
fn snapshots_deeper_than_the_limit_are_rejected() {
    let mut nodes = vec![r#"{"id":0,"tag":"html"}"#.to_string()];
    for i in 1..=(MAX_DEPTH as u64 + 1) {
        nodes.push(format!(r#"{{"id":{i},"parent":{},"tag":"div"}}"#, i - 1));
    }
    let json = format!(r#"{{"nodes":[{}]}}"#, nodes.join(","));
    let mut r = Relay::new(Policy::default());
    assert_eq!(
        r.snapshot(json.as_bytes()).unwrap_err(),
        Error::TooDeep { max: MAX_DEPTH }
    );
}

#[test]
fn frames_serialize_to_the_documented_json() {
    let mut r = relay();
    let frame = r
        .changes(
            br#"{"changes":[{"type":"text","id":9,"text":"a < b"},{"type":"remove","id":15}]}"#,
        )
        .unwrap();
    assert!(matches!(frame.ops()[0], AgentOp::Text { id: 9, .. }));
    let json = serde_json::to_string(&frame).unwrap();
    assert_eq!(
        json,
        r#"{"seq":2,"type":"changes","ops":[{"op":"text","id":9,"text":"a < b"},{"op":"remove","id":15}]}"#
    );
}

#[test]
fn unknown_ids_are_counted_apart_and_empty_frames_take_no_seq() {
    let mut r = relay();
    // A masked field's value: dropped, but the relay knows the node (no desync).
    let f = r
        .changes(br#"{"changes":[{"type":"value","id":4,"value":"S3CR3T-E"}]}"#)
        .unwrap();
    assert!(f.is_empty());
    assert_eq!((f.stats().dropped_changes, f.stats().unknown_ids), (1, 0));
    assert_eq!(f.seq(), 1, "an empty frame repeats the last seq");
    // Ids the relay never saw, as target, parent and prev.
    let f = r
        .changes(
            br#"{"changes":[
                {"type":"text","id":900,"text":"x"},
                {"type":"remove","id":901},
                {"type":"attr","id":902,"name":"class","value":"x"},
                {"type":"add","parent":903,"nodes":[{"id":50,"tag":"b"}]},
                {"type":"add","parent":8,"prev":904,"nodes":[{"id":51,"tag":"b"}]}
            ]}"#,
        )
        .unwrap();
    assert_eq!(f.stats().unknown_ids, 5);
    assert_eq!(f.seq(), 1);
    let f = r
        .changes(br#"{"changes":[{"type":"text","id":9,"text":"hi"}]}"#)
        .unwrap();
    assert_eq!(f.seq(), 2, "the next real frame follows without a gap");
    assert_eq!(r.stats().unknown_ids, 5);
}

#[test]
fn an_animation_named_later_never_animates_a_kept_javascript_url() {
    let mut r = Relay::new(Policy::default());
    let f = r
        .snapshot(
            br#"{"nodes":[{"id":1,"tag":"html"},{"id":2,"parent":1,"tag":"body"},
                {"id":3,"parent":2,"tag":"svg"},{"id":4,"parent":3,"tag":"a"},
                {"id":5,"parent":4,"tag":"animate","attrs":{"to":"javascript:alert(1)"}}]}"#,
        )
        .unwrap();
    assert!(!f.html().unwrap().as_str().contains("javascript"));
    let f = r
        .changes(br#"{"changes":[{"type":"attr","id":5,"name":"attributeName","value":"href"}]}"#)
        .unwrap();
    let json = serde_json::to_string(&f).unwrap();
    assert!(!json.contains("javascript"), "{json}");
}
