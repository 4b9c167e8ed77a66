//! Placeholders: an exercise file is parsed first, then each `{{name}}` is
//! filled in value by value. A string that is exactly one placeholder
//! becomes the parameter's value with its own type; inside a longer string
//! the value's text is put in. Nothing a parameter holds can change the
//! file's structure.

use std::collections::BTreeMap;

use super::model::{Choice, Param, Value};

/// The placeholders of one attempt, `lab` included.
pub type Vars = BTreeMap<String, Value>;

/// The name of a placeholder holding the lab's name.
pub const LAB: &str = "lab";

/// `{{name}}` → the variable; an unknown name is an error naming it.
pub fn fill(value: &toml::Value, vars: &Vars) -> Result<toml::Value, String> {
    Ok(match value {
        toml::Value::String(s) => fill_str(s, vars)?,
        toml::Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|v| fill(v, vars))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => {
            let mut out = toml::map::Map::new();
            for (k, v) in t {
                out.insert(k.clone(), fill(v, vars)?);
            }
            toml::Value::Table(out)
        }
        other => other.clone(),
    })
}

fn typed(v: &Value) -> toml::Value {
    match v {
        Value::Int(i) => toml::Value::Integer(*i),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Str(s) => toml::Value::String(s.clone()),
        Value::List(l) => toml::Value::Array(l.iter().cloned().map(toml::Value::String).collect()),
    }
}

fn fill_str(s: &str, vars: &Vars) -> Result<toml::Value, String> {
    let names = placeholders(s);
    if names.is_empty() {
        return Ok(toml::Value::String(s.to_owned()));
    }
    let lookup = |name: &str| {
        vars.get(name)
            .ok_or_else(|| format!("placeholder `{{{{{name}}}}}` has no parameter"))
    };
    if let [(0, end, name)] = names[..]
        && end == s.len()
    {
        return Ok(typed(lookup(name)?));
    }
    let mut out = String::new();
    let mut at = 0;
    for (start, end, name) in names {
        out.push_str(&s[at..start]);
        out.push_str(&lookup(name)?.text());
        at = end;
    }
    out.push_str(&s[at..]);
    Ok(toml::Value::String(out))
}

/// Every `{{name}}` in `s`: (start, end, name). Braces around anything
/// but a name are left as they are.
pub fn placeholders(s: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = s[from..].find("{{").map(|i| i + from) {
        let Some(close) = s[open + 2..].find("}}").map(|i| i + open + 2) else {
            break;
        };
        let name = &s[open + 2..close];
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            out.push((open, close + 2, name));
            from = close + 2;
        } else {
            from = open + 2;
        }
    }
    out
}

