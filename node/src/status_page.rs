//! The read-only status page each node serves at `/` on its metrics
//! address: what `holdfast status` shows, for the whole cluster, as plain
//! HTML (no script, no build step), refreshed by the browser every 10 s.

use crate::cluster_status::{NodeStatus, Reading};

/// The page, as seen from node `me`.
pub fn render(me: &str, nodes: &[NodeStatus]) -> String {
    let mut rows = String::new();
    for n in nodes {
        let (state, class, detail) = match &n.reading {
            Reading::NoMetricsAddress => (
                "unknown",
                "unknown",
                "no metrics address in the config".to_string(),
            ),
            Reading::Unreachable(e) => ("unreachable", "bad", e.clone()),
            Reading::Read {
                ready,
                front_end,
                holds,
            } => {
                let mut parts: Vec<String> = Vec::new();
                if let Some(fe) = front_end {
                    parts.push(format!(
                        "queue {} ({} bytes, {}% of quota), link {}, {}, dead letters {}",
                        fe.depth,
                        fe.bytes,
                        fe.quota_percent,
                        fe.link(),
                        if fe.shut_down {
                            "SHUT DOWN by critical mode"
                        } else {
                            "accepting"
                        },
                        fe.dead_letters
                    ));
                }
                parts.extend(holds.iter().map(|(l, v)| format!("{l} {v}")));
                match ready {
                    Ok(()) if !n.not_well() => ("ready", "good", parts.join(", ")),
                    Ok(()) => ("not well", "bad", parts.join(", ")),
                    Err(why) => {
                        parts.insert(0, why.clone());
                        ("not ready", "bad", parts.join(", "))
                    }
                }
            }
        };
        rows += &format!(
            "<tr class=\"{class}\"><td class=\"node\">{}</td><td>{}</td><td class=\"state\">{state}</td><td>{}</td></tr>\n",
            escape(&n.name),
            escape(&n.roles),
            escape(&detail)
        );
    }
    let bad = nodes
        .iter()
        .filter(|n| n.not_well() || n.unreachable())
        .count();
    let summary = if bad == 0 {
        format!("all {} nodes well", nodes.len())
    } else {
        format!("{bad} of {} nodes need attention", nodes.len())
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<title>holdfast: {summary}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }}
tr.good .state {{ color: #1a7f37; }}
tr.bad .state {{ color: #cf222e; font-weight: bold; }}
tr.unknown .state {{ color: #6e7781; }}
</style>
</head>
<body>
<h1>holdfast cluster status</h1>
<p id="summary">{summary}, as seen from {me}. Metrics: <a href="/metrics">/metrics</a>; this node: <a href="/readyz">/readyz</a>.</p>
<table id="nodes">
<tr><th>node</th><th>roles</th><th>state</th><th>details</th></tr>
{rows}</table>
</body>
</html>
"#,
        me = escape(me)
    )
}

/// Text as HTML: what another node or an error message says is never
/// markup.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_errors_are_text_not_markup() {
        let nodes = [NodeStatus {
            name: "fe1".into(),
            roles: "front_end".into(),
            reading: Reading::Unreachable("<script>alert(1)</script>".into()),
        }];
        let page = render("fe<1>", &nodes);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("1 of 1 nodes need attention"));
    }
}
