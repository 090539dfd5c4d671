//! The shortest end-to-end check: fulcrum forwards to real servers in round-robin order.
mod common;

use common::*;

#[tokio::test]
async fn forwards_round_robin() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = Setup::new().servers(&[&a, &b]).start().await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = client();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, body, _) = get(&c, &url).await;
        assert_eq!(status, 200);
        seen.push(body);
    }
    assert_eq!(seen.iter().filter(|b| *b == "a").count(), 2, "{seen:?}");
    assert_eq!(seen.iter().filter(|b| *b == "b").count(), 2, "{seen:?}");
    f.shutdown().await;
}
