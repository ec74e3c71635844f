//! The `http` check's request and how its answer is judged: `GET path HTTP/1.0`, then the
//! status line must carry `expect_status` and, if `expect_body` is set, the body must contain
//! it. HTTP/1.0 with `Connection: close` so the server ends the answer by closing, with no
//! chunking or keep-alive to understand. Either address family.

use std::net::SocketAddr;

use super::check::{excerpt, find, Judge, Verdict};

/// Healthy once the status line carries `status` and, if `body` is set, the body contains it.
#[derive(Clone, Debug)]
pub struct HttpExpectation {
    /// The status code the answer must carry.
    pub status: u16,
    /// Text the body must contain, if any.
    pub body: Option<String>,
}

impl Judge for HttpExpectation {
    fn judge(&self, answer: &[u8], closed: bool) -> Verdict {
        judge(answer, closed, self.status, self.body.as_deref())
    }
}

/// The request sent to `address` for `path`. Its `Host` is the address and port as a URI's
/// authority writes them: an IPv6 address in brackets (`[2001:db8::11]:80`, RFC 3986
/// section 3.2.2). No zone id: the host a server is named by, not the link it is reached on.
pub fn request(path: &str, address: SocketAddr) -> Vec<u8> {
    let address = match address {
        SocketAddr::V4(address) => address.to_string(),
        SocketAddr::V6(address) => format!("[{}]:{}", address.ip(), address.port()),
    };
    format!(
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: director-health-check\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Judges the answer read so far; `closed` says the server has closed the connection, so
/// nothing more will come.
pub fn judge(
    answer: &[u8],
    closed: bool,
    expect_status: u16,
    expect_body: Option<&str>,
) -> Verdict {
    let Some(line_end) = find(answer, b"\n") else {
        return if closed {
            Verdict::Fail(if answer.is_empty() {
                "closed without answering".to_owned()
            } else {
                format!("closed before a status line: {}", excerpt(answer))
            })
        } else {
            Verdict::NeedMore
        };
    };
    let line = answer[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&answer[..line_end]);
    let Some(status) = status_code(line) else {
        return Verdict::Fail(format!("not an HTTP status line: {}", excerpt(line)));
    };
    if status != expect_status {
        return Verdict::Fail(format!("status {status} (expected {expect_status})"));
    }
    let Some(expected) = expect_body else {
        return Verdict::Pass;
    };
    match body_start(answer) {
        Some(start) if find(&answer[start..], expected.as_bytes()).is_some() => Verdict::Pass,
        Some(_) | None if closed => Verdict::Fail(format!("body lacks {expected:?}")),
        _ => Verdict::NeedMore,
    }
}

/// Where the body starts: after the first empty line, whether it ends in CRLF or a bare LF.
/// The earlier of the two, not CRLF first: a body holding a CRLF blank line after headers ended
/// by a bare one would otherwise be cut there once it had arrived, and the verdict would
/// depend on how the answer was split into reads (found by the `health_response` fuzz target).
fn body_start(answer: &[u8]) -> Option<usize> {
    let crlf = find(answer, b"\r\n\r\n").map(|at| (at, at + 4));
    let lf = find(answer, b"\n\n").map(|at| (at, at + 2));
    crlf.into_iter().chain(lf).min().map(|(_, start)| start)
}

/// The status code of `HTTP/1.x NNN reason`.
fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n";

    #[test]
    fn body_starts_at_the_first_blank_line_whatever_its_line_ends() {
        // Headers ended by a bare LF, a CRLF blank line inside the body: the body is all of it,
        // before and after the CRLFs arrive.
        let answer = b"HTTP/1.0 200 OK\nServer: x\n\nok\r\n\r\nrest";
        assert_eq!(judge(answer, true, 200, Some("ok")), Verdict::Pass);
        assert_eq!(judge(&answer[..30], false, 200, Some("ok")), Verdict::Pass);
        assert_eq!(
            body_start(b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nx\n\ny"),
            Some(25)
        );
        assert_eq!(body_start(b"HTTP/1.0 200 OK\r\nA: b\r\n"), None);
    }

    #[test]
    fn request_is_http_1_0_with_host() {
        let request = request("/healthz", "192.0.2.11:80".parse().unwrap());
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "GET /healthz HTTP/1.0\r\nHost: 192.0.2.11:80\r\nUser-Agent: director-health-check\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn ipv6_host_is_bracketed_without_a_zone() {
        let request = request("/", "[2001:db8::11]:80".parse().unwrap());
        assert!(String::from_utf8(request)
            .unwrap()
            .contains("\r\nHost: [2001:db8::11]:80\r\n"));
        let link_local = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::11".parse().unwrap(),
            8080,
            0,
            2,
        ));
        let request = String::from_utf8(super::request("/", link_local)).unwrap();
        assert!(
            request.contains("\r\nHost: [fe80::11]:8080\r\n"),
            "{request}"
        );
    }

    #[test]
    fn status_decides_without_a_body_expectation() {
        assert_eq!(judge(OK, false, 200, None), Verdict::Pass);
        assert_eq!(
            judge(b"HTTP/1.1 200 OK\r\n", false, 200, None),
            Verdict::Pass
        );
        assert_eq!(
            judge(b"HTTP/1.1 503 Service Unavailable\r\n", false, 200, None),
            Verdict::Fail("status 503 (expected 200)".to_owned())
        );
        assert_eq!(judge(b"HTTP/1.1 20", false, 200, None), Verdict::NeedMore);
        assert_eq!(
            judge(b"HTTP/1.1 20", true, 200, None),
            Verdict::Fail("closed before a status line: \"HTTP/1.1 20\"".to_owned())
        );
        assert_eq!(
            judge(b"", true, 200, None),
            Verdict::Fail("closed without answering".to_owned())
        );
        assert_eq!(
            judge(b"SSH-2.0-OpenSSH_9.2\r\n", false, 200, None),
            Verdict::Fail("not an HTTP status line: \"SSH-2.0-OpenSSH_9.2\"".to_owned())
        );
    }

    #[test]
    fn body_must_contain_the_expectation() {
        assert_eq!(judge(OK, false, 200, Some("ok")), Verdict::Pass);
        // Headers only so far: wait for the body.
        assert_eq!(
            judge(&OK[..OK.len() - 3], false, 200, Some("ok")),
            Verdict::NeedMore
        );
        assert_eq!(
            judge(OK, true, 200, Some("ready")),
            Verdict::Fail("body lacks \"ready\"".to_owned())
        );
        // A header containing the text does not count.
        let header = b"HTTP/1.0 200 OK\r\nX-Ready: ready\r\n\r\nno\n";
        assert_eq!(
            judge(header, true, 200, Some("ready")),
            Verdict::Fail("body lacks \"ready\"".to_owned())
        );
        // The status is judged first.
        assert_eq!(
            judge(b"HTTP/1.0 500 Oops\r\n\r\nok", true, 200, Some("ok")),
            Verdict::Fail("status 500 (expected 200)".to_owned())
        );
    }
}
