//! `labctl cni`: the plugin a runtime calls, and `labctl cni log`.

use std::{
    io::{Read as _, Write},
    os::fd::AsFd as _,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    cli::cni::{CniArgs, CniCommand, CniLogArgs},
    cni::{
        calllog::{self, Record},
        plugin::{self, Outcome as CallOutcome},
        spec::{CniError, Env, code},
    },
    kernel::interrupt::Stop,
    output::{OutputFormat, exit::Outcome, width},
};

/// How much of stdin a config may take.
const MAX_STDIN: usize = 1 << 20;
/// How long the plugin waits for the runtime to finish writing stdin.
const STDIN_WAIT: Duration = Duration::from_secs(30);

pub fn run(args: CniArgs) -> anyhow::Result<Outcome> {
    match args.command {
        None => Ok(plugin_main()),
        Some(CniCommand::Log(args)) => log(args),
    }
}

/// The plugin, as a runtime runs it: environment and stdin in, the result
/// or error object out; exit 0 or 1. Every call is logged.
pub fn plugin_main() -> Outcome {
    let (started, at) = (Instant::now(), SystemTime::now());
    let env = Env::read(|k| std::env::var(k).ok());
    let (stdin, outcome) = if env.command.is_empty() {
        // Nobody set the contract up: do not wait on a terminal.
        (Vec::new(), plugin::call(&env, b""))
    } else {
        match read_stdin() {
            Ok(stdin) => {
                let outcome = plugin::call(&env, &stdin);
                (stdin, outcome)
            }
            Err(e) => (
                Vec::new(),
                CallOutcome {
                    verb: None,
                    version: crate::cni::spec::CURRENT.to_owned(),
                    result: Err(e),
                },
            ),
        }
    };
    let record = Record::new(&env, &stdin, &outcome, started.elapsed(), at);
    if let Err(e) = calllog::append(&calllog::dir_path(), &record) {
        eprintln!("{}", width::fill(&e.to_string(), "warning: ", "  "));
    }
    let text = outcome.stdout();
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("cannot write the result to stdout: {e}");
        return Outcome::Negative;
    }
    if let Err(e) = &outcome.result {
        tracing::info!("{e}");
        return Outcome::Negative;
    }
    Outcome::Success
}

/// Stdin to its end, bounded in size and time (a runtime writes the config
/// and closes it; a person at a terminal ends it with Ctrl-D).
fn read_stdin() -> Result<Vec<u8>, CniError> {
    let io = |e: std::io::Error| {
        CniError::new(
            code::IO,
            "the plugin could not read the network configuration from stdin",
            e,
        )
    };
    let stop = Stop::new().duration(Some(STDIN_WAIT));
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let ready = stop
            .readable(&[std::io::stdin().as_fd()], Duration::from_millis(200))
            .map_err(io)?;
        if stop.stopped() && !ready {
            return Err(CniError::new(
                code::IO,
                "stdin was not closed in time: a runtime writes the network configuration on stdin and closes it",
                format!("no end of stdin after {}s", STDIN_WAIT.as_secs()),
            ));
        }
        if !ready {
            continue;
        }
        let n = lock.read(&mut chunk).map_err(io)?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_STDIN {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration on stdin is larger than 1 MiB: a runtime writes one network's config there",
                "stdin too large",
            ));
        }
    }
}

