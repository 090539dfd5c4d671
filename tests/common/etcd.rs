//! A real etcd (Debian's `etcd-server`, binary `etcd`) for cluster tests: one member on free
//! loopback ports with a temporary data directory, stopped by PID when dropped. It can be
//! stopped and started again on the same ports and data, as an outage would.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One etcd member.
pub struct Etcd {
    pub client: SocketAddr,
    peer: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Etcd {
        let mut e = Etcd {
            client: free_port(),
            peer: free_port(),
            dir: tempfile::Builder::new()
                .prefix("fulcrum-etcd-")
                .tempdir()
                .unwrap(),
            child: None,
        };
        e.resume().await;
        e
    }

    /// The endpoint list for `[cluster] etcd`.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.url()]
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Starts the stopped member again (same ports, same data) and waits until it answers.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is running already");
        let peer = format!("http://{}", self.peer);
        let client = self.url();
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path())
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts (apt-get install etcd-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let c = reqwest::Client::new();
        loop {
            let ok = match c.get(format!("{client}/health")).send().await {
                Ok(r) => r.text().await.unwrap_or_default().contains("true"),
                Err(_) => false,
            };
            if ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the member (by its PID) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client of this etcd, for a test to look at or write keys directly.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.endpoints(), None)
            .await
            .unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
