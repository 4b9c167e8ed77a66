//! The exercise format, described: a JSON Schema generated from the types
//! in `model` (editors complete and check the fields of a TOML file with
//! it, through taplo or Even Better TOML), and `docs/exercise-format.md`
//! generated from that schema, with one example per check kind. Both are
//! checked in and compared with what the code generates (unit tests);
//! `cargo xtask docs` rewrites them.

use serde_json::{Map, Value, json};

use super::model::{Check, Exercise};

/// Where a placeholder may stand in for a value of another type.
const PLACEHOLDER: &str = "Placeholder";

/// The JSON Schema of an exercise file. Every number, boolean, list and
/// word from a fixed set may also be a `{{placeholder}}` (filled in from
/// the parameters after parsing).
pub fn json_schema() -> Value {
    let mut schema = schemars::schema_for!(Exercise).to_value();
    let defs = schema
        .as_object_mut()
        .and_then(|o| o.get_mut("$defs"))
        .and_then(Value::as_object_mut);
    if let Some(defs) = defs {
        for def in defs.values_mut() {
            allow_placeholders(def, true);
        }
        defs.insert(
            PLACEHOLDER.to_owned(),
            json!({
                "description": "`{{name}}`: a parameter's value, filled in after parsing",
                "type": "string",
                "pattern": "^\\{\\{[a-z0-9_]+\\}\\}$"
            }),
        );
    }
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for p in props.values_mut() {
            allow_placeholders(p, false);
        }
    }
    schema
}

/// Whether `s` accepts something other than free text (a number, a
/// boolean, a list, a word from a set).
fn typed(s: &Map<String, Value>) -> bool {
    let non_string = |t: &Value| {
        t.as_str()
            .is_some_and(|t| t != "string" && t != "null" && t != "object")
    };
    match s.get("type") {
        Some(Value::String(_)) if s.get("type").is_some_and(non_string) => true,
        Some(Value::Array(types)) => types.iter().any(non_string),
        _ => s.contains_key("enum") || s.contains_key("const") && !s.contains_key("type"),
    }
}

/// Wraps every typed value below `v` as `anyOf: [it, Placeholder]`.
/// `enum_def`: `v` is a definition (an enum of words may be a placeholder).
fn allow_placeholders(v: &mut Value, enum_def: bool) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    // Tags (`check = "probe"`) stay literal: they choose the variant.
    if obj.contains_key("const") {
        return;
    }
    for key in ["properties", "$defs"] {
        if let Some(props) = obj.get_mut(key).and_then(Value::as_object_mut) {
            for p in props.values_mut() {
                allow_placeholders(p, false);
            }
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(items) = obj.get_mut(key).and_then(Value::as_array_mut) {
            let words = items.iter().all(|i| i.get("const").is_some());
            if words && enum_def {
                let description = obj.get("description").cloned();
                let inner = Value::Object(std::mem::take(obj));
                wrap(obj, inner, description);
                return;
            }
            for i in items {
                allow_placeholders(i, false);
            }
        }
    }
    if let Some(items) = obj.get_mut("items") {
        allow_placeholders(items, false);
    }
    if typed(obj) {
        let description = obj.remove("description");
        let inner = Value::Object(std::mem::take(obj));
        wrap(obj, inner, description);
    }
}

fn wrap(obj: &mut Map<String, Value>, inner: Value, description: Option<Value>) {
    if let Some(d) = description {
        obj.insert("description".into(), d);
    }
    obj.insert(
        "anyOf".into(),
        json!([inner, { "$ref": format!("#/$defs/{PLACEHOLDER}") }]),
    );
}