/// Every placeholder name used anywhere in `value`.
pub fn used(value: &toml::Value, into: &mut std::collections::BTreeSet<String>) {
    match value {
        toml::Value::String(s) => {
            for (_, _, name) in placeholders(s) {
                into.insert(name.to_owned());
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|v| used(v, into)),
        toml::Value::Table(t) => t.values().for_each(|v| used(v, into)),
        _ => {}
    }
}

fn set(vars: &mut Vars, name: &str, choice: &Choice) {
    match choice {
        Choice::Value(v) => {
            vars.insert(name.to_owned(), v.clone());
        }
        Choice::Table(t) => {
            for (k, v) in t {
                vars.insert(k.clone(), v.clone());
            }
        }
    }
}

fn base(lab: &str) -> Vars {
    BTreeMap::from([(LAB.to_owned(), Value::Str(lab.to_owned()))])
}

/// One choice of every parameter, picked with `seed`: one attempt.
pub fn choose(params: &BTreeMap<String, Param>, lab: &str, seed: u64) -> Vars {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut vars = base(lab);
    for (name, param) in params {
        if param.choices.is_empty() {
            continue;
        }
        set(
            &mut vars,
            name,
            &param.choices[rng.usize(..param.choices.len())],
        );
    }
    vars
}

/// Up to this many combinations, every one is a variant.
const ALL_COMBINATIONS: usize = 8;

/// The draws `selftest` and the tests run: every combination of choices
/// when there are few; otherwise enough variants that every choice of
/// every parameter appears (the i-th variant takes each parameter's
/// i-th choice, wrapping around).
pub fn variants(params: &BTreeMap<String, Param>, lab: &str) -> Vec<Vars> {
    let params: Vec<(&String, &Param)> = params
        .iter()
        .filter(|(_, p)| !p.choices.is_empty())
        .collect();
    let combinations = params
        .iter()
        .try_fold(1usize, |n, (_, p)| n.checked_mul(p.choices.len()));
    if let Some(n) = combinations.filter(|n| *n <= ALL_COMBINATIONS) {
        return (0..n)
            .map(|mut i| {
                let mut vars = base(lab);
                for (name, p) in &params {
                    set(&mut vars, name, &p.choices[i % p.choices.len()]);
                    i /= p.choices.len();
                }
                vars
            })
            .collect();
    }
    let widest = params
        .iter()
        .map(|(_, p)| p.choices.len())
        .max()
        .unwrap_or(1);
    (0..widest)
        .map(|i| {
            let mut vars = base(lab);
            for (name, p) in &params {
                set(&mut vars, name, &p.choices[i % p.choices.len()]);
            }
            vars
        })
        .collect()
}

/// The variant in one line: `mode=ebpf wrong=client`.
pub fn describe(vars: &Vars) -> String {
    let parts: Vec<String> = vars
        .iter()
        .filter(|(k, _)| k.as_str() != LAB)
        .map(|(k, v)| {
            let mut text = v.text();
            // A long value (a command) as its start.
            if text.chars().count() > 24 {
                text = text.chars().take(20).chain(['…']).collect();
            }
            if text.is_empty() || text.contains(' ') {
                format!("{k}=\"{text}\"")
            } else {
                format!("{k}={text}")
            }
        })
        .collect();
    if parts.is_empty() {
        "no parameters".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, Value)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn numbers_stay_numbers_and_quotes_cannot_break_the_file() {
        let v: toml::Value = toml::from_str(
            "port = \"{{port}}\"\ntext = \"to {{dst}} on {{port}}\"\npods = \"{{pods}}\"",
        )
        .unwrap();
        let filled = fill(
            &v,
            &vars(&[
                ("port", Value::Int(8443)),
                ("dst", Value::Str("a\"b' \\n".into())),
                ("pods", Value::List(vec!["web-1".into(), "web-2".into()])),
            ]),
        )
        .unwrap();
        assert_eq!(filled["port"], toml::Value::Integer(8443));
        assert_eq!(filled["text"].as_str(), Some("to a\"b' \\n on 8443"));
        assert_eq!(filled["pods"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let v = toml::Value::String("x {{nope}} y".into());
        assert!(fill(&v, &Vars::new()).unwrap_err().contains("{{nope}}"));
        // Not a name: left alone.
        let v = toml::Value::String("nft '{ type filter hook output priority 0; }' {{ }}".into());
        assert_eq!(fill(&v, &Vars::new()).unwrap(), v);
    }

    #[test]
    fn variants_cover_every_choice() {
        let p = |n: i64| Param {
            choices: (0..n).map(|i| Choice::Value(Value::Int(i))).collect(),
        };
        let few = BTreeMap::from([("a".to_owned(), p(2)), ("b".to_owned(), p(3))]);
        let all = variants(&few, "l");
        assert_eq!(all.len(), 6);
        let set: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(set.len(), 6, "all combinations, each once");
        let many = BTreeMap::from([
            ("a".to_owned(), p(3)),
            ("b".to_owned(), p(4)),
            ("c".to_owned(), p(2)),
        ]);
        let some = variants(&many, "l");
        assert_eq!(some.len(), 4);
        for (name, n) in [("a", 3), ("b", 4), ("c", 2)] {
            let seen: std::collections::BTreeSet<_> = some.iter().map(|v| &v[name]).collect();
            assert_eq!(seen.len(), n, "every choice of {name}");
        }
        assert_eq!(choose(&many, "l", 3), choose(&many, "l", 3));
    }
}
