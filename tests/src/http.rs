//! Results of the lab's HTTP clients (`tests/scripts/lab-http-get.py`,
//! `tests/scripts/lab-http-keepalive.py`), and tallies over them.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// The real server that answered (`rs1`...), from the JSON body; empty if the body had none.
    pub server: String,
    /// The peer address the real server saw (`ip:port`); empty if the body had none.
    pub client: String,
    /// The local port the real server took the connection on (which port of a service group);
    /// 0 if the body had none.
    pub port: u16,
    /// The raw body.
    pub body: String,
}

impl HttpResponse {
    /// The IP part of [`HttpResponse::client`] (`ip:port`, or `[ip]:port` for IPv6).
    pub fn client_ip(&self) -> &str {
        let ip = self
            .client
            .rsplit_once(':')
            .map_or(self.client.as_str(), |(ip, _)| ip);
        ip.strip_prefix('[')
            .and_then(|ip| ip.strip_suffix(']'))
            .unwrap_or(ip)
    }
}

/// Parses the client's JSON lines into exactly `count` results, in request order; requests the
/// client never reported (it was killed) become errors.
pub(crate) fn parse_results(stdout: &str, count: usize) -> Vec<Result<HttpResponse>> {
    let mut results: Vec<Option<Result<HttpResponse>>> = (0..count).map(|_| None).collect();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(doc) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(i) = doc["i"].as_u64().and_then(|i| usize::try_from(i).ok()) else {
            continue;
        };
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(parse_line(&doc));
        }
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| Err(anyhow!("request {i}: the client reported nothing"))))
        .collect()
}

fn parse_line(doc: &Value) -> Result<HttpResponse> {
    if let Some(error) = doc["error"].as_str() {
        bail!("request {}: {error}", doc["i"]);
    }
    let status = doc["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| anyhow!("request {}: no status in {doc}", doc["i"]))?;
    let text = |key: &str| doc[key].as_str().unwrap_or_default().to_owned();
    Ok(HttpResponse {
        status,
        server: text("server"),
        client: text("client"),
        port: doc["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0),
        body: text("body"),
    })
}

/// Parses the JSON lines of a client that was stopped rather than run to a count: one result per
/// line, in request order (lines that are not results, like the keep-alive client's greeting,
/// are skipped).
pub(crate) fn parse_stream(stdout: &str) -> Vec<Result<HttpResponse>> {
    let mut numbered: Vec<(u64, Result<HttpResponse>)> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|doc| Some((doc["i"].as_u64()?, parse_line(&doc))))
        .collect();
    numbered.sort_by_key(|(i, _)| *i);
    numbered.into_iter().map(|(_, r)| r).collect()
}

/// Parses one JSON line of a client; `None` if it is not a result line.
pub(crate) fn parse_one(line: &str) -> Option<Result<HttpResponse>> {
    let doc: Value = serde_json::from_str(line).ok()?;
    doc["i"].as_u64()?;
    Some(parse_line(&doc))
}

/// Responses per real server name (answered requests only; errors are not counted).
pub fn tally(results: &[Result<HttpResponse>]) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    for response in results.iter().flatten() {
        *served.entry(response.server.clone()).or_default() += 1;
    }
    served
}

/// Panics unless every request was answered 200, naming `what`, how many failed and the first
/// few errors.
#[track_caller]
pub fn assert_all_ok(results: &[Result<HttpResponse>], what: &str) {
    let failed = failures(results);
    assert!(
        failed.is_empty(),
        "{what}: {} of {} requests failed; first: {:#?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
}

/// The failed requests, as `index: error` lines (a non-200 answer counts as a failure).
pub fn failures(results: &[Result<HttpResponse>]) -> Vec<String> {
    results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Err(e) => Some(format!("#{i}: {e:#}")),
            Ok(response) if response.status != 200 => Some(format!(
                "#{i}: HTTP {}: {}",
                response.status,
                response.body.trim()
            )),
            Ok(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_errors_and_missing_lines() {
        let out = concat!(
            r#"{"i": 0, "status": 200, "server": "rs1", "client": "192.0.2.2:40000", "port": 443, "body": "{}"}"#,
            "\n",
            r#"{"i": 1, "error": "timeout: timed out"}"#,
            "\n",
        );
        let results = parse_results(out, 3);
        assert_eq!(results.len(), 3);
        let first = results[0].as_ref().unwrap();
        assert_eq!((first.status, first.server.as_str()), (200, "rs1"));
        assert_eq!(first.client_ip(), "192.0.2.2");
        let ipv6 = HttpResponse {
            client: "[2001:db8::2]:40000".into(),
            ..first.clone()
        };
        assert_eq!(ipv6.client_ip(), "2001:db8::2");
        assert_eq!(first.port, 443);
        assert!(format!("{:#}", results[1].as_ref().unwrap_err()).contains("timed out"));
        assert!(results[2].is_err());
        assert_eq!(failures(&results).len(), 2);
        assert_eq!(tally(&results).get("rs1"), Some(&1));
    }

    #[test]
    fn parses_a_stopped_stream_in_order() {
        let out = concat!(
            r#"{"connected": "192.0.2.2:40000"}"#,
            "\n",
            r#"{"i": 1, "status": 200, "server": "rs2"}"#,
            "\n",
            r#"{"i": 0, "status": 200, "server": "rs1"}"#,
            "\n",
            r#"{"i": 2, "status": 200, "ser"#,
        );
        let results = parse_stream(out);
        let servers: Vec<&str> = results
            .iter()
            .map(|r| r.as_ref().unwrap().server.as_str())
            .collect();
        assert_eq!(servers, ["rs1", "rs2"]);
        assert!(parse_one(r#"{"connected": "x"}"#).is_none());
    }
}