/// One example per check kind, shown in the documentation (each parses as
/// a check: a unit test makes sure).
pub const CHECK_EXAMPLES: &[(&str, &str)] = &[
    (
        "probe",
        r#"{ check = "probe", from = "pod-a", to = "world", proto = "tcp", seen_as = "node1" }"#,
    ),
    (
        "drops",
        r#"{ check = "drops", in = "node1", reason = "IP_RPFILTER", during = { send = "spoofed", from = "node2", src = "10.244.1.3", to = "10.99.0.1" } }"#,
    ),
    (
        "conntrack",
        r#"{ check = "conntrack", in = "node1", proto = "udp", dport = 5001, snat = true, at_most = 0 }"#,
    ),
    (
        "sysctl",
        r#"{ check = "sysctl", in = "node1", key = "net.netfilter.nf_conntrack_udp_timeout", at_least = 3600 }"#,
    ),
    (
        "route",
        r#"{ check = "route", in = "node1", to = "pod-b", dev = "vxlan0" }"#,
    ),
    (
        "unchanged",
        r#"{ check = "unchanged", in = "node1", table = "ip hardening" }"#,
    ),
    (
        "verdict",
        r#"{ check = "verdict", from = { namespace = "default", labels = { org = "empire" } }, to = "coredns", proto = "udp", port = 53, allowed = true }"#,
    ),
    (
        "service",
        r#"{ check = "service", name = "web", backends = ["web-1", "web-2", "web-3"] }"#,
    ),
    (
        "answer",
        r#"{ check = "answer", expect = "{{member}} {{reason}}" }"#,
    ),
    (
        "wire",
        r#"{ check = "wire", from = "client", to = "web", expect = "vip" }"#,
    ),
    (
        "script",
        r#"{ check = "script", in = "node1", command = "nft list chain ip labctl postrouting | grep -q masquerade" }"#,
    ),
];

/// A whole (small) exercise, as the documentation's first example.
pub const EXAMPLE: &str = r#"id = "forwarding-off"
title = "The node stopped routing"
concept = "a node routes pod traffic: IP forwarding"
difficulty = "easy"
minutes = 10
scenario = "basic"

break = [
    { action = "run", in = "node1", command = "sysctl -qw net.ipv4.ip_forward=0" },
]

story = """
Since a hardening script ran on the node of lab `{{lab}}`, pods cannot
reach the world (`labctl lab traffic --lab {{lab}} pod-a world --proto tcp`).
"""

hints = [
    "Watch the drops while a pod sends: `sudo labctl trace --netns {{lab}}/node1`.",
]

[[tasks]]
id = "egress"
title = "pod-a reaches the world over TCP, seen as the node"
checks = [
    { check = "probe", from = "pod-a", to = "world", proto = "tcp", seen_as = "node1" },
]

[[guards]]
title = "nothing else on the node changed"
why = "The story asks to undo nothing else the hardening did."
checks = [
    { check = "unchanged", in = "node1" },
]

[solution]
explanation = "IP forwarding was turned off; turn it back on."
actions = [
    { action = "run", in = "node1", command = "sysctl -qw net.ipv4.ip_forward=1" },
]

[[shortcuts]]
name = "forwarding on, plus a route of one's own"
why = "It changes the node's routes, which the hardening set."
actions = [
    { action = "run", in = "node1", command = "sysctl -qw net.ipv4.ip_forward=1 && ip route add 192.0.2.0/24 dev eth0" },
]
"#;

fn def<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    schema.get("$defs")?.get(name)
}

/// A schema's type, in words.
fn type_words(schema: &Value, s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        if name == PLACEHOLDER {
            return "placeholder".into();
        }
        if let Some(d) = def(schema, name) {
            let words = enum_words(d);
            if !words.is_empty() {
                return format!("one of {}", words.join(", "));
            }
            // An untagged union (a parameter's value): its members inline.
            if d.get("anyOf").is_some() && d.get("properties").is_none() {
                return type_words(schema, d);
            }
        }
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> = any
            .iter()
            .map(|a| type_words(schema, a))
            .filter(|t| t != "null" && t != "placeholder")
            .collect();
        return parts.join(" or ");
    }
    let words = enum_words(s);
    if !words.is_empty() {
        return format!("one of {}", words.join(", "));
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("any")
            .to_owned(),
        _ => "any".to_owned(),
    };
    match kind.as_str() {
        "array" => match s.get("items") {
            Some(items) => format!("list of {}", type_words(schema, items)),
            None => "list".into(),
        },
        "object" => match s.get("additionalProperties") {
            Some(v @ Value::Object(_)) => format!("table of {}", type_words(schema, v)),
            _ => "table".into(),
        },
        "integer" => "number".into(),
        "number" => "number (decimals allowed)".into(),
        "string" => "text".into(),
        other => other.into(),
    }
}

