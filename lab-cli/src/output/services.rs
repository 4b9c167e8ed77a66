//! `labctl svc list` as text: each frontend on a line, its backends below.

use super::width;
use crate::services::{BackendView, Flow, FrontendView, L4};

/// A chain name cut to its hash (nft's endpoint chains carry the whole
/// service and endpoint after it; `-o json` has them in full).
fn short(object: &str) -> String {
    match object.match_indices('-').nth(1) {
        Some((i, _)) if object.len() > 28 => format!("{}-…", &object[..i]),
        _ => object.to_owned(),
    }
}

/// The text of `views`: columns as wide as their widest cell; a chain or
/// map entry that does not fit after them goes on the next line, so every
/// line fits 80 columns (and `-o json` has every name in full).
pub fn render(views: &[FrontendView]) -> String {
    let max = |cells: &mut dyn Iterator<Item = usize>| cells.max().unwrap_or(0);
    let service_w = max(&mut views
        .iter()
        .map(|v| width::width(v.service.as_deref().unwrap_or("-"))));
    let address_w = max(&mut views.iter().map(|v| width::width(&v.address())));
    let source_w = max(&mut views.iter().map(|v| width::width(&v.source)));
    let rows: Vec<Vec<[String; 4]>> = views
        .iter()
        .map(|v| v.backends.iter().map(backend_cells).collect())
        .collect();
    let col = |i: usize| max(&mut rows.iter().flatten().map(|r| width::width(&r[i])));
    let (to_w, pod_w, conns_w, p_w) = (col(0), col(1), col(2), col(3));
    let mut out = String::new();
    for (v, backends) in views.iter().zip(&rows) {
        let line = format!(
            "{} {} {}",
            width::pad(v.service.as_deref().unwrap_or("-"), service_w),
            width::pad(&v.address(), address_w),
            width::pad(&v.source, source_w),
        );
        push_with_object(&mut out, &line, &short(&v.object));
        if v.backends.is_empty() {
            out.push_str("  (no endpoints: new connections to it fail)\n");
        }
        for (b, [to, pod, conns, p]) in v.backends.iter().zip(backends) {
            let line = format!(
                "  {} {} {:>conns_w$} {}",
                width::pad(to, to_w),
                width::pad(pod, pod_w),
                conns,
                width::pad(p, p_w),
            );
            push_with_object(&mut out, &line, &short(&b.object));
        }
    }
    out
}

/// A backend's address, pod, connections and probability.
fn backend_cells(b: &BackendView) -> [String; 4] {
    [
        match (b.addr, b.port) {
            (Some(a), Some(p)) => format!("{a}:{p}"),
            _ => "(missing backend)".into(),
        },
        b.pod.clone().unwrap_or_else(|| "-".into()),
        b.connections
            .map_or_else(|| "-".to_owned(), |c| format!("{c} conns")),
        b.probability
            .map_or_else(String::new, |p| format!("p {p:.2}")),
    ]
}

/// `line` and then `object` on it, or on a line of its own where the two
/// do not fit 80 columns.
fn push_with_object(out: &mut String, line: &str, object: &str) {
    let line = line.trim_end();
    if width::width(line) + 1 + width::width(object) <= width::COLUMNS {
        out.push_str(&format!("{line} {object}\n"));
    } else {
        out.push_str(&format!(
            "{line}\n      {}\n",
            width::elide(object, width::COLUMNS - 6)
        ));
    }
}

/// One line per translated connection: client -> frontend => backend
/// [table], the table on the next line where it does not fit.
pub fn render_flows(flows: &[Flow]) -> String {
    let mut out = String::new();
    for f in flows {
        let client = match (&f.client_pod, f.client, f.client_port, f.socket) {
            (Some(p), _, Some(port), _) => format!("{p}:{port}"),
            (None, Some(a), Some(port), _) => format!("{a}:{port}"),
            (_, _, _, Some(cookie)) => format!("socket {cookie}"),
            _ => "-".into(),
        };
        let proto = f.proto.map_or("ANY", L4::kube);
        let backend = match &f.backend_pod {
            Some(p) => format!("{p} ({}:{})", f.backend, f.backend_port),
            None => format!("{}:{}", f.backend, f.backend_port),
        };
        let at = match &f.node {
            Some(n) => format!("[{} on {n}]", f.table),
            None => format!("[{}]", f.table),
        };
        let frontend = format!("{}:{}/{proto}", f.vip, f.port);
        out.push_str(&width::pieces(
            &[client.as_str(), "->", &frontend, "=>", &backend, &at],
            4,
        ));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn frontends_and_backends_fit_80_columns() {
        let v = FrontendView {
            service: Some("service/web".into()),
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: Some(L4::Tcp),
            source: "nftables".into(),
            object: "service-ULMVA6XW-service/web/tcp/tcp".into(),
            backends: vec![BackendView {
                addr: Some(Ipv4Addr::new(10, 244, 1, 3)),
                port: Some(8080),
                pod: Some("service/web-1".into()),
                connections: Some(12),
                probability: None,
                object: "endpoint-5OJB2KTY-service/web/tcp/tcp__10.244.1.3/8080".into(),
            }],
        };
        let text = render(&[v]);
        assert!(text.contains("10.96.0.10:80/TCP"), "{text}");
        assert!(text.contains("endpoint-5OJB2KTY-…"), "{text}");
        assert!(text.contains("12 conns"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    }
}
