//! A small local stand-in for the parts of Windmill's HTTP API the worker calls, shaped after
//! Windmill's published API: impersonation tokens, variables, resources. HTTP/1.1 on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub const SUPERADMIN_TOKEN: &str = "superadmin-token-for-tests";

#[derive(Debug, Default)]
pub struct Seen {
    /// Tokens minted, by token, with the request body.
    pub minted: BTreeMap<String, Value>,
    /// Prefixes of deleted tokens.
    pub deleted: Vec<String>,
    /// Variable/resource reads: (path, token used).
    pub reads: Vec<(String, String)>,
}

pub struct FakeWindmill {
    pub url: String,
    pub seen: Arc<Mutex<Seen>>,
}

impl FakeWindmill {
    /// Serves `variables` (path → value) and `resources` (path → value) for workspace `demo`.
    pub async fn start(variables: Value, resources: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (variables, resources, seen) =
                    (variables.clone(), resources.clone(), state.clone());
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut headers = BTreeMap::new();
                        loop {
                            let mut line = String::new();
                            reader.read_line(&mut line).await.unwrap();
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                            }
                        }
                        let length: usize = headers
                            .get("content-length")
                            .and_then(|l| l.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).await.unwrap();
                        let mut parts = request_line.split_whitespace();
                        let (method, path) = (
                            parts.next().unwrap_or("").to_owned(),
                            parts.next().unwrap_or("").to_owned(),
                        );
                        let bearer = headers
                            .get("authorization")
                            .and_then(|a| a.strip_prefix("Bearer "))
                            .unwrap_or("")
                            .to_owned();
                        let (status, text) = answer(
                            &method, &path, &bearer, &body, &variables, &resources, &seen,
                        );
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                            text.len()
                        );
                        reader
                            .get_mut()
                            .write_all(response.as_bytes())
                            .await
                            .unwrap();
                    }
                });
            }
        });
        Self { url, seen }
    }
}

fn answer(
    method: &str,
    path: &str,
    bearer: &str,
    body: &[u8],
    variables: &Value,
    resources: &Value,
    seen: &Mutex<Seen>,
) -> (u16, String) {
    let mut seen = seen.lock().unwrap();
    match (method, path) {
        ("POST", "/api/users/tokens/impersonate") => {
            if bearer != SUPERADMIN_TOKEN {
                return (401, "\"Unauthorized\"".into());
            }
            let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let token = format!("tok{}", uuid::Uuid::new_v4().simple());
            seen.minted.insert(token.clone(), request);
            (201, token)
        }
        ("DELETE", p) if p.starts_with("/api/users/tokens/delete/") => {
            seen.deleted
                .push(p.rsplit('/').next().unwrap_or("").to_owned());
            (200, "\"deleted\"".into())
        }
        ("GET", p) => {
            if !seen.minted.contains_key(bearer) {
                return (401, "\"Unauthorized: not a job token\"".into());
            }
            let (table, rest) =
                if let Some(rest) = p.strip_prefix("/api/w/demo/variables/get_value/") {
                    (variables, rest)
                } else if let Some(rest) =
                    p.strip_prefix("/api/w/demo/resources/get_value_interpolated/")
                {
                    (resources, rest)
                } else {
                    return (404, "\"not found\"".into());
                };
            seen.reads.push((rest.to_owned(), bearer.to_owned()));
            match table.get(rest) {
                Some(value) => (200, value.to_string()),
                None => (404, json!(format!("{rest} not found")).to_string()),
            }
        }
        _ => (404, "\"not found\"".into()),
    }
}
