//! The layer rule, checked: no module imports one of its own layer (other
//! than itself) or of a layer above. See CONTRIBUTING.md.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Top-level modules by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    &["kernel"],
    &["ebpf"],
    &["drops", "conntrack", "masq", "policy", "services"],
    &["lab", "cni"],
    &["demo", "exercises", "metrics", "flows"],
    &["output"],
    &["cli"],
    &["commands"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level modules named after `crate::` in `code`, including each
/// item of a `crate::{a::x, b}` group.
fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.push(first_ident(&item));
        } else {
            out.push(first_ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (file, module it names) that breaks the rule.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let top = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .unwrap_or_default();
        let Some(own) = layer_of(&top) else { continue };
        let code = fs::read_to_string(&file).unwrap_or_default();
        // Unit tests may reach for fixtures anywhere.
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        for module in crate_refs(code) {
            if module == top {
                continue;
            }
            match layer_of(&module) {
                Some(l) if l < own => {}
                Some(_) => bad.push(format!("{} uses crate::{module}", rel.display())),
                None => {}
            }
        }
    }
    bad.sort();
    bad
}

#[test]
fn no_module_imports_its_own_layer_or_one_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(bad.is_empty(), "layer rule broken:\n  {}", bad.join("\n  "));
}

#[test]
fn groups_and_paths_are_both_seen() {
    let refs = crate_refs(
        "use crate::{\n    cli::X,\n    kernel::{a, b},\n};\nfn f() { crate::lab::up(); }",
    );
    assert_eq!(refs, ["cli", "kernel", "lab"]);
    assert_eq!(layer_of("cli"), Some(6));
    assert!(layer_of("drops") == layer_of("masq"));
}

#[test]
fn aya_is_used_only_by_the_ebpf_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let bad: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("ebpf")) && !f.ends_with("layers.rs"))
        .filter(|f| {
            let code = fs::read_to_string(f).unwrap_or_default();
            let code = code.split("#[cfg(test)]").next().unwrap_or_default();
            code.contains("aya::") || code.contains("use aya")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(bad.is_empty(), "aya outside ebpf/: {bad:?}");
}
