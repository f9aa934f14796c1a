//! A minimal HTTP/1.0 GET for tests that check what a guest serves through a forwarded
//! port. It only ever connects to 127.0.0.1: a test must not send traffic elsewhere.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::Error;

/// Fetches `url` (`http://127.0.0.1:PORT/path` or `http://localhost:PORT/path`) and
/// returns the body of a 2xx answer.
pub async fn get(url: &str, timeout: Duration) -> Result<String, Error> {
    let fail = |m: String| Error::Http {
        url: url.to_owned(),
        message: m,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| fail("only http:// URLs are supported".into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| fail(format!("bad port `{p}`")))?,
        ),
        None => (authority, 80),
    };
    if host != "127.0.0.1" && host != "localhost" {
        return Err(fail(format!(
            "refusing to connect to `{host}`: tests only reach 127.0.0.1"
        )));
    }
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| fail(format!("connecting: {e}")))?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: flotilla\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| fail(format!("sending the request: {e}")))?;
        let mut raw = Vec::new();
        stream
            .take(64 << 20)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?;
        Ok::<Vec<u8>, Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| fail(format!("no answer within {} s", timeout.as_secs())))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or_else(|| fail("the answer has no header end".into()))?;
    let status_line = head.lines().next().unwrap_or("");
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| fail(format!("bad status line `{status_line}`")))?;
    if !(200..300).contains(&code) {
        return Err(fail(format!("answered `{status_line}`")));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_other_hosts() {
        let e = get("http://192.0.2.1:80/", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("tests only reach 127.0.0.1"), "{e}");
        let e = get("https://127.0.0.1/", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
    }

    #[tokio::test]
    async fn fetches_from_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhi there")
                .await
                .unwrap();
        });
        let body = get(
            &format!("http://127.0.0.1:{port}/x"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(body, "hi there");
    }
}
