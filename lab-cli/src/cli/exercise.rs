//! `labctl exercise` arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::values;
use crate::output::OutputFormat;

#[derive(Debug, Args)]
pub struct ExerciseArgs {
    #[command(subcommand)]
    pub command: ExerciseCommand,
}

/// Where the exercise and its attempt live.
#[derive(Debug, Clone, Args)]
pub struct AttemptArgs {
    /// The lab the exercise runs in (needed only when several run) [default: the only one].
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ExerciseCommand {
    /// The exercises: id, concept, difficulty, minutes.
    List(ExListArgs),
    /// Build the exercise's lab, break it, and print the story and tasks.
    Start(ExStartArgs),
    /// Tasks passed so far, hints used, time spent.
    Status(ExStatusArgs),
    /// The next hint (symptom, concept, where to look, the tool).
    Hint(ExPlainArgs),
    /// Check every task against the live lab: ✓ or ✗ with what was seen.
    Check(ExCheckArgs),
    /// Give an answer (exercises that ask a question), then run `check`.
    Answer(ExAnswerArgs),
    /// Show the reference solution (the attempt records that it was shown).
    Solution(ExPlainArgs),
    /// Rebuild the lab in its broken state (same parameters).
    Reset(ExPlainArgs),
    /// Tear the exercise's lab down and forget the attempt.
    Stop(ExPlainArgs),
    /// Write one Markdown handout per exercise into DIR.
    Export(ExExportArgs),
}

#[derive(Debug, Args)]
pub struct ExListArgs {
    /// Exercises from this directory (`*.toml`) instead of the shipped ones.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ExStartArgs {
    /// The exercise (see `labctl exercise list`).
    pub id: String,
    /// The lab to build it in; learners sharing a machine use different names [default: ex].
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// Exercises from this directory (`*.toml`) instead of the shipped ones.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Fix the randomized parameters (instructors, tests) [default: random].
    #[arg(long, hide = true)]
    pub seed: Option<u64>,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ExStatusArgs {
    #[command(flatten)]
    pub attempt: AttemptArgs,
    /// Output: text for people, json for scripts (instructors' dashboards).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ExCheckArgs {
    #[command(flatten)]
    pub attempt: AttemptArgs,
    /// Output: text for people, json for scripts (instructors' dashboards).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ExPlainArgs {
    #[command(flatten)]
    pub attempt: AttemptArgs,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ExAnswerArgs {
    /// The answer, e.g. `node1 NO_SOCKET`.
    #[arg(required = true, num_args = 1..)]
    pub words: Vec<String>,
    #[command(flatten)]
    pub attempt: AttemptArgs,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ExExportArgs {
    /// Write the handouts as Markdown into this directory.
    #[arg(long, value_name = "DIR")]
    pub markdown: PathBuf,
    /// Exercises from this directory (`*.toml`) instead of the shipped ones.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Output: text for people, json for scripts (the files written).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
