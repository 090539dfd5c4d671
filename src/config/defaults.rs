//! The defaults serde fills in, each the value the README's configuration reference names.

use super::Dur;

pub(super) fn yes() -> bool {
    true
}
pub(super) fn client_header_timeout() -> Dur {
    Dur::secs(10)
}
pub(super) fn client_idle_timeout() -> Dur {
    Dur::secs(60)
}
pub(super) fn max_header_bytes() -> usize {
    65536
}
pub(super) fn max_concurrent_streams() -> u32 {
    100
}
pub(super) fn tunnel_idle_timeout() -> Dur {
    Dur::secs(3600)
}
pub(super) fn min_healthy() -> u32 {
    2
}
pub(super) fn connect_timeout() -> Dur {
    Dur::secs(2)
}
pub(super) fn response_timeout() -> Dur {
    Dur::secs(30)
}
pub(super) fn retries() -> u32 {
    1
}
pub(super) fn max_queue() -> u32 {
    1000
}
pub(super) fn queue_timeout() -> Dur {
    Dur::secs(5)
}
pub(super) fn slow_start() -> Dur {
    Dur::secs(30)
}
pub(super) fn weight() -> u32 {
    1
}
pub(super) fn server_max_connections() -> u32 {
    100
}
pub(super) fn all_events() -> Vec<String> {
    vec!["all".into()]
}
