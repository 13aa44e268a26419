//! The examples of `PROTOCOL.md`, run.

use frontdesk_cobrowse::{Policy, Relay};

const SNAPSHOT: &str = r#"{
  "baseUrl": "https://shop.example/checkout/",
  "nodes": [
    {"id": 1, "tag": "html"},
    {"id": 2, "parent": 1, "tag": "head"},
    {"id": 3, "parent": 1, "tag": "body", "attrs": {"class": "checkout"}},
    {"id": 4, "parent": 3, "tag": "input", "attrs": {"type": "password", "name": "pw"}, "value": "hunter2"},
    {"id": 5, "parent": 3, "tag": "p"},
    {"id": 6, "parent": 5, "text": "Hello"},
    {"id": 7, "parent": 3, "tag": "input", "attrs": {"type": "checkbox"}, "checked": true},
    {"id": 8, "parent": 3}
  ]
}"#;

#[test]
fn the_documented_snapshot_gives_the_documented_frame() {
    let mut relay = Relay::new(Policy::default());
    let frame = relay.snapshot(SNAPSHOT.as_bytes()).unwrap();
    let json = serde_json::to_string(&frame).unwrap();
    assert_eq!(
        json,
        r#"{"seq":1,"type":"snapshot","html":"<!DOCTYPE html><html data-fd-id=\"1\"><head data-fd-id=\"2\"></head><body class=\"checkout\" data-fd-id=\"3\"><input type=\"password\" name=\"pw\" value=\"••••••••\" data-fd-masked=\"\" data-fd-id=\"4\"><p data-fd-id=\"5\"><!--6-->Hello</p><input type=\"checkbox\" checked=\"\" data-fd-id=\"7\"></body></html>"}"#
    );
}

#[test]
fn the_documented_change_batch_is_accepted() {
    let mut relay = Relay::new(Policy::default());
    relay.snapshot(SNAPSHOT.as_bytes()).unwrap();
    let batch = r#"{"changes": [
      {"type": "add", "parent": 5, "prev": 6, "nodes": [
        {"id": 20, "tag": "b"},
        {"id": 21, "parent": 20, "text": "new"}
      ]},
      {"type": "remove", "id": 8},
      {"type": "attr", "id": 3, "name": "class", "value": "checkout busy"},
      {"type": "attr", "id": 3, "name": "hidden", "value": null},
      {"type": "text", "id": 6, "text": "Hello again"},
      {"type": "value", "id": 4, "value": "hunter22"},
      {"type": "value", "id": 7, "checked": false},
      {"type": "scroll", "id": null, "x": 0, "y": 640},
      {"type": "scroll", "id": 5, "x": 0, "y": 10},
      {"type": "pointer", "x": 412.5, "y": 230, "kind": "click"},
      {"type": "viewport", "width": 1280, "height": 800},
      {"type": "selection", "anchor": 6, "anchorOffset": 0, "focus": 6, "focusOffset": 5},
      {"type": "selection"}
    ]}"#;
    let frame = relay.changes(batch.as_bytes()).unwrap();
    let json = serde_json::to_string(&frame).unwrap();
    assert!(!json.contains("hunter22"), "{json}");
    assert!(json.starts_with(r#"{"seq":2,"type":"changes","ops":[{"op":"insert","parent":5,"prev":6,"html":"<b data-fd-id=\"20\"><!--21-->new</b>"}"#), "{json}");
    assert!(
        json.contains(
            r#"{"op":"attrs","id":3,"attrs":{"class":"checkout busy","data-fd-id":"3"}}"#
        ),
        "{json}"
    );
    assert!(
        json.contains(r#"{"op":"text","id":6,"text":"Hello again"}"#),
        "{json}"
    );
    assert!(
        json.contains(r#"{"op":"value","id":7,"value":null,"checked":false}"#),
        "{json}"
    );
    assert!(
        json.contains(r#"{"op":"pointer","x":412.5,"y":230.0,"kind":"click"}"#),
        "{json}"
    );
    // 13 changes: the removal of a placeholder and the password's value give no op, and the
    // attribute removal of an absent attribute neither.
    assert_eq!(frame.ops().len(), 10, "{json}");
    assert_eq!(
        frame.stats().dropped_changes,
        1,
        "the masked field's value event"
    );
}
