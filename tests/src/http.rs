//! Results of the lab's HTTP client (`tests/scripts/lab-http-get.py`).

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
    /// The raw body.
    pub body: String,
}

impl HttpResponse {
    /// The IP part of [`HttpResponse::client`].
    pub fn client_ip(&self) -> &str {
        self.client
            .rsplit_once(':')
            .map_or(self.client.as_str(), |(ip, _)| ip)
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
        body: text("body"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_errors_and_missing_lines() {
        let out = concat!(
            r#"{"i": 0, "status": 200, "server": "rs1", "client": "192.0.2.2:40000", "body": "{}"}"#,
            "\n",
            r#"{"i": 1, "error": "timeout: timed out"}"#,
            "\n",
        );
        let results = parse_results(out, 3);
        assert_eq!(results.len(), 3);
        let first = results[0].as_ref().unwrap();
        assert_eq!((first.status, first.server.as_str()), (200, "rs1"));
        assert_eq!(first.client_ip(), "192.0.2.2");
        assert!(format!("{:#}", results[1].as_ref().unwrap_err()).contains("timed out"));
        assert!(results[2].is_err());
    }
}
