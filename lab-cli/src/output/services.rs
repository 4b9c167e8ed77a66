//! `labctl svc list` as text: each frontend on a line, its backends below.

use crate::services::{Flow, FrontendView, L4};

/// A chain name cut to its hash (nft's endpoint chains carry the whole
/// service and endpoint after it; `-o json` has them in full).
fn short(object: &str) -> String {
    match object.match_indices('-').nth(1) {
        Some((i, _)) if object.len() > 28 => format!("{}-…", &object[..i]),
        _ => object.to_owned(),
    }
}

/// The text of `views` (at most 80 columns for lab-sized names).
pub fn render(views: &[FrontendView]) -> String {
    let mut out = String::new();
    for v in views {
        out.push_str(&format!(
            "{:<14} {:<20} {:<11} {}\n",
            v.service.as_deref().unwrap_or("-"),
            v.address(),
            v.source,
            short(&v.object)
        ));
        if v.backends.is_empty() {
            out.push_str("  (no endpoints: new connections to it fail)\n");
        }
        for b in &v.backends {
            let to = match (b.addr, b.port) {
                (Some(a), Some(p)) => format!("{a}:{p}"),
                _ => "(missing backend)".into(),
            };
            let conns = b
                .connections
                .map_or_else(|| "-".to_owned(), |c| format!("{c} conns"));
            let p = b
                .probability
                .map_or_else(String::new, |p| format!("p {p:.2}"));
            out.push_str(&format!(
                "  {:<21} {:<16} {:>10} {:<6} {}\n",
                to,
                b.pod.as_deref().unwrap_or("-"),
                conns,
                p,
                short(&b.object)
            ));
        }
    }
    out
}

/// One line per translated connection: client -> frontend => backend.
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
            Some(n) => format!("{} on {n}", f.table),
            None => f.table.to_owned(),
        };
        out.push_str(&format!(
            "{client} -> {}:{}/{proto} => {backend}  [{at}]\n",
            f.vip, f.port
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::services::{BackendView, L4};

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