/// The words of an enum (`"easy"`, ...), quoted; none when not an enum.
fn enum_words(s: &Value) -> Vec<String> {
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .filter_map(Value::as_str)
            .map(|w| format!("`{w}`"))
            .collect();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(items) = s.get(key).and_then(Value::as_array) {
            let items: Vec<&Value> = items
                .iter()
                .filter(|i| {
                    i.get("$ref").and_then(Value::as_str) != Some(&format!("#/$defs/{PLACEHOLDER}"))
                })
                .collect();
            let words: Vec<String> = items
                .iter()
                .flat_map(|i| {
                    i.get("const")
                        .and_then(Value::as_str)
                        .map(|w| vec![format!("`{w}`")])
                        .unwrap_or_else(|| enum_words(i))
                })
                .collect();
            if !words.is_empty()
                && items
                    .iter()
                    .all(|i| i.get("const").is_some() || !enum_words(i).is_empty())
            {
                return words;
            }
        }
    }
    Vec::new()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A table of an object schema's fields (the tag `skip` left out).
fn fields(schema: &Value, s: &Value, skip: Option<&str>, out: &mut String) {
    let mut props: Vec<(String, Value)> = Vec::new();
    let mut required: Vec<String> = Vec::new();
    let mut collect = |s: &Value| {
        if let Some(p) = s.get("properties").and_then(Value::as_object) {
            props.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(r) = s.get("required").and_then(Value::as_array) {
            required.extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    };
    collect(s);
    // A variant wrapping a struct: its fields are the struct's.
    if let Some(r) = s.get("$ref").and_then(Value::as_str)
        && let Some(d) = def(schema, r.rsplit('/').next().unwrap_or(r))
    {
        collect(d);
    }
    out.push_str("| field | type | required | meaning |\n| --- | --- | --- | --- |\n");
    for (name, p) in props {
        if Some(name.as_str()) == skip {
            continue;
        }
        let description = p
            .get("description")
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{name}` | {} | {} | {} |\n",
            type_words(schema, &p),
            if required.contains(&name) { "yes" } else { "" },
            description.replace('|', "\\|")
        ));
    }
}

/// The variants of a tagged enum: (tag value, description, schema).
fn variants<'a>(s: &'a Value, tag: &str) -> Vec<(String, String, &'a Value)> {
    s.get("oneOf")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| {
                    let name = v
                        .get("properties")?
                        .get(tag)?
                        .get("const")?
                        .as_str()?
                        .to_owned();
                    let description = v
                        .get("description")
                        .and_then(Value::as_str)
                        .map(one_line)
                        .unwrap_or_default();
                    Some((name, description, v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `docs/exercise-format.md`.
pub fn markdown() -> String {
    let schema = json_schema();
    let mut out = String::from(
        "<!-- Generated by `cargo xtask docs` (labctl exercise schema --markdown) from \
         lab-cli/src/exercises/model.rs: do not edit. -->\n\n\
         # The exercise file format\n\n\
         An exercise is one TOML file. The shipped ones live in `exercises/` (every \
         `*.toml` there is built into labctl); an instructor's own run with `--dir DIR`. \
         Check a file with `labctl exercise lint --dir DIR`, run its whole protocol \
         with `sudo labctl exercise selftest ID --dir DIR`. Editors complete and check \
         the fields with the JSON Schema `exercises/exercise.schema.json` (for Even \
         Better TOML / taplo: `#:schema ./exercise.schema.json` as the first line).\n\n\
         ## Placeholders\n\n\
         `{{name}}` anywhere in a string is replaced by the attempt's value of \
         parameter `name` (see `params`), and `{{lab}}` by the lab's name. \
         Placeholders are filled in after the file is parsed, value by value: a \
         string that is exactly one placeholder takes the parameter's own type \
         (`port = \"{{port}}\"` becomes the number 8443, `pods = \"{{pods}}\"` a \
         list), and no value can break the file. Every parameter is used somewhere, \
         and every placeholder has a parameter (the lint checks both, for every \
         draw).\n\n\
         ## A whole exercise\n\n```toml\n",
    );
    out.push_str(EXAMPLE);
    out.push_str("```\n\n## Top level\n\n");
    fields(&schema, &schema, None, &mut out);
    for (name, tag) in [
        ("Action", "action"),
        ("Check", "check"),
        ("Traffic", "send"),
    ] {
        let Some(d) = def(&schema, name) else {
            continue;
        };
        out.push_str(&format!("\n## {name}\n\nChosen with `{tag} = ...`. "));
        if let Some(desc) = d.get("description").and_then(Value::as_str) {
            out.push_str(&format!("{}\n", one_line(desc)));
        }
        for (variant, description, v) in variants(d, tag) {
            out.push_str(&format!(
                "\n### `{tag} = \"{variant}\"`\n\n{description}\n\n"
            ));
            fields(&schema, v, Some(tag), &mut out);
            if name == "Check"
                && let Some((_, example)) = CHECK_EXAMPLES.iter().find(|(k, _)| *k == variant)
            {
                out.push_str(&format!(
                    "\nExample:\n\n```toml\nchecks = [\n    {example},\n]\n```\n"
                ));
            }
        }
    }
    out.push_str("\n## Tables\n\nThe other tables of the file.\n");
    for name in [
        "Task",
        "Guard",
        "Solution",
        "Fix",
        "Shortcut",
        "Param",
        "LabSettings",
        "Probe",
    ] {
        let Some(d) = def(&schema, name) else {
            continue;
        };
        out.push_str(&format!("\n### {name}\n\n"));
        if let Some(desc) = d.get("description").and_then(Value::as_str) {
            out.push_str(&format!("{}\n\n", one_line(desc)));
        }
        fields(&schema, d, None, &mut out);
    }
    out
}

/// Every check kind has an example, and each example parses.
pub fn examples_parse() -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct One {
        checks: Vec<Check>,
    }
    for (kind, example) in CHECK_EXAMPLES {
        let text = format!("checks = [{example}]");
        let one: One = toml::from_str(&text).map_err(|e| format!("{kind}: {e}"))?;
        let tag = serde_json::to_value(&one.checks[0])
            .ok()
            .and_then(|v| v.get("check").and_then(Value::as_str).map(str::to_owned));
        if tag.as_deref() != Some(kind) {
            return Err(format!("the example for {kind} is a {tag:?} check"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path)
    }

    #[test]
    fn every_check_kind_has_an_example_that_parses() {
        examples_parse().unwrap();
        let kinds: Vec<String> = variants(def(&json_schema(), "Check").unwrap(), "check")
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        assert_eq!(kinds.len(), CHECK_EXAMPLES.len());
        for k in kinds {
            assert!(CHECK_EXAMPLES.iter().any(|(e, _)| *e == k), "{k}");
        }
        let ex: Exercise = toml::from_str(&EXAMPLE.replace("{{lab}}", "ex")).unwrap();
        assert_eq!(ex.id, "forwarding-off");
    }

    #[test]
    fn the_checked_in_schema_and_format_are_current() {
        let schema = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
        let on_disk =
            std::fs::read_to_string(repo("exercises/exercise.schema.json")).unwrap_or_default();
        assert!(
            on_disk == schema,
            "exercises/exercise.schema.json is out of date: run `cargo xtask docs`"
        );
        let md = std::fs::read_to_string(repo("docs/exercise-format.md")).unwrap_or_default();
        assert!(
            md == markdown(),
            "docs/exercise-format.md is out of date: run `cargo xtask docs`"
        );
    }

    #[test]
    fn placeholders_are_allowed_where_numbers_and_words_go() {
        let s = json_schema().to_string();
        assert!(s.contains(PLACEHOLDER));
        // The tag stays a literal.
        let check = def(&json_schema(), "Check").unwrap().to_string();
        assert!(check.contains("\"const\":\"probe\""));
    }
}