fn log(args: CniLogArgs) -> anyhow::Result<Outcome> {
    let dir = calllog::dir_path();
    let mut out = std::io::stdout().lock();
    let records = calllog::read(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let skip = args.last.map_or(0, |n| {
        records
            .len()
            .saturating_sub(usize::try_from(n).unwrap_or(usize::MAX))
    });
    let shown = &records[skip..];
    if !args.follow {
        if args.output == OutputFormat::Json {
            writeln!(out, "{:#}", serde_json::to_value(shown)?)?;
        } else if shown.is_empty() {
            width::write_fill(
                &mut out,
                &format!(
                    "No CNI calls logged in {} yet: a runtime configured with type labctl-cni writes one line per call.",
                    dir.display()
                ),
                "",
                "",
            )?;
        } else {
            render(&mut out, shown, args.details)?;
        }
        return Ok(Outcome::Success);
    }
    let stop = Stop::new();
    let mut seen = 0usize;
    let mut header = args.output == OutputFormat::Text;
    calllog::follow(&dir, &stop, |r| {
        seen += 1;
        if seen <= skip {
            return Ok(());
        }
        if args.output == OutputFormat::Json {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        } else {
            if std::mem::take(&mut header) {
                writeln!(out, "{}", header_line())?;
            }
            render_one(&mut out, r, args.details)?;
        }
        out.flush()
    })
    .with_context(|| format!("following {}", dir.display()))?;
    Ok(Outcome::Success)
}

fn header_line() -> String {
    format!(
        "{:<12} {:<7} {:<16} {:<6} {:<27} {:>6}",
        "TIME", "VERB", "CONTAINER", "IFACE", "OUTCOME", "TOOK"
    )
}

/// The calls, one line each (and their details), at 80 columns.
pub fn render(out: &mut impl Write, records: &[Record], details: bool) -> std::io::Result<()> {
    writeln!(out, "{}", header_line())?;
    for r in records {
        render_one(out, r, details)?;
    }
    Ok(())
}

fn render_one(out: &mut impl Write, r: &Record, details: bool) -> std::io::Result<()> {
    let time = r.time.get(11..23).unwrap_or(&r.time);
    let outcome = match (&r.error, &r.result) {
        (Some(e), _) => format!(
            "error {}: {}",
            e.get("code").and_then(Value::as_u64).unwrap_or_default(),
            e.get("msg").and_then(Value::as_str).unwrap_or_default()
        ),
        (None, Some(res)) if r.verb == "ADD" => {
            let ips: Vec<&str> = res
                .get("ips")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|ip| ip.get("address")?.as_str())
                .collect();
            format!("ok {}", ips.join(" "))
        }
        (None, Some(res)) if r.verb == "VERSION" => format!(
            "ok {}",
            res.get("cniVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        _ => "ok".to_owned(),
    };
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    writeln!(
        out,
        "{:<12} {:<7} {:<16} {:<6} {:<27} {:>6}",
        time,
        width::elide(&r.verb, 7),
        width::elide(&dash(&r.container_id), 16),
        width::elide(&dash(&r.ifname), 6),
        width::elide(&outcome, 27),
        took(r.duration_ms),
    )?;
    if details {
        let mut facts = vec![format!("netns {}", dash(&r.netns))];
        if let Some(net) = r.network() {
            facts.push(format!("network {net}"));
        }
        if let Some(v) = r.config.get("cniVersion").and_then(Value::as_str) {
            facts.push(format!("cniVersion {v}"));
        }
        // What kubelet passes: the pod's name (the sandbox id is the container id).
        if let (Some(ns), Some(name)) =
            (r.args.get("K8S_POD_NAMESPACE"), r.args.get("K8S_POD_NAME"))
        {
            facts.push(format!("pod {ns}/{name}"));
        }
        let args: Vec<String> = r
            .args
            .iter()
            .filter(|(k, _)| !k.starts_with("K8S_POD_"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !args.is_empty() {
            facts.push(format!("args {}", args.join(";")));
        }
        facts.push(format!("pid {}", r.pid));
        writeln!(out, "  {}", width::pieces(&facts, 2))?;
        width::write_fill(out, &one_line(&r.config), "  config ", "    ")?;
        if let Some(e) = &r.error {
            width::write_fill(out, &one_line(e), "  error ", "    ")?;
        } else if let Some(res) = &r.result {
            width::write_fill(out, &one_line(res), "  result ", "    ")?;
        }
    }
    Ok(())
}

fn took(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

/// JSON on one line with a space after each `,` and `:` (so it can be
/// filled to 80 columns).
fn one_line(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), one_line(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(one_line).collect();
            format!("[{}]", items.join(", "))
        }
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_spaced_for_filling() {
        let v = serde_json::json!({"a": [1, 2], "b": {"c": "d"}});
        assert_eq!(one_line(&v), r#"{"a": [1, 2], "b": {"c": "d"}}"#);
    }
}
