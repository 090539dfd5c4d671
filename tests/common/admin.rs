//! Helpers for tests of the admin plane: the generated token (it lives in the state_dir,
//! which every [`Setup`] makes fresh unless told otherwise), and authenticated calls.
#![allow(dead_code)]

use std::path::Path;

use crate::common::*;

/// The generated token of a fulcrum whose state_dir is `state`.
pub fn token(state: &Path) -> String {
    std::fs::read_to_string(state.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// An admin API client for a running fulcrum.
pub struct Api {
    pub base: String,
    pub token: String,
    pub c: reqwest::Client,
}

impl Api {
    /// A client of `f`'s admin API, with the token from its state_dir.
    pub fn new(f: &Fulcrum) -> Api {
        Api {
            base: format!("http://{}", f.admin),
            token: token(f.state_dir()),
            c: client(),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = self
            .c
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, v) = self
            .send(reqwest::Method::GET, "/api/v1/status", None)
            .await;
        assert_eq!(code, 200, "{v}");
        v
    }

    /// The status entry of server `s` of backend `b`.
    pub async fn server(&self, b: &str, s: &str) -> serde_json::Value {
        let st = self.status().await;
        st["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == b)
            .unwrap()["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == s)
            .unwrap()
            .clone()
    }

    pub async fn metrics(&self) -> String {
        let r = self
            .c
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    }

    /// The metrics page once it shows every one of `needles`: a request is counted when its
    /// exchange ends, which may be just after the client has read the answer.
    pub async fn metrics_showing(&self, needles: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let m = self.metrics().await;
            let missing: Vec<&&str> = needles.iter().filter(|n| !m.contains(**n)).collect();
            if missing.is_empty() {
                return m;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("missing {missing:?} in:\n{m}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub async fn maintenance(
        &self,
        server: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/backends/b/servers/{server}/maintenance"),
            Some(body),
        )
        .await
    }
}
