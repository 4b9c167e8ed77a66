//! `cargo xtask docs`: man pages and shell completions into the target
//! directory, the Markdown command reference into docs/commands.md (all from
//! labctl's clap definitions), then a check that every relative link of the
//! Markdown pages resolves.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, run};

pub fn docs(root: &Path) -> Result<()> {
    run(cmd::cargo(root).args(["build", "--package", "lab-cli", "--bin", "labctl"]))?;
    let target = cmd::target_dir(root)?;
    let labctl = target.join("debug/labctl");
    let output = |args: &[&str]| -> Result<Vec<u8>> {
        let out = cmd::new(&labctl)
            .args(args)
            .output()
            .with_context(|| format!("cannot run labctl {}", args.join(" ")))?;
        if !out.status.success() {
            bail!("labctl {} failed ({})", args.join(" "), out.status);
        }
        Ok(out.stdout)
    };
    let man = target.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    let pages = String::from_utf8(output(&["man", "--list"])?).context("page names")?;
    for page in pages.lines() {
        let path = man.join(format!("{page}.1"));
        std::fs::write(&path, output(&["man", page])?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let completions = target.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("cannot create {}", completions.display()))?;
    for (shell, file) in [
        ("bash", "labctl"),
        ("zsh", "_labctl"),
        ("fish", "labctl.fish"),
    ] {
        let path = completions.join(file);
        std::fs::write(&path, output(&["completions", shell])?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let reference = root.join("docs/commands.md");
    std::fs::write(&reference, output(&["man", "--markdown"])?)
        .with_context(|| format!("cannot write {}", reference.display()))?;
    // The exercise format: its JSON Schema beside the exercises, and its
    // page, both generated from lab-cli/src/exercises/model.rs.
    for (file, args) in [
        (
            "exercises/exercise.schema.json",
            &["exercise", "schema"][..],
        ),
        (
            "docs/exercise-format.md",
            &["exercise", "schema", "--markdown"][..],
        ),
    ] {
        let path = root.join(file);
        std::fs::write(&path, output(args)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "xtask: {} man pages in {} (try: man -l {}/labctl.1), completions in {}, the command reference in {}",
        pages.lines().count(),
        man.display(),
        man.display(),
        completions.display(),
        reference.display()
    );
    let broken = broken_links(root)?;
    if !broken.is_empty() {
        bail!("broken links in the docs:\n  {}", broken.join("\n  "));
    }
    println!("xtask: every relative link in README.md, CONTRIBUTING.md and docs/ resolves");
    Ok(())
}

/// The Markdown pages whose links are checked: README.md, CONTRIBUTING.md
/// and docs/*.md.
fn pages(root: &Path) -> Result<Vec<PathBuf>> {
    let mut pages = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    let dir = root.join("docs");
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut docs = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    docs.sort();
    pages.extend(docs);
    Ok(pages)
}

/// Every relative link (`[text](path)`, `[text](path#anchor)`,
/// `[text](#anchor)`) of the pages that names a file that does not exist, or
/// a heading that its page does not have, as `page:line: target (why)`.
/// Links to other sites are not followed.
pub fn broken_links(root: &Path) -> Result<Vec<String>> {
    let mut broken = Vec::new();
    for page in pages(root)? {
        let text = std::fs::read_to_string(&page)
            .with_context(|| format!("cannot read {}", page.display()))?;
        let dir = page.parent().unwrap_or(root);
        let shown = page
            .strip_prefix(root)
            .unwrap_or(&page)
            .display()
            .to_string();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            if !path.exists() {
                broken.push(format!("{shown}:{line}: {target} (no such file)"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if path.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let linked = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !anchors(&linked).contains(anchor) {
                broken.push(format!("{shown}:{line}: {target} (no such heading)"));
            }
        }
    }
    Ok(broken)
}

/// Lines outside fenced code blocks, with their numbers, inline code
/// spans blanked out.
fn prose(text: &str) -> impl Iterator<Item = (usize, String)> + '_ {
    let mut fenced = false;
    text.lines().enumerate().filter_map(move |(i, line)| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return None;
        }
        if fenced {
            return None;
        }
        let mut out = String::with_capacity(line.len());
        let mut code = false;
        for c in line.chars() {
            if c == '`' {
                code = !code;
                out.push(' ');
            } else {
                out.push(if code { ' ' } else { c });
            }
        }
        Some((i + 1, out))
    })
}

/// The targets of `[text](target)` links, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (line, prose) in prose(text) {
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].trim();
            // `[text](target "title")`: the target is the first word.
            let target = target.split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            if !target.is_empty() {
                out.push((line, target.to_owned()));
            }
            rest = &after[end..];
        }
    }
    out
}

/// The anchors of a page's headings, as GitHub makes them: lowercase,
/// spaces as dashes, punctuation other than `-` and `_` dropped; a
/// repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                '-' | '_' => Some(c),
                c if c.is_alphanumeric() => Some(c),
                _ => None,
            })
            .flat_map(char::to_lowercase)
            .collect();
        let mut anchor = slug.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{slug}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relative_link_in_the_docs_resolves() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask is inside the workspace");
        let broken = broken_links(root).expect("the pages can be read");
        assert!(
            broken.is_empty(),
            "broken links (fix them, or run `cargo xtask docs` after moving a page):\n  {}",
            broken.join("\n  ")
        );
    }

    #[test]
    fn links_outside_code_are_found_with_their_lines() {
        let text = "see [trace](docs/trace.md) and [x](#y \"t\")\n\
                    ```\n[not](a-link.md)\n```\n\
                    `[not](either.md)` [site](https://example.invalid/)\n";
        assert_eq!(
            links(text),
            [
                (1, "docs/trace.md".to_owned()),
                (1, "#y".to_owned()),
                (5, "https://example.invalid/".to_owned()),
            ]
        );
    }

    #[test]
    fn anchors_follow_githubs_rules() {
        let text = "# labctl\n## `labctl trace`\n### Naming namespaces: `--netns`\n\
                    ## Exit codes\n## Exit codes\n```\n# not a heading\n```\n";
        let got: Vec<_> = anchors(text).into_iter().collect();
        assert_eq!(
            got,
            [
                "exit-codes",
                "exit-codes-1",
                "labctl",
                "labctl-trace",
                "naming-namespaces---netns",
            ]
        );
    }
}
