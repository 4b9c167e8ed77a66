//! `labctl exercise export DIR`: two documents per exercise, in Markdown:
//! the participant handout (story and tasks, hints optional; never the
//! cause) and the instructor notes (cause, solution, alternatives,
//! shortcuts and why they are wrong, guards, wrong turns, debrief, every
//! draw of the parameters).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::{
    DEFAULT_LAB, ExerciseError,
    catalog::{self, Source},
    model::{Action, Exercise},
    template,
};
use crate::kernel::safefile::{Dir, SafeFileError};

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] SafeFileError),
    #[error(transparent)]
    Render(Box<ExerciseError>),
}

fn sample(source: &Source) -> Result<Exercise, ExerciseError> {
    Ok(catalog::instantiate(
        source,
        &catalog::choose(source, DEFAULT_LAB, 0),
    )?)
}

fn header(md: &mut String, ex: &Exercise) {
    md.push_str(&format!(
        "# {} (`{}`)\n\n*{}* · {} · about {} minutes\n\n",
        ex.title,
        ex.id,
        ex.concept,
        format!("{:?}", ex.difficulty).to_lowercase(),
        ex.minutes,
    ));
}

fn commands(md: &mut String, actions: &[Action]) {
    md.push_str("```sh\n");
    for a in actions {
        md.push_str(&a.command_line(DEFAULT_LAB));
        md.push('\n');
    }
    md.push_str("```\n");
}

/// The participant's page: what they see at `exercise start`, and (with
/// `hints`) the hints. Never the cause.
pub fn handout(source: &Source, hints: bool) -> Result<String, ExerciseError> {
    let ex = sample(source)?;
    let mut md = String::new();
    header(&mut md, &ex);
    md.push_str(&format!(
        "Start: `sudo labctl exercise start {}`\n\n## Story\n\n{}\n",
        ex.id,
        ex.story.trim()
    ));
    if !source.header.params.is_empty() {
        md.push_str("\n(Names and numbers above are one draw: `exercise start` prints yours.)\n");
    }
    md.push_str("\n## Tasks\n\n");
    for t in &ex.tasks {
        let keep = if t.keep_working {
            " (keep it working)"
        } else {
            ""
        };
        md.push_str(&format!("- {}{keep}\n", t.title));
    }
    if !ex.guards.is_empty() {
        md.push_str("\nThe check also makes sure that:\n\n");
        for g in &ex.guards {
            md.push_str(&format!("- {}\n", g.title));
        }
    }
    md.push_str("\nCheck with `sudo labctl exercise check`; a hint at a time with `labctl exercise hint`.\n");
    if hints {
        md.push_str("\n## Hints\n\n");
        for (i, h) in ex.hints.iter().enumerate() {
            md.push_str(&format!("{}. {}\n", i + 1, h.trim()));
        }
    }
    Ok(md)
}

/// The instructor's page.
pub fn instructor_notes(source: &Source) -> Result<String, ExerciseError> {
    let ex = sample(source)?;
    let mut md = String::new();
    header(&mut md, &ex);
    md.push_str(&format!(
        "Scenario `{}`. Instructors only: this page gives the cause away.\n\n## Story (as participants read it)\n\n{}\n\n## Cause and solution\n\n{}\n\n",
        ex.scenario,
        ex.story.trim(),
        ex.solution.explanation.trim()
    ));
    commands(&mut md, &ex.solution.actions);
    let draws = template::variants(&source.header.params, DEFAULT_LAB);
    if draws.len() > 1 {
        md.push_str("\n### Every draw\n\n");
        for vars in &draws {
            let ex = catalog::instantiate(source, vars)?;
            md.push_str(&format!("- {}:\n", template::describe(vars)));
            for a in &ex.solution.actions {
                md.push_str(&format!("  `{}`\n", a.command_line(DEFAULT_LAB)));
            }
        }
    }
    if !ex.alternatives.is_empty() {
        md.push_str("\n## Other fixes that pass\n");
        for f in &ex.alternatives {
            md.push_str(&format!("\n**{}**\n\n", f.name));
            commands(&mut md, &f.actions);
        }
    }
    if !ex.shortcuts.is_empty() {
        md.push_str("\n## Shortcuts that fail a guard\n");
        for s in &ex.shortcuts {
            md.push_str(&format!("\n**{}**: {}\n\n", s.name, s.why.trim()));
            commands(&mut md, &s.actions);
        }
    }
    if !ex.guards.is_empty() {
        md.push_str("\n## Guards\n\n");
        for g in &ex.guards {
            md.push_str(&format!("- {}: {}\n", g.title, g.why.trim()));
        }
    }
    if let Some(max) = ex.max_answers {
        md.push_str(&format!(
            "\nAnswers are capped at {max}; `labctl exercise status` shows every answer given.\n"
        ));
    }
    md.push_str("\n## Hints\n\n");
    for (i, h) in ex.hints.iter().enumerate() {
        md.push_str(&format!("{}. {}\n", i + 1, h.trim()));
    }
    if !ex.wrong_turns.is_empty() {
        md.push_str("\n## Common wrong turns\n\n");
        for w in &ex.wrong_turns {
            md.push_str(&format!("- {}\n", w.trim()));
        }
    }
    if !ex.debrief.is_empty() {
        md.push_str("\n## Debrief\n\n");
        for d in &ex.debrief {
            md.push_str(&format!("- {}\n", d.trim()));
        }
    }
    Ok(md)
}

/// Writes `ID.handout.md` and `ID.instructor.md` for every exercise into
/// `dir` (created if missing), each through a temporary file renamed into
/// place: a planted link is replaced, not followed.
pub fn export(sources: &[Source], dir: &Path, hints: bool) -> Result<Vec<PathBuf>, ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Create {
        path: dir.to_owned(),
        source,
    })?;
    let out = Dir::user(dir)?;
    let mut written = Vec::new();
    for s in sources {
        let render = |e| ExportError::Render(Box::new(e));
        for (suffix, text) in [
            ("handout", handout(s, hints).map_err(render)?),
            ("instructor", instructor_notes(s).map_err(render)?),
        ] {
            let name = OsString::from(format!("{}.{suffix}.md", s.id()));
            out.write(&name, text.as_bytes(), 0o644)?;
            written.push(dir.join(name));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handout_never_gives_the_cause_away() {
        for s in catalog::shipped().unwrap() {
            let h = handout(&s, true).unwrap();
            let notes = instructor_notes(&s).unwrap();
            let ex = sample(&s).unwrap();
            let cause = ex.solution.explanation.trim();
            assert!(!h.contains(cause), "{}", s.id());
            assert!(notes.contains(cause), "{}", s.id());
            // (An answer's forms are in the story by design.)
            for a in ex
                .solution
                .actions
                .iter()
                .filter(|a| !matches!(a, Action::Answer { .. }))
            {
                assert!(!h.contains(&a.command_line(DEFAULT_LAB)), "{}", s.id());
            }
            for sc in &ex.shortcuts {
                assert!(notes.contains(&sc.why.trim()[..20.min(sc.why.trim().len())]));
            }
        }
    }

    #[test]
    fn export_creates_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("room/a");
        let sources = catalog::shipped().unwrap();
        let written = export(&sources, &target, false).unwrap();
        assert_eq!(written.len(), 2 * sources.len());
        assert!(target.join("find-the-drop.instructor.md").is_file());
    }
}
