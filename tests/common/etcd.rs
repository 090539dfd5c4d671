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

/// The data directory: in memory (`/dev/shm`) where there is one, so etcd's fsyncs cost
/// nothing and tests running side by side do not wait on one disk; a kill and restart of
/// etcd keeps it all the same.
fn data_dir() -> tempfile::TempDir {
    let b = tempfile::Builder::new().prefix("fulcrum-etcd-").clone();
    let shm = std::path::Path::new("/dev/shm");
    if let Some(d) = shm.is_dir().then(|| b.tempdir_in(shm).ok()).flatten() {
        return d;
    }
    b.tempdir().unwrap()
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

/// A TCP forwarder to etcd that can be cut: an instance talking to etcd through it looks,
/// once cut, exactly like an instance that died (its lease runs out), while the process
/// stays up for the test to look at.
pub struct Link {
    pub addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
}

impl Link {
    pub async fn to(target: SocketAddr) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Link { addr, stop }
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![format!("http://{}", self.addr)]
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.stop.cancel();
    }
}
